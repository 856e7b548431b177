// The host-side plan of one forward pass: which new tokens of which sequences, at which
// positions, with which KV blocks, and which rows need logits. A batch may mix prompt chunks
// and single decode tokens of many sequences at different positions (Dynamic SplitFuse).
#pragma once

#include <cstdint>
#include <vector>

namespace fp6serve {

struct BatchSeq {
  int64_t token_begin = 0;           // first row of this sequence in the batch
  int64_t token_count = 0;           // new tokens this pass
  int64_t start_pos = 0;             // position of the first new token (tokens before it are cached)
  std::vector<int32_t> block_table;  // KV blocks covering [0, start_pos + token_count)
};

struct Batch {
  std::vector<int32_t> tokens;     // new tokens of all sequences, concatenated
  std::vector<int32_t> positions;  // position of each token
  std::vector<BatchSeq> seqs;
  std::vector<int64_t> logit_rows;  // rows whose logits the caller wants, in output order

  // Appends a sequence's new tokens; with want_logits the last one (or all, with all_logits)
  // get logits rows.
  void add(const int32_t* new_tokens, int64_t count, int64_t start_pos, std::vector<int32_t> block_table,
           bool want_logits, bool all_logits = false) {
    BatchSeq s;
    s.token_begin = static_cast<int64_t>(tokens.size());
    s.token_count = count;
    s.start_pos = start_pos;
    s.block_table = std::move(block_table);
    for (int64_t i = 0; i < count; ++i) {
      tokens.push_back(new_tokens[i]);
      positions.push_back(static_cast<int32_t>(start_pos + i));
      if (want_logits && (all_logits || i == count - 1)) logit_rows.push_back(s.token_begin + i);
    }
    seqs.push_back(std::move(s));
  }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
};

// Throws Error(kInvalidArgument) unless every token id lies in [0, vocab) and every
// sequence's block table covers its positions with blocks of the cache.
void check_batch(const Batch& batch, int64_t vocab, int64_t num_blocks, int64_t block_size);

// Each token's KV-cache slot: block_table[p / block_size] * block_size + p % block_size.
std::vector<int32_t> kv_slots(const Batch& batch, int64_t block_size);

}  // namespace fp6serve
