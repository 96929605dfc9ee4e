// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Sequence metrics for generated text, on token ids (characters in the infilling example).
///
/// - `sentence_bleu`: BLEU-4 of one candidate against one reference (Papineni et al.), with
///   clipped n-gram precisions p_1..p_4, brevity penalty BP = exp(1 − |ref|/|cand|) when the
///   candidate is shorter, BLEU = BP·exp(¼Σ log p_n); a zero match count is replaced by ε = 0.1
///   (NLTK's smoothing "method1", as the reference's evaluation uses).
/// - `distinct_n`: distinct n-grams / total n-grams over a set of sequences (diversity).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <vector>

#include "rtb/space.hpp"

namespace rtb {

inline double sentence_bleu(std::span<const std::int32_t> candidate, std::span<const std::int32_t> reference,
                            int max_n = 4) {
  if (candidate.empty()) return 0.0;
  double log_sum = 0;
  for (int n = 1; n <= max_n; ++n) {
    if (static_cast<int>(candidate.size()) < n) return 0.0;
    std::map<std::vector<std::int32_t>, int> ref;
    for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= reference.size(); ++i)
      ++ref[std::vector<std::int32_t>(reference.begin() + static_cast<std::ptrdiff_t>(i),
                                      reference.begin() + static_cast<std::ptrdiff_t>(i) + n)];
    int matches = 0, total = 0;
    std::map<std::vector<std::int32_t>, int> used;
    for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= candidate.size(); ++i, ++total) {
      std::vector<std::int32_t> g(candidate.begin() + static_cast<std::ptrdiff_t>(i),
                                  candidate.begin() + static_cast<std::ptrdiff_t>(i) + n);
      const auto it = ref.find(g);
      if (it != ref.end() && used[g] < it->second) {
        ++used[g];
        ++matches;
      }
    }
    const double p = matches > 0 ? static_cast<double>(matches) / total : 0.1 / total;
    log_sum += std::log(p) / max_n;
  }
  const double c = static_cast<double>(candidate.size()), r = static_cast<double>(reference.size());
  const double bp = c < r ? std::exp(1 - r / c) : 1.0;
  return bp * std::exp(log_sum);
}

inline double distinct_n(const std::vector<std::vector<std::int32_t>>& sequences, int n = 2) {
  std::set<std::vector<std::int32_t>> seen;
  std::size_t total = 0;
  for (const auto& s : sequences)
    for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= s.size(); ++i, ++total)
      seen.insert(std::vector<std::int32_t>(s.begin() + static_cast<std::ptrdiff_t>(i),
                                            s.begin() + static_cast<std::ptrdiff_t>(i) + n));
  return total ? static_cast<double>(seen.size()) / static_cast<double>(total) : 0.0;
}

}  // namespace rtb
