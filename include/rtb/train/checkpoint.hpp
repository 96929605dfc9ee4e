// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The checkpoint container: named binary sections, versioned and checksummed, written to a
/// temporary file, flushed to disk and renamed over the target, so a crash never leaves a
/// half-written checkpoint and never destroys the previous one.
///
///     "RTBCKPT\0"  u32 version  u32 sections
///     per section: u32 name length, name, u32 element size, u64 byte length, bytes
///     u32 CRC-32 of everything above
///
/// Reading checks the magic, the version, every length against the file size and the CRC, and
/// then each section's element size and count against what the caller expects.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "rtb/error.hpp"
#include "rtb/io/checksum.hpp"

namespace rtb {

inline constexpr std::uint32_t kCheckpointVersion = 1;

class CheckpointWriter {
 public:
  template <class T>
  void add(const std::string& name, std::span<const T> values) {
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

  /// Writes the checkpoint atomically to `path`.
  void commit(const std::string& path) const {
    std::vector<unsigned char> file(kMagic, kMagic + 8);
    append(file, kCheckpointVersion);
    append(file, sections_);
    file.insert(file.end(), bytes_.begin(), bytes_.end());
    append(file, io::crc32(0, file.data(), file.size()));
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw IoError(detail::message("checkpoint: cannot open ", tmp, " for writing; check the directory exists and is writable"));
    const bool ok = std::fwrite(file.data(), 1, file.size(), f) == file.size() && std::fflush(f) == 0;
#if __has_include(<unistd.h>)
    const bool synced = ok && ::fsync(::fileno(f)) == 0;
#else
    const bool synced = ok;
#endif
    std::fclose(f);
    if (!synced) {
      std::remove(tmp.c_str());
      throw IoError(detail::message("checkpoint: writing ", tmp, " failed (disk full?); the previous checkpoint at ", path,
                                    " is untouched"));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw IoError(detail::message("checkpoint: renaming ", tmp, " to ", path, " failed: ", ec.message()));
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
  std::uint32_t sections_ = 0;
};

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw CheckpointError(detail::message("checkpoint ", path, ": cannot open it; check the path"));
    file_.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (file_.size() < 20 || std::memcmp(file_.data(), CheckpointWriter::kMagic, 8) != 0)
      fail("is not an rtb checkpoint (bad magic or shorter than a header)");
    std::uint32_t stored_crc;
    std::memcpy(&stored_crc, file_.data() + file_.size() - 4, 4);
    if (io::crc32(0, file_.data(), file_.size() - 4) != stored_crc)
      fail("is corrupted or truncated (checksum mismatch); restore it from a copy or start a new run");
    std::size_t pos = 8;
    const auto version = get<std::uint32_t>(pos);
    if (version != kCheckpointVersion)
      fail(detail::message("has format version ", version, ", this build reads version ", kCheckpointVersion));
    const auto count = get<std::uint32_t>(pos);
    for (std::uint32_t s = 0; s < count; ++s) {
      const auto name_len = get<std::uint32_t>(pos);
      need(pos, name_len);
      std::string name(reinterpret_cast<const char*>(file_.data() + pos), name_len);
      pos += name_len;
      const auto elem = get<std::uint32_t>(pos);
      const auto len = get<std::uint64_t>(pos);
      need(pos, len);
      sections_[name] = Section{pos, static_cast<std::size_t>(len), elem};
      pos += static_cast<std::size_t>(len);
    }
    if (pos != file_.size() - 4) fail("has trailing bytes after its sections");
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
    std::memcpy(v.data(), file_.data() + s.pos, s.len);
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
  [[noreturn]] void fail(const std::string& why) const { throw CheckpointError("checkpoint " + path_ + " " + why); }
  void need(std::size_t pos, std::uint64_t n) const {
    if (pos + n > file_.size() - 4) fail("is truncated (a section runs past the end of the file)");
  }
  template <class T>
  T get(std::size_t& pos) const {
    need(pos, sizeof(T));
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
