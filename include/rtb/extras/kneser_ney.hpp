// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// An interpolated Kneser–Ney n-gram language model over integer tokens: a real, black-box,
/// non-differentiable reward for sequence posteriors (the infilling example scores an ending given
/// a beginning and an infill with it).
///
/// For order n, context h (the last n−1 tokens) and absolute discount D:
///
///     p(w | h) = max(c(h w) − D, 0)/c(h) + D·N₁₊(h •)/c(h) · p(w | h⁻)     (c(h) > 0)
///     p(w | h) = p(w | h⁻)                                                  (c(h) = 0)
///
/// where h⁻ drops the oldest token, the highest order uses raw counts, lower orders use
/// continuation counts (the number of distinct tokens seen before the n-gram), and the recursion
/// ends in the continuation unigram interpolated with a uniform distribution over the vocabulary,
/// so every token has positive probability and Σ_w p(w | h) = 1 for every h.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "rtb/space.hpp"
#include "rtb/error.hpp"

namespace rtb {

class KneserNeyLM {
 public:
  /// `order` ≥ 1, tokens in [0, vocab), `discount` D in (0, 1).
  KneserNeyLM(int order, int vocab, double discount = 0.75) : n_(order), V_(vocab), D_(discount) {
    if (order < 1 || order > kMaxOrder || vocab < 1 || !(discount > 0 && discount < 1))
      throw InvalidArgumentError(detail::message("KneserNeyLM: need 1 <= order <= 8, vocab >= 1 and 0 < discount < 1, got ",
                                                 order, ", ", vocab, ", ", discount));
    if (static_cast<double>(order) * std::log2(static_cast<double>(vocab) + 1) > 60)
      throw InvalidArgumentError(detail::message("KneserNeyLM: order ", order, " over ", vocab,
                                                 " tokens does not fit 64-bit n-gram keys; lower the order"));
    levels_.resize(static_cast<std::size_t>(order));
  }

  int order() const { return n_; }
  int vocab() const { return V_; }

  /// Adds one sequence; `pad` (repeated order−1 times) is prepended as the start context.
  void add(std::span<const std::int32_t> seq, std::int32_t pad) {
    std::vector<std::int32_t> s(static_cast<std::size_t>(n_ - 1), pad);
    s.insert(s.end(), seq.begin(), seq.end());
    for (std::int32_t t : s)
      if (t < 0 || t >= V_) throw InvalidArgumentError(detail::message("KneserNeyLM::add: token ", t, " outside [0, ", V_, ")"));
    // highest order: raw counts of every n-gram ending at a real token
    for (std::size_t i = static_cast<std::size_t>(n_ - 1); i < s.size(); ++i)
      for (int k = 1; k <= n_; ++k) {
        const std::uint64_t gram = key(s.data() + i + 1 - k, k);
        if (k == n_) {
          bump(n_ - 1, gram, s[i]);
        } else if (!seen_[static_cast<std::size_t>(k)].count(key(s.data() + i - k, k + 1))) {
          // continuation count: a new left neighbour (k+1)-gram for this k-gram
          bump(k - 1, gram, s[i]);
        }
        if (k < n_) seen_[static_cast<std::size_t>(k)].insert(key(s.data() + i - k, k + 1));
      }
    ++sequences_;
  }

  /// log p(w | context), context = the preceding tokens (only the last order−1 are used).
  double log_prob(std::span<const std::int32_t> context, std::int32_t w) const {
    if (w < 0 || w >= V_) throw InvalidArgumentError(detail::message("KneserNeyLM::log_prob: token ", w, " outside [0, ", V_, ")"));
    if (sequences_ == 0) throw InvalidArgumentError("KneserNeyLM::log_prob: the model has seen no data");
    const int h = std::min<int>(n_ - 1, static_cast<int>(context.size()));
    return std::log(prob(context.data() + context.size() - h, h, w));
  }

  /// Σ_i log p(seq[i] | pad^{order−1} + preceding) over the whole sequence.
  double log_prob_sequence(std::span<const std::int32_t> seq, std::int32_t pad) const {
    std::vector<std::int32_t> s(static_cast<std::size_t>(n_ - 1), pad);
    s.insert(s.end(), seq.begin(), seq.end());
    double lp = 0;
    for (std::size_t i = static_cast<std::size_t>(n_ - 1); i < s.size(); ++i)
      lp += log_prob(std::span<const std::int32_t>(s.data(), i), s[i]);
    return lp;
  }

 private:
  struct Counts {
    std::unordered_map<std::uint64_t, double> gram;     // count of (context, w)
    std::unordered_map<std::uint64_t, double> context;  // total count of the context
    std::unordered_map<std::uint64_t, double> types;    // distinct w after the context
  };

  std::uint64_t key(const std::int32_t* t, int k) const {
    std::uint64_t h = static_cast<std::uint64_t>(k);
    for (int i = 0; i < k; ++i) h = h * static_cast<std::uint64_t>(V_ + 1) + static_cast<std::uint64_t>(t[i]) + 1;
    return h;
  }
  void bump(int level, std::uint64_t gram, std::int32_t /*w*/) {
    Counts& c = levels_[static_cast<std::size_t>(level)];
    const std::uint64_t ctx = gram / static_cast<std::uint64_t>(V_ + 1);  // drop the last token
    if (c.gram[gram]++ == 0) c.types[ctx] += 1;
    c.context[ctx] += 1;
  }
  double prob(const std::int32_t* h, int len, std::int32_t w) const {
    const double uniform = 1.0 / static_cast<double>(V_);
    double p = uniform;
    for (int k = 0; k <= len; ++k) {  // from the unigram up to the full context
      const Counts& c = levels_[static_cast<std::size_t>(k)];
      std::int32_t g[kMaxOrder];
      std::copy(h + len - k, h + len, g);
      g[k] = w;
      const std::uint64_t gram = key(g, k + 1);
      const std::uint64_t ctx = gram / static_cast<std::uint64_t>(V_ + 1);
      const auto ci = c.context.find(ctx);
      if (ci == c.context.end()) continue;  // unseen context: keep the lower order
      const auto gi = c.gram.find(gram);
      const double cw = gi == c.gram.end() ? 0.0 : gi->second;
      const double types = c.types.at(ctx);
      p = std::max(cw - D_, 0.0) / ci->second + D_ * types / ci->second * p;
    }
    return p;
  }

  static constexpr int kMaxOrder = 8;  // keys are (vocab+1)-ary numbers in 64 bits
  int n_, V_;
  double D_;
  std::vector<Counts> levels_;  // levels_[k]: (k+1)-grams
  std::unordered_set<std::uint64_t> seen_[kMaxOrder];
  std::int64_t sequences_ = 0;
};

}  // namespace rtb
