// Sampling on the GPU: the twin of cpu::sample_row (backend/sampling.h has the semantics and
// why the two agree bit for bit). Only tokens and log-probabilities come back to the host,
// not the logits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/device_buffer.h"
#include "backend/sampling.h"
#include "core/dtype.h"

namespace fp6serve::cuda {

// The next token of each row of logits [rows.size(), vocab] (16-bit `dtype`, on the device).
// scratch grows as needed (rows x vocab floats and the rows' parameters). Waits for the
// stream: the results are on the host when it returns.
std::vector<Sample> sample_rows(const void* logits, DType dtype, int64_t vocab, const std::vector<SampleRow>& rows,
                                DeviceBuffer& scratch, cudaStream_t stream);

}  // namespace fp6serve::cuda
