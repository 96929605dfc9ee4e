// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <rtb/sampling/exploration.hpp>
#include <rtb/sampling/replay_buffer.hpp>

TEST_CASE("the reference exploration schedule is 0.5 until 500 then linear to 0 at 4500") {
  const rtb::ExplorationSchedule unset;
  CHECK(!unset.initial.has_value());  // the process's default fills it in
  const rtb::ExplorationSchedule s = unset.resolved(0.5);
  CHECK(rtb::ExplorationSchedule{.initial = 0.2}.resolved(0.5).initial == 0.2);  // an explicit level stays
  CHECK(s(0) == 0.5);
  CHECK(s(499) == 0.5);
  CHECK(s(500) == doctest::Approx(0.5 * (1 - 500.0 / 4500)));
  CHECK(s(2250) == doctest::Approx(0.25));
  CHECK(s(4500) == 0.0);
  CHECK(s(9000) == 0.0);
  CHECK(rtb::ExplorationSchedule::none()(0) == 0.0);
}

TEST_CASE("replay buffer is first in first out and skips invalid rows and uniform draws cover it") {
  rtb::ReplayBuffer<double, double> buf(4, 1);
  rtb::RowMatrix<double> x(6, 1);
  x << 0, 1, 2, 3, 4, 5;
  const std::vector<double> lr = {0, 1, 2, 3, 4, 5};
  const std::vector<char> valid = {1, 1, 0, 1, 1, 1};  // row 2 (r = 0) never enters
  buf.add(rtb::ConstMatrixView<double>(x.data(), 6, 1), rtb::ConstMatrixView<double>(nullptr, 6, 0), lr, valid);
  CHECK(buf.size() == 4);
  std::vector<int> seen(6, 0);
  rtb::RowMatrix<double> out(4000, 1);
  buf.sample(4000, {1, rtb::math::Stream::Replay, 0}, rtb::MatrixView<double>(out.data(), 4000, 1),
             rtb::MatrixView<double>(nullptr, 4000, 0), nullptr);
  for (int i = 0; i < 4000; ++i) ++seen[static_cast<std::size_t>(out(i, 0))];
  CHECK(seen[0] == 0);  // overwritten
  CHECK(seen[2] == 0);  // invalid
  for (int k : {1, 3, 4, 5}) CHECK(std::abs(seen[static_cast<std::size_t>(k)] - 1000) < 5 * 28);
}

TEST_CASE("rank-prioritised replay favours high rewards as 1/(κN + rank)") {
  rtb::ReplayBuffer<double, double> buf(100, 1, rtb::ReplayPriority::Rank);
  rtb::RowMatrix<double> x(100, 1);
  std::vector<double> lr(100);
  for (int i = 0; i < 100; ++i) x(i, 0) = lr[static_cast<std::size_t>(i)] = i;  // best entry: 99
  buf.add(rtb::ConstMatrixView<double>(x.data(), 100, 1), rtb::ConstMatrixView<double>(nullptr, 100, 0), lr,
          std::vector<char>(100, 1));
  const int n = 20000;
  rtb::RowMatrix<double> out(n, 1);
  std::vector<double> got_lr(n);
  buf.sample(n, {2, rtb::math::Stream::Replay, 0}, rtb::MatrixView<double>(out.data(), n, 1),
             rtb::MatrixView<double>(nullptr, n, 0), got_lr.data());
  double z = 0;
  for (int k = 0; k < 100; ++k) z += 1.0 / (1.0 + k);
  int best = 0;
  for (int i = 0; i < n; ++i) {
    CHECK(got_lr[static_cast<std::size_t>(i)] == out(i, 0));
    best += out(i, 0) == 99;
  }
  const double p = 1.0 / z;  // rank 0, κN = 1
  CHECK(std::fabs(best / double(n) - p) < 5 * std::sqrt(p * (1 - p) / n));
  rtb::ReplayBuffer<double, double> empty(10, 1);
  CHECK_THROWS_AS(empty.sample(1, {}, rtb::MatrixView<double>(out.data(), 1, 1), rtb::MatrixView<double>(nullptr, 1, 0),
                               nullptr),
                  rtb::EmptyBatchError);
}

TEST_CASE("replay keeps each end point's condition with it") {
  rtb::ReplayBuffer<double, double> buf(3, 1, rtb::ReplayPriority::Uniform, 2);
  rtb::RowMatrix<double> x(3, 1), c(3, 2);
  x << 0, 1, 2;
  c << 10, 11, 20, 21, 30, 31;
  buf.add(rtb::ConstMatrixView<double>(x.data(), 3, 1), rtb::ConstMatrixView<double>(c.data(), 3, 2),
          std::vector<double>(3, 0.0), std::vector<char>(3, 1));
  rtb::RowMatrix<double> out(500, 1), oc(500, 2);
  buf.sample(500, {3, rtb::math::Stream::Replay, 0}, rtb::MatrixView<double>(out.data(), 500, 1),
             rtb::MatrixView<double>(oc.data(), 500, 2), nullptr);
  for (int i = 0; i < 500; ++i) {
    CHECK(oc(i, 0) == 10 * (out(i, 0) + 1));
    CHECK(oc(i, 1) == 10 * (out(i, 0) + 1) + 1);
  }
}
