// How the ranks of a tensor-parallel model (docs/tensor_parallel.md) combine their partial
// results: rank r of size() ranks holds a shard of every layer, and after the row-parallel
// linears (o, down) each rank's output is a partial sum of the whole layer's output, which
// all_reduce_sum turns into the whole output on every rank.
//
// Three implementations: solo_communicator() for one rank (does nothing: no NCCL call),
// host_communicators() (below: ranks as threads of this process over host memory, the CPU
// backend's and the tests' stand-in) and NCCL on the GPU (cuda/nccl_communicator.h).
#pragma once

#include <memory>
#include <vector>

#include "core/tensor.h"

namespace fp6serve {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A collective: every rank calls it with a tensor of the same shape and dtype (an activation
  // of its own backend), in the same order as every other collective. On return x holds the
  // elementwise sum of every rank's x, the same bits on every rank. On the GPU it is
  // asynchronous on the backend's stream, and may be recorded in a CUDA graph.
  virtual void all_reduce_sum(Tensor& x) = 0;
  // A rank failed in the middle of a pass: ranks waiting in a collective, or reaching one
  // later, throw instead of waiting for it. The group cannot be used again.
  virtual void abort() = 0;
};

// The communicator of a model that is not split: all_reduce_sum leaves x as it is.
std::unique_ptr<Communicator> solo_communicator();

// `size` communicators over host memory for ranks that are threads of this process (the CPU
// backend's tensor parallelism, which exists to test the split on any machine): f32 tensors
// in host memory. Each rank sums every rank's tensor in rank order, so all get the same bits.
std::vector<std::unique_ptr<Communicator>> host_communicators(int size);

}  // namespace fp6serve
