// SPDX-License-Identifier: Apache-2.0
// A memory space in the types: nothing in the concepts or the trainer assumes host memory.
//
// `EncodedSpace` is a second host "space" standing in for a device: its buffers hold every value
// negated, so code that reads or writes its memory directly, instead of through the space's
// operations or the space's own kernels, computes with wrong numbers. Its views are MatrixRef (a
// pointer and a shape, no element access). A process and a denoiser are modelled in it as a
// device backend would be: kernels that decode their inputs, compute, and encode their outputs.
// The trainer, unchanged, must then give the host trainer's results bit for bit, and move data
// between host and space a fixed number of times per step, whatever T.

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <rtb/rtb.hpp>

#include "../test_util.hpp"

// Its own namespace: rtb_sanitized_tests is a unity build, and other files reuse these helper names.
namespace memory_space_test {

namespace {

struct EncodedSpace {
  static constexpr const char* name = "encoded";
  static inline std::atomic<long> transfers{0};

  template <class T>
  static T encode(T v) {
    return -v;
  }

  /// A buffer whose storage holds −value.
  template <class T>
  class buffer {
   public:
    using value_type = T;
    buffer() = default;
    explicit buffer(std::size_t n) : v_(n, T(0)) {}
    T* data() { return v_.data(); }
    const T* data() const { return v_.data(); }
    std::size_t size() const { return v_.size(); }
    void resize(std::size_t n) { v_.resize(n, T(0)); }
    T* begin() { return v_.data(); }
    T* end() { return v_.data() + v_.size(); }
    const T* begin() const { return v_.data(); }
    const T* end() const { return v_.data() + v_.size(); }

   private:
    std::vector<T> v_;
  };
  using Executor = rtb::detail::ThreadPool;

  template <class T>
  static void fill(std::span<T> dst, T value) {
    for (T& x : dst) x = encode(value);
  }
  template <class T>
  static void copy(std::span<T> dst, std::span<const T> src) {
    std::copy(src.begin(), src.end(), dst.begin());
  }
  template <class T>
  static void download(std::span<T> host_dst, std::span<const T> src) {
    ++transfers;
    for (std::size_t i = 0; i < src.size(); ++i) host_dst[i] = encode(src[i]);
  }
  template <class T>
  static void upload(std::span<T> dst, std::span<const T> host_src) {
    ++transfers;
    for (std::size_t i = 0; i < host_src.size(); ++i) dst[i] = encode(host_src[i]);
  }
  template <class T>
  static bool equal(std::span<const T> a, std::span<const T> b) {
    return rtb::HostSpace::equal(a, b);
  }
  template <class S>
  static void add(std::span<S> acc, std::span<const S> x) {
    for (std::size_t i = 0; i < x.size(); ++i) acc[i] = encode(encode(acc[i]) + encode(x[i]));
  }
  template <class S>
  static void axpy(std::span<S> y, S a, std::span<const S> x) {
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = encode(encode(y[i]) + a * encode(x[i]));
  }
  template <class S>
  static double sum_squares(std::span<const S> x) {
    double s = 0;
    for (S v : x) s += static_cast<double>(encode(v)) * encode(v);
    return s;
  }
  template <class S>
  static void scale(std::span<S> x, S f) {
    for (S& v : x) v = encode(encode(v) * f);
  }
  template <class S>
  static void adam(std::span<S> params, std::span<const S> grad, std::span<S> m, std::span<S> v,
                   const rtb::math::AdamStep<S>& c) {
    for (std::size_t i = 0; i < m.size(); ++i) {
      S p = encode(params[i]), mi = encode(m[i]), vi = encode(v[i]);
      rtb::math::adam_update(p, encode(grad[i]), mi, vi, c);
      params[i] = encode(p);
      m[i] = encode(mi);
      v[i] = encode(vi);
    }
  }
};

using S = double;
template <class T>
using Ref = rtb::MatrixRef<T, EncodedSpace>;

/// Host copies of a space view and back: what a kernel's loads and stores do.
template <class T>
rtb::RowMatrix<std::remove_const_t<T>> load(Ref<T> r) {
  rtb::RowMatrix<std::remove_const_t<T>> m(r.rows(), r.cols());
  for (rtb::Index i = 0; i < r.size(); ++i) m.data()[i] = EncodedSpace::encode(r.data()[i]);
  return m;
}
template <class T>
void store(const rtb::RowMatrix<T>& m, Ref<T> r) {
  for (rtb::Index i = 0; i < r.size(); ++i) r.data()[i] = EncodedSpace::encode(m.data()[i]);
}
template <class T>
rtb::ConstMatrixView<T> host(const rtb::RowMatrix<T>& m) {
  return rtb::ConstMatrixView<T>(m.data(), m.rows(), m.cols());
}
template <class T>
rtb::MatrixView<T> host(rtb::RowMatrix<T>& m) {
  return rtb::MatrixView<T>(m.data(), m.rows(), m.cols());
}
std::vector<S> load(std::span<const S> s) {
  std::vector<S> v(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) v[i] = EncodedSpace::encode(s[i]);
  return v;
}
void store(const std::vector<S>& v, std::span<S> s) {
  for (std::size_t i = 0; i < v.size(); ++i) s[i] = EncodedSpace::encode(v[i]);
}

using HostProcess = rtb::GaussianProcess<S>;
using Step = rtb::Step<S, S, S, EncodedSpace>;

/// GaussianProcess as an EncodedSpace backend would provide it.
struct EncodedGaussianProcess {
  using Scalar = S;
  using Value = S;
  using Space = EncodedSpace;
  HostProcess p;

  rtb::Index state_dim() const { return p.state_dim(); }
  rtb::Index output_dim() const { return p.output_dim(); }
  rtb::Index num_steps() const { return p.num_steps(); }
  S time(rtb::Index t) const { return p.time(t); }
  double default_exploration() const { return p.default_exploration(); }

  static rtb::Step<S> host_step(const Step& s, const rtb::RowMatrix<S>& x) {
    return {host(x), rtb::ConstMatrixView<S>(nullptr, x.rows(), 0), s.step, s.time, s.first_row};
  }
  void initial_state(const rtb::Rows<S, EncodedSpace>&, const rtb::math::NoiseKey& key, Ref<S> x0) const {
    rtb::RowMatrix<S> x(x0.rows(), x0.cols());
    p.initial_state({}, key, host(x));
    store(x, x0);
  }
  void sample_step(const Step& s, Ref<const S> out, S expl, const rtb::math::NoiseKey& key, Ref<S> x_next) const {
    const auto x = load(s.x), o = load(out);
    rtb::RowMatrix<S> xn(x.rows(), x.cols());
    p.sample_step(host_step(s, x), host(o), expl, key, host(xn));
    store(xn, x_next);
  }
  void log_prob_step(const Step& s, Ref<const S> x_next, Ref<const S> out, std::span<S> acc) const {
    const auto x = load(s.x), xn = load(x_next), o = load(out);
    auto a = load(std::span<const S>(acc));
    p.log_prob_step(host_step(s, x), host(xn), host(o), a);
    store(a, acc);
  }
  void d_log_prob_d_output(const Step& s, Ref<const S> x_next, Ref<const S> out, std::span<const S> weight,
                           Ref<S> d_out) const {
    const auto x = load(s.x), xn = load(x_next), o = load(out);
    const auto w = load(weight);
    rtb::RowMatrix<S> d(d_out.rows(), d_out.cols());
    p.d_log_prob_d_output(host_step(s, x), host(xn), host(o), w, host(d));
    store(d, d_out);
  }
  void sample_backward_step(const Step& s, const rtb::math::NoiseKey& key, Ref<S> x_out) const {
    const auto xn = load(s.x);
    rtb::RowMatrix<S> x(xn.rows(), xn.cols());
    p.sample_backward_step(host_step(s, xn), key, host(x));
    store(x, x_out);
  }
  void log_prob_backward_step(const Step& s, Ref<const S> x, std::span<S> acc) const {
    const auto xn = load(s.x), xt = load(x);
    auto a = load(std::span<const S>(acc));
    p.log_prob_backward_step(host_step(s, xn), host(xt), a);
    store(a, acc);
  }
};
static_assert(rtb::ReversibleNoiseProcess<EncodedGaussianProcess>);
static_assert(!rtb::has_bridge<EncodedGaussianProcess>);

/// A host denoiser N as an EncodedSpace backend would run it.
template <class N>
struct EncodedNet {
  using Scalar = S;
  using Value = S;
  using Space = EncodedSpace;
  struct Context {
    typename N::Context inner;
    rtb::RowMatrix<S> x;  // the decoded input of the last forward (the host net points into it)
  };
  N net;

  rtb::Index input_dim() const { return net.input_dim(); }
  rtb::Index output_dim() const { return net.output_dim(); }
  rtb::Index num_params() const { return net.num_params(); }
  const rtb::ParameterLayout& layout() const { return net.layout(); }
  void initialize(std::span<S> params) const { net.initialize(params); }  // a host span (Model uploads it)
  Context make_context(rtb::Index rows) const { return {net.make_context(rows), {}}; }
  void inference(const rtb::Weights<S>& w, const Step& s, Ref<S> out, Context& c) const { run(w, s, out, c, false); }
  void forward(const rtb::Weights<S>& w, const Step& s, Ref<S> out, Context& c) const { run(w, s, out, c, true); }
  void backward(const rtb::Weights<S>& w, Context& c, Ref<const S> d_out, std::span<S> grad,
                rtb::GradientMode mode) const {
    const auto params = load(w.params);
    const auto d = load(d_out);
    auto g = load(std::span<const S>(grad));
    net.backward(rtb::Weights<S>{params}, c.inner, host(d), g, mode);
    store(g, grad);
  }

 private:
  void run(const rtb::Weights<S>& w, const Step& s, Ref<S> out, Context& c, bool keep) const {
    const auto params = load(w.params);
    c.x = load(s.x);
    rtb::RowMatrix<S> o(out.rows(), out.cols());
    const rtb::Step<S> hs{host(std::as_const(c.x)), rtb::ConstMatrixView<S>(nullptr, c.x.rows(), 0), s.step, s.time,
                          s.first_row};
    if (keep)
      net.forward(rtb::Weights<S>{params}, hs, host(o), c.inner);
    else
      net.inference(rtb::Weights<S>{params}, hs, host(o), c.inner);
    store(o, out);
  }
};
static_assert(rtb::Denoiser<EncodedNet<rtb::PisMlp<S>>>);

auto gaussian_reward() {
  return rtb::make_reward([](std::span<const S> x) { return -((x[0] - 1) * (x[0] - 1) + (x[1] + 0.5) * (x[1] + 0.5)); });
}
rtb::PisMlp<S> small_net() {
  return rtb::PisMlp<S>({.dim = 2, .hidden = 16, .harmonics = 8, .seed = 5, .zero_init_last = false});
}
rtb::Config config() {
  return rtb::Config{.batch_size = 48,
                     .learning_rate = 3e-3,
                     .exploration = {.initial = 0.3, .hold_until = 3, .zero_at = 8},
                     .replay_fraction = 0.25,
                     .replay_capacity = 96,
                     .threads = 2,
                     .block_rows = 16,
                     .seed = 9};
}

}  // namespace

TEST_CASE("a second memory space: the same trainer gives the host's results bit for bit") {
  const HostProcess hp(2, 10, 2.0, rtb::GaussianHead::MeanAndLogVariance);
  rtb::RelativeTrajectoryBalance on_host(hp, small_net(), gaussian_reward(), config());
  rtb::RelativeTrajectoryBalance in_space(EncodedGaussianProcess{hp}, EncodedNet<rtb::PisMlp<S>>{small_net()},
                                          gaussian_reward(), config());
  for (int k = 0; k < 10; ++k) {
    const auto a = on_host.step(), b = in_space.step();
    CHECK(a.loss == b.loss);
    CHECK(a.replayed == b.replayed);
  }
  CHECK(in_space.replay_buffer().size() > 0);
  CHECK(on_host.learned_log_z() == in_space.learned_log_z());
  const auto pa = on_host.posterior().params();
  const auto pb = load(in_space.posterior().params());
  CHECK(std::equal(pa.begin(), pa.end(), pb.begin()));
  CHECK(on_host.sample(20, 3) == in_space.sample(20, 3));
  const auto ea = on_host.evaluate(40, 4), eb = in_space.evaluate(40, 4);
  CHECK(ea.log_partition.log_z_is == eb.log_partition.log_z_is);
  // checkpoints: what the space holds comes back through its own transfers
  const std::string path = (std::filesystem::temp_directory_path() / "rtb_space_test.ckpt").string();
  in_space.save(path);
  rtb::RelativeTrajectoryBalance resumed(EncodedGaussianProcess{hp}, EncodedNet<rtb::PisMlp<S>>{small_net()},
                                         gaussian_reward(), config());
  resumed.load(path);
  CHECK(resumed.step().loss == in_space.step().loss);
  std::filesystem::remove(path);
}

TEST_CASE("a second memory space: host transfers per step do not grow with T") {
  auto transfers_per_step = [](rtb::Index T) {
    const HostProcess hp(2, T, 2.0, rtb::GaussianHead::MeanAndLogVariance);
    rtb::RelativeTrajectoryBalance t(EncodedGaussianProcess{hp}, EncodedNet<rtb::PisMlp<S>>{small_net()},
                                     gaussian_reward(), config());
    t.train(3);  // warm up the replay buffer: every later step replays
    const long before = EncodedSpace::transfers.load();
    t.train(4);
    return (EncodedSpace::transfers.load() - before) / 4;
  };
  const long t10 = transfers_per_step(10), t40 = transfers_per_step(40);
  CHECK(t10 == t40);
  CHECK(t10 > 0);
  MESSAGE("host transfers per step: ", t10);
}

}  // namespace memory_space_test
