// SPDX-License-Identifier: Apache-2.0
#pragma once
// The examples' --precision f32|bf16 option: parsed once, printed with the engine that runs the
// products on this machine (amx, avx512bf16 or emulated; see rtb/net/gemm_bf16.hpp).

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <rtb/rtb.hpp>

namespace examples {

struct PrecisionOption {
  std::string name = "f32";

  /// Adds `--precision f32|bf16` to `app`; `what` says whose products it sets ("the network's").
  void add(CLI::App& app, const std::string& what) {
    app.add_option("--precision", name, what + " products: f32, or bf16 operands with float sums")
        ->check(CLI::IsMember({"f32", "bf16"}));
  }
  rtb::Precision value() const { return name == "bf16" ? rtb::Precision::BFloat16 : rtb::Precision::Float32; }
  /// "precision bf16 (products on amx)": what ran, for the log.
  void print() const {
    std::printf("precision %s (products on %s)\n", name.c_str(),
                value() == rtb::Precision::BFloat16 ? rtb::detail::bf16_engine_name() : "float");
  }
};

}  // namespace examples
