// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Writing a file so that readers see either the old contents or the new, never a mix, and so
/// that concurrent writers of one path never share a temporary.
///
/// `write_file_atomically(path, pieces)`:
///  1. creates `<path>.rtb-<host>-<pid>-<counter>-<random>.tmp` in the target's directory with
///     O_CREAT|O_EXCL (a name no other writer, thread or process, can hold),
///  2. writes every piece, fsyncs and closes it,
///  3. renames it over `path` and fsyncs the directory, so the rename itself survives a crash,
///  4. removes stale temporaries of the same path left by processes of this host that have died
///     (killed mid-write); a live writer's temporary is never touched.
/// On any error the temporary is removed and `path` keeps its previous contents.

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <system_error>

#if __has_include(<unistd.h>)
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#define RTB_POSIX_FILES 1
#endif

#include "rtb/error.hpp"

namespace rtb::io {

namespace detail {

/// 8 hex digits naming this host (FNV-1a of its name): pids are only comparable on one host.
inline const std::string& host_tag() {
  static const std::string tag = [] {
    char name[256] = {};
#ifdef RTB_POSIX_FILES
    if (::gethostname(name, sizeof(name) - 1) != 0) name[0] = '\0';
#endif
    std::uint32_t h = 2166136261u;
    for (const char* p = name; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 16777619u;
    char out[9];
    std::snprintf(out, sizeof(out), "%08x", h);
    return std::string(out);
  }();
  return tag;
}

inline long current_pid() {
#ifdef RTB_POSIX_FILES
  return static_cast<long>(::getpid());
#else
  return 0;
#endif
}

/// The prefix every temporary of `path` starts with: `<file name>.rtb-`.
inline std::string temp_prefix(const std::filesystem::path& path) {
  return path.filename().string() + ".rtb-";
}

/// A fresh temporary name for `path`: host, pid, a per-process counter and 64 random bits.
inline std::filesystem::path temp_name(const std::filesystem::path& path) {
  static std::atomic<std::uint64_t> counter{0};
  static thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    return std::mt19937_64((std::uint64_t{rd()} << 32) ^ rd());
  }();
  char tail[96];
  std::snprintf(tail, sizeof(tail), "%s-%ld-%llu-%016llx.tmp", host_tag().c_str(), current_pid(),
                static_cast<unsigned long long>(counter.fetch_add(1)), static_cast<unsigned long long>(rng()));
  return path.parent_path() / (temp_prefix(path) + tail);
}

/// True when `name` is a temporary of `path` made on this host by a process that no longer runs.
inline bool is_stale_temp(const std::string& name, const std::string& prefix) {
#ifdef RTB_POSIX_FILES
  if (name.rfind(prefix, 0) != 0 || name.size() < prefix.size() + 4 || name.compare(name.size() - 4, 4, ".tmp") != 0)
    return false;
  const std::string tail = name.substr(prefix.size(), name.size() - prefix.size() - 4);  // host-pid-counter-random
  const std::string& host = host_tag();
  if (tail.rfind(host + "-", 0) != 0) return false;
  const char* p = tail.c_str() + host.size() + 1;
  char* end = nullptr;
  errno = 0;
  const long pid = std::strtol(p, &end, 10);
  if (errno != 0 || end == p || *end != '-' || pid <= 0 || pid == current_pid()) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
#else
  (void)name;
  (void)prefix;
  return false;
#endif
}

/// Removes the stale temporaries of `path` (best effort: errors are ignored).
inline void remove_stale_temps(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  const std::string prefix = temp_prefix(path);
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_stale_temp(it->path().filename().string(), prefix)) std::filesystem::remove(it->path(), ec);
}

#ifdef RTB_POSIX_FILES
inline bool write_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    if (w == 0) {
      errno = ENOSPC;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// fsync of the directory holding `path`, so that a rename into it is durable. File systems
/// that cannot sync a directory (EINVAL, ENOTSUP) are not an error.
inline int sync_directory(const std::filesystem::path& path) {
  const std::filesystem::path dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc == EINVAL || rc == ENOTSUP ? 0 : rc;
}
#endif

}  // namespace detail

/// Writes the concatenation of `pieces` to `path` atomically (see the file comment). `who` starts
/// every error message, e.g. "checkpoint" or "write_npy". Throws IoError; `path` is then as before.
inline void write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::span<const unsigned char>> pieces, const std::string& who) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw IoError(
        rtb::detail::message(who, ": cannot write ", path.string(), ": it is a directory; pass a file path inside it"));
#ifdef RTB_POSIX_FILES
  fs::path tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 16 && fd < 0; ++attempt) {
    tmp = detail::temp_name(path);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0)
    throw IoError(rtb::detail::message(who, ": cannot create a temporary file next to ", path.string(), " (",
                                       std::strerror(errno), "); check that the directory exists and is writable"));
  int err = 0;  // the first failure's errno
  for (const auto& piece : pieces)
    if (!err && !detail::write_all(fd, piece.data(), piece.size())) err = errno ? errno : EIO;
  if (!err && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) {
    fs::remove(tmp, ec);
    throw IoError(rtb::detail::message(who, ": writing ", tmp.string(), " failed (", std::strerror(err),
                                       "; disk full?); ", path.string(), " keeps its previous contents"));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    fs::remove(tmp, ec);
    throw IoError(rtb::detail::message(who, ": renaming ", tmp.string(), " to ", path.string(), " failed: ",
                                       std::strerror(e), "; ", path.string(), " keeps its previous contents"));
  }
  if (const int e = detail::sync_directory(path); e != 0)
    throw IoError(rtb::detail::message(who, ": ", path.string(), " was written but its directory could not be synced (",
                                       std::strerror(e), "); a crash now could lose it, so write it again"));
  detail::remove_stale_temps(path);
#else
  const fs::path tmp = detail::temp_name(path);
  std::FILE* f = std::fopen(tmp.string().c_str(), "wb");
  if (!f) throw IoError(rtb::detail::message(who, ": cannot open ", tmp.string(), " for writing"));
  bool ok = true;
  for (const auto& piece : pieces) ok = ok && std::fwrite(piece.data(), 1, piece.size(), f) == piece.size();
  ok = std::fflush(f) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (ok) fs::rename(tmp, path, ec);
  if (!ok || ec) {
    fs::remove(tmp, ec);
    throw IoError(rtb::detail::message(who, ": writing ", path.string(), " failed; it keeps its previous contents"));
  }
#endif
}

}  // namespace rtb::io
