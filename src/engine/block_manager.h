// The KV cache's block allocator: a free list of block ids. Blocks are taken as a sequence
// grows and all returned when it finishes, is cancelled or is preempted.
#pragma once

#include <cstdint>
#include <vector>

#include "core/check.h"

namespace fp6serve {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size) : num_blocks_(num_blocks), block_size_(block_size) {
    FP6_CHECK(num_blocks > 0 && block_size > 0, kInvalidArgument, "KV cache needs blocks (got {} of {} tokens)",
              num_blocks, block_size);
    free_.reserve(static_cast<size_t>(num_blocks));
    for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
  }

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used() const { return num_blocks_ - num_free(); }
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Grows `table` to cover `tokens` positions; false (and no change) when blocks run out.
  bool ensure(std::vector<int32_t>& table, int64_t tokens) {
    const int64_t need = blocks_for(tokens) - static_cast<int64_t>(table.size());
    if (need <= 0) return true;
    if (need > num_free()) return false;
    for (int64_t i = 0; i < need; ++i) {
      table.push_back(free_.back());
      free_.pop_back();
    }
    return true;
  }

  void release(std::vector<int32_t>& table) {
    for (int32_t b : table) free_.push_back(b);
    table.clear();
  }

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int32_t> free_;
};

}  // namespace fp6serve
