// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Bringing a PyTorch prior's training state: Adam's moments and step count, and a saved log Z,
/// as .npy files. The reference fine-tunes starting from the prior checkpoint's optimiser state;
/// this is how a run here can do the same. PyTorch keeps Adam's state per parameter tensor, so it
/// is exported by parameter name beside the weights:
///
///     for name, p in model.named_parameters():
///         st = optimizer.state[p]
///         numpy.save(f"{dir}/exp_avg/{name}.npy", st["exp_avg"].numpy())
///         numpy.save(f"{dir}/exp_avg_sq/{name}.npy", st["exp_avg_sq"].numpy())
///     numpy.save(f"{dir}/step.npy", numpy.array(float(st["step"])))
///     numpy.save(f"{dir}/log_z.npy", log_z.detach().numpy())          # if the model learns one
///
/// and read with load_adam_state(trainer.optimizer(), model.layout(), dir) and
/// trainer.set_learned_log_z(load_npy_scalar<float>(dir + "/log_z.npy")). Buffers (never trained)
/// have no moments and keep 0.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "rtb/error.hpp"
#include "rtb/io/npy.hpp"
#include "rtb/net/adam.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

/// The single value of a .npy file holding one element (a 0-d array, or shape [1] / [1, 1]).
template <class T>
T load_npy_scalar(const std::filesystem::path& path) {
  const NpyArray a = read_npy(path);
  if (a.size() != 1)
    throw ShapeError(detail::message("load_npy_scalar: ", path.string(), " holds ", a.size(),
                                     " values; save a single number (numpy.array(x))"));
  const T v = a.to_vector<T>()[0];
  if constexpr (std::is_floating_point_v<T>)
    if (!std::isfinite(static_cast<double>(v)))
      throw NonFiniteError(detail::message("load_npy_scalar: ", path.string(), " holds ", v, "; it must be finite"));
  return v;
}

/// Reads Adam's first and second moments (by parameter name, `dir`/exp_avg/<name>.npy and
/// `dir`/exp_avg_sq/<name>.npy) and its step count (`dir`/step.npy) into `adam`, whose entries
/// follow `layout`. All or nothing: every file is checked (presence, size, finiteness, v ≥ 0)
/// before anything changes.
template <class S, class Space>
void load_adam_state(Adam<S, Space>& adam, const ParameterLayout& layout, const std::string& dir) {
  if (adam.size() != layout.size())
    throw ShapeError(detail::message("load_adam_state: the optimiser has ", adam.size(), " entries, the layout ",
                                     layout.size(), "; pass the layout of the model it optimises"));
  std::vector<S> m(static_cast<std::size_t>(layout.size()), S(0)), v(m.size(), S(0));
  for (const ParameterTensor& t : layout.tensors()) {
    if (!t.trainable) continue;
    for (int which = 0; which < 2; ++which) {
      const std::string path = dir + (which == 0 ? "/exp_avg/" : "/exp_avg_sq/") + t.name + ".npy";
      if (!std::filesystem::exists(path))
        throw IoError(detail::message("load_adam_state: missing ", path, " for tensor '", t.name,
                                      "'; export exp_avg and exp_avg_sq of every parameter (see rtb/io/optimizer_state.hpp)"));
      const NpyArray a = read_npy(path);
      if (static_cast<Index>(a.size()) != t.size)
        throw ShapeError(detail::message("load_adam_state: ", path, " holds ", a.size(), " values, tensor '", t.name,
                                         "' has ", t.size, "; the optimiser state belongs to another architecture"));
      const std::vector<S> values = a.to_vector<S>();
      for (std::size_t i = 0; i < values.size(); ++i) {
        const S x = values[i];
        if (!std::isfinite(static_cast<double>(x)) || (which == 1 && x < S(0)))
          throw NonFiniteError(detail::message("load_adam_state: ", path, " entry ", i, " is ", x,
                                               which == 1 ? "; second moments must be finite and >= 0" : "; moments must be finite"));
        (which == 0 ? m : v)[static_cast<std::size_t>(t.offset) + i] = x;
      }
    }
  }
  const double step = load_npy_scalar<double>(dir + "/step.npy");
  if (!(step >= 0) || step != std::floor(step))
    throw InvalidArgumentError(detail::message("load_adam_state: ", dir, "/step.npy holds ", step,
                                               "; Adam's step count is a non-negative integer"));
  Space::upload(adam.first_moment(), std::span<const S>(m));
  Space::upload(adam.second_moment(), std::span<const S>(v));
  adam.set_steps(static_cast<std::int64_t>(step));
}

}  // namespace rtb
