// SPDX-License-Identifier: Apache-2.0
// The infilling example's text handling: vocabulary, corpus loading and its errors, row layout.

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "../../examples/infill/infill_net.hpp"
#include "../../examples/infill/text.hpp"

namespace fs = std::filesystem;

TEST_CASE("infill text: the alphabet round-trips and unknown characters are rejected") {
  CHECK(infill::kVocab == 33);
  for (char c : std::string("hello, world - it's.")) CHECK(infill::decode(infill::encode(c)) == c);
  CHECK(infill::encode('^') == -1);  // pads are not text
  CHECK(infill::encode('7') == -1);
  CHECK(infill::encode_sentence("Mixed Case").size() == 10);
  CHECK(infill::encode_sentence("has a digit 7").empty());
}

TEST_CASE("infill corpus: an empty or unusable corpus file is a typed error") {
  const fs::path path = fs::temp_directory_path() / "rtb_empty_corpus.txt";
  { std::ofstream f(path); }
  CHECK_THROWS_WITH_AS(infill::load_corpus("", path.string(), 0.1, 1), doctest::Contains("0 usable sentences"),
                       rtb::InvalidArgumentError);
  {
    std::ofstream f(path);
    for (int i = 0; i < 20; ++i) f << "sentence number " << i << "\n";  // digits: unusable
  }
  CHECK_THROWS_AS(infill::load_corpus("", path.string(), 0.1, 1), rtb::InvalidArgumentError);
  {
    std::ofstream f(path);
    for (int i = 0; i < 40; ++i)
      f << "a sentence of words " << std::string(static_cast<std::size_t>(i % 5 + 1), 'x') << i % 7 << "\n";
    for (int i = 0; i < 40; ++i) f << "plain words here " << std::string(static_cast<std::size_t>(i + 1), 'y') << "\n";
  }
  const auto c = infill::load_corpus("", path.string(), 0.25, 1);
  CHECK(c.train.size() == 30);
  CHECK(c.held_out.size() == 10);
  CHECK(c.skipped == 35);  // the distinct lines with digits
  fs::remove(path);
  CHECK_THROWS_WITH_AS(infill::load_corpus("/nonexistent", "", 0.1, 1),
                       doctest::Contains("apt-get install wordnet-base"), rtb::IoError);
}

TEST_CASE("infill rows: prefix window, middle and lookahead; the condition holds the prefix window and ending") {
  const infill::Layout lay;
  const auto s = infill::encode_sentence("rise to a challenge");  // 19 characters
  std::vector<std::int32_t> row(static_cast<std::size_t>(lay.length())),
      cond(static_cast<std::size_t>(lay.condition_length()));
  infill::fill_row(lay, s, 8, row.data(), cond.data());  // middle "a challe", ending "nge"
  CHECK(infill::render(row.data(), lay.prefix) == "^^^^rise to ");
  CHECK(infill::render(row.data() + lay.middle_begin(), lay.middle) == "a challe");
  CHECK(infill::render(row.data() + lay.lookahead_begin(), lay.lookahead) == "nge$");
  CHECK(infill::render(cond.data(), lay.prefix) == "^^^^rise to ");  // the fixed columns' values
  CHECK(infill::render(cond.data() + lay.ending_begin(), lay.ending) == "nge$$$$$$$$$");
  const auto splits = infill::task_splits(lay, s.size());
  CHECK(splits.front() == 4);  // at least 4 characters of beginning
  CHECK(splits.back() == 8);   // at least 3 characters of ending
  CHECK_THROWS_AS(infill::fill_row(lay, {}, 0, row.data(), cond.data()), rtb::InvalidArgumentError);
}

TEST_CASE("InfillNet: off it is the TokenConv; on it is the TokenConv reading the ending as revealed lookahead") {
  const infill::Layout lay;
  const rtb::Index L = lay.length(), Lc = lay.condition_length(), V = infill::kVocab, rows = 3;
  std::vector<rtb::Index> ending;
  for (int j = 0; j < lay.ending; ++j) ending.push_back(lay.ending_begin() + j);
  const rtb::TokenConv<double> conv({.length = L,
                                     .vocab = V,
                                     .embed = 4,
                                     .channels = 6,
                                     .kernel = 3,
                                     .harmonics = 4,
                                     .condition = ending,
                                     .condition_shift = lay.lookahead,
                                     .seed = 3,
                                     .zero_init_last = false});
  infill::InfillNet<double> net(conv, lay);
  std::vector<double> params(static_cast<std::size_t>(conv.num_params()));
  conv.initialize(params);
  const auto* cw = conv.layout().find("condition.weight");  // give the condition path values
  for (rtb::Index i = 0; i < cw->size; ++i) params[static_cast<std::size_t>(cw->offset + i)] = 0.1 * ((i % 5) - 2);
  const rtb::Weights<double> w{params};
  std::vector<std::int32_t> x(static_cast<std::size_t>(rows * L)), c(static_cast<std::size_t>(rows * Lc));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<std::int32_t>((i * 7) % static_cast<std::size_t>(V));
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = static_cast<std::int32_t>((i * 5 + 1) % static_cast<std::size_t>(V));
  for (rtb::Index r = 0; r < rows; ++r)
    for (int j = 0; j < lay.lookahead; ++j) x[static_cast<std::size_t>(r * L + lay.lookahead_begin() + j)] = V;  // MASK
  std::vector<std::int32_t> revealed = x;  // the same rows with the lookahead holding the ending's first characters
  for (rtb::Index r = 0; r < rows; ++r)
    for (int j = 0; j < lay.lookahead; ++j)
      revealed[static_cast<std::size_t>(r * L + lay.lookahead_begin() + j)] =
          c[static_cast<std::size_t>(r * Lc + lay.ending_begin() + j)];

  auto run = [&](const auto& n, const std::vector<std::int32_t>& in) {
    auto ctx = n.make_context(rows);
    std::vector<double> out(static_cast<std::size_t>(rows * L * V));
    n.forward(w, rtb::Step<std::int32_t, double>{rtb::ConstMatrixView<std::int32_t>(in.data(), rows, L),
                                                 rtb::ConstMatrixView<std::int32_t>(c.data(), rows, Lc), 2, 0.4, 0},
              rtb::MatrixView<double>(out.data(), rows, L * V), ctx);
    return out;
  };
  CHECK(run(net, x) == run(conv, x));
  net.reads_ending = true;
  const auto on = run(net, x);
  CHECK(on == run(conv, revealed));
  CHECK(on != run(conv, x));
  CHECK(x[static_cast<std::size_t>(lay.lookahead_begin())] == V);  // the caller's rows are not modified
}
