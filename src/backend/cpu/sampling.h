// The CPU reference of sampling (backend/sampling.h has the semantics): also what the CPU
// backend runs.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "backend/sampling.h"

namespace fp6serve::cpu {

// Buffers sample_row needs, kept between calls so that a row allocates nothing.
struct SampleScratch {
  std::vector<float> work;                          // penalized logits, then weights
  std::vector<uint32_t> keys;                       // top-k
  std::vector<std::pair<uint32_t, uint64_t>> cand;  // top-p: (key, mass)
  std::vector<int32_t> order;                       // top log-probabilities
};

// The next token of one row of `vocab` f32 logits.
Sample sample_row(const float* logits, int64_t vocab, const SampleRow& row, SampleScratch& scratch);

// Every row of logits [rows.size(), vocab], spread over the thread pool.
std::vector<Sample> sample_rows(const float* logits, int64_t vocab, const std::vector<SampleRow>& rows);

}  // namespace fp6serve::cpu
