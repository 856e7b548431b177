// The CPU backend: f32 activations and KV cache, FPx weights packed for an F16 target. Always
// built; the reference every other backend is held against.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "fp6serve/options.h"
#include "model/config.h"

namespace fp6serve::cpu {

// Uses options.cpu_isa, checked against this machine (and the process-wide thread pool, which
// make_backend sizes).
std::unique_ptr<Backend> make_cpu_backend(const model::ModelConfig& config, const Options& options);

}  // namespace fp6serve::cpu
