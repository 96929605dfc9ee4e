// SPDX-License-Identifier: Apache-2.0
#pragma once
// The infill example's reward: log r(x | c) = log p_KN(ending, '$' | prefix window + middle), the
// prefix window and middle read from the state row, the ending from the condition row; a
// black-box, non-differentiable score from a character n-gram model.

#include <cstdint>
#include <span>
#include <vector>

#include <rtb/extras/kneser_ney.hpp>
#include <rtb/space.hpp>

#include "text.hpp"

namespace infill {

struct EndingLikelihood {
  const rtb::KneserNeyLM* lm;
  Layout lay;
  void log_reward(rtb::ConstMatrixView<std::int32_t> x, rtb::ConstMatrixView<std::int32_t> condition,
                  std::span<float> out) const {
    std::vector<std::int32_t> seq;
    for (rtb::Index i = 0; i < x.rows(); ++i) {
      const std::int32_t* row = rtb::row_ptr(x, i);
      const std::int32_t* ending = rtb::row_ptr(condition, i) + lay.ending_begin();
      seq.assign(row, row + lay.lookahead_begin());
      double lp = 0;
      for (int j = 0; j < lay.ending; ++j) {
        const std::int32_t w = ending[j];
        lp += lm->log_prob(seq, w);
        if (w == kEos) break;
        seq.push_back(w);
      }
      out[static_cast<std::size_t>(i)] = static_cast<float>(lp);
    }
  }
};

}  // namespace infill
