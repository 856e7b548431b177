// The paged KV cache storage of one model instance: per layer, K and V tensors of
// [num_blocks, block_size, kv_heads, head_dim] on the backend's device. Which blocks belong
// to which sequence is the engine's business (engine/block_manager.h); a forward pass gets
// each sequence's block table.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace fp6serve {

struct KvCache {
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  std::vector<Tensor> k;  // one per layer
  std::vector<Tensor> v;
  // A tensor-parallel model's (transformer/model.h): this is rank 0's cache, and ranks[r - 1]
  // rank r's, on its device with its share of the KV heads; the same blocks in all of them.
  std::vector<KvCache> ranks;

  // This rank's bytes (on its device).
  size_t bytes() const {
    size_t b = 0;
    for (size_t i = 0; i < k.size(); ++i) b += k[i].bytes() + v[i].bytes();
    return b;
  }
};

}  // namespace fp6serve
