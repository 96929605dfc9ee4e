// SPDX-License-Identifier: Apache-2.0
// The RTB paper's offline-RL domain on tasks written in the project (docs/examples.md, "control"):
// a diffusion behaviour prior μ(a | s) fitted to an offline data set, a Q-function from implicit
// Q-learning on the same data, and RTB's policy π(a | s) ∝ μ(a | s)·exp(Q(s, a)/α), amortised over
// states with log Z per state (relative VarGrad), against the prior alone (behaviour), the best of
// K prior draws by Q (q_sampling) and advantage-weighted regression (awr).
//
//   control [--tasks lqr,pendulum,point_mass] [--data random,medium,expert,medium_replay]
//           [--seed N] [--episodes N] [--eval-episodes N] [--threads N] [--out DIR] [--smoke]
//           [--alpha X] [--jacobian] [--prior-iterations N] [--iql-steps N] [--awr-steps N]
//           [--rtb-iterations N] [--samples-k N]
//
// Each (task, data set) prints progress and one line per method,
//   metrics method=rtb task=pendulum data=medium return=54.1 se=2.3 raw=-612.4 raw_se=20.1 seconds=…
// return and se on the D4RL scale (random controller 0, expert 100, measured here), raw in the
// task's own units. These are not D4RL numbers: the tasks and data are the project's own.
// Writes data sets (.npy) and PNGs (scores.png, point_mass_trajectories.png) under --out.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "awr.hpp"
#include "dataset.hpp"
#include "diffusion_policy.hpp"
#include "evaluate.hpp"
#include "iql.hpp"
#include "plots.hpp"

namespace {

using namespace control;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Options {
  std::vector<std::string> tasks = {"lqr", "pendulum", "point_mass"};
  std::vector<std::string> data = {"random", "medium", "expert", "medium_replay"};
  std::uint64_t seed = 1;
  std::size_t episodes = 200;       // per data set
  std::size_t eval_episodes = 50;   // per method
  Index threads = 0;
  std::string out = "control_out";
  bool smoke = false;
  std::vector<double> alphas;       // given: one RTB policy per α; else the task's default
  bool jacobian = false;
  std::int64_t prior_iterations = 2000;
  Index iql_steps = 4000;
  double iql_learning_rate = 3e-4;
  double iql_target_rate = 0.005;   // Polyak rate of the target twins (IQL's; 0.05 with lr 1e-3 measured worse)
  double discount = 0.99;
  Index awr_steps = 2000;
  std::int64_t rtb_iterations = 150;
  Index samples_k = 16;
};

/// α per task, on Q learned from rewards × 1000/(R_expert − R_random) (IQL's MuJoCo convention,
/// with the reference returns in place of the data set's extremes).
/// Measured on the medium data sets (docs/examples.md): at this Q budget (4000 IQL updates, the
/// reference runs 10⁶) the learned Q ranks the pendulum's and the point mass's actions poorly, and
/// a small α follows its errors (pendulum: α 0.3 → −17, 3 → 11, 30 → 31 against behaviour's 31).
double default_alpha(const std::string& task) {
  if (task == "lqr") return 1.0;
  return 30.0;
}

/// States normalised by the data set's per-column mean and standard deviation.
struct Normaliser {
  Eigen::VectorXd mean, inv_std;
  explicit Normaliser(const rtb::RowMatrix<double>& s) {
    mean = s.colwise().mean().transpose();
    inv_std.resize(s.cols());
    for (Index d = 0; d < s.cols(); ++d) {
      const double sd = std::sqrt((s.col(d).array() - mean(d)).square().mean());
      inv_std(d) = 1.0 / std::max(sd, 1e-3);
    }
  }
  Matrix apply(rtb::ConstMatrixView<double> s) const {
    Matrix out(s.rows(), s.cols());
    for (Index i = 0; i < s.rows(); ++i)
      for (Index d = 0; d < s.cols(); ++d) out(i, d) = static_cast<Real>((s(i, d) - mean(d)) * inv_std(d));
    return out;
  }
};

rtb::RowMatrix<double> to_double(const Matrix& m) { return m.cast<double>(); }

struct MethodResult {
  std::string method;
  EvalResult eval;
  double seconds = 0;      // evaluation
  double alpha = 0;        // rtb only
  double fit_seconds = 0;  // rtb only: its own training
};

template <Environment E>
void run_task(const E& env, const Options& o, std::vector<ScoreBar>& bars,
              std::vector<std::pair<std::string, std::vector<rtb::RowMatrix<double>>>>* trajectories) {
  const std::string task = env.name();
  const ReferenceReturns ref = reference_returns(env);
  std::printf("== %s: reference returns random %.2f ± %.2f, expert %.2f ± %.2f (%zu episodes)\n", task.c_str(),
              ref.random, ref.random_se, ref.expert, ref.expert_se, kReferenceEpisodes);
  const double reward_scale = 1000.0 / (ref.expert - ref.random);
  const std::vector<double> alphas = o.alphas.empty() ? std::vector<double>{default_alpha(task)} : o.alphas;
  for (const std::string& kind_name : o.data) {
    const DataKind kind = parse_data_kind(kind_name);
    const Dataset data = make_dataset(env, kind, o.episodes, o.seed);
    validate(data, env);
    const std::filesystem::path dir = std::filesystem::path(o.out) / task / to_string(kind);
    save_dataset(data, dir);
    const Index N = data.size(), ds = env.state_dim(), da = env.action_dim();
    const Normaliser norm(data.states);
    const Matrix states = norm.apply(data.states_view()), next_states = norm.apply(data.next_states_view());
    const Matrix actions = data.actions.cast<Real>();
    const Matrix latent = to_latent(cview(actions), "data set actions");
    std::vector<Real> rewards(static_cast<std::size_t>(N)), terminals(rewards.size());
    for (Index i = 0; i < N; ++i) {
      rewards[static_cast<std::size_t>(i)] = static_cast<Real>(data.rewards(i));
      terminals[static_cast<std::size_t>(i)] = static_cast<Real>(data.terminals(i));
    }
    const Transitions<Real> tr{ds, da, std::span<const Real>(states.data(), static_cast<std::size_t>(N * ds)),
                               std::span<const Real>(actions.data(), static_cast<std::size_t>(N * da)), rewards,
                               std::span<const Real>(next_states.data(), static_cast<std::size_t>(N * ds)), terminals};
    std::printf("-- %s/%s: %ld transitions, data mean return %.2f; wrote %s\n", task.c_str(), kind_name.c_str(),
                static_cast<long>(N), data.rewards.sum() / static_cast<double>(o.episodes), dir.c_str());

    // Prior.
    auto phase = Clock::now();
    DiffusionOptions dopt;
    dopt.prior_iterations = o.prior_iterations;
    dopt.threads = o.threads;
    dopt.seed = o.seed * 1000 + 1;
    BehaviourPrior prior(ds, da, dopt);
    prior.fit(cview(states), cview(latent), [](std::int64_t it, double loss) {
      std::printf("   prior %5ld  loss %.4f\n", static_cast<long>(it), loss);
      std::fflush(stdout);
    });
    const double prior_s = seconds_since(phase);
    std::printf("   prior fitted in %.1f s\n", prior_s);
    // Q-function.
    phase = Clock::now();
    IqlConfig qc;
    qc.hidden = 128;
    qc.steps = o.iql_steps;
    qc.seed = o.seed * 1000 + 2;
    qc.learning_rate = o.iql_learning_rate;
    qc.tau_target = o.iql_target_rate;
    qc.discount = o.discount;
    qc.reward_scale = reward_scale;
    qc.log_every = std::max<Index>(1, o.iql_steps / 4);
    Iql<Real> iql(qc, ds, da);
    iql.train(tr, o.iql_steps, [](const IqlProgress& p) {
      std::printf("   iql %6ld  q_loss %.4f  v_loss %.4f\n", static_cast<long>(p.step), p.q_loss, p.v_loss);
      std::fflush(stdout);
    });
    const QFunction q = [&iql](ConstView s, ConstView a, std::span<Real> out) {
      iql.q(std::span<const Real>(s.data(), static_cast<std::size_t>(s.size())),
            std::span<const Real>(a.data(), static_cast<std::size_t>(a.size())), out);
    };
    const double iql_s = seconds_since(phase);
    std::printf("   iql trained in %.1f s\n", iql_s);
    // AWR.
    phase = Clock::now();
    AwrConfig ac;
    ac.hidden = 128;
    ac.steps = o.awr_steps;
    ac.seed = o.seed * 1000 + 3;
    ac.log_every = std::max<Index>(1, o.awr_steps / 2);
    Awr<Real> awr(ac, ds, da);
    awr.train(tr, advantage_weights(iql, tr, ac.beta, ac.max_weight), o.awr_steps);
    const double awr_s = seconds_since(phase);
    std::printf("   awr trained in %.1f s\n", awr_s);
    // RTB, one policy per α.
    std::vector<std::unique_ptr<RtbPolicy>> rtb_policies;
    std::vector<double> rtb_seconds;
    for (double alpha : alphas) {
      const auto t = Clock::now();
      RtbOptions ro;
      ro.alpha = alpha;
      ro.jacobian = o.jacobian;
      ro.iterations = o.rtb_iterations;
      ro.threads = o.threads;
      ro.seed = o.seed * 1000 + 4;
      rtb_policies.push_back(std::make_unique<RtbPolicy>(prior, q, ro));
      rtb_policies.back()->train(cview(states), cview(latent), [alpha](std::int64_t k, double loss, double log_r) {
        std::printf("   rtb alpha %g %5ld  loss %.4f  mean log r %.3f\n", alpha, static_cast<long>(k), loss, log_r);
        std::fflush(stdout);
      });
      rtb_seconds.push_back(seconds_since(t));
      std::printf("   rtb (alpha %g) trained in %.1f s\n", alpha, rtb_seconds.back());
    }


    // Evaluation: every method from the same starts (reset seed), fresh draws each step.
    const EvalConfig ec{o.eval_episodes, o.seed + 99, trajectories != nullptr};
    std::uint64_t draw = 0;
    auto latent_policy = [&](auto&& sample) {
      return [&, sample](rtb::ConstMatrixView<double> s) {
        Matrix a = sample(norm.apply(s), ++draw);
        return to_double(a);
      };
    };
    std::vector<MethodResult> results;
    auto run = [&](const std::string& method, auto policy) {
      const auto t = Clock::now();
      MethodResult r{method, evaluate(env, policy, ec), 0};
      r.seconds = seconds_since(t);
      results.push_back(std::move(r));
    };
    run("behaviour", latent_policy([&](const Matrix& s, std::uint64_t k) {
          Matrix u = prior.sample(cview(s), 1'000'000 + k);
          to_env(mview(u));
          return u;
        }));
    for (std::size_t j = 0; j < rtb_policies.size(); ++j) {
      RtbPolicy& pol = *rtb_policies[j];
      run("rtb", latent_policy([&pol](const Matrix& s, std::uint64_t k) {
            Matrix u = pol.sample(cview(s), 2'000'000 + k);
            to_env(mview(u));
            return u;
          }));
      results.back().alpha = alphas[j];
      results.back().fit_seconds = rtb_seconds[j];
    }
    run("q_sampling", latent_policy([&](const Matrix& s, std::uint64_t k) {
          return q_sampling(prior, q, cview(s), o.samples_k, 3'000'000 + k);
        }));
    run("awr", latent_policy([&](const Matrix& s, std::uint64_t) {
          Matrix a(s.rows(), da);
          awr.act(std::span<const Real>(s.data(), static_cast<std::size_t>(s.size())),
                  std::span<Real>(a.data(), static_cast<std::size_t>(a.size())), true);
          return a;
        }));
    for (const MethodResult& r : results) {
      const double score = normalised_score(r.eval.mean_return, ref);
      const double se = 100.0 * r.eval.std_error / (ref.expert - ref.random);
      // Training seconds of what the method needs: the prior, Q, its own fit.
      double train_s = prior_s;
      if (r.method == "rtb") train_s = prior_s + iql_s + r.fit_seconds;
      if (r.method == "q_sampling") train_s = prior_s + iql_s;
      if (r.method == "awr") train_s = iql_s + awr_s;
      char extra[64] = "";
      if (r.method == "rtb") std::snprintf(extra, sizeof extra, " alpha=%g", r.alpha);
      std::printf("metrics method=%s task=%s data=%s return=%.2f se=%.2f raw=%.3f raw_se=%.3f%s train_seconds=%.1f "
                  "eval_seconds=%.1f\n",
                  r.method.c_str(), task.c_str(), kind_name.c_str(), score, se, r.eval.mean_return, r.eval.std_error, extra,
                  train_s, r.seconds);
      const bool first_rtb = r.method != "rtb" || r.alpha == alphas.front();
      if (first_rtb) bars.push_back({task, kind_name, r.method, score, se});
      if (trajectories && kind == DataKind::Medium) {
        std::vector<rtb::RowMatrix<double>> first(r.eval.trajectories.begin(),
                                                  r.eval.trajectories.begin() +
                                                      static_cast<std::ptrdiff_t>(std::min<std::size_t>(10, r.eval.trajectories.size())));
        trajectories->push_back({r.method, std::move(first)});
      }
    }
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Offline RL by RTB: a diffusion behaviour prior, an IQL Q-function, KL-regularised policy extraction"};
  Options o;
  app.add_option("--tasks", o.tasks, "tasks: lqr, pendulum, point_mass")->delimiter(',');
  app.add_option("--data", o.data, "data sets: random, medium, expert, medium_replay")->delimiter(',');
  app.add_option("--seed", o.seed, "seed of every draw");
  app.add_option("--episodes", o.episodes, "episodes per data set");
  app.add_option("--eval-episodes", o.eval_episodes, "evaluation episodes per method");
  app.add_option("--threads", o.threads, "worker threads (0: all cores)");
  app.add_option("--out", o.out, "output directory");
  app.add_flag("--smoke", o.smoke, "a tiny configuration (seconds), for tests");
  app.add_option("--alpha", o.alphas, "temperature(s) of pi ∝ mu·exp(Q/alpha), comma-separated: one RTB policy each "
                 "(default: the task's)")->delimiter(',');
  app.add_flag("--jacobian", o.jacobian, "add the reference's tanh Jacobian term to log r");
  app.add_option("--prior-iterations", o.prior_iterations, "prior fitting iterations");
  app.add_option("--iql-steps", o.iql_steps, "IQL updates");
  app.add_option("--iql-learning-rate", o.iql_learning_rate, "IQL's Adam step size");
  app.add_option("--iql-target-rate", o.iql_target_rate, "IQL's target-network Polyak rate");
  app.add_option("--discount", o.discount, "IQL's discount");
  app.add_option("--awr-steps", o.awr_steps, "AWR updates");
  app.add_option("--rtb-iterations", o.rtb_iterations, "RTB data batches (one on- and one off-policy update each)");
  app.add_option("--samples-k", o.samples_k, "q_sampling's K");
  CLI11_PARSE(app, argc, argv);
  for (double a : o.alphas)
    if (!(a > 0 && std::isfinite(a))) {
      std::fprintf(stderr, "control: --alpha %g: alpha must be a finite positive temperature; pass e.g. --alpha 1\n", a);
      return 2;
    }
  if (o.smoke) {
    o.tasks = {"lqr", "point_mass"};
    o.data = {"medium"};
    o.episodes = 20;
    o.eval_episodes = 4;
    o.prior_iterations = 50;
    o.iql_steps = 50;
    o.awr_steps = 20;
    o.rtb_iterations = 4;
    o.samples_k = 4;
  }
  try {
    std::filesystem::create_directories(o.out);
    const auto t0 = Clock::now();
    std::vector<ScoreBar> bars;
    std::vector<std::pair<std::string, std::vector<rtb::RowMatrix<double>>>> traj;
    for (const std::string& t : o.tasks) {
      if (t == "lqr")
        run_task(Lqr{}, o, bars, nullptr);
      else if (t == "pendulum")
        run_task(Pendulum{}, o, bars, nullptr);
      else if (t == "point_mass")
        run_task(PointMass{}, o, bars, &traj);
      else
        throw rtb::InvalidArgumentError("--tasks: unknown task '" + t + "'; choose among lqr, pendulum, point_mass");
    }
    const std::vector<std::string> methods = {"behaviour", "rtb", "q_sampling", "awr"};
    score_chart(o.out + "/scores.png", bars, methods);
    std::printf("wrote %s/scores.png\n", o.out.c_str());
    if (!traj.empty()) {
      point_mass_trajectories(o.out + "/point_mass_trajectories.png", PointMass{}, traj);
      std::printf("wrote %s/point_mass_trajectories.png\n", o.out.c_str());
    }
    std::printf("metrics method=control_total seconds=%.1f\n", seconds_since(t0));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "control: %s\n", e.what());
    return 1;
  }
  return 0;
}
