// Fuzzes Tokenizer::parse with tokenizer.json and tokenizer_config.json, then encodes and
// decodes with what it accepts: any input is a working tokenizer or an fp6serve::Error;
// anything else (another exception, a crash, a sanitizer report, a huge allocation) is a
// finding. The input is tokenizer.json, then optionally a NUL and tokenizer_config.json, then
// optionally a NUL and a text to encode besides the fixed ones.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fp6serve/error.h"
#include "tokenizer/tokenizer.h"

namespace {

void use(const fp6serve::Tokenizer& tok, std::string_view extra) {
  using fp6serve::Error;
  const std::string texts[] = {
      "Hello, world! It's 2024: 12345 tokens.",
      " leading  spaces\tand\nnewlines\r\n",
      "\xC3\xA9t\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xE4\xB8\xAD\xE6\x96\x87",  // é€😀中文
      "\xff\xfe broken \xC3 utf-8 \xE2\x82 \xF0\x9F",                              // invalid UTF-8
      std::string("nul\0inside", 10),
      "<s></s><|begin_of_text|><|im_start|>user<|im_end|>",
      std::string(extra),
  };
  for (const std::string& text : texts) {
    for (bool special : {true, false}) {
      std::vector<int32_t> ids;
      try {
        ids = tok.encode(text, special);
      } catch (const Error&) {
        continue;  // a character the vocabulary cannot represent, and no unk token
      }
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
      fp6serve::IncrementalDecoder dec(tok);
      for (int32_t id : ids) (void)dec.push(id);
      (void)dec.flush();
    }
  }
  const int32_t n = tok.vocab_size();
  const std::vector<int32_t> odd = {0, 1, n - 1, n, -1, n / 2, 2147483647, -2147483647 - 1};
  (void)tok.decode(odd, false);
  (void)tok.decode(odd, true);
  for (int32_t id : odd) {
    (void)tok.is_special(id);
    try {
      (void)tok.id_to_token(id);
    } catch (const Error&) {
    }
  }
  (void)tok.token_to_id("<s>");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t a = input.find('\0');
  const std::string_view tokenizer = input.substr(0, a);
  std::string_view config, extra;
  if (a != std::string_view::npos) {
    const size_t b = input.find('\0', a + 1);
    config = input.substr(a + 1, b == std::string_view::npos ? std::string_view::npos : b - a - 1);
    if (b != std::string_view::npos) extra = input.substr(b + 1);
  }
  try {
    const fp6serve::Tokenizer tok =
        fp6serve::Tokenizer::parse(std::string(tokenizer), std::string(config), "tokenizer.json");
    use(tok, extra);
  } catch (const fp6serve::Error&) {
  }
  return 0;
}
