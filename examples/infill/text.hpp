// SPDX-License-Identifier: Apache-2.0
#pragma once
// Character-level text for the infilling example: the vocabulary, the WordNet corpus, and the
// layout of a state row.
//
// A state row is [prefix window P | middle M | ending E | condition C = E]:
//   prefix window  the last P characters of the beginning, left-padded with '^' (fixed)
//   middle         the span to infill (generated)
//   ending         the characters after the middle, right-padded with '$' (generated for the
//                  prior and the posterior; fixed to the true ending for native infilling)
//   condition      a copy of the true ending (fixed), read only by the posterior's
//                  zero-initialised condition path; the prior never sees it.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <rtb/error.hpp>
#include <rtb/math/philox.hpp>

namespace infill {

inline constexpr char kAlphabet[] = "^$ abcdefghijklmnopqrstuvwxyz',.-";
inline constexpr int kVocab = sizeof(kAlphabet) - 1;  // 33 real tokens; MASK = 33
inline constexpr std::int32_t kBos = 0, kEos = 1;

inline std::int32_t encode(char c) {
  const char* p = std::char_traits<char>::find(kAlphabet + 2, kVocab - 2, c);  // '^' and '$' are pads only
  return p ? static_cast<std::int32_t>(p - kAlphabet) : -1;
}
inline char decode(std::int32_t t) { return t >= 0 && t < kVocab ? kAlphabet[t] : '_'; }

struct Layout {
  int prefix = 12, middle = 8, ending = 12;
  int length() const { return prefix + middle + 2 * ending; }
  int middle_begin() const { return prefix; }
  int ending_begin() const { return prefix + middle; }
  int condition_begin() const { return prefix + middle + ending; }
};

/// Lower-cased sentences made only of the alphabet's characters, deduplicated, in a fixed order.
struct Corpus {
  std::vector<std::vector<std::int32_t>> train, held_out;
  std::size_t skipped = 0;  ///< sentences with characters outside the alphabet
};

inline std::vector<std::int32_t> encode_sentence(const std::string& s) {
  std::vector<std::int32_t> out;
  for (char c : s) {
    const std::int32_t t = encode(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (t < 0) return {};
    out.push_back(t);
  }
  return out;
}

/// Reads WordNet's example sentences (the quoted parts of each gloss, after '|') from
/// `wordnet_dir`/data.{noun,verb,adj,adv}, or one sentence per line from `text_file` if given,
/// and holds out `held_out_fraction` of them (by a seeded shuffle).
inline Corpus load_corpus(const std::string& wordnet_dir, const std::string& text_file, double held_out_fraction,
                          std::uint64_t seed) {
  std::set<std::string> raw;
  if (!text_file.empty()) {
    std::ifstream f(text_file);
    if (!f) throw rtb::IoError("corpus: cannot open " + text_file);
    for (std::string line; std::getline(f, line);)
      if (!line.empty()) raw.insert(line);
  } else {
    const std::regex quoted("\"([^\"]+)\"");
    for (const char* part : {"noun", "verb", "adj", "adv"}) {
      const std::string path = wordnet_dir + "/data." + part;
      std::ifstream f(path);
      if (!f)
        throw rtb::IoError("corpus: cannot open " + path +
                           "; install WordNet with `apt-get install wordnet-base` (or pass --corpus FILE)");
      for (std::string line; std::getline(f, line);) {
        if (line.rfind("  ", 0) == 0) continue;  // the licence header
        const auto bar = line.find(" | ");
        if (bar == std::string::npos) continue;
        const std::string gloss = line.substr(bar + 3);
        for (std::sregex_iterator it(gloss.begin(), gloss.end(), quoted), end; it != end; ++it) raw.insert((*it)[1]);
      }
    }
  }
  Corpus c;
  std::vector<std::vector<std::int32_t>> all;
  for (const std::string& s : raw) {
    auto e = encode_sentence(s);
    if (e.empty())
      ++c.skipped;
    else
      all.push_back(std::move(e));
  }
  if (all.size() < 10)
    throw rtb::InvalidArgumentError("corpus: " + std::to_string(all.size()) + " usable sentences in " +
                                    (text_file.empty() ? wordnet_dir : text_file) +
                                    "; need at least 10 made of the characters \"" + std::string(kAlphabet + 2) + "\"");
  const rtb::math::NoiseKey key{seed, rtb::math::Stream::Data, 0xC0};
  for (std::size_t i = all.size() - 1; i > 0; --i) {  // Fisher–Yates with counter-based draws
    const auto j = static_cast<std::size_t>(rtb::math::uniform<double>(key, i, 0, 0) * static_cast<double>(i + 1));
    std::swap(all[i], all[std::min(j, i)]);
  }
  const auto n_held = static_cast<std::size_t>(held_out_fraction * static_cast<double>(all.size()));
  c.held_out.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n_held));
  c.train.assign(all.begin() + static_cast<std::ptrdiff_t>(n_held), all.end());
  return c;
}

/// Fills one state row for sentence s split at a: beginning s[0, a), middle s[a, a + M),
/// ending s[a + M, …), and the condition columns with a copy of the ending window.
inline void fill_row(const Layout& lay, const std::vector<std::int32_t>& s, int a, std::int32_t* row) {
  const int n = static_cast<int>(s.size());
  if (n == 0) throw rtb::InvalidArgumentError("fill_row: empty sentence");
  if (a < 0 || a > n) throw rtb::InvalidArgumentError("fill_row: split outside the sentence");
  for (int j = 0; j < lay.prefix; ++j) {
    const int src = a - lay.prefix + j;
    row[j] = src >= 0 ? s[static_cast<std::size_t>(src)] : kBos;
  }
  for (int j = 0; j < lay.middle + lay.ending; ++j) {
    const int src = a + j;
    row[lay.middle_begin() + j] = src < n ? s[static_cast<std::size_t>(src)] : kEos;
  }
  std::copy(row + lay.ending_begin(), row + lay.ending_begin() + lay.ending, row + lay.condition_begin());
}

/// Splits usable for the task: a middle of M characters after at least 4, and an ending of 3 to
/// E − 1 characters (so it ends with '$' inside the window).
inline std::vector<int> task_splits(const Layout& lay, std::size_t n) {
  std::vector<int> out;
  for (int a = 4; a + lay.middle + 3 <= static_cast<int>(n); ++a) {
    const int e = static_cast<int>(n) - a - lay.middle;
    if (e <= lay.ending - 1) out.push_back(a);
  }
  return out;
}

inline std::string render(const std::int32_t* t, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += decode(t[i]);
  return s;
}

}  // namespace infill
