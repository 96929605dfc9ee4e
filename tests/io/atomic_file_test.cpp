// SPDX-License-Identifier: Apache-2.0
// Atomic file replacement: unique temporaries, stale ones of dead writers removed, live ones
// kept, and no temporary and no change to the target on an error path.

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <rtb/io/atomic_file.hpp>

namespace fs = std::filesystem;

namespace {

void write_string(const fs::path& p, const std::string& s) {
  const std::span<const unsigned char> piece(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  rtb::io::write_file_atomically(p, std::span<const std::span<const unsigned char>>(&piece, 1), "test");
}
std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
std::set<std::string> temporaries(const fs::path& dir, const std::string& of) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(of + ".rtb-", 0) == 0) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

TEST_CASE("atomic file: a writer killed mid-write leaves a temporary that the next write removes; a live one stays") {
  const fs::path dir = fs::temp_directory_path() / "rtb_atomic_stale";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path path = dir / "out.bin";
  write_string(path, "old");
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the writer: creates its temporary, writes half, and is killed
    const fs::path tmp = rtb::io::detail::temp_name(path);
    std::ofstream(tmp) << "half";
    ::raise(SIGKILL);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(temporaries(dir, "out.bin").size() == 1);
  const fs::path live = rtb::io::detail::temp_name(path);  // this process's: alive
  std::ofstream(live) << "in progress";
  const fs::path other = dir / "other.bin.rtb-00000000-1-0-0.tmp";  // another file's
  std::ofstream(other) << "x";
  write_string(path, "new");
  CHECK(slurp(path) == "new");
  CHECK(temporaries(dir, "out.bin") == std::set<std::string>{live.filename().string()});
  CHECK(fs::exists(other));
  fs::remove_all(dir);
}

TEST_CASE("atomic file: temporaries are unique per writer and carry host, pid and counter") {
  const fs::path path = fs::temp_directory_path() / "x.bin";
  std::set<std::string> names;
  for (int i = 0; i < 1000; ++i) names.insert(rtb::io::detail::temp_name(path).filename().string());
  CHECK(names.size() == 1000);
  const std::string n = *names.begin();
  CHECK(n.rfind("x.bin.rtb-" + rtb::io::detail::host_tag() + "-" + std::to_string(::getpid()) + "-", 0) == 0);
  CHECK(n.substr(n.size() - 4) == ".tmp");
}

TEST_CASE("atomic file: a write that fails (file size limit as a full disk) leaves the old file and no temporary") {
  const fs::path dir = fs::temp_directory_path() / "rtb_atomic_full";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path path = dir / "out.bin";
  write_string(path, "previous contents");
  ::signal(SIGXFSZ, SIG_IGN);
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  rlimit small = old;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string error;
  try {
    write_string(path, std::string(100000, 'x'));
  } catch (const rtb::IoError& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, SIG_DFL);
  CHECK(error.find("disk full?") != std::string::npos);
  CHECK(error.find("keeps its previous contents") != std::string::npos);
  CHECK(slurp(path) == "previous contents");
  CHECK(temporaries(dir, "out.bin").empty());
  CHECK_THROWS_WITH_AS(write_string(dir, "x"), doctest::Contains("it is a directory"), rtb::IoError);
  fs::remove_all(dir);
}
