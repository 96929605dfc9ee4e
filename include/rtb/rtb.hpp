// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Umbrella header: everything of rtb's core CPU library. Example tooling (BLEU, Kneser–Ney,
/// PNG and chart drawing) is opt-in: rtb/extras.hpp.

#include "rtb/base.hpp"
#include "rtb/error.hpp"
#include "rtb/samples.hpp"
#include "rtb/space.hpp"

#include "rtb/concepts/denoiser.hpp"
#include "rtb/concepts/noise_process.hpp"
#include "rtb/concepts/reduction.hpp"
#include "rtb/concepts/reward.hpp"
#include "rtb/concepts/step.hpp"

#include "rtb/math/activations.hpp"
#include "rtb/math/adam.hpp"
#include "rtb/math/categorical.hpp"
#include "rtb/math/gaussian.hpp"
#include "rtb/math/logsumexp.hpp"
#include "rtb/math/philox.hpp"

#include "rtb/process/ddpm.hpp"
#include "rtb/process/gaussian_process.hpp"
#include "rtb/process/masked_categorical_process.hpp"
#include "rtb/process/noise_schedule.hpp"

#include "rtb/net/adam.hpp"
#include "rtb/net/conv1d.hpp"
#include "rtb/net/embedding.hpp"
#include "rtb/net/linear.hpp"
#include "rtb/net/lora.hpp"
#include "rtb/net/residual.hpp"
#include "rtb/net/mlp.hpp"
#include "rtb/net/model.hpp"
#include "rtb/net/parameters.hpp"
#include "rtb/net/pis_mlp.hpp"
#include "rtb/net/time_embedding.hpp"
#include "rtb/net/token_conv.hpp"
#include "rtb/net/token_mlp.hpp"
#include "rtb/net/unet.hpp"

#include "rtb/reward/function.hpp"
#include "rtb/reward/gaussian_mixture.hpp"

#include "rtb/objective/reinforce_kl.hpp"
#include "rtb/objective/relative_tb.hpp"
#include "rtb/objective/relative_vargrad.hpp"

#include "rtb/sampling/exploration.hpp"
#include "rtb/sampling/replay_buffer.hpp"

#include "rtb/train/callbacks.hpp"
#include "rtb/train/checkpoint.hpp"
#include "rtb/train/config.hpp"
#include "rtb/train/prior.hpp"
#include "rtb/train/relative_trajectory_balance.hpp"
#include "rtb/train/sample.hpp"

#include "rtb/eval/log_partition.hpp"
#include "rtb/eval/mode_coverage.hpp"

#include "rtb/io/npy.hpp"
#include "rtb/io/optimizer_state.hpp"
