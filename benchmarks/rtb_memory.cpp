// SPDX-License-Identifier: Apache-2.0
// Peak resident memory of RTB training at a given T, one T per process so every figure starts
// from a fresh heap:
//
//   rtb_memory T [steps=3] [threads=2] [batch=500]
//
// prints `memory impl=rtb T=… batch=… threads=… steps=… peak_rss_kib=… workspace_bytes=…`.
// The trainer keeps no per-step state for on-policy rows (pass 2 regenerates them), so the
// figure should not grow with T.

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "setup.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: rtb_memory T [steps=3] [threads=2] [batch=500]\n");
    return 2;
  }
  const long T = std::atol(argv[1]);
  const long steps = argc > 2 ? std::atol(argv[2]) : 3;
  const long threads = argc > 3 ? std::atol(argv[3]) : 2;
  const long batch = argc > 4 ? std::atol(argv[4]) : 500;
  try {
    rtb_bench::Trainer trainer = rtb_bench::make_trainer(batch, T, threads);
    double loss = 0;
    for (long k = 0; k < steps; ++k) loss += trainer.step().loss;
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("memory impl=rtb T=%ld batch=%ld threads=%ld steps=%ld peak_rss_kib=%ld workspace_bytes=%zu loss=%g\n", T,
                batch, threads, steps, ru.ru_maxrss, trainer.workspace_bytes(), loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rtb_memory: %s\n", e.what());
    return 1;
  }
  return 0;
}
