// NCCL between the GPUs of a tensor-parallel model driven by one process (docs/tensor_parallel.md):
// one communicator per GPU, made together (ncclCommInitAll), each rank's all-reduce enqueued on
// its backend's stream by its rank's thread, so that it is ordered with the ops around it and
// recorded with them in a CUDA graph. Built when CMake finds NCCL (nccl.h and libnccl, as the
// CUDA toolkit ships them); without it nccl_built() is false and nccl_communicators throws.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/communicator.h"

namespace fp6serve::cuda {

bool nccl_built();

// The communicators of ranks whose backends make_cuda_backend made, backends[r] on its own GPU
// being rank r's. all_reduce_sum takes f16, bf16 or f32 activations of that backend.
std::vector<std::unique_ptr<Communicator>> nccl_communicators(const std::vector<Backend*>& backends);

}  // namespace fp6serve::cuda
