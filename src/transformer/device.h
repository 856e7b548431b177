// Where a model runs: the backend for Options::device, and what this build and machine offer.
// Safe to call in any build: a CPU-only build answers that CUDA was not built instead of
// failing to link (this is the one file that asks which backends were built).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/communicator.h"
#include "fp6serve/options.h"
#include "model/config.h"
#include "model/quantization.h"

namespace fp6serve {

bool cuda_built();        // the CUDA backend was compiled in
int cuda_device_count();  // 0 without a driver, a GPU or the CUDA backend (never throws)
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.2 GiB, L2 50 MiB" or why there is none.
std::string cuda_device_summary();
// The GPU's read bandwidth in GB/s, measured now: the roofline of the benchmarks. Throws
// kUnsupported without a GPU.
double cuda_read_bandwidth_gbs();

// The backend for options.device: "cpu", "cuda", or "auto" (cuda when built and a GPU is
// visible, else cpu). The CUDA backend computes in 16 bits, so the fp32 mode runs on the CPU:
// "auto" picks it, "cuda" is an error. Throws kUnsupported when cuda cannot be used.
// With options.tensor_parallel_size N > 1 it is the backend of rank `rank` (of the shape
// transformer/tensor_parallel.h's rank_config gives): on the GPU, GPU `rank` (made current on
// the calling thread, the rank's thread), and N must not exceed the GPUs (kUnsupported naming
// both); on the CPU the ranks are threads of this process over host memory, a stand-in to
// test the split with (no faster than one rank).
std::unique_ptr<Backend> make_backend(const model::ModelConfig& config, const model::QuantizationMode& mode,
                                      const Options& options, int rank = 0);

// The communicators of a model's ranks, backends[r] being rank r's (make_backend's): for one
// rank solo_communicator() (nothing to do, no NCCL), between GPUs NCCL, between CPU backends
// the host stand-in (backend/communicator.h).
std::vector<std::unique_ptr<Communicator>> make_communicators(const std::vector<Backend*>& backends);

}  // namespace fp6serve
