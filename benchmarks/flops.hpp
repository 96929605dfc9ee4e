// SPDX-License-Identifier: Apache-2.0
#pragma once
// The FLOP counts behind every GFLOP/s this suite reports, written once and derived from the
// network's own parameter layout (each `*.weight` tensor is a Linear [out, in]), so a change of
// architecture changes the counts with it.
//
// Convention: a multiply-add is 2 FLOPs and only the GEMM work of the Linear layers counts
// (2·rows·in·out per product). GELU, bias adds, sin/cos, log-densities, sampling noise and Adam
// are not counted: they are real work, but "achieved GFLOP/s" against a GEMM peak is only
// meaningful for the work a GEMM could do.

#include <string_view>

#include <rtb/space.hpp>
#include <rtb/net/parameters.hpp>

namespace rtb_bench {

struct MlpFlops {
  double forward = 0;   ///< y = x·Wᵀ of every layer
  double backward = 0;  ///< dW = dyᵀ·x of every layer, plus dx = dy·W where the layer propagates it
};

/// FLOPs of one forward and one backward of a PisMlp-layout network over `rows` rows. The time
/// embedding (`t_model.*`) runs on one row per call, whatever the batch; the state embedding
/// (`s_model.*`) has no input gradient (states carry none), every other layer has one.
inline MlpFlops pis_mlp_flops(const rtb::ParameterLayout& layout, rtb::Index rows) {
  MlpFlops f;
  for (const auto& t : layout.tensors()) {
    const std::string_view name = t.name;
    if (name.size() < 7 || name.substr(name.size() - 7) != ".weight" || t.shape.size() != 2) continue;
    const double out = static_cast<double>(t.shape[0]), in = static_cast<double>(t.shape[1]);
    const double r = name.starts_with("t_model.") ? 1.0 : static_cast<double>(rows);
    const double gemm = 2.0 * r * in * out;
    f.forward += gemm;
    f.backward += gemm;                                     // dW
    if (!name.starts_with("s_model.")) f.backward += gemm;  // dx
  }
  return f;
}

/// FLOPs of one RTB training step without replay at batch `batch` and T steps, as
/// TrajectoryEngine does it: pass 1 runs the posterior (forward) and the prior (inference) at
/// every step, pass 2 re-runs the posterior forward and then its backward at every step.
inline double rtb_step_flops(const rtb::ParameterLayout& layout, rtb::Index batch, rtb::Index T) {
  const MlpFlops f = pis_mlp_flops(layout, batch);
  return static_cast<double>(T) * (3.0 * f.forward + f.backward);
}

/// The same step done by autograd (the libtorch peer): the posterior forward is kept as a graph,
/// not recomputed, so one forward fewer; the prior is scored by inference as here.
inline double autograd_step_flops(const rtb::ParameterLayout& layout, rtb::Index batch, rtb::Index T) {
  const MlpFlops f = pis_mlp_flops(layout, batch);
  return static_cast<double>(T) * (2.0 * f.forward + f.backward);
}

/// FLOPs of sampling `batch` trajectories of T steps (one forward per step).
inline double sample_flops(const rtb::ParameterLayout& layout, rtb::Index batch, rtb::Index T) {
  return static_cast<double>(T) * pis_mlp_flops(layout, batch).forward;
}

/// FLOPs of one RTB step of a TokenConv denoiser (the masked-categorical benchmarks): forward is
/// 2·macs_per_row() per row (the time path, one row per call, not counted), backward counts dW and
/// dx for every layer, 2 × forward; this overcounts by the input convolution's dx (the embedding
/// has no input to propagate to), 1.5% at the infill sizes. As in `rtb_step_flops`, pass 1 runs
/// the posterior and the prior, pass 2 the posterior again and its backward: 3 forwards + 1
/// backward per row and step.
template <class TokenNet>
double token_conv_step_flops(const TokenNet& net, rtb::Index batch, rtb::Index T) {
  const double forward = 2.0 * static_cast<double>(net.macs_per_row()) * static_cast<double>(batch);
  return static_cast<double>(T) * (3.0 * forward + 2.0 * forward);
}

}  // namespace rtb_bench
