// SPDX-License-Identifier: Apache-2.0
// The infilling example's text handling: vocabulary, corpus loading and its errors, row layout.

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

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
    for (int i = 0; i < 40; ++i) f << "a sentence of words " << std::string(static_cast<std::size_t>(i % 5 + 1), 'x') << i % 7 << "\n";
    for (int i = 0; i < 40; ++i) f << "plain words here " << std::string(static_cast<std::size_t>(i + 1), 'y') << "\n";
  }
  const auto c = infill::load_corpus("", path.string(), 0.25, 1);
  CHECK(c.train.size() == 30);
  CHECK(c.held_out.size() == 10);
  CHECK(c.skipped == 35);  // the distinct lines with digits
  fs::remove(path);
  CHECK_THROWS_WITH_AS(infill::load_corpus("/nonexistent", "", 0.1, 1), doctest::Contains("apt-get install wordnet-base"),
                       rtb::IoError);
}

TEST_CASE("infill rows: prefix window, middle, ending and condition copy") {
  const infill::Layout lay;
  const auto s = infill::encode_sentence("rise to a challenge");  // 19 characters
  std::vector<std::int32_t> row(static_cast<std::size_t>(lay.length()));
  infill::fill_row(lay, s, 8, row.data());  // middle "a challe", ending "nge"
  CHECK(infill::render(row.data(), lay.prefix) == "^^^^rise to ");
  CHECK(infill::render(row.data() + lay.middle_begin(), lay.middle) == "a challe");
  CHECK(infill::render(row.data() + lay.ending_begin(), lay.ending) == "nge$$$$$$$$$");
  CHECK(infill::render(row.data() + lay.condition_begin(), lay.ending) == "nge$$$$$$$$$");
  const auto splits = infill::task_splits(lay, s.size());
  CHECK(splits.front() == 4);   // at least 4 characters of beginning
  CHECK(splits.back() == 8);    // at least 3 characters of ending
  CHECK_THROWS_AS(infill::fill_row(lay, {}, 0, row.data()), rtb::InvalidArgumentError);
}
