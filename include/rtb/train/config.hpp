// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The trainer's run-time knobs, one aggregate: `rtb::Config{.batch_size = 256, .beta = 1.0}`.
/// The defaults are the reference's 2-D setup (batch 500, β = 1, Adam lr 1e-3, log Z step 0.1,
/// exploration held then decayed as the reference's) except where we measured better and say
/// so: log Z moves by plain gradient descent, not Adam (LogZOptimizer below), and the default
/// exploration level is relative to the process's step (sampling/exploration.hpp).

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "rtb/detail/flush_denormal.hpp"
#include "rtb/space.hpp"
#include "rtb/sampling/exploration.hpp"
#include "rtb/sampling/replay_buffer.hpp"

namespace rtb {

/// What a reward of log r = −∞ (r = 0) does to a training step.
enum class ZeroRewardPolicy {
  Throw,  ///< throw ZeroRewardError naming the sample (default: r = 0 on the sampler's support is
          ///< usually a bug in the reward)
  Skip    ///< leave the sample out of the loss and count it in StepStats::skipped
};

/// How log Z is updated. ∂²L/∂(log Z)² = 1 for L = mean ½δ², so plain gradient descent with
/// step η moves log Z a fraction η of the way to the batch optimum every step, whatever the scale
/// of δ. Adam (the reference's choice) divides by a running RMS of past gradients instead, which
/// after a phase of large residuals (exploration) makes log Z lag for ~1/(1 − β₂) steps.
enum class LogZOptimizer { Sgd, Adam };

/// Cosine decay of the learning rates from iteration `start` to `end`, down to `final_ratio` of
/// their initial values (constant before `start`, and after `end`). end <= start disables it.
struct LearningRateDecay {
  std::int64_t start = 0;
  std::int64_t end = 0;
  double final_ratio = 0.0;

  double factor(std::int64_t k) const {
    if (end <= start || k <= start) return 1.0;
    const double progress = std::min(1.0, static_cast<double>(k - start) / static_cast<double>(end - start));
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + std::cos(3.14159265358979323846 * progress));
  }
};

struct Config {
  Index batch_size = 500;              ///< trajectories per step
  double beta = 1.0;                   ///< β: the target is p_θ(x)·r(x)^β
  double learning_rate = 1e-3;         ///< Adam step size of the posterior's parameters
  double log_z_learning_rate = 0.1;    ///< step size of log Z (much larger than the network's, as in the reference)
  LogZOptimizer log_z_optimizer = LogZOptimizer::Sgd;
  double log_z_init = 0.0;             ///< initial log Z (every entry of the table)
  Index log_z_table = 1;               ///< learned log Z entries: 1 = one scalar; K > 1 = one per condition id,
                                       ///< the integer in condition column `log_z_column`, in [0, K)
  Index log_z_column = 0;
  LearningRateDecay decay{};           ///< optional cosine decay of both learning rates
  double loss_cutoff = 0.0;            ///< c in ½·max(δ² − c, 0); 0.1 in the reference's image/text runs
  double kl_weight = 1.0;              ///< REINFORCE+KL: weight of the squared log-ratio
  Index group_size = 0;                ///< rows i, i+1… sharing a conditioning, for objectives that estimate
                                       ///< log Z per group (relative VarGrad); 0 = the whole batch
  ExplorationSchedule exploration{};   ///< exploration level in the process's unit (its default held, → 0 by 4500)
  std::int64_t prior_behaviour_every = 0;  ///< every k-th step samples the batch from the prior (0 = never)
  double replay_fraction = 0.0;        ///< share of each batch re-noised from replayed end points
  Index replay_capacity = 10000;       ///< end points kept
  ReplayPriority replay_priority = ReplayPriority::Uniform;
  double step_fraction = 1.0;          ///< share of steps back-propagated per step (unbiased, noisier)
  ZeroRewardPolicy on_zero_reward = ZeroRewardPolicy::Throw;
  double max_grad_norm = 0.0;          ///< clip the posterior's gradient norm; 0 disables
  Index condition_dim = 0;             ///< condition columns per row; 0 = as many as the process and the net read
  Index threads = 0;                   ///< worker threads, the caller included; 0 = all cores
  Index block_rows = 128;              ///< rows per parallel block (fixed: results do not depend on threads)
  std::uint64_t seed = 0;              ///< every random draw is keyed by this
  bool flush_denormals = true;         ///< run each call with subnormals flushed to zero (FTZ/DAZ), restoring the
                                       ///< caller's mode after; false computes in the caller's own mode (and
                                       ///< gradual underflow, at up to 3× the time with a trained prior). Results
                                       ///< are the same (docs/algorithm.md, "Floating-point mode")
  Precision precision = Precision::Float32;  ///< the denoisers' products: Float32, or BFloat16 operands with
                                             ///< float sums (weights, Adam, log-densities stay float;
                                             ///< docs/algorithm.md, "Precision"); float nets only
};

/// What one training step did.
struct StepStats {
  std::int64_t iteration = 0;   ///< the step's index (0 for the first)
  double loss = 0;
  double learned_log_z = 0;     ///< the learned log Z after the step (the table's mean, or the batch's
                                ///< estimate): below log Z by the sampler's KL; evaluate() gives log_z_is
  double mean_log_r = 0;        ///< over used rows
  double mean_delta = 0;        ///< mean residual before the step
  double mean_log_ratio = 0;    ///< mean Σlog p_φ − Σlog p_θ (a KL(p_φ‖p_θ) estimate on-policy)
  double exploration = 0;       ///< exploration level used (the process's unit)
  double grad_norm = 0;         ///< before clipping
  Index skipped = 0;            ///< rows with log r = −∞ left out
  Index replayed = 0;           ///< off-policy rows from the replay buffer
  Index given = 0;              ///< off-policy rows from end points given to step(conditions, end_states)
  bool from_prior = false;      ///< the batch was sampled from the prior (Config::prior_behaviour_every)
};

}  // namespace rtb
