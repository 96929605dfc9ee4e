// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Arrays and network weights as numpy .npy files (the format and its rules: rtb/io/npy_format.hpp).
///
/// Matrices: `save_npy(path, m)` writes a row-major xt::xtensor<T, 2> (or rows × cols values at a
/// pointer); `load_npy_matrix<T>(path)` reads a 2-D file back, transposing Fortran-order files.
///
/// Weights: one file per tensor, named after the tensor (`<dir>/<name>.npy`, e.g.
/// `prior/s_model.x_model.weight.npy`), in PyTorch's layout. A PyTorch model exports with
///
///     for k, v in model.state_dict().items(): numpy.save(f"{dir}/{k}.npy", v.numpy())
///
/// and loads back with the reverse. float32 and float64 files are both accepted; a file's shape
/// may differ from the tensor's by dimensions of size 1 ([1, 64] ≡ [64]); every value must be
/// finite in the model's scalar. Loading is all or nothing.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "rtb/error.hpp"
#include "rtb/io/npy_format.hpp"
#include "rtb/net/parameters.hpp"

namespace rtb {

namespace detail {
template <class T>
struct span_element {
  static constexpr bool is_span = false;
};
template <class T, std::size_t E>
struct span_element<std::span<T, E>> {
  static constexpr bool is_span = true;
  using type = T;
};
template <class T>
using params_span_t = std::remove_cvref_t<T>;
}  // namespace detail

/// What save_parameters needs: `layout()` naming the tensors and `params()` returning the flat
/// std::span of floating-point values they index (a net, or a model wrapping one).
template <class M>
concept has_parameter_layout = requires(const M& m) {
  { m.layout() } -> std::convertible_to<const ParameterLayout&>;
  requires detail::span_element<detail::params_span_t<decltype(m.params())>>::is_span;
  requires std::floating_point<
      std::remove_const_t<typename detail::span_element<detail::params_span_t<decltype(m.params())>>::type>>;
};

/// What load_parameters needs in addition: `params()` of a non-const M is a writable span.
template <class M>
concept has_writable_parameter_layout = has_parameter_layout<M> && requires(M& m) {
  requires detail::span_element<detail::params_span_t<decltype(m.params())>>::is_span;
  requires !std::is_const_v<typename detail::span_element<detail::params_span_t<decltype(m.params())>>::type>;
};

/// Writes a row-major rows × cols matrix to `path` (float32, float64, int32 or int64), atomically.
template <class T>
void save_npy(const std::filesystem::path& path, const T* data, std::size_t rows, std::size_t cols) {
  if (data == nullptr && rows * cols != 0)
    throw InvalidArgumentError(rtb::detail::message("save_npy: ", path.string(), ": null data for a ", rows, " x ",
                                                    cols, " matrix; pass the matrix's first element"));
  write_npy(path, {rows, cols}, std::span<const T>(data, rows * cols));
}
template <class T>
void save_npy(const std::filesystem::path& path, const xt::xtensor<T, 2>& m) {
  save_npy(path, m.data(), m.shape()[0], m.shape()[1]);
}

/// Reads a 2-D .npy file as a row-major matrix of T (values converted from the file's dtype).
/// Throws ShapeError when the file is not 2-D, IoError/SizeLimitError as read_npy.
template <class T>
xt::xtensor<T, 2> load_npy_matrix(const std::filesystem::path& path, const NpyReadOptions& opt = {}) {
  const NpyArray a = read_npy(path, opt);
  if (a.shape.size() != 2)
    throw ShapeError(rtb::detail::message("load_npy_matrix: ", path.string(), " holds a ", a.shape.size(),
                                          "-D array of shape ", detail::shape_string(a.shape),
                                          "; expected a 2-D matrix (rows, columns): save it as a.reshape(len(a), -1)"));
  auto m = xt::xtensor<T, 2>::from_shape({a.shape[0], a.shape[1]});
  const std::vector<T> v = a.to_vector<T>();
  std::copy(v.begin(), v.end(), m.data());
  return m;
}

/// Writes every tensor of `model` to `<dir>/<name>.npy` (creating dir), each atomically.
template <class M>
requires has_parameter_layout<M>
void save_parameters(const M& model, const std::string& dir) {
  using S = std::remove_const_t<typename detail::span_element<detail::params_span_t<decltype(model.params())>>::type>;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError(detail::message("save_parameters: cannot create directory ", dir, ": ", ec.message()));
  const std::span<const S> params = model.params();
  const ParameterLayout& layout = model.layout();
  for (const ParameterTensor& t : layout.tensors()) {
    if (t.offset < 0 || t.size < 0 || static_cast<std::size_t>(t.offset + t.size) > params.size())
      throw InvalidArgumentError(detail::message("save_parameters: tensor '", t.name, "' spans [", t.offset, ", ",
                                                 t.offset + t.size, ") but the model has ", params.size(),
                                                 " parameters; the layout does not describe params()"));
    const std::vector<std::size_t> shape(t.shape.begin(), t.shape.end());
    write_npy(dir + "/" + t.name + ".npy", shape,
              params.subspan(static_cast<std::size_t>(t.offset), static_cast<std::size_t>(t.size)));
  }
}

/// Reads every tensor of `model` from `<dir>/<name>.npy`, checking presence, dtype, shape and
/// finiteness of each before changing anything. A buffer (a tensor that is never trained, e.g.
/// fixed Fourier frequencies) is loaded when its file is there, so a net trained with other
/// values loads with its own, and keeps the value the net computes when the file is missing.
template <class M>
requires has_writable_parameter_layout<M>
void load_parameters(M& model, const std::string& dir) {
  using S = typename detail::span_element<detail::params_span_t<decltype(model.params())>>::type;
  const std::span<S> params = model.params();
  std::vector<S> staged(params.begin(), params.end());  // all or nothing
  const ParameterLayout& layout = std::as_const(model).layout();
  for (const ParameterTensor& t : layout.tensors()) {
    if (t.offset < 0 || t.size < 0 || static_cast<std::size_t>(t.offset + t.size) > params.size())
      throw InvalidArgumentError(detail::message("load_parameters: tensor '", t.name, "' spans [", t.offset, ", ",
                                                 t.offset + t.size, ") but the model has ", params.size(),
                                                 " parameters; the layout does not describe params()"));
    const std::string path = dir + "/" + t.name + ".npy";
    if (!std::filesystem::exists(path)) {
      if (!t.trainable) continue;  // a buffer (fixed frequencies, say) keeps the value the net computes
      throw IoError(detail::message("load_parameters: missing weight file ", path, " for tensor '", t.name,
                                    "'; export every tensor of the model (see rtb/io/npy.hpp)"));
    }
    NpyArray a;
    try {
      a = read_npy(path);
    } catch (const SizeLimitError& e) {
      throw SizeLimitError(detail::message("load_parameters: tensor '", t.name, "': ", e.what()));
    } catch (const IoError& e) {
      throw IoError(detail::message("load_parameters: tensor '", t.name, "': ", e.what()));
    }
    if (a.dtype != NpyDtype::Float32 && a.dtype != NpyDtype::Float64)
      throw IoError(detail::message("load_parameters: ", path, " holds ", detail::npy_dtype_name(a.dtype),
                                    " values; weight files are float32 or float64: re-export it with numpy.save"));
    std::vector<Index> squeezed_file, squeezed_want;  // [1, 64] and [64] are the same tensor
    for (std::size_t d : a.shape)
      if (d != 1) squeezed_file.push_back(static_cast<Index>(d));
    for (Index d : t.shape)
      if (d != 1) squeezed_want.push_back(d);
    if (squeezed_file != squeezed_want || a.size() != static_cast<std::size_t>(t.size)) {
      std::string want;
      for (Index d : t.shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      throw ShapeError(detail::message("load_parameters: ", path, " has shape ", detail::shape_string(a.shape),
                                       " but tensor '", t.name, "' needs [", want,
                                       "]; the file belongs to a different architecture"));
    }
    const std::vector<S> values = a.to_vector<S>();
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(static_cast<double>(values[i])))
        throw NonFiniteError(detail::message(
            "load_parameters: ", path, " value ", i, " of ", values.size(), " is ", static_cast<double>(values[i]),
            " as ", sizeof(S) == 4 ? "float32" : "float64", "; weights must be finite: check the export"));
      staged[static_cast<std::size_t>(t.offset) + i] = values[i];
    }
  }
  std::copy(staged.begin(), staged.end(), params.begin());
}

}  // namespace rtb
