// SPDX-License-Identifier: Apache-2.0
// rtb's two-pass RTB gradient against torch autograd on the same problem: the same PisMlp
// weights (copied by state_dict name), the same trajectories (built by rtb's engine: on-policy
// rows rolled out with exploration, given rows built backward from mixture samples), the same
// log Z. Compares Σ log p_post, Σ log p_prior, log r, the loss, every parameter's gradient and
// ∂L/∂log Z, in float (relative 1e-4) and double (relative 1e-12). Then rtb::UNet against the
// torch UNet2DModel twin of torch_unet.hpp on the same weights (copied by state_dict name, so the
// names and shapes of docs/unet.md are checked too): ε, ∂L/∂x and every parameter's gradient of
// L = Σ w ⊙ ε, in double on a tiny net with every feature (2 levels, 2 blocks a level, 4 heads,
// weights and norms perturbed off their initialisation) and in float on the benchmarks' net.
// Exit status 0 = all agree.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <rtb/objective/relative_tb.hpp>
#include <rtb/process/gaussian_process.hpp>
#include <rtb/train/trajectory_engine.hpp>

#include "../unet_setup.hpp"
#include "torch_rtb.hpp"
#include "torch_unet.hpp"

namespace {

using rtb::ConstMatrixView;
using rtb::Index;
using rtb::MatrixView;

/// max |a − b| / max |b|: error relative to the reference's scale.
double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  double scale = 0, err = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(b[i]));
    err = std::max(err, std::fabs(a[i] - b[i]));
  }
  return scale > 0 ? err / scale : err;
}

std::vector<double> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat64).contiguous().flatten();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// One parameter tensor's gradient on both sides, matched by name.
struct NamedGradient {
  std::string name;
  std::vector<double> rtb, torch;
};

/// For every parameter of the torch module, in its order: rtb's gradient (the slice of `grad`, a
/// flat buffer in `layout`'s order, under the same name) and torch's .grad; and both concatenated.
template <class S>
std::vector<NamedGradient> gradients_by_name(torch::nn::Module& module, const rtb::ParameterLayout& layout,
                                             const std::vector<S>& grad, NamedGradient& all) {
  std::vector<NamedGradient> out;
  for (const auto& item : module.named_parameters()) {
    const rtb::ParameterTensor* pt = layout.find(item.key());
    NamedGradient g{item.key(), std::vector<double>(grad.begin() + pt->offset, grad.begin() + pt->offset + pt->size),
                    to_vector(item.value().grad())};
    all.rtb.insert(all.rtb.end(), g.rtb.begin(), g.rtb.end());
    all.torch.insert(all.torch.end(), g.torch.begin(), g.torch.end());
    out.push_back(std::move(g));
  }
  return out;
}

template <class S>
bool check(const char* name, torch::Dtype dtype, double tol) {
  using Process = rtb::GaussianProcess<S>;
  using Net = rtb::PisMlp<S>;
  const Index T = 100, D = 2, on = 250, given = 250, B = on + given, block = 128;
  const S expl = S(0.5), log_z = S(0.3);
  const Process process(D, T, S(5), rtb::GaussianHead::MeanAndLogVariance);
  const rtb::Model<Net> prior(Net({.seed = 3, .zero_init_last = false}));
  rtb::Model<Net> post = prior;
  {
    const rtb::math::NoiseKey key{11, rtb::math::Stream::User, 5};
    auto p = post.params();
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = p[i] * S(1.1) + S(0.02) * rtb::math::normal<S>(key, i, 0, 0);
  }

  // rtb: pass 1, the objective, pass 2.
  rtb::detail::TrajectoryEngine<Process, Net> eng(process, post.net(), prior.net(), 0, block, 2);
  eng.shape(on, given);
  auto end = eng.end_states();
  rtb::GaussianMixture<S>::grid25().sample(MatrixView<S>(&end(on, 0), given, D), {5, rtb::math::Stream::Data, 0});
  eng.build_stored_backward({7, rtb::math::Stream::Backward, 0});
  const rtb::math::NoiseKey key{7, rtb::math::Stream::Rollout, 0};
  std::vector<S> log_r(B), w(B), grad(static_cast<std::size_t>(post.num_params()));
  std::vector<double> d_log_z(B);
  eng.score(post, &prior, key, expl);
  const std::vector<S> lp(eng.log_post().begin(), eng.log_post().end()), lq(eng.log_prior().begin(), eng.log_prior().end());
  const rtb::MixtureRatioReward<S> reward(rtb::GaussianMixture<S>::posterior9(), rtb::GaussianMixture<S>::grid25());
  reward.log_reward(ConstMatrixView<S>(end.data(), B, D), std::span<S>(log_r));
  const std::vector<char> valid(B, 1);
  const std::vector<S> row_log_z(B, log_z);
  rtb::LocalReduction one;
  const auto res = rtb::RelativeTB{}(rtb::ObjectiveBatch<S>{lp, lq, log_r, valid, row_log_z, S(1), S(0), S(1)},
                                     rtb::ObjectiveOutputs<S>{w, d_log_z}, one);
  double res_d_log_z = 0;
  for (double v : d_log_z) res_d_log_z += v;
  eng.backpropagate(post, key, expl, w, nullptr, S(1), grad);

  // Every state, [T+1, B, D]: on-policy rows re-simulated block by block as the engine does
  // (so x_T must match bit for bit), given rows from the engine's storage.
  std::vector<S> states(static_cast<std::size_t>((T + 1) * B * D));
  auto at = [&](Index t, Index r) { return states.data() + (t * B + r) * D; };
  {
    auto ctx = post.make_context(block);
    std::vector<S> x(static_cast<std::size_t>(block * D)), xn(x.size()), out(static_cast<std::size_t>(block * 2 * D));
    for (Index r0 = 0; r0 < on; r0 += block) {
      const Index n = std::min(block, on - r0);
      process.initial_state(rtb::Rows<S>{ConstMatrixView<S>(nullptr, n, 0), r0}, key, MatrixView<S>(x.data(), n, D));
      for (Index t = 0; t <= T; ++t) {
        std::copy_n(x.data(), n * D, at(t, r0));
        if (t == T) break;
        const rtb::Step<S> s{ConstMatrixView<S>(x.data(), n, D), ConstMatrixView<S>(nullptr, n, 0), t, process.time(t), r0};
        post.inference(s, MatrixView<S>(out.data(), n, 2 * D), ctx);
        process.sample_step(s, ConstMatrixView<S>(out.data(), n, 2 * D), expl, key, MatrixView<S>(xn.data(), n, D));
        std::swap(x, xn);
      }
    }
    for (Index r = 0; r < on; ++r)
      for (Index d = 0; d < D; ++d)
        if (at(T, r)[d] != end(r, d)) {
          std::printf("[%s] re-simulated on-policy row %td differs from the engine's x_T\n", name, r);
          return false;
        }
    for (Index t = 0; t <= T; ++t) std::copy_n(eng.stored_states(t).data(), given * D, at(t, on));
  }

  // torch autograd on the same states.
  rtb_peer::PisMlp tpost(D, 64, 64, 2), tprior(D, 64, 64, 2);
  tpost->to(dtype);
  tprior->to(dtype);
  rtb_peer::load_parameters(tpost, post);
  rtb_peer::load_parameters(tprior, prior);
  const rtb_peer::Process tp{D, T, 5.0};
  const torch::Tensor all = torch::from_blob(states.data(), {T + 1, B, D}, dtype).clone();
  torch::Tensor t_log_z = torch::full({}, static_cast<double>(log_z), torch::TensorOptions().dtype(dtype).requires_grad(true));
  torch::Tensor t_lp = torch::zeros({B}, dtype), t_lq = torch::zeros({B}, dtype);
  for (Index t = 0; t < T; ++t) {
    const double time = static_cast<double>(process.time(t));  // rtb's t_i, rounded as rtb rounds it
    const torch::Tensor x = all[t], xn = all[t + 1];
    t_lp = t_lp + tp.log_prob(xn, tp.mean(x, tpost->forward(x, time)));
    torch::NoGradGuard no_grad;
    t_lq += tp.log_prob(xn, tp.mean(x, tprior->forward(x, time)));
  }
  const torch::Tensor t_log_r = rtb_peer::MixtureRatioReward(dtype)(all[T]);
  const torch::Tensor loss = 0.5 * (t_log_z + t_lp - t_lq - t_log_r).pow(2).mean();
  loss.backward();

  // Compare.
  auto as_double = [](const std::vector<S>& v) { return std::vector<double>(v.begin(), v.end()); };
  bool ok = true;
  auto report = [&](const char* what, double err, double limit) {
    const bool pass = err <= limit;
    ok = ok && pass;
    std::printf("[%s] %-34s rel. error %.3e (limit %.0e) %s\n", name, what, err, limit, pass ? "ok" : "FAIL");
  };
  report("sum log p_post per row", rel_error(as_double(lp), to_vector(t_lp)), tol);
  report("sum log p_prior per row", rel_error(as_double(lq), to_vector(t_lq)), tol);
  report("log r per row", rel_error(as_double(log_r), to_vector(t_log_r)), tol);
  report("loss", std::fabs(res.loss - loss.item<double>()) / std::fabs(loss.item<double>()), tol);
  report("dL/dlog Z", std::fabs(res_d_log_z - t_log_z.grad().item<double>()) / std::fabs(t_log_z.grad().item<double>()), tol);
  NamedGradient every;
  for (const NamedGradient& g : gradients_by_name(*tpost, post.layout(), grad, every))
    std::printf("[%s]   grad %-40s rel. error %.3e\n", name, g.name.c_str(), rel_error(g.rtb, g.torch));
  report("gradient, all parameters", rel_error(every.rtb, every.torch), tol);
  std::printf("[%s] loss %.6f, mean delta %.4f, |grad| max %.3e\n", name, loss.item<double>(), static_cast<double>(res.mean_delta),
              *std::max_element(every.torch.begin(), every.torch.end(), [](double a, double b) { return std::fabs(a) < std::fabs(b); }));
  return ok;
}

/// rtb::UNet<S> against rtb_peer::UNet: ε, ∂/∂x and parameter gradients of L = Σ w ⊙ ε.
template <class S>
bool check_unet(const char* name, const typename rtb::UNet<S>::Options& o, Index B, torch::Dtype dtype, double tol) {
  using Net = rtb::UNet<S>;
  rtb::Model<Net> model{Net(o)};
  {  // off the initialisation, so that every tensor (norm γ = 1 and β = 0 included) is seen
    const rtb::math::NoiseKey key{21, rtb::math::Stream::User, 0};
    auto p = model.params();
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = p[i] * S(1.1) + S(0.05) * rtb::math::normal<S>(key, i, 0, 0);
  }
  const Index D = model.input_dim();
  const std::int64_t tau = 417;
  std::vector<S> x(static_cast<std::size_t>(B * D)), w(x.size()), eps(x.size()), grad(static_cast<std::size_t>(model.num_params()));
  const rtb::math::NoiseKey key{22, rtb::math::Stream::User, 0};
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = rtb::math::normal<S>(key, i, 0, 0);
    w[i] = rtb::math::normal<S>(key, i, 1, 0);
  }
  auto ctx = model.make_context(B);
  const rtb::Step<S> step{ConstMatrixView<S>(x.data(), B, D), ConstMatrixView<S>(nullptr, B, 0), 0, S(tau), 0};
  model.forward(step, MatrixView<S>(eps.data(), B, D), ctx);
  model.backward(ctx, ConstMatrixView<S>(w.data(), B, D), std::span<S>(grad), rtb::GradientMode::Overwrite);
  const auto dx = ctx.input_gradient(D);
  const std::vector<double> dx_rtb(dx.data(), dx.data() + B * D);

  rtb_peer::UNet tnet(rtb_peer::options_of<S>(o));
  tnet->to(dtype);
  rtb_peer::load_parameters(tnet, model);
  const std::vector<std::int64_t> shape = {B, o.channels, o.height, o.width};
  torch::Tensor tx = torch::from_blob(x.data(), shape, dtype).clone().requires_grad_(true);
  const torch::Tensor tw = torch::from_blob(w.data(), shape, dtype).clone();
  const torch::Tensor teps = tnet->forward(tx, tau);
  (teps * tw).sum().backward();

  bool ok = true;
  auto report = [&](const char* what, double err) {
    const bool pass = err <= tol;
    ok = ok && pass;
    std::printf("[%s] %-34s rel. error %.3e (limit %.0e) %s\n", name, what, err, tol, pass ? "ok" : "FAIL");
  };
  report("epsilon", rel_error(std::vector<double>(eps.begin(), eps.end()), to_vector(teps)));
  report("dL/dx", rel_error(dx_rtb, to_vector(tx.grad())));
  NamedGradient every;
  const std::vector<NamedGradient> tensors = gradients_by_name(*tnet, model.layout(), grad, every);
  report("gradient, all parameters", rel_error(every.rtb, every.torch));
  // Per tensor, relative to its own scale; tensors whose exact gradient is 0 (a key bias shifts
  // every score of a query alike; a time projection into a GroupNorm of one channel a group adds
  // a constant the norm removes) hold rounding noise only and are counted apart.
  double global = 0, worst = 0;
  for (double v : every.torch) global = std::max(global, std::fabs(v));
  std::string worst_name;
  int zero = 0;
  for (const NamedGradient& g : tensors) {
    double scale = 0;
    for (double v : g.torch) scale = std::max(scale, std::fabs(v));
    if (scale < 1e-5 * global) {
      ++zero;
      std::printf("[%s]   zero: %s\n", name, g.name.c_str());
      continue;
    }
    const double e = rel_error(g.rtb, g.torch);
    if (e >= worst) worst = e, worst_name = g.name;
  }
  std::printf("[%s]   %zu tensors; worst single tensor %s, rel. error %.3e (%d with a gradient below 1e-5 of the largest: 0 exactly)\n",
              name, tensors.size(), worst_name.c_str(), worst, zero);
  report("gradient, worst single tensor", worst);
  return ok;
}

}  // namespace

int main() {
  try {
    torch::set_num_threads(1);
    const bool f = check<float>("float", torch::kFloat32, 1e-4);
    const bool d = check<double>("double", torch::kFloat64, 1e-12);
    const rtb::UNet<double>::Options tiny{.height = 8,
                                          .width = 8,
                                          .channels = 2,
                                          .channels_per_level = {8, 16},
                                          .blocks_per_level = 2,
                                          .attention_levels = {1},
                                          .mid_attention = true,
                                          .groups = 4,
                                          .attention_head_dim = 4,
                                          .seed = 5};
    const bool ud = check_unet<double>("unet double", tiny, 3, torch::kFloat64, 1e-12);
    const auto bench = rtb_bench::unet::paper_like(16);  // the benchmarks' net (seed 12345)
    const bool uf = check_unet<float>("unet float", bench, 4, torch::kFloat32, 1e-4);
    const int passed = int(f) + int(d) + int(ud) + int(uf);
    std::printf("%d passed, %d failed\n", passed, 4 - passed);
    return passed == 4 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rtb_torch_check: %s\n", e.what());
    return 1;
  }
}
