// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Network weights as numpy .npy files, one per tensor, named after the tensor
/// (`<dir>/<name>.npy`, e.g. `prior/s_model.x_model.weight.npy`), in PyTorch's layout. A
/// PyTorch model exports with
///
///     for k, v in model.state_dict().items(): numpy.save(f"{dir}/{k}.npy", v.numpy())
///
/// and loads back with the reverse. float32 and float64 files are both accepted.

#include <concepts>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "rtb/error.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

/// Something that holds named parameters: an rtb::Model (a net with its weights).
template <class M>
concept HasNamedParameters = requires(M& m, const M& cm) {
  typename M::Scalar;
  { cm.layout() } -> std::convertible_to<const ParameterLayout&>;
  { m.params() } -> std::convertible_to<std::span<typename M::Scalar>>;
  { cm.params() } -> std::convertible_to<std::span<const typename M::Scalar>>;
};

/// Writes every tensor of `net` to `<dir>/<name>.npy` (creating dir).
template <HasNamedParameters N>
void save_parameters(const N& net, const std::string& dir) {
  using S = typename N::Scalar;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError(detail::message("save_parameters: cannot create directory ", dir, ": ", ec.message()));
  const auto params = net.params();
  for (const ParameterTensor& t : net.layout().tensors()) {
    std::vector<std::size_t> shape(t.shape.begin(), t.shape.end());
    std::vector<S> data(params.begin() + t.offset, params.begin() + t.offset + t.size);
    const std::string path = dir + "/" + t.name + ".npy";
    try {
      xt::dump_npy(path + ".tmp", xt::adapt(data, shape));
    } catch (const std::exception& e) {
      throw IoError(detail::message("save_parameters: writing ", path, " failed: ", e.what()));
    }
    std::filesystem::rename(path + ".tmp", path);
  }
}

/// Reads every tensor of `net` from `<dir>/<name>.npy`; checks presence and shape of each.
template <HasNamedParameters N>
void load_parameters(N& net, const std::string& dir) {
  using S = typename N::Scalar;
  auto params = net.params();
  std::vector<S> staged(params.begin(), params.end());  // all or nothing
  for (const ParameterTensor& t : net.layout().tensors()) {
    const std::string path = dir + "/" + t.name + ".npy";
    if (!std::filesystem::exists(path))
      throw IoError(detail::message("load_parameters: missing weight file ", path, " for tensor '", t.name,
                                    "'; export every tensor of the model (see rtb/io/npy.hpp)"));
    xt::xarray<double> a;
    try {
      try {
        a = xt::load_npy<float>(path);
      } catch (const std::runtime_error&) {
        a = xt::load_npy<double>(path);
      }
    } catch (const std::exception& e) {
      throw IoError(detail::message("load_parameters: ", path, " is not a float32/float64 .npy file (", e.what(),
                                    "); re-export it with numpy.save"));
    }
    std::vector<Index> shape(a.shape().begin(), a.shape().end());
    std::vector<Index> squeezed_file, squeezed_want;  // [1, 64] and [64] are the same tensor
    for (Index d : shape)
      if (d != 1) squeezed_file.push_back(d);
    for (Index d : t.shape)
      if (d != 1) squeezed_want.push_back(d);
    if (squeezed_file != squeezed_want || static_cast<Index>(a.size()) != t.size) {
      std::string got, want;
      for (Index d : shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
      for (Index d : t.shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      throw ShapeError(detail::message("load_parameters: ", path, " has shape [", got, "] but tensor '", t.name,
                                       "' needs [", want, "]; the file belongs to a different architecture"));
    }
    for (Index i = 0; i < t.size; ++i) staged[static_cast<std::size_t>(t.offset + i)] = static_cast<S>(a.data()[i]);
  }
  std::copy(staged.begin(), staged.end(), params.begin());
}

}  // namespace rtb
