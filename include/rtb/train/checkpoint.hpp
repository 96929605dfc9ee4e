// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The checkpoint container: named binary sections, versioned and checksummed, written through
/// io::write_file_atomically (a temporary of its own per writer, fsync, rename, directory fsync),
/// so a crash never leaves a half-written checkpoint and never destroys the previous one, and two
/// processes saving to one path leave one of their checkpoints, whole.
///
///     "RTBCKPT\0"  u32 version  u32 sections                      (little-endian, version 1)
///     per section: u32 name length, name, u32 element size, u64 byte length, bytes
///     u32 CRC-32 of everything above
///
/// Reading enforces, each with a CheckpointError that says what to do:
///  - the path is a regular file (not a directory, FIFO or device) of at most `max_bytes`
///    (kCheckpointMaxBytes by default), checked before it is read into memory;
///  - the magic, then the version (a newer one: upgrade rtb), then the CRC;
///  - every count and length fits in the bytes that remain (overflow-safe: `n > end - pos`, never
///    `pos + n > end`), so no crafted length can wrap an offset; section names are unique, element
///    sizes non-zero and dividing their byte length, and nothing follows the last section;
///  - then, per section read, the element size and count the caller expects.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <new>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "rtb/error.hpp"
#include "rtb/io/atomic_file.hpp"
#include "rtb/io/checksum.hpp"

namespace rtb {

inline constexpr std::uint32_t kCheckpointVersion = 1;
/// The largest checkpoint CheckpointReader reads by default (16 GiB).
inline constexpr std::uint64_t kCheckpointMaxBytes = std::uint64_t{1} << 34;

class CheckpointWriter {
 public:
  /// Adds section `name` (unique, at most 2^32 − 1 bytes) holding `values`.
  template <class T>
  void add(const std::string& name, std::span<const T> values) {
    if (name.size() > std::numeric_limits<std::uint32_t>::max() || !names_.insert(name).second)
      throw InvalidArgumentError(detail::message("CheckpointWriter: section name '", name.substr(0, 80),
                                                 "' is used twice or is too long; give each section its own name"));
    put(static_cast<std::uint32_t>(name.size()));
    bytes_.insert(bytes_.end(), name.begin(), name.end());
    put(static_cast<std::uint32_t>(sizeof(T)));
    put(static_cast<std::uint64_t>(values.size_bytes()));
    const auto* p = reinterpret_cast<const unsigned char*>(values.data());
    bytes_.insert(bytes_.end(), p, p + values.size_bytes());
    ++sections_;
  }
  template <class T>
  void add_scalar(const std::string& name, T value) {
    add(name, std::span<const T>(&value, 1));
  }

  /// Writes the checkpoint atomically to `path`; throws IoError and leaves `path` as it was.
  void commit(const std::string& path) const {
    std::vector<unsigned char> head(kMagic, kMagic + 8);
    append(head, kCheckpointVersion);
    append(head, sections_);
    std::vector<unsigned char> tail;
    append(tail, io::crc32(io::crc32(0, head.data(), head.size()), bytes_.data(), bytes_.size()));
    const std::span<const unsigned char> pieces[3] = {head, bytes_, tail};
    io::write_file_atomically(path, pieces, "checkpoint");
  }

  static constexpr char kMagic[9] = "RTBCKPT";

 private:
  template <class T>
  void put(T v) {
    append(bytes_, v);
  }
  template <class T>
  static void append(std::vector<unsigned char>& v, T x) {
    const auto* p = reinterpret_cast<const unsigned char*>(&x);
    v.insert(v.end(), p, p + sizeof(T));
  }
  std::vector<unsigned char> bytes_;
  std::set<std::string> names_;
  std::uint32_t sections_ = 0;
};

class CheckpointReader {
 public:
  /// Reads and validates the checkpoint at `path` (see the file comment); throws CheckpointError.
  explicit CheckpointReader(const std::string& path, std::uint64_t max_bytes = kCheckpointMaxBytes) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (!fs::exists(st)) fail("cannot open it: no such file; check the path");
    if (fs::is_directory(st)) fail("is a directory, not a checkpoint file; pass the path that save() wrote");
    if (!fs::is_regular_file(st)) fail("is not a regular file (a FIFO or a device); pass the path that save() wrote");
    const std::uintmax_t size = fs::file_size(path, ec);
    if (ec) fail("cannot open it: " + ec.message() + "; check the path and its permissions");
    if (size > max_bytes)
      fail(
          detail::message("is ", size, " bytes, over the limit of ", max_bytes,
                          " bytes for a checkpoint; if it really is one, pass a larger max_bytes to CheckpointReader"));
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot open it for reading; check its permissions");
    try {
      file_.resize(static_cast<std::size_t>(size));
    } catch (const std::bad_alloc&) {
      fail(detail::message("needs ", size, " bytes of memory to be read, which are not available"));
    }
    f.read(reinterpret_cast<char*>(file_.data()), static_cast<std::streamsize>(size));
    if (static_cast<std::uintmax_t>(f.gcount()) != size || f.peek() != std::ifstream::traits_type::eof())
      fail("changed size while it was read; read it again once its writer is done");
    parse();
  }

  /// Validates a checkpoint held in memory (as the constructor, for tests and fuzzing); `name`
  /// stands for the path in messages.
  static CheckpointReader from_bytes(std::vector<unsigned char> bytes, std::string name) {
    CheckpointReader r(std::move(name), std::move(bytes));
    return r;
  }

  bool has(const std::string& name) const { return sections_.count(name) != 0; }

  /// Section `name` as `count` values of T (count < 0: any count).
  template <class T>
  std::vector<T> array(const std::string& name, std::ptrdiff_t count = -1) const {
    const auto it = sections_.find(name);
    if (it == sections_.end()) fail(detail::message("has no section '", name, "'"));
    const Section& s = it->second;
    if (s.elem != sizeof(T) || s.len % sizeof(T) != 0)
      fail(detail::message("section '", name, "' holds ", s.elem, "-byte values, expected ", sizeof(T)));
    const std::size_t n = s.len / sizeof(T);
    if (count >= 0 && n != static_cast<std::size_t>(count))
      fail(detail::message("section '", name, "' has ", n, " values but this model needs ", count,
                           "; the checkpoint belongs to a different model or configuration"));
    std::vector<T> v(n);
    if (s.len) std::memcpy(v.data(), file_.data() + s.pos, s.len);
    return v;
  }
  template <class T>
  T scalar(const std::string& name) const {
    return array<T>(name, 1)[0];
  }

 private:
  struct Section {
    std::size_t pos, len;
    std::uint32_t elem;
  };
  CheckpointReader(std::string name, std::vector<unsigned char> bytes)
      : path_(std::move(name)), file_(std::move(bytes)) {
    parse();
  }

  void parse() {
    const std::size_t size = file_.size();
    if (size < 8 || std::memcmp(file_.data(), CheckpointWriter::kMagic, 8) != 0)
      fail("is not an rtb checkpoint (it does not start with \"RTBCKPT\"); pass the path that save() wrote");
    if (size < 20)
      fail(detail::message("is not an rtb checkpoint: it has ", size,
                           " bytes, fewer than the 20 of an empty one; it was cut short, restore it from a copy"));
    std::size_t pos = 8;
    const std::size_t end = size - 4;  // the CRC follows
    const auto version = get<std::uint32_t>(pos, end);
    if (version == 0) fail("has format version 0, which no rtb writes; the file is corrupted");
    if (version > kCheckpointVersion)
      fail(detail::message("has format version ", version, ": it was written by a newer rtb (this one reads version ",
                           kCheckpointVersion, "); upgrade rtb to read it"));
    std::uint32_t stored_crc;
    std::memcpy(&stored_crc, file_.data() + end, 4);
    if (io::crc32(0, file_.data(), end) != stored_crc)
      fail("is corrupted or truncated (checksum mismatch); restore it from a copy or start a new run");
    const auto count = get<std::uint32_t>(pos, end);
    constexpr std::size_t kMinSection = 4 + 4 + 8;  // an empty name and no bytes
    if (count > (end - pos) / kMinSection)
      fail(detail::message("declares ", count, " sections, more than its ", end - pos,
                           " bytes can hold; it is corrupted"));
    for (std::uint32_t s = 0; s < count; ++s) {
      const auto name_len = get<std::uint32_t>(pos, end);
      need(pos, end, name_len, "a section name");
      std::string name(reinterpret_cast<const char*>(file_.data() + pos), name_len);
      pos += name_len;
      const auto elem = get<std::uint32_t>(pos, end);
      const auto len = get<std::uint64_t>(pos, end);
      need(pos, end, len, "section '" + name.substr(0, 80) + "'");
      if (elem == 0 || len % elem != 0)
        fail(detail::message("section '", name.substr(0, 80), "' has ", len, " bytes of ", elem,
                             "-byte values; it is corrupted"));
      if (!sections_.emplace(name, Section{pos, static_cast<std::size_t>(len), elem}).second)
        fail(detail::message("has two sections named '", name.substr(0, 80), "'; it is corrupted"));
      pos += static_cast<std::size_t>(len);
    }
    if (pos != end) fail(detail::message("has ", end - pos, " bytes after its last section; it is corrupted"));
  }

  [[noreturn]] void fail(const std::string& why) const { throw CheckpointError("checkpoint " + path_ + " " + why); }
  /// `n` more bytes from `pos` stay within `end` (pos <= end always holds, so end - pos cannot wrap).
  void need(std::size_t pos, std::size_t end, std::uint64_t n, const std::string& what) const {
    if (n > end - pos)
      fail(detail::message("is truncated: ", what, " needs ", n, " bytes at offset ", pos, " but only ", end - pos,
                           " remain; restore it from a copy"));
  }
  template <class T>
  T get(std::size_t& pos, std::size_t end) const {
    need(pos, end, sizeof(T), "a length field");
    T v;
    std::memcpy(&v, file_.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }

  std::string path_;
  std::vector<unsigned char> file_;
  std::map<std::string, Section> sections_;
};

}  // namespace rtb
