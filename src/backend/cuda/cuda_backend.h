// The CUDA backend: activations and the paged KV cache in FP16 (BF16 for BF16 checkpoints),
// FPx weights packed for that dtype. Built only with CUDA; transformer/device.h chooses it.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "fp6serve/options.h"
#include "model/config.h"

namespace fp6serve::cuda {

// Uses options.cuda_graphs and options.fpx_crossover; throws kUnsupported without a GPU.
std::unique_ptr<Backend> make_cuda_backend(const model::ModelConfig& config, const Options& options);

}  // namespace fp6serve::cuda
