#include "backend/backend.h"

#include "core/check.h"

namespace fp6serve {

void check_batch(const Batch& batch, int64_t vocab, int64_t num_blocks, int64_t block_size) {
  for (int32_t t : batch.tokens)
    FP6_CHECK(t >= 0 && t < vocab, kInvalidArgument, "token id {} is outside the vocabulary [0, {})", t, vocab);
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const BatchSeq& s = batch.seqs[i];
    FP6_CHECK(static_cast<int64_t>(s.block_table.size()) * block_size >= s.start_pos + s.token_count, kInvalidArgument,
              "sequence {} needs {} positions but its {} KV blocks hold {}", i, s.start_pos + s.token_count,
              s.block_table.size(), s.block_table.size() * block_size);
    for (int32_t b : s.block_table)
      FP6_CHECK(b >= 0 && b < num_blocks, kInvalidArgument, "KV block {} outside the cache of {} blocks", b,
                num_blocks);
  }
}

std::vector<int32_t> kv_slots(const Batch& batch, int64_t block_size) {
  std::vector<int32_t> slots;
  slots.reserve(batch.tokens.size());
  for (const BatchSeq& s : batch.seqs)
    for (int64_t t = 0; t < s.token_count; ++t) {
      const int64_t p = s.start_pos + t;
      slots.push_back(
          static_cast<int32_t>(s.block_table[static_cast<size_t>(p / block_size)] * block_size + p % block_size));
    }
  return slots;
}

std::unique_ptr<LinearWeight> Backend::random_linear(int64_t, int64_t, const QuantizationMode&, float, uint64_t) {
  FP6_THROW(kUnsupported, "random-weight models are built on the GPU; the {} backend cannot make them", describe());
}

Tensor Backend::random_tensor(const std::vector<int64_t>&, float, uint64_t) {
  FP6_THROW(kUnsupported, "random-weight models are built on the GPU; the {} backend cannot make them", describe());
}

}  // namespace fp6serve
