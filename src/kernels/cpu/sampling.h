// The CPU reference of sampling (kernels/sampling.h has the semantics): also what the CPU
// backend runs.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/sampling.h"

namespace fp6serve::cpu {

// The next token of one row of `vocab` f32 logits. work: scratch, reused between calls.
Sample sample_row(const float* logits, int64_t vocab, const SampleRow& row, std::vector<float>& work);

// Every row of logits [rows.size(), vocab], spread over the thread pool.
std::vector<Sample> sample_rows(const float* logits, int64_t vocab, const std::vector<SampleRow>& rows);

}  // namespace fp6serve::cpu
