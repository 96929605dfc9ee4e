// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// The closed-form discounted Q of a linear-Gaussian policy on linear dynamics: the ground truth
/// the IQL tests check against.
///
///     s' = A s + B a,   a = K s + ε, ε ~ N(0, Σ_a),   r(s, a) = −(sᵀQ_c s + aᵀR a)
///     V^π(s) = −sᵀP s − v,   P = Q_c + KᵀRK + γ FᵀPF,  F = A + BK
///                            v = (tr(RΣ_a) + γ tr(BᵀPB Σ_a)) / (1 − γ)
///     Q^π(s, a) = r(s, a) + γ V^π(As + Ba) = −[s; a]ᵀ M [s; a] − c,
///     M = blockdiag(Q_c, R) + γ [A B]ᵀ P [A B],   c = γ v
///
/// Decisions:
/// - P is solved exactly from the Kronecker form vec(P) = (I − γ Fᵀ⊗Fᵀ)⁻¹ vec(Q_c + KᵀRK)
///   (n² unknowns: states of a few dimensions, which is what the example uses), not iterated.
/// - The fixed point exists iff γ·ρ(F)² < 1; otherwise Q^π is infinite and lqr_q throws.
/// - No action clipping: callers that clip (the env's [−1, 1]) choose scales where it is rare.

#include <cmath>

#include <Eigen/Dense>
#include <Eigen/Eigenvalues>

#include <rtb/error.hpp>

namespace control {

struct LqrQ {
  Eigen::MatrixXd M;  ///< [(n+m), (n+m)], symmetric
  double c = 0;       ///< constant from the policy noise
  Eigen::MatrixXd P;  ///< V^π(s) = −sᵀPs − v
  double v = 0;

  /// Q^π(s, a).
  double q(const Eigen::VectorXd& s, const Eigen::VectorXd& a) const {
    Eigen::VectorXd z(s.size() + a.size());
    z << s, a;
    return -z.dot(M * z) - c;
  }
  /// V^π(s) = E_{a~π}[Q^π(s, a)].
  double value(const Eigen::VectorXd& s) const { return -s.dot(P * s) - v; }
};

/// Q^π for a = K s + N(0, Σ_a) on s' = A s + B a with reward −(sᵀQ_c s + aᵀR a), discount γ.
inline LqrQ lqr_q(const Eigen::MatrixXd& A, const Eigen::MatrixXd& B, const Eigen::MatrixXd& Qc,
                  const Eigen::MatrixXd& R, const Eigen::MatrixXd& K, const Eigen::MatrixXd& Sigma_a, double gamma) {
  const Eigen::Index n = A.rows(), m = B.cols();
  auto shape = [](const char* what, const Eigen::MatrixXd& X, Eigen::Index r, Eigen::Index c) {
    if (X.rows() != r || X.cols() != c)
      throw rtb::ShapeError(rtb::detail::message("lqr_q: ", what, " is ", X.rows(), "x", X.cols(), ", expected ", r,
                                                 "x", c, " (n = A.rows() states, m = B.cols() actions)"));
  };
  shape("A", A, n, n);
  shape("B", B, n, m);
  shape("Q_c", Qc, n, n);
  shape("R", R, m, m);
  shape("K", K, m, n);
  shape("Sigma_a", Sigma_a, m, m);
  if (!(gamma >= 0 && gamma < 1))
    throw rtb::InvalidArgumentError(rtb::detail::message("lqr_q: gamma = ", gamma, " must be in [0, 1)"));
  const Eigen::MatrixXd F = A + B * K;
  const double rho = F.eigenvalues().cwiseAbs().maxCoeff();
  if (!(gamma * rho * rho < 1))
    throw rtb::InvalidArgumentError(rtb::detail::message("lqr_q: gamma * rho(A + BK)^2 = ", gamma * rho * rho,
                                                         " >= 1, so the discounted value is infinite; use a stabilising K "
                                                         "or a smaller gamma"));
  // vec(FᵀPF) = (Fᵀ ⊗ Fᵀ) vec(P) (column-major vec).
  Eigen::MatrixXd kron(n * n, n * n);
  for (Eigen::Index i = 0; i < n; ++i)
    for (Eigen::Index j = 0; j < n; ++j) kron.block(i * n, j * n, n, n) = F(j, i) * F.transpose();
  const Eigen::MatrixXd C = Qc + K.transpose() * R * K;
  const Eigen::VectorXd vecC = Eigen::Map<const Eigen::VectorXd>(C.data(), n * n);
  const Eigen::MatrixXd I = Eigen::MatrixXd::Identity(n * n, n * n);
  const Eigen::VectorXd vecP = (I - gamma * kron).partialPivLu().solve(vecC);
  LqrQ out;
  out.P = Eigen::Map<const Eigen::MatrixXd>(vecP.data(), n, n);
  out.P = 0.5 * (out.P + out.P.transpose());
  out.v = ((R * Sigma_a).trace() + gamma * (B.transpose() * out.P * B * Sigma_a).trace()) / (1 - gamma);
  Eigen::MatrixXd AB(n, n + m);
  AB << A, B;
  out.M = gamma * AB.transpose() * out.P * AB;
  out.M.topLeftCorner(n, n) += Qc;
  out.M.bottomRightCorner(m, m) += R;
  out.c = gamma * out.v;
  return out;
}

}  // namespace control
