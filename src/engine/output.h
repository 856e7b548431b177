// A request's generated tokens turned into the text it streams: incremental detokenization
// (never a broken UTF-8 character), stop strings (matched across token boundaries, never
// emitted; a tail that could still grow into one is held back until it cannot), and the
// tokens that end a request (EOS, stop_token_ids; not decoded).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fp6serve/options.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve {

class OutputStream {
 public:
  // eos_ids: the model's end-of-sequence tokens (ignored when options.ignore_eos).
  OutputStream(const Tokenizer& tokenizer, const GenerateOptions& options, std::vector<int32_t> eos_ids);

  // Appends the text that became final with `token` to `text`. True when the token ends the
  // request: an EOS or stop token (itself not decoded), or a completed stop string (the text
  // before it is final, the rest dropped).
  bool push(int32_t token, std::string& text);
  // Everything held back, as final text: the request ended for another reason (length, cancel).
  std::string flush();

 private:
  IncrementalDecoder decoder_;
  std::vector<std::string> stop_;
  std::vector<int32_t> stop_ids_;  // EOS (unless ignored) and stop_token_ids
  std::string pending_;            // decoded text that could be the start of a stop string
};

}  // namespace fp6serve
