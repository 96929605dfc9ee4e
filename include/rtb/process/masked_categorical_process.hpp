// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Absorbing-state (masked) discrete diffusion over sequences of L tokens from a vocabulary of V
/// real tokens plus MASK (id V).
///
/// Columns are *generated* (masked at x_0), *fixed* (copied from the row's condition, e.g. the text
/// to infill around, and never masked: fixed column k takes condition column k, in column order) or
/// *always masked* (MASK throughout: positions the denoiser must treat as unknown, e.g. text after a
/// span whose marginal is wanted). Conditions may carry more columns than the fixed ones (say, an
/// ending that a denoiser or a reward reads); the process reads only the first ones. The denoiser
/// outputs logits [L, V] per row
/// (row-major, position by position). At step k every generated position that is still masked is revealed with
/// probability ρ_k (the schedule, noise_schedule.hpp), independently, to a token drawn from softmax(logits[position])
/// over the V real tokens; revealed tokens never change. So
///
///     log p(x_{k+1} | x_k) = Σ_{i generated, x_k[i] = MASK} { log(1 − ρ_k)                     if x_{k+1}[i] = MASK
///                                                          { log ρ_k + log softmax(ℓ_i)[x_{k+1}[i]] otherwise
///
/// and positions already revealed, or fixed, contribute exactly 0. Log-probabilities are computed
/// in the Scalar type (float by default) as logit − logsumexp(logits). The gradient with respect to
/// the logits is w·(onehot − softmax) at revealed positions and 0 elsewhere; the reveal decision has
/// no learnable part.
///
/// Differences from the reference (`diffusion_lm/`, SEDD's absorbing graph): there, the step
/// distribution is built from "scores" and a `staggered_score` that returns its input unchanged (a
/// no-op), so each masked position's next state is normalised over all V+1 entries with the
/// stay-masked weight fixed at 1 and the reveal weight (1 − e^{−dσ})·Σ_j s_j set by the network:
/// the network thereby also controls when positions are revealed. Here the reveal probability is
/// the schedule's ρ_k and the network only chooses the token, so p(stay) and p(reveal) are exact
/// and no bf16-rounded scores are normalised; log-probabilities use logsumexp in float instead of
/// normalising probabilities. The last step reveals every remaining position (ρ_{T−1} = 1), so
/// no separate "denoise" step with a different normaliser is needed.
///
/// Exploration is a mixing weight ε ∈ [0, 1]: tokens are sampled from (1 − ε)·softmax + ε·uniform;
/// densities never use it. Its default is 0.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "rtb/concepts/step.hpp"
#include "rtb/space.hpp"
#include "rtb/error.hpp"
#include "rtb/math/categorical.hpp"
#include "rtb/math/masked_step.hpp"
#include "rtb/math/philox.hpp"
#include "rtb/process/noise_schedule.hpp"

namespace rtb {

template <class S = float>
class MaskedCategoricalProcess {
 public:
  using Scalar = S;
  using Value = std::int32_t;

  struct Options {
    Index length = 0;      ///< L: columns of a state row
    Index vocab = 0;       ///< V: real tokens; MASK is V
    Index num_steps = 16;  ///< T
    MaskingSchedule schedule = MaskingSchedule::Linear;
    std::vector<char> generated = {};  ///< L flags, 1 = generated; empty = every column generated
    std::vector<Index> masked = {};    ///< non-generated columns that stay MASK (not from the condition)
  };

  explicit MaskedCategoricalProcess(Options o) : o_(std::move(o)), schedule_(o_.num_steps, o_.schedule) {
    if (o_.length <= 0)
      throw InvalidArgumentError(detail::message("MaskedCategoricalProcess: length must be positive, got ", o_.length));
    if (o_.vocab < 2)
      throw InvalidArgumentError(detail::message("MaskedCategoricalProcess: vocab must be at least 2, got ", o_.vocab));
    if (o_.generated.empty()) o_.generated.assign(static_cast<std::size_t>(o_.length), 1);
    if (static_cast<Index>(o_.generated.size()) != o_.length)
      throw ShapeError(detail::message("MaskedCategoricalProcess: ", o_.generated.size(),
                                       " generated flags for length ", o_.length, "; give one flag per column"));
    std::vector<char> role(o_.generated.begin(), o_.generated.end());  // 0 fixed, 1 generated, 2 masked
    for (Index j : o_.masked) {
      if (j < 0 || j >= o_.length || role[static_cast<std::size_t>(j)] != 0)
        throw InvalidArgumentError(detail::message("MaskedCategoricalProcess: always-masked column ", j,
                                                   " is out of range, repeated or generated"));
      role[static_cast<std::size_t>(j)] = 2;
    }
    for (Index j = 0; j < o_.length; ++j) {
      const char r = role[static_cast<std::size_t>(j)];
      (r == 1 ? gen_ : r == 0 ? fixed_ : masked_).push_back(j);
    }
    if (gen_.empty()) throw InvalidArgumentError("MaskedCategoricalProcess: no generated column; nothing to sample");
    for (Index k = 0; k < o_.num_steps; ++k) {
      const double rho = schedule_.reveal(k), back = schedule_.remask(k);
      log_reveal_.push_back(static_cast<S>(std::log(rho)));
      log_stay_.push_back(rho >= 1 ? -std::numeric_limits<S>::infinity() : static_cast<S>(std::log1p(-rho)));
      reveal_.push_back(static_cast<S>(rho));
      remask_.push_back(static_cast<S>(back));
      log_remask_.push_back(static_cast<S>(std::log(back)));
      log_keep_.push_back(back >= 1 ? -std::numeric_limits<S>::infinity() : static_cast<S>(std::log1p(-back)));
    }
  }

  Index state_dim() const { return o_.length; }
  Index output_dim() const { return o_.length * o_.vocab; }
  Index num_steps() const { return o_.num_steps; }
  Index vocab() const { return o_.vocab; }
  Value mask_token() const { return static_cast<Value>(o_.vocab); }
  const std::vector<Index>& generated_columns() const { return gen_; }
  const std::vector<Index>& fixed_columns() const { return fixed_; }
  const std::vector<Index>& masked_columns() const { return masked_; }
  const MaskingScheduleTable& schedule() const { return schedule_; }
  /// Conditioning at a step: the noise level α_k (expected fraction of generated columns masked).
  S time(Index step) const { return static_cast<S>(schedule_.alpha(step)); }
  /// Condition columns the process reads: one per fixed column.
  Index condition_dim() const { return static_cast<Index>(fixed_.size()); }
  /// No exploration unless asked for.
  double default_exploration() const { return 0.0; }

  /// Checks conditions at the door: real tokens in [0, V) in the columns that fill fixed columns.
  void check_conditions(ConstMatrixView<Value> c, const char* what) const {
    if (c.cols() < condition_dim())
      throw ShapeError(detail::message(what, ": conditions have ", c.cols(), " columns, the process fills ",
                                       condition_dim(), " fixed columns from them; pass one token per fixed column"));
    for (Index r = 0; r < c.rows(); ++r)
      for (Index k = 0; k < condition_dim(); ++k) {
        const Value v = c(r, k);
        if (v < 0 || v >= mask_token())
          throw InvalidArgumentError(detail::message(what, ": row ", r, " condition column ", k, " (fixed column ",
                                                     fixed_[static_cast<std::size_t>(k)], ") holds token ", v,
                                                     v == mask_token() ? " (MASK)" : "", "; a real token in [0, ",
                                                     o_.vocab, ") is expected"));
      }
  }

  /// Checks end states (data, replay): real tokens in [0, V) everywhere except the always-masked
  /// columns, which must hold MASK.
  void check_end_states(ConstMatrixView<Value> x, const char* what) const {
    if (x.cols() != o_.length)
      throw ShapeError(detail::message(what, ": ", x.cols(), " columns, the process has ", o_.length));
    for (Index r = 0; r < x.rows(); ++r) {
      for (Index j : masked_)
        if (x(r, j) != mask_token())
          throw InvalidArgumentError(detail::message(what, ": row ", r, " column ", j, " holds token ", x(r, j),
                                                     " where the process keeps MASK"));
      for (const auto* cols : {&gen_, &fixed_})
        for (Index j : *cols) {
          const Value v = x(r, j);
          if (v < 0 || v >= mask_token())
            throw InvalidArgumentError(detail::message(what, ": row ", r, " column ", j, " holds token ", v,
                                                       v == mask_token() ? " (MASK)" : "",
                                                       "; end states need real tokens in [0, ", o_.vocab, ")"));
        }
    }
  }

  /// x_0: generated and always-masked columns MASK, fixed column k from condition column k.
  void initial_state(const Rows<Value>& rows, const math::NoiseKey&, MatrixView<Value> x0) const {
    RTB_ASSERT(fixed_.empty() || rows.condition.cols() >= condition_dim());
    for (Index r = 0; r < x0.rows(); ++r) {
      for (Index j : gen_) x0(r, j) = mask_token();
      for (Index j : masked_) x0(r, j) = mask_token();
      for (std::size_t k = 0; k < fixed_.size(); ++k) x0(r, fixed_[k]) = rows.condition(r, static_cast<Index>(k));
    }
  }

  /// The step's constants, as the row functions of rtb/math/masked_step.hpp (and the CUDA
  /// kernels) take them; `uniform_mix` is clamped to [0, 1].
  math::MaskedStepConstants<S, Value> step_constants(Index step, S uniform_mix = S(0)) const {
    const auto k = static_cast<std::size_t>(step);
    return {o_.vocab, mask_token(), reveal_[k], log_stay_[k], log_reveal_[k], std::clamp(uniform_mix, S(0), S(1))};
  }

  void sample_step(const Step<Value, S>& s, ConstMatrixView<S> out, S uniform_mix, const math::NoiseKey& key,
                   MatrixView<Value> x_next) const {
    const auto c = step_constants(s.step, uniform_mix);
    for (Index r = 0; r < s.rows(); ++r)
      math::masked_sample_row(row_ptr(s.x, r), row_ptr(out, r), o_.length, gen_.data(), static_cast<Index>(gen_.size()),
                              c, key, static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                              row_ptr(x_next, r));
  }

  void log_prob_step(const Step<Value, S>& s, ConstMatrixView<Value> x_next, ConstMatrixView<S> out,
                     std::span<S> acc) const {
    const auto c = step_constants(s.step);
    for (Index r = 0; r < s.rows(); ++r)
      acc[static_cast<std::size_t>(r)] += math::masked_log_prob_row(
          row_ptr(s.x, r), row_ptr(x_next, r), row_ptr(out, r), gen_.data(), static_cast<Index>(gen_.size()), c);
  }

  void d_log_prob_d_output(const Step<Value, S>& s, ConstMatrixView<Value> x_next, ConstMatrixView<S> out,
                           std::span<const S> weight, MatrixView<S> d_out) const {
    d_out.setZero();
    const auto c = step_constants(s.step);
    for (Index r = 0; r < s.rows(); ++r)
      math::masked_adjoint_row(row_ptr(s.x, r), row_ptr(x_next, r), row_ptr(out, r), gen_.data(),
                               static_cast<Index>(gen_.size()), weight[static_cast<std::size_t>(r)], c,
                               row_ptr(d_out, r));
  }

  /// Re-masking (s.x = x_{k+1}): each generated position revealed in x_{k+1} was masked at step k
  /// with probability (α_k − α_{k+1})/(1 − α_{k+1}); masked ones stay masked; fixed ones are kept.
  void sample_backward_step(const Step<Value, S>& s, const math::NoiseKey& key, MatrixView<Value> x) const {
    const S q = remask_[static_cast<std::size_t>(s.step)];
    for (Index r = 0; r < x.rows(); ++r) {
      const Value* xn = row_ptr(s.x, r);
      Value* xr = row_ptr(x, r);
      std::copy_n(xn, o_.length, xr);
      for (Index j : gen_) {
        if (xn[j] == mask_token()) continue;
        const math::Uint4 u = key.block(static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                                        static_cast<std::uint32_t>(j));
        if (math::uniform01<S>(u.v[0]) < q) xr[j] = mask_token();
      }
    }
  }

  /// acc[r] += log p_B(x_k | x_{k+1}) (s.x = x_{k+1}).
  void log_prob_backward_step(const Step<Value, S>& s, ConstMatrixView<Value> x, std::span<S> acc) const {
    const S lm = log_remask_[static_cast<std::size_t>(s.step)], lk = log_keep_[static_cast<std::size_t>(s.step)];
    for (Index r = 0; r < x.rows(); ++r) {
      const Value* xr = row_ptr(x, r);
      const Value* xn = row_ptr(s.x, r);
      S sum = S(0);
      for (Index j : gen_)
        if (xn[j] != mask_token()) sum += xr[j] == mask_token() ? lm : lk;
      acc[static_cast<std::size_t>(r)] += sum;
    }
  }

  /// x_k | x_T (s.x = x_T): each generated position masked with probability α_k, else x_T's token.
  void sample_given_end(const Step<Value, S>& s, const math::NoiseKey& key, MatrixView<Value> x) const {
    const S alpha = static_cast<S>(schedule_.alpha(s.step));
    for (Index r = 0; r < x.rows(); ++r) {
      std::copy_n(row_ptr(s.x, r), o_.length, row_ptr(x, r));
      for (Index j : gen_) {
        const math::Uint4 u = key.block(static_cast<std::uint64_t>(s.first_row + r), static_cast<std::uint32_t>(s.step),
                                        static_cast<std::uint32_t>(j));
        if (math::uniform01<S>(u.v[0]) < alpha) x(r, j) = mask_token();
      }
    }
  }

  /// acc[r] += E[log p(x_{k+1} | x_k)] over x_{k+1} | x_k, x_T: every masked generated position is
  /// revealed (to x_T's token) with probability ρ_k, so the expectation is
  /// Σ_masked [ρ_k·(log ρ_k + log softmax(ℓ_i)[x_T[i]]) + (1 − ρ_k)·log(1 − ρ_k)]:
  /// the masked-diffusion cross-entropy weighted by the schedule.
  void expected_log_prob_step(const Step<Value, S>& s, ConstMatrixView<Value> x_end, ConstMatrixView<S> out,
                              std::span<S> acc) const {
    const S rho = reveal_[static_cast<std::size_t>(s.step)];
    const S constant = rho * log_reveal_[static_cast<std::size_t>(s.step)] +
                       (rho < S(1) ? (S(1) - rho) * log_stay_[static_cast<std::size_t>(s.step)] : S(0));
    const Index vocab = o_.vocab;
    for (Index r = 0; r < s.rows(); ++r) {
      S sum = S(0);
      for (Index j : gen_)
        if (s.x(r, j) == mask_token())
          sum += constant +
                 rho * math::log_softmax_at(row_ptr(out, r) + j * vocab, vocab, static_cast<Index>(x_end(r, j)));
      acc[static_cast<std::size_t>(r)] += sum;
    }
  }

  void d_expected_log_prob_d_output(const Step<Value, S>& s, ConstMatrixView<Value> x_end, ConstMatrixView<S> out,
                                    std::span<const S> weight, MatrixView<S> d_out) const {
    d_out.setZero();
    const S rho = reveal_[static_cast<std::size_t>(s.step)];
    const Index vocab = o_.vocab;
    for (Index r = 0; r < s.rows(); ++r)
      for (Index j : gen_)
        if (s.x(r, j) == mask_token())
          math::d_log_softmax_at(row_ptr(out, r) + j * vocab, vocab, static_cast<Index>(x_end(r, j)),
                                 weight[static_cast<std::size_t>(r)] * rho, row_ptr(d_out, r) + j * vocab);
  }

 private:
  Options o_;
  MaskingScheduleTable schedule_;
  std::vector<Index> gen_, fixed_, masked_;
  std::vector<S> log_reveal_, log_stay_, reveal_, remask_, log_remask_, log_keep_;
};

}  // namespace rtb
