// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Opt-in tooling the worked examples use, outside the core library (rtb/rtb.hpp): character
/// BLEU and distinct-n, a Kneser–Ney n-gram language model (a black-box text reward), a PNG
/// writer, and a 5×7 font with lines for charts.

#include "rtb/extras/draw.hpp"
#include "rtb/extras/kneser_ney.hpp"
#include "rtb/extras/png.hpp"
#include "rtb/extras/text_metrics.hpp"
