// SPDX-License-Identifier: Apache-2.0
// Matrices and network weights as .npy files: one-call sample writer, 2-D reader, PyTorch-named
// weight files with the squeeze rule, all-or-nothing loading, and the parameter-layout contract.

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <vector>

#include <rtb/concepts/denoiser.hpp>
#include <rtb/io/npy.hpp>
#include <rtb/net/model.hpp>
#include <rtb/net/pis_mlp.hpp>

namespace fs = std::filesystem;

namespace {

/// Only what save_parameters/load_parameters ask for: a layout and a flat span. Not a Denoiser.
struct ToyModel {
  ToyModel() {
    layout_.add("encoder.weight", {2, 3});
    layout_.add("encoder.bias", {1, 3});
    values_.resize(static_cast<std::size_t>(layout_.size()));
    for (std::size_t i = 0; i < values_.size(); ++i) values_[i] = 0.25 * static_cast<double>(i);
  }
  const rtb::ParameterLayout& layout() const { return layout_; }
  std::span<double> params() { return values_; }
  std::span<const double> params() const { return values_; }
  rtb::ParameterLayout layout_;
  std::vector<double> values_;
};
static_assert(rtb::has_writable_parameter_layout<ToyModel>);
static_assert(!rtb::Denoiser<ToyModel>);
static_assert(rtb::has_writable_parameter_layout<rtb::Model<rtb::PisMlp<float>>>);
struct ReadOnlyModel {  // can be saved, not loaded
  const rtb::ParameterLayout& layout() const { return layout_; }
  std::span<const float> params() const { return {}; }
  rtb::ParameterLayout layout_;
};
static_assert(rtb::has_parameter_layout<ReadOnlyModel> && !rtb::has_writable_parameter_layout<ReadOnlyModel>);
struct IntModel {  // params() must be floating point
  const rtb::ParameterLayout& layout() const { return layout_; }
  std::span<const int> params() const { return {}; }
  rtb::ParameterLayout layout_;
};
static_assert(!rtb::has_parameter_layout<IntModel>);
static_assert(!rtb::has_parameter_layout<int>);

}  // namespace

TEST_CASE("npy: save_npy writes a matrix in one call and load_npy_matrix reads it back, Fortran files transposed") {
  const fs::path path = fs::temp_directory_path() / "rtb_npy_matrix.npy";
  xt::xtensor<float, 2> m = {{1.0f, 2.0f, 3.0f}, {4.0f, 5.0f, 6.0f}};
  rtb::save_npy(path, m);
  const auto back = rtb::load_npy_matrix<float>(path);
  CHECK(back == m);
  const double raw[6] = {1, 2, 3, 4, 5, 6};
  rtb::save_npy(path, raw, 3, 2);
  const auto d = rtb::load_npy_matrix<double>(path);
  REQUIRE(d.shape()[0] == 3);
  CHECK(d(2, 1) == 6.0);
  CHECK(d(1, 0) == 3.0);
  rtb::write_npy(path, {2, 3}, std::span<const float>(m.data(), 6), /*fortran_order=*/true);
  CHECK(rtb::load_npy_matrix<float>(path) == m);
  rtb::write_npy(path, {6}, std::vector<double>(6, 1.0));
  CHECK_THROWS_WITH_AS(rtb::load_npy_matrix<double>(path), doctest::Contains("holds a 1-D array of shape [6]"),
                       rtb::ShapeError);
  CHECK_THROWS_AS(rtb::save_npy(path, static_cast<const double*>(nullptr), 2, 2), rtb::InvalidArgumentError);
  fs::remove(path);
}

TEST_CASE("weights round-trip through one .npy file per PyTorch-named tensor") {
  const fs::path dir = fs::temp_directory_path() / "rtb_npy_test";
  fs::remove_all(dir);
  rtb::Model a(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 1, .zero_init_last = false}));
  rtb::Model b(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 2, .zero_init_last = false}));
  rtb::save_parameters(a, dir.string());
  CHECK(fs::exists(dir / "t_model.timestep_phase.npy"));
  CHECK(fs::exists(dir / "joint_model.model.3.weight.npy"));
  rtb::load_parameters(b, dir.string());
  CHECK(std::equal(a.params().begin(), a.params().end(), b.params().begin()));
  // float64 files (numpy's default) load too
  rtb::Model d(rtb::PisMlp<double>({.hidden = 16, .harmonics = 8, .seed = 3}));
  rtb::save_parameters(d, dir.string());
  rtb::load_parameters(b, dir.string());
  for (std::size_t i = 0; i < b.params().size(); ++i) CHECK(b.params()[i] == static_cast<float>(d.params()[i]));
  fs::remove_all(dir);
}

TEST_CASE("weights: any type with layout() and params() saves and loads, and [1, n] is the same tensor as [n]") {
  const fs::path dir = fs::temp_directory_path() / "rtb_npy_toy";
  fs::remove_all(dir);
  ToyModel a, b;
  for (double& v : b.values_) v = -1.0;
  rtb::save_parameters(a, dir.string());
  CHECK(rtb::read_npy(dir / "encoder.bias.npy").shape == std::vector<std::size_t>{1, 3});
  rtb::write_npy(dir / "encoder.bias.npy", {3}, std::vector<float>{1.5f, 1.75f, 2.0f});  // [3] for [1, 3], float32
  rtb::load_parameters(b, dir.string());
  CHECK(b.values_ == a.values_);
  rtb::write_npy(dir / "encoder.bias.npy", {3, 1, 1}, std::vector<double>{1.5, 1.75, 2.0});
  CHECK_NOTHROW(rtb::load_parameters(b, dir.string()));
  rtb::write_npy(dir / "encoder.bias.npy", {3, 2}, std::vector<double>(6, 0.0));
  CHECK_THROWS_WITH_AS(rtb::load_parameters(b, dir.string()),
                       doctest::Contains("has shape [3, 2] but tensor 'encoder.bias' needs [1, 3]"), rtb::ShapeError);
  fs::remove_all(dir);
}

TEST_CASE("missing or wrong-shaped or corrupt or non-finite weight files are typed errors and nothing is half-loaded") {
  const fs::path dir = fs::temp_directory_path() / "rtb_npy_bad";
  fs::remove_all(dir);
  rtb::Model a(rtb::PisMlp<float>({.hidden = 16, .harmonics = 8, .seed = 1}));
  rtb::Model wide(rtb::PisMlp<float>({.hidden = 32, .harmonics = 8, .seed = 1}));
  rtb::save_parameters(a, dir.string());
  const std::vector<float> before(wide.params().begin(), wide.params().end());
  CHECK_THROWS_WITH_AS(rtb::load_parameters(wide, dir.string()), doctest::Contains("has shape [16, 16]"),
                       rtb::ShapeError);
  CHECK(std::equal(before.begin(), before.end(), wide.params().begin()));
  const fs::path bias = dir / "s_model.x_model.bias.npy";
  const std::vector<float> a_before(a.params().begin(), a.params().end());
  rtb::write_npy(bias, {16}, std::vector<std::int64_t>(16, 1));
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()), doctest::Contains("holds int64 values"), rtb::IoError);
  std::vector<double> nan_bias(16, 0.0);
  nan_bias[7] = std::numeric_limits<double>::quiet_NaN();
  rtb::write_npy(bias, {16}, nan_bias);
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()), doctest::Contains("value 7 of 16 is nan"),
                       rtb::NonFiniteError);
  nan_bias[7] = 1e300;  // finite in float64, +inf as float32
  rtb::write_npy(bias, {16}, nan_bias);
  CHECK_THROWS_AS(rtb::load_parameters(a, dir.string()), rtb::NonFiniteError);
  fs::remove(bias);
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()), doctest::Contains("missing weight file"), rtb::IoError);
  {
    std::ofstream f(bias);
    f << "garbage";
  }
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()), doctest::Contains("is not a .npy file"), rtb::IoError);
  rtb::save_parameters(a, dir.string());
  fs::resize_file(bias, fs::file_size(bias) - 4);  // cut short: the old reader loaded it with garbage
  CHECK_THROWS_WITH_AS(rtb::load_parameters(a, dir.string()),
                       doctest::Contains("tensor 's_model.x_model.bias': read_npy"), rtb::IoError);
  CHECK(std::equal(a_before.begin(), a_before.end(), a.params().begin()));
  fs::remove_all(dir);
}
