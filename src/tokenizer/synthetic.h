// A tokenizer for models that have none: random-weight models of a real shape served for
// benchmarks (`fp6serve serve --random-weights llama2-7b`). Byte-level BPE without merges over
// `vocab_size` ids: ids 0-255 are the bytes (any text encodes, byte by byte), the last id is
// "</s>" (EOS), and every other id decodes to a short word of its own ("w1234 "), so a
// random model's output reads as a stream of distinct tokens.
#pragma once

#include <cstdint>

#include "tokenizer/tokenizer.h"

namespace fp6serve {

// vocab_size: at least 258. Throws Error(kInvalidArgument) otherwise.
Tokenizer synthetic_tokenizer(int64_t vocab_size);

}  // namespace fp6serve
