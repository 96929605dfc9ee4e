// SPDX-License-Identifier: Apache-2.0
// examples/digits: the idx reader (plain and gzip, every defect a typed error) and the CNN
// classifier (gradients against central differences, input gradient included; it learns).

#include <doctest/doctest.h>

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <rtb/rtb.hpp>
#include <string>
#include <vector>

#include "../../examples/digits/classifier.hpp"
#include "../../examples/digits/idx.hpp"

namespace digits_test {

namespace {

namespace fs = std::filesystem;

std::vector<std::uint8_t> idx_bytes(std::uint32_t magic, const std::vector<std::uint32_t>& dims,
                                    const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> b;
  auto put = [&](std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
  };
  put(magic);
  for (auto d : dims) put(d);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_plain(const fs::path& p, const std::vector<std::uint8_t>& b) {
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_gz(const fs::path& p, const std::vector<std::uint8_t>& b) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  gzclose(f);
}

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("rtb_digits_test_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

template <class F>
std::string io_error(F&& f) {
  try {
    f();
  } catch (const rtb::IoError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("idx: images and labels read back, plain and gzip-compressed; every defect an IoError that says which") {
  TempDir dir;
  std::vector<std::uint8_t> pixels(3 * 4 * 5), labels = {7, 0, 9};
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 7);
  write_plain(dir.path / "train-images-idx3-ubyte", idx_bytes(0x803, {3, 4, 5}, pixels));
  write_gz(dir.path / "train-labels-idx1-ubyte.gz", idx_bytes(0x801, {3}, labels));
  const digits::LabelledImages s = digits::read_split(dir.path, "train");
  CHECK(s.images.count == 3);
  CHECK(s.images.rows == 4);
  CHECK(s.images.cols == 5);
  CHECK(s.images.pixels == pixels);
  CHECK(s.labels == labels);

  const fs::path p = dir.path / "bad";
  write_plain(p, idx_bytes(0x801, {3}, labels));
  CHECK(io_error([&] { digits::read_idx_images(p); }).find("magic number 0x801, expected 0x803") != std::string::npos);
  write_plain(p, idx_bytes(0x803, {3, 4, 5}, std::vector<std::uint8_t>(59)));
  CHECK(io_error([&] { digits::read_idx_images(p); }).find("declares 60 bytes of data, but 59 follow") !=
        std::string::npos);
  write_plain(p, idx_bytes(0x803, {3, 4, 5}, std::vector<std::uint8_t>(61)));
  CHECK(io_error([&] { digits::read_idx_images(p); }).find("bytes after the 60") != std::string::npos);
  write_plain(p, idx_bytes(0x803, {3, 0, 5}, {}));
  CHECK(io_error([&] { digits::read_idx_images(p); }).find("dimension 1 as 0") != std::string::npos);
  write_plain(p, {0, 0, 8});
  CHECK(io_error([&] { digits::read_idx_images(p); }).find("fewer than an idx magic") != std::string::npos);
  write_plain(p, idx_bytes(0x803, {3}, {}));
  CHECK(io_error([&] { digits::read_idx_images(p); }).find("truncated inside its header") != std::string::npos);
  write_plain(p, idx_bytes(0x801, {2}, {3, 10}));
  CHECK(io_error([&] { digits::read_idx_labels(p); }).find("label 1 is 10") != std::string::npos);
  CHECK(io_error([&] { digits::read_idx_images(dir.path / "missing"); }).find("fetch_data.sh") != std::string::npos);
  write_gz(dir.path / "train-labels-idx1-ubyte.gz", idx_bytes(0x801, {2}, {1, 2}));
  CHECK(io_error([&] { digits::read_split(dir.path, "train"); }).find("3 images but 2 labels") != std::string::npos);
}

TEST_CASE("classifier: parameter and input gradients equal central differences of the cross-entropy") {
  const digits::ClassifierOptions o{.height = 8, .width = 8, .c1 = 2, .c2 = 3, .c3 = 3, .hidden = 5, .classes = 4};
  const digits::Classifier<double> net(o);
  std::vector<double> params(static_cast<std::size_t>(net.num_params()));
  net.init(params.data(), 3);
  const rtb::Index batch = 3;
  std::vector<double> x(static_cast<std::size_t>(batch * net.input_size()));
  const rtb::math::NoiseKey key{5, rtb::math::Stream::User, 0};
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rtb::math::normal<double>(key, i, 0, 0);
  const std::vector<std::uint8_t> labels = {1, 3, 0};
  digits::Classifier<double>::Workspace ws;
  auto loss_at = [&](const std::vector<double>& p, const std::vector<double>& xx) {
    net.forward(p.data(), xx.data(), batch, ws);
    return digits::cross_entropy(ws.logits.data(), labels.data(), batch, o.classes, static_cast<double*>(nullptr));
  };
  net.forward(params.data(), x.data(), batch, ws);
  std::vector<double> dlogits(static_cast<std::size_t>(batch * o.classes));
  digits::cross_entropy(ws.logits.data(), labels.data(), batch, o.classes, dlogits.data());
  std::vector<double> grad(params.size(), 0.0), dx(x.size(), 0.0);
  net.backward(params.data(), x.data(), batch, dlogits.data(), ws, grad.data(), dx.data());
  // Worst |central difference − g| / (1e-3 + |g|) over the entries of `v` (params or x), the
  // other argument held at its value.
  auto worst_error = [&](const std::vector<double>& v, const std::vector<double>& g, bool of_params) {
    const double h = 1e-6;
    double worst = 0;
    for (std::size_t i = 0; i < v.size(); ++i) {
      auto w = v;
      w[i] += h;
      const double up = of_params ? loss_at(w, x) : loss_at(params, w);
      w[i] -= 2 * h;
      const double down = of_params ? loss_at(w, x) : loss_at(params, w);
      worst = std::max(worst, std::fabs((up - down) / (2 * h) - g[i]) / (1e-3 + std::fabs(g[i])));
    }
    return worst;
  };
  const double worst = worst_error(params, grad, true), worst_x = worst_error(x, dx, false);
  MESSAGE("worst relative error: parameters " << worst << ", input " << worst_x);
  CHECK(worst < 2e-6);  // |fd − g| / (1e-3 + |g|): rounding of the differences at h = 1e-6 gives ~4e-7
  CHECK(worst_x < 2e-6);
}

TEST_CASE("classifier: Adam on rtb's layers learns to tell which quadrant holds a blob") {
  // 12×12 images holding one bright 3×3 blob at a random place inside one quadrant; the class is
  // the quadrant. Fresh images every step, a held-out batch at the end.
  const digits::ClassifierOptions o{.height = 12, .width = 12, .c1 = 4, .c2 = 8, .c3 = 8, .hidden = 16, .classes = 4};
  const digits::Classifier<float> net(o);
  std::vector<float> params(static_cast<std::size_t>(net.num_params()));
  net.init(params.data(), 11);
  rtb::Adam<float> adam(net.num_params(), {.learning_rate = 3e-3f});
  const rtb::Index batch = 32;
  auto make = [&](std::uint64_t seed, std::vector<float>& x, std::vector<std::uint8_t>& y) {
    x.assign(static_cast<std::size_t>(batch * 144), -1.0f);
    y.resize(static_cast<std::size_t>(batch));
    for (rtb::Index b = 0; b < batch; ++b) {
      const rtb::math::NoiseKey k{seed, rtb::math::Stream::User, 0};
      const auto u = k.block(static_cast<std::uint64_t>(b), 0, 0);
      const int qy = static_cast<int>(u.v[0] % 2), qx = static_cast<int>(u.v[1] % 2);
      const int cy = qy * 6 + 1 + static_cast<int>(u.v[2] % 3), cx = qx * 6 + 1 + static_cast<int>(u.v[3] % 3);
      for (int dy = 0; dy < 3; ++dy)
        for (int dxp = 0; dxp < 3; ++dxp) x[static_cast<std::size_t>(b * 144 + (cy + dy) * 12 + cx + dxp)] = 1.0f;
      y[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(qy * 2 + qx);
    }
  };
  digits::Classifier<float>::Workspace ws;
  std::vector<float> x, dlogits(static_cast<std::size_t>(batch * 4)), grad(params.size());
  std::vector<std::uint8_t> y;
  double first = 0, last = 0;
  for (int it = 0; it < 150; ++it) {
    make(100 + static_cast<std::uint64_t>(it), x, y);
    net.forward(params.data(), x.data(), batch, ws);
    const double loss = digits::cross_entropy(ws.logits.data(), y.data(), batch, 4, dlogits.data());
    if (it == 0) first = loss;
    last = loss;
    std::fill(grad.begin(), grad.end(), 0.0f);
    net.backward(params.data(), x.data(), batch, dlogits.data(), ws, grad.data(), static_cast<float*>(nullptr));
    adam.step(params, grad);
  }
  make(999, x, y);
  net.forward(params.data(), x.data(), batch, ws);
  int correct = 0;
  for (rtb::Index b = 0; b < batch; ++b)
    correct += digits::argmax_row(ws.logits.data() + b * 4, 4) == y[static_cast<std::size_t>(b)];
  MESSAGE("loss " << first << " -> " << last << ", held-out accuracy " << correct << "/" << batch);
  CHECK(last < 0.2 * first);
  CHECK(correct == batch);
}

}  // namespace digits_test
