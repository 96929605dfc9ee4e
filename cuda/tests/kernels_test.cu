// SPDX-License-Identifier: Apache-2.0
// The CUDA kernels against their host twins (the RTB_HOST_DEVICE row functions of rtb/math that
// the CPU backend runs): bit for bit where the arithmetic is the same, to a stated bound where a
// sum's order differs. Without a visible GPU it checks the typed errors of the no-device case
// and exits 77, which CTest reports as skipped.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <rtb/cuda/adam.cuh>
#include <rtb/cuda/gaussian_step.cuh>
#include <rtb/cuda/masked_step.cuh>
#include <rtb/cuda/random.cuh>
#include <rtb/cuda/relative_tb.cuh>
#include <rtb/cuda/runtime.cuh>
#include <string>
#include <vector>

namespace {

using rtb::Index;
using rtb::math::NoiseKey;
using rtb::math::Stream;

template <class T>
rtb::cuda::DeviceBuffer<T> to_device(const std::vector<T>& h) {
  rtb::cuda::DeviceBuffer<T> d(h.size());
  d.upload(h);
  return d;
}

template <class T>
std::vector<T> to_host(const rtb::cuda::DeviceBuffer<T>& d) {
  std::vector<T> h(d.size());
  d.download(h);
  return h;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// Values of the size a rollout sees, from the CPU's own normals (any fixed inputs would do).
std::vector<float> inputs(std::size_t n, std::uint64_t seed, float scale) {
  std::vector<float> v(n);
  const NoiseKey key{seed, Stream::User, 0};
  for (std::size_t i = 0; i < n; ++i)
    v[i] = scale * rtb::math::normal<float>(key, i / 4, 0, static_cast<std::uint32_t>(i % 4));
  return v;
}

/// Two uniforms in [0, 1) for (row, lane) of a key: test inputs.
std::array<float, 2> key_uniforms(const NoiseKey& k, std::uint64_t row, std::uint32_t lane) {
  const rtb::math::Uint4 b = k.block(row, 0, lane);
  return {rtb::math::uniform01<float>(b.v[0]), rtb::math::uniform01<float>(b.v[1])};
}

TEST_CASE("the first 10^6 normals of a key are the CPU's, bit for bit") {
  struct Case {
    NoiseKey key;
    std::uint64_t first_row, rows;
    std::uint32_t step, dim;
  };
  // 250 000 rows of 4 (10^6 normals); odd dimensions (a partial lane); row indices past 2^32.
  const Case cases[] = {{{20261204, Stream::Rollout, 3}, 0, 250000, 17, 4},
                        {{7, Stream::Backward, (1ull << 33) + 5}, 11, 20000, 99, 3},
                        {{~0ull, Stream::Evaluation, 0}, (1ull << 32) - 100, 5000, 0, 9}};
  for (const Case& c : cases) {
    const std::size_t n = c.rows * c.dim;
    rtb::cuda::DeviceBuffer<float> d(n);
    rtb::cuda::fill_normals(c.key, c.first_row, c.rows, c.step, c.dim, d.data());
    const std::vector<float> gpu = to_host(d);
    std::vector<float> cpu(n);
    for (std::uint64_t r = 0; r < c.rows; ++r)
      for (std::uint32_t k = 0; k < c.dim; ++k)
        cpu[r * c.dim + k] = rtb::math::normal<float>(c.key, c.first_row + r, c.step, k);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < n; ++i) differ += std::memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0;
    INFO("dim " << c.dim << ", rows " << c.rows);
    CHECK(differ == 0);
  }
}

TEST_CASE("the fused Gaussian step and its adjoint equal the CPU's row functions bit for bit") {
  for (const Index dim : {Index{2}, Index{5}}) {
    for (const Index out_cols : {dim, 2 * dim}) {
      const Index rows = 1000;
      const std::uint64_t first_row = 123;
      const std::uint32_t step = 17;
      const NoiseKey key{99, Stream::Rollout, 4};
      const rtb::math::GaussianStepConstants<float> c{
          0.01f, -0.5f / 0.05f, -0.5f * static_cast<float>(dim) * (1.8378770664f + std::log(0.05f)), 0.01f / 0.05f};
      const float sd = std::sqrt(0.05f + 0.25f * 0.05f);
      const auto x = inputs(static_cast<std::size_t>(rows * dim), 1, 2.0f);
      const auto post = inputs(static_cast<std::size_t>(rows * out_cols), 2, 3.0f);
      const auto prior = inputs(static_cast<std::size_t>(rows * out_cols), 3, 3.0f);
      const auto acc0 = inputs(static_cast<std::size_t>(rows), 4, 10.0f);
      const auto weight = inputs(static_cast<std::size_t>(rows), 5, 0.01f);

      // Host: the CPU backend's rows (GaussianProcess::sample_step and log_prob_step call these).
      std::vector<float> hx_next(x.size()), hpost = acc0, hprior = acc0, hd(post.size());
      for (Index r = 0; r < rows; ++r) {
        const float* xr = x.data() + r * dim;
        float* xn = hx_next.data() + r * dim;
        rtb::math::gaussian_sample_row(xr, post.data() + r * out_cols, dim, c.dt, sd, key, first_row + r, step, xn);
        hpost[r] += rtb::math::gaussian_log_prob_row(xr, xn, post.data() + r * out_cols, dim, c);
        hprior[r] += rtb::math::gaussian_log_prob_row(xr, xn, prior.data() + r * out_cols, dim, c);
        rtb::math::gaussian_adjoint_row(xr, xn, post.data() + r * out_cols, dim, out_cols, weight[r], c,
                                        hd.data() + r * out_cols);
      }

      auto dx = to_device(x), dpost = to_device(post), dprior = to_device(prior), dw = to_device(weight);
      auto dlp = to_device(acc0), dlq = to_device(acc0);
      rtb::cuda::DeviceBuffer<float> dxn(x.size()), dd(post.size());
      rtb::cuda::GaussianStepArgs<float> a{rows,          dim,        out_cols,   dx.data(), dpost.data(),
                                           dprior.data(), dxn.data(), dlp.data(), dlq.data()};
      rtb::cuda::gaussian_step_forward(a, c, sd, key, first_row, step);
      rtb::cuda::gaussian_step_adjoint(rows, dim, out_cols, dx.data(), dxn.data(), dpost.data(), dw.data(), c,
                                       dd.data());
      INFO("dim " << dim << ", out_cols " << out_cols);
      CHECK(same_bits(to_host(dxn), hx_next));
      CHECK(same_bits(to_host(dlp), hpost));
      CHECK(same_bits(to_host(dlq), hprior));
      CHECK(same_bits(to_host(dd), hd));
    }
  }
}

TEST_CASE("the fused masked step and its adjoint equal the CPU's row functions bit for bit (infill sizes)") {
  using V = std::int32_t;
  const Index rows = 256, length = 24, vocab = 40;
  std::vector<Index> gen;
  for (Index j = 4; j < 20; ++j) gen.push_back(j);
  const V mask = static_cast<V>(vocab);
  // x_k: generated columns masked with probability 0.6, else a token; the others tokens.
  std::vector<V> x(static_cast<std::size_t>(rows * length));
  const NoiseKey fill{8, Stream::User, 0};
  for (Index r = 0; r < rows; ++r)
    for (Index j = 0; j < length; ++j) {
      const auto u = key_uniforms(fill, static_cast<std::uint64_t>(r), static_cast<std::uint32_t>(j));
      const bool generated = j >= 4 && j < 20;
      x[r * length + j] = generated && u[0] < 0.6f ? mask : static_cast<V>(u[1] * static_cast<float>(vocab));
    }
  const auto post = inputs(static_cast<std::size_t>(rows * length * vocab), 40, 2.0f);
  const auto prior = inputs(static_cast<std::size_t>(rows * length * vocab), 41, 2.0f);
  const auto acc0 = inputs(static_cast<std::size_t>(rows), 42, 10.0f);
  const auto weight = inputs(static_cast<std::size_t>(rows), 43, 0.01f);
  const NoiseKey key{77, Stream::Rollout, 2};
  const std::uint64_t first_row = 1000;
  const std::uint32_t step = 6;
  for (const float eps : {0.0f, 0.05f}) {
    const rtb::math::MaskedStepConstants<float, V> c{vocab, mask, 0.3f, std::log(0.7f), std::log(0.3f), eps};
    std::vector<V> hx(x.size());
    std::vector<float> hpost = acc0, hprior = acc0, hd(post.size(), 0.0f);
    const Index out_cols = length * vocab;
    for (Index r = 0; r < rows; ++r) {
      const V* xr = x.data() + r * length;
      V* xn = hx.data() + r * length;
      rtb::math::masked_sample_row(xr, post.data() + r * out_cols, length, gen.data(), static_cast<Index>(gen.size()),
                                   c, key, first_row + r, step, xn);
      hpost[r] += rtb::math::masked_log_prob_row(xr, xn, post.data() + r * out_cols, gen.data(),
                                                 static_cast<Index>(gen.size()), c);
      hprior[r] += rtb::math::masked_log_prob_row(xr, xn, prior.data() + r * out_cols, gen.data(),
                                                  static_cast<Index>(gen.size()), c);
      rtb::math::masked_adjoint_row(xr, xn, post.data() + r * out_cols, gen.data(), static_cast<Index>(gen.size()),
                                    weight[r], c, hd.data() + r * out_cols);
    }
    auto dgen = to_device(gen);
    auto dx = to_device(x);
    auto dpost = to_device(post), dprior = to_device(prior), dw = to_device(weight);
    auto dlp = to_device(acc0), dlq = to_device(acc0);
    rtb::cuda::DeviceBuffer<V> dxn(x.size());
    rtb::cuda::DeviceBuffer<float> dd(post.size());
    rtb::cuda::MaskedStepArgs<float, V> a{rows,          length,     static_cast<Index>(gen.size()),
                                          dgen.data(),   dx.data(),  dpost.data(),
                                          dprior.data(), dxn.data(), dlp.data(),
                                          dlq.data()};
    rtb::cuda::masked_step_forward(a, c, key, first_row, step);
    rtb::cuda::masked_step_adjoint(a, c, dw.data(), dd.data());
    INFO("uniform mix " << eps);
    CHECK(same_bits(to_host(dxn), hx));
    CHECK(same_bits(to_host(dlp), hpost));
    CHECK(same_bits(to_host(dlq), hprior));
    CHECK(same_bits(to_host(dd), hd));
  }
}

TEST_CASE("the RTB batch reduction: rows bit for bit, sums within 1e-12 of the CPU's") {
  const Index rows = 3001;  // several blocks and a partial one
  const auto log_z = inputs(rows, 10, 1.0f), post = inputs(rows, 11, 50.0f), prior = inputs(rows, 12, 50.0f),
             log_r = inputs(rows, 13, 3.0f);
  std::vector<std::uint8_t> valid(rows);
  for (Index r = 0; r < rows; ++r) valid[r] = (r % 7) != 3;
  for (const double cutoff : {0.0, 100.0}) {
    const double beta = 1.5;
    double used = 0;
    for (auto v : valid) used += v;
    const double inv_n = 1.0 / used;
    std::vector<float> hw(rows);
    std::vector<double> hdz(rows);
    double loss = 0, sum_delta = 0;
    for (Index r = 0; r < rows; ++r) {
      if (!valid[r]) continue;
      const auto row = rtb::math::rtb_row(log_z[r], post[r], prior[r], beta, log_r[r], cutoff, inv_n);
      loss += row.loss_term;
      sum_delta += row.delta;
      hw[r] = static_cast<float>(row.weight);
      hdz[r] = row.weight;
    }
    auto dz = to_device(log_z), dp = to_device(post), dq = to_device(prior), dr = to_device(log_r);
    auto dv = to_device(valid);
    rtb::cuda::DeviceBuffer<float> dw(rows);
    rtb::cuda::DeviceBuffer<double> ddz(rows);
    rtb::cuda::RtbReduction red(4096);
    red.run(rtb::cuda::RtbBatch<float>{rows, dz.data(), dp.data(), dq.data(), dr.data(), dv.data(), beta, cutoff,
                                       dw.data(), ddz.data()});
    const rtb::cuda::RtbScalars s = red.download();
    INFO("cutoff " << cutoff);
    CHECK(s.used == used);
    CHECK(same_bits(to_host(dw), hw));
    CHECK(same_bits(to_host(ddz), hdz));
    CHECK(std::fabs(s.loss - loss) <= 1e-12 * std::fabs(loss));
    CHECK(std::fabs(s.mean_delta - sum_delta * inv_n) <= 1e-12 * std::fabs(sum_delta * inv_n) + 1e-15);
    CHECK_THROWS_AS(red.run(rtb::cuda::RtbBatch<float>{5000, dz.data(), dp.data(), dq.data(), dr.data(), dv.data(),
                                                       beta, cutoff, dw.data(), ddz.data()}),
                    rtb::ShapeError);
  }
}

TEST_CASE("Adam on the device equals the host's update bit for bit over three steps") {
  const std::size_t n = 100003;
  auto params = inputs(n, 20, 1.0f);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  auto dparams = to_device(params), dm = to_device(m), dv = to_device(v);
  for (int k = 1; k <= 3; ++k) {
    const auto grad = inputs(n, 30 + k, 0.1f);
    const double bc1 = 1.0 - std::pow(0.9, k), bc2 = 1.0 - std::pow(0.999, k);
    const rtb::math::AdamStep<float> c{0.9f, 0.999f, 1e-8f, static_cast<float>(1e-3 / bc1),
                                       static_cast<float>(1.0 / std::sqrt(bc2))};
    for (std::size_t i = 0; i < n; ++i) rtb::math::adam_update(params[i], grad[i], m[i], v[i], c);
    auto dg = to_device(grad);
    rtb::cuda::adam_update(n, dparams.data(), dg.data(), dm.data(), dv.data(), c);
  }
  CHECK(same_bits(to_host(dparams), params));
  CHECK(same_bits(to_host(dm), m));
  CHECK(same_bits(to_host(dv), v));
}

TEST_CASE("an allocation the device cannot hold is a DeviceMemoryError naming the bytes") {
  const std::size_t huge = std::size_t{1} << 50;  // 1 PiB
  try {
    rtb::cuda::DeviceBuffer<char> b(huge);
    FAIL("a 1 PiB allocation succeeded");
  } catch (const rtb::cuda::DeviceMemoryError& e) {
    CHECK(std::string(e.what()).find(std::to_string(huge) + " bytes") != std::string::npos);
  }
  rtb::cuda::DeviceBuffer<float> small(3);
  std::vector<float> wrong(4);
  CHECK_THROWS_AS(small.upload(wrong), rtb::ShapeError);
}

/// Without a device: the typed errors a user gets. Returns the number of failed checks.
int check_no_device() {
  int failed = 0;
  try {
    rtb::cuda::require_device();
    std::printf("FAIL: require_device did not throw without a device\n");
    ++failed;
  } catch (const rtb::cuda::NoDeviceError& e) {
    if (std::string(e.what()).find("no CUDA device") == std::string::npos) {
      std::printf("FAIL: NoDeviceError's message does not say what is missing: %s\n", e.what());
      ++failed;
    }
  }
  try {
    rtb::cuda::DeviceBuffer<float> b(16);
    std::printf("FAIL: cudaMalloc succeeded without a device\n");
    ++failed;
  } catch (const rtb::cuda::CudaError&) {
  }
  return failed;
}

}  // namespace

int main(int argc, char** argv) {
  if (rtb::cuda::device_count() == 0) {
    const int failed = check_no_device();
    if (failed != 0) return 1;
    std::printf(
        "rtb_cuda_tests: no CUDA device is visible; the no-device errors were checked, the kernel tests "
        "skipped (exit 77). Run cuda/check.sh on a machine with a GPU.\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
