// The CUDA backend: activations and the paged KV cache in FP16 (BF16 for BF16 checkpoints),
// FPx weights packed for that dtype. Built only with CUDA; transformer/device.h chooses it.
#pragma once

#include <cuda_runtime.h>

#include <memory>

#include "backend/backend.h"
#include "fp6serve/options.h"
#include "model/config.h"

namespace fp6serve::cuda {

// Uses options.cuda_graphs and options.fpx_crossover; throws kUnsupported without a GPU. The
// backend lives on GPU `device` (a tensor-parallel rank's), which it makes current on the
// calling thread, and again on each call that may come from another thread (loading, the KV
// cache, the start of a pass, sampling, copies back): the ops of a pass run on the thread
// that began it.
std::unique_ptr<Backend> make_cuda_backend(const model::ModelConfig& config, const Options& options, int device = 0);

// The GPU and the stream of a backend make_cuda_backend made (NCCL runs on that stream).
int backend_device(const Backend& backend);
cudaStream_t backend_stream(const Backend& backend);

}  // namespace fp6serve::cuda
