// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Ready-made training callbacks, called as cb(trainer, stats) after every step.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <type_traits>

#include "rtb/detail/flush_denormal.hpp"
#include "rtb/train/config.hpp"

namespace rtb {

/// Prints one progress line every `every` steps (and on the last one when told the total).
struct ProgressPrinter {
  std::int64_t every = 100;
  std::int64_t total = 0;
  std::string label = "rtb";
  std::FILE* out = stdout;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  template <class Trainer>
  void operator()(const Trainer&, const StepStats& s) const {
    const std::int64_t k = s.iteration + 1;
    if (k % every != 0 && k != total) return;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(out,
                 "[%s] it %6lld%s%s  loss %9.4f  learned_log_z %8.4f  mean_log_r %8.4f  log_ratio %8.3f  expl %.3f  "
                 "%.1fs\n",
                 label.c_str(), static_cast<long long>(k), total ? "/" : "",
                 total ? std::to_string(total).c_str() : "", s.loss, s.learned_log_z, s.mean_log_r, s.mean_log_ratio,
                 s.exploration, secs);
    std::fflush(out);
  }
};

/// Saves a checkpoint every `every` steps (atomically; the previous one survives a crash).
struct CheckpointEvery {
  std::int64_t every = 1000;
  std::string path;

  template <class Trainer>
  void operator()(const Trainer& t, const StepStats& s) const {
    if ((s.iteration + 1) % every == 0) t.save(path);
  }
};

namespace detail {

/// Calls every callback with `args`, in the floating-point mode of the entry point's caller;
/// returns false if one that returns bool returned false (every callback is still called).
template <class... Args, class... Callbacks>
bool call_callbacks(std::tuple<Args&...> args, Callbacks&... callbacks) {
  const ScopedCallerFloatMode callers_mode;
  bool go = true;
  (
      [&](auto& cb) {
        if constexpr (std::is_same_v<decltype(std::apply(cb, args)), bool>)
          go = std::apply(cb, args) && go;
        else
          std::apply(cb, args);
      }(callbacks),
      ...);
  return go;
}

}  // namespace detail
}  // namespace rtb
