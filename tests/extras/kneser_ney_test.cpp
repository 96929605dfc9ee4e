// SPDX-License-Identifier: Apache-2.0
#include <doctest/doctest.h>

#include <cmath>
#include <rtb/extras/text_metrics.hpp>
#include <rtb/extras/kneser_ney.hpp>

namespace {
std::vector<std::int32_t> toks(const char* s) {
  std::vector<std::int32_t> v;
  for (; *s; ++s) v.push_back(*s - 'a');  // 'a'..'e' -> 0..4; '{' (pad) -> 26 is outside, use 'f' = 5
  return v;
}
}  // namespace

TEST_CASE("Kneser-Ney probabilities sum to one for seen, unseen and short contexts") {
  rtb::KneserNeyLM lm(3, 6);
  for (const char* s : {"abcab", "abcd", "bcabe", "eeab", "dcba"}) lm.add(toks(s), 5);
  for (const char* ctx : {"ab", "bc", "ee", "dd", "e", "", "cab", "ffa"}) {
    CAPTURE(ctx);
    double total = 0;
    for (std::int32_t w = 0; w < 6; ++w) total += std::exp(lm.log_prob(toks(ctx), w));
    CHECK(total == doctest::Approx(1.0).epsilon(1e-12));
  }
  // a frequent continuation beats a never-seen one
  CHECK(lm.log_prob(toks("ab"), 2) > lm.log_prob(toks("ab"), 4));
}

TEST_CASE("Kneser-Ney bigram probability on a hand-computed corpus") {
  // order 2, D = 0.5, corpus "ab", "ab", "cb" with pad 3 (d): bigrams da, ab, da, ab, dc, cb
  rtb::KneserNeyLM lm(2, 4, 0.5);
  for (const char* s : {"ab", "ab", "cb"}) lm.add(toks(s), 3);
  // continuation unigrams: a ← {d}, b ← {a, c}, c ← {d}: N1+(•w) = 1, 2, 1 of 4 bigram types
  // unigram level: p(b) = (2 − 0.5)/4 + 0.5·3/4·(1/4) = 0.375 + 0.09375 = 0.46875
  // bigram level, context a: c(ab) = 2, c(a) = 2, one type: p(b|a) = (2 − 0.5)/2 + 0.5·1/2·0.46875
  const double expected = 1.5 / 2 + 0.25 * 0.46875;
  CHECK(std::exp(lm.log_prob(toks("a"), 1)) == doctest::Approx(expected).epsilon(1e-12));
  CHECK_THROWS_AS(lm.log_prob(toks("a"), 9), rtb::InvalidArgumentError);
  rtb::KneserNeyLM empty(3, 4);
  CHECK_THROWS_AS(empty.log_prob(toks("a"), 1), rtb::InvalidArgumentError);
}

TEST_CASE("sentence BLEU and distinct-n on hand-computed examples") {
  const auto ref = toks("abcdabcd");
  CHECK(rtb::sentence_bleu(ref, ref) == doctest::Approx(1.0));
  // candidate "abcdabce": 1-grams 8/8... clipped: a2 b2 c2 d1(ref has 2) e0 -> 7/8;
  // 2-grams ab,bc,cd,da,ab,bc,ce: ref ab2 bc2 cd2 da1 -> 6/7; 3-grams abc,bcd,cda,dab,abc,bce: 5/6;
  // 4-grams abcd,bcda,cdab,dabc,abce: 4/5
  const double expected = std::exp(0.25 * (std::log(7.0 / 8) + std::log(6.0 / 7) + std::log(5.0 / 6) + std::log(4.0 / 5)));
  CHECK(rtb::sentence_bleu(toks("abcdabce"), ref) == doctest::Approx(expected).epsilon(1e-12));
  // "abca": 1-grams 4/4, 2-grams ab bc (not ca) 2/3, 3-grams abc (not bca) 1/2, no 4-gram match:
  // smoothed to 0.1/1; shorter candidate: brevity penalty exp(1 − 8/4)
  const double p = std::exp(0.25 * (std::log(4.0 / 4) + std::log(2.0 / 3) + std::log(1.0 / 2) + std::log(0.1 / 1)));
  CHECK(rtb::sentence_bleu(toks("abca"), ref) == doctest::Approx(std::exp(-1.0) * p).epsilon(1e-12));
  CHECK(rtb::distinct_n({toks("aaaa"), toks("abab")}, 2) == doctest::Approx(3.0 / 6));
}
