// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the infill example's corpus reader. Byte 0 picks the format (even: one
// sentence per line, odd: a WordNet data file), byte 1 the held-out fraction; the rest is the file.
// It must throw an rtb::Error or return a corpus whose sentences are all in the alphabet.

#include <cstdint>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

#include "../../examples/infill/text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data) + 2, size - 2));
  std::set<std::string> raw;
  if (data[0] & 1)
    infill::read_wordnet_sentences(in, raw);
  else
    infill::read_text_sentences(in, raw);
  try {
    const infill::Corpus c = infill::make_corpus(raw, data[1] / 256.0, data[0], "fuzz.txt");
    if (c.train.size() + c.held_out.size() + c.skipped != raw.size()) std::abort();
    for (const auto* part : {&c.train, &c.held_out})
      for (const auto& s : *part)
        for (std::int32_t t : s)
          if (t < 2 || t >= infill::kVocab) std::abort();  // '^' and '$' are pads, never text
  } catch (const rtb::Error&) {
  }
  return 0;
}
