// SPDX-License-Identifier: Apache-2.0
#pragma once
// The libtorch peer: the same 2-D RTB step as rtb::RelativeTrajectoryBalance, written the way
// the reference's PyTorch code does it — roll the posterior out under autograd (states
// detached, the graph of every step kept), re-score the prior without gradient, back-propagate
// ½·mean δ² through the whole graph, Adam.
//
//   net      PisMlp: θ = t·f + φ (f = linspace(0.1, 100, 64)), Linear(128,64)→GELU→Linear(64,64);
//            Linear(2,64)(x) + that; GELU → [Linear(64,64)→GELU]×2 → Linear(64,4); exact erf
//            GELU; the drift is the first 2 outputs. Parameter names are the state_dict's.
//   process  x₀ = 0, dt = 1/T, x_{t+1} ~ N(x + dt·μ, dt·σ² + σ_expl²), scored under N(x + dt·μ, dt·σ²)
//            with every constant; σ² = 5.
//   loss     ½·mean δ², δ = log Z + Σ log p_post − Σ log p_prior − log r.
//
// Problem data (mixtures, initial weights) come from rtb's headers so both sides solve the same
// problem from the same starting point; the arithmetic is torch's.

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <rtb/net/model.hpp>
#include <rtb/net/pis_mlp.hpp>
#include <rtb/reward/gaussian_mixture.hpp>

namespace rtb_peer {

struct TimeEncodingImpl : torch::nn::Module {
  TimeEncodingImpl(std::int64_t harmonics, std::int64_t hidden) {
    timestep_phase = register_parameter("timestep_phase", torch::zeros({1, harmonics}));
    pe = torch::linspace(0.1, 100.0, harmonics).unsqueeze(0);  // the reference's; load_parameters rounds as rtb does
    pe = register_buffer("pe", pe);
    t_model = register_module("t_model", torch::nn::Sequential(torch::nn::Linear(2 * harmonics, hidden), torch::nn::GELU(),
                                                               torch::nn::Linear(hidden, hidden)));
  }
  /// [1, H]: one embedding for the whole batch (the batch shares t).
  torch::Tensor forward(double t) {
    const torch::Tensor theta = pe * t + timestep_phase;
    return t_model->forward(torch::cat({theta.sin(), theta.cos()}, 1));
  }
  torch::Tensor timestep_phase, pe;
  torch::nn::Sequential t_model{nullptr};
};
TORCH_MODULE(TimeEncoding);

struct StateEncodingImpl : torch::nn::Module {
  StateEncodingImpl(std::int64_t dim, std::int64_t hidden) {
    x_model = register_module("x_model", torch::nn::Linear(dim, hidden));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x_model->forward(x); }
  torch::nn::Linear x_model{nullptr};
};
TORCH_MODULE(StateEncoding);

/// Linear then GELU, its Linear registered as child "0" so the names are the reference's
/// `model.{l}.0.weight` (libtorch cannot nest a Sequential inside a Sequential).
struct LinearGeluImpl : torch::nn::Module {
  LinearGeluImpl(std::int64_t in, std::int64_t out) { linear = register_module("0", torch::nn::Linear(in, out)); }
  torch::Tensor forward(const torch::Tensor& x) { return torch::gelu(linear->forward(x)); }
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(LinearGelu);

struct JointPolicyImpl : torch::nn::Module {
  JointPolicyImpl(std::int64_t hidden, std::int64_t out, std::int64_t layers) {
    model = torch::nn::Sequential(torch::nn::GELU());
    for (std::int64_t l = 0; l < layers; ++l)
      model->push_back(LinearGelu(hidden, hidden));
    model->push_back(torch::nn::Linear(hidden, out));
    model = register_module("model", model);
  }
  torch::Tensor forward(const torch::Tensor& h) { return model->forward(h); }
  torch::nn::Sequential model{nullptr};
};
TORCH_MODULE(JointPolicy);

struct PisMlpImpl : torch::nn::Module {
  explicit PisMlpImpl(std::int64_t dim = 2, std::int64_t hidden = 64, std::int64_t harmonics = 64, std::int64_t layers = 2)
      : dim_(dim) {
    t_model = register_module("t_model", TimeEncoding(harmonics, hidden));
    s_model = register_module("s_model", StateEncoding(dim, hidden));
    joint_model = register_module("joint_model", JointPolicy(hidden, 2 * dim, layers));
  }
  /// [B, 2D]; the first D columns are the drift μ.
  torch::Tensor forward(const torch::Tensor& x, double t) { return joint_model->forward(s_model->forward(x) + t_model->forward(t)); }
  std::int64_t dim() const { return dim_; }

  std::int64_t dim_;
  TimeEncoding t_model{nullptr};
  StateEncoding s_model{nullptr};
  JointPolicy joint_model{nullptr};
};
TORCH_MODULE(PisMlp);

/// Copies every tensor of an rtb PisMlp model into the torch module, by state_dict name: the
/// parameters, and the fixed frequencies (rtb's buffer `t_model.pe`, torch's registered buffer),
/// so both sides see bit-identical time features.
template <class S>
void load_parameters(PisMlp& dst, const rtb::Model<rtb::PisMlp<S>>& src) {
  torch::NoGradGuard no_grad;
  const auto params = src.params();
  auto copy = [&](const std::string& name, torch::Tensor& p) {
    const rtb::ParameterTensor* t = src.layout().find(name);
    if (!t) throw std::runtime_error("rtb has no tensor named " + name);
    if (p.numel() != t->size) throw std::runtime_error("size mismatch for " + name);
    std::vector<double> v(static_cast<std::size_t>(t->size));
    for (rtb::Index i = 0; i < t->size; ++i) v[static_cast<std::size_t>(i)] = static_cast<double>(params[static_cast<std::size_t>(t->offset + i)]);
    p.copy_(torch::from_blob(v.data(), p.sizes(), torch::kFloat64).to(p.dtype()));
  };
  std::size_t copied = 0;
  for (auto& item : dst->named_parameters()) {
    copy(item.key(), item.value());
    ++copied;
  }
  std::size_t trained = 0;
  for (const auto& t : src.layout().tensors()) trained += t.trainable;
  if (trained != copied) throw std::runtime_error("torch module and rtb net have different parameter lists");
  copy("t_model.pe", dst->t_model->pe);
}

/// The Gaussian process's log-density, full constants: Σ_d log N(x_next_d; mean_d, dt·σ²).
struct Process {
  std::int64_t dim = 2, steps = 100;
  double variance_per_unit_time = 5.0;

  double dt() const { return 1.0 / static_cast<double>(steps); }
  double step_variance() const { return dt() * variance_per_unit_time; }
  torch::Tensor log_prob(const torch::Tensor& x_next, const torch::Tensor& mean) const {
    const double constant = -0.5 * static_cast<double>(dim) * (std::log(2 * M_PI) + std::log(step_variance()));
    return constant - 0.5 / step_variance() * (x_next - mean).pow(2).sum(1);
  }
  torch::Tensor mean(const torch::Tensor& x, const torch::Tensor& out) const { return x + dt() * out.narrow(1, 0, dim); }
};

/// log r = log p_9(x) − log p_25(x), the mixtures taken from rtb's definitions.
struct MixtureRatioReward {
  explicit MixtureRatioReward(torch::Dtype dtype = torch::kFloat32) {
    auto load = [&](const rtb::GaussianMixture<float>& m, torch::Tensor& means, torch::Tensor& log_w, double& var) {
      means = torch::empty({m.components(), m.dim()}, torch::kFloat64);
      log_w = torch::empty({m.components()}, torch::kFloat64);
      for (rtb::Index k = 0; k < m.components(); ++k) {
        for (rtb::Index d = 0; d < m.dim(); ++d) means[k][d] = m.means()(k, d);
        log_w[k] = std::log(m.weights()[static_cast<std::size_t>(k)]);
      }
      means = means.to(dtype);
      log_w = log_w.to(dtype);
      var = m.variance();
    };
    load(rtb::GaussianMixture<float>::posterior9(), num_means, num_log_w, num_var);
    load(rtb::GaussianMixture<float>::grid25(), den_means, den_log_w, den_var);
  }
  static torch::Tensor log_density(const torch::Tensor& x, const torch::Tensor& means, const torch::Tensor& log_w, double var) {
    const torch::Tensor sq = (x.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(2);  // [B, K]
    const double norm = -0.5 * static_cast<double>(x.size(1)) * (std::log(2 * M_PI) + std::log(var));
    return torch::logsumexp(log_w.unsqueeze(0) - 0.5 / var * sq, 1) + norm;
  }
  torch::Tensor operator()(const torch::Tensor& x) const {
    return log_density(x, num_means, num_log_w, num_var) - log_density(x, den_means, den_log_w, den_var);
  }
  torch::Tensor num_means, num_log_w, den_means, den_log_w;
  double num_var = 0, den_var = 0;
};

/// CPU autocast to bfloat16 for the scope (torch's mixed precision: linear/matmul run with
/// bfloat16 operands, parameters and their gradients stay float), as Python's
/// `torch.autocast("cpu", dtype=torch.bfloat16)` does; off (nothing) when `on` is false.
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool on) : on_(on) {
    if (!on_) return;
    was_ = at::autocast::is_cpu_enabled();
    dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(was_);
    at::autocast::set_autocast_cpu_dtype(dtype_);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool on_, was_ = false;
  at::ScalarType dtype_ = at::kBFloat16;
};

/// The RTB trainer, autograd style; `bf16` runs the networks under CPU autocast to bfloat16
/// (Bf16Autocast), the densities, the loss and Adam in float.
class Trainer {
 public:
  Trainer(const rtb::Model<rtb::PisMlp<float>>& prior, std::int64_t batch, std::int64_t steps, double exploration_std = 0.5,
          double learning_rate = 1e-3, double log_z_learning_rate = 0.1, bool bf16 = false)
      : bf16_(bf16),
        process_{prior.input_dim(), steps, 5.0},
        batch_(batch),
        exploration_std_(exploration_std),
        prior_(like(prior)),
        post_(like(prior)),
        log_z_(torch::zeros({}, torch::requires_grad())),
        optimizer_(make_groups(prior, learning_rate, log_z_learning_rate)) {}

  /// One step; returns the loss.
  double step() {
    const std::int64_t T = process_.steps, D = process_.dim;
    const double sd = std::sqrt(process_.step_variance() + exploration_std_ * exploration_std_);
    torch::Tensor x = torch::zeros({batch_, D});
    torch::Tensor log_post = torch::zeros({batch_});
    torch::Tensor log_prior = torch::zeros({batch_});
    for (std::int64_t t = 0; t < T; ++t) {
      const double time = static_cast<double>(t) * process_.dt();
      const torch::Tensor mean = process_.mean(x, net(post_, x, time));
      const torch::Tensor x_next = mean.detach() + sd * torch::randn({batch_, D});
      log_post = log_post + process_.log_prob(x_next, mean);
      {
        torch::NoGradGuard no_grad;
        log_prior += process_.log_prob(x_next, process_.mean(x, net(prior_, x, time)));
      }
      x = x_next;
    }
    torch::Tensor log_r;
    {
      torch::NoGradGuard no_grad;
      log_r = reward_(x);
    }
    const torch::Tensor delta = log_z_ + log_post - log_prior - log_r;
    const torch::Tensor loss = 0.5 * delta.pow(2).mean();
    optimizer_.zero_grad();
    loss.backward();
    optimizer_.step();
    return loss.item<double>();
  }

  /// n end points of the posterior, no exploration, no gradient.
  torch::Tensor sample(std::int64_t n) {
    torch::NoGradGuard no_grad;
    const double sd = std::sqrt(process_.step_variance());
    torch::Tensor x = torch::zeros({n, process_.dim});
    for (std::int64_t t = 0; t < process_.steps; ++t)
      x = process_.mean(x, net(post_, x, static_cast<double>(t) * process_.dt())) + sd * torch::randn({n, process_.dim});
    return x;
  }

 private:
  /// The network's output in float, under autocast when bf16_.
  torch::Tensor net(PisMlp& m, const torch::Tensor& x, double time) {
    const Bf16Autocast autocast(bf16_);
    return m->forward(x, time).to(torch::kFloat);
  }
  static PisMlp like(const rtb::Model<rtb::PisMlp<float>>& net) {
    const auto& o = net.net().options();
    return PisMlp(o.dim, o.hidden, o.harmonics, o.num_layers);
  }
  std::vector<torch::optim::OptimizerParamGroup> make_groups(const rtb::Model<rtb::PisMlp<float>>& prior, double lr,
                                                             double log_z_lr) {
    load_parameters(prior_, prior);
    load_parameters(post_, prior);  // the posterior starts as the prior
    for (auto& p : prior_->parameters()) p.set_requires_grad(false);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(post_->parameters(), std::make_unique<torch::optim::AdamOptions>(lr));
    groups.emplace_back(std::vector<torch::Tensor>{log_z_}, std::make_unique<torch::optim::AdamOptions>(log_z_lr));
    return groups;
  }

  bool bf16_;
  Process process_;
  std::int64_t batch_;
  double exploration_std_;
  PisMlp prior_, post_;
  MixtureRatioReward reward_;
  torch::Tensor log_z_;
  torch::optim::Adam optimizer_;
};

}  // namespace rtb_peer
