#include "tokenizer/synthetic.h"

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "tokenizer/unicode.h"

namespace fp6serve {

Tokenizer synthetic_tokenizer(int64_t vocab_size) {
  FP6_CHECK(vocab_size >= 258 && vocab_size <= (int64_t{1} << 24), kInvalidArgument,
            "a synthetic tokenizer needs a vocabulary of 258 to 2^24 ids, not {}", vocab_size);
  using json = nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[text::byte_to_unicode(static_cast<uint8_t>(b))] = b;
  // Byte-level tokens of " w<id>": printable ASCII is its own byte-level character, and the
  // space is 'Ġ' (U+0120).
  for (int64_t id = 256; id < vocab_size - 1; ++id) vocab["\u0120w" + std::to_string(id)] = id;
  const int64_t eos = vocab_size - 1;
  const json tokenizer = {
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", eos},
                                     {"content", "</s>"},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"byte_fallback", false}}}};
  const json config = {{"eos_token", "</s>"}, {"add_bos_token", false}};
  return Tokenizer::parse(tokenizer.dump(), config.dump(), "the synthetic tokenizer");
}

}  // namespace fp6serve
