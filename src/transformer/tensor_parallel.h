// Tensor parallelism (docs/tensor_parallel.md): the pieces Model uses to run one model as N
// ranks, each rank a backend of its own (a GPU, or on the CPU a stand-in for testing) holding
// a shard of every layer.
//
//   q/k/v, gate/up     column-parallel: rank r computes its heads (its KV heads and their
//                      query heads) and its 1/N of the intermediate size, from whole rows of
//                      the weight;
//   o, down            row-parallel: rank r multiplies its 1/N of the input (the heads or the
//                      intermediate columns it computed) by those columns of the weight; the
//                      ranks' outputs are partial sums, and an all-reduce (communicator.h)
//                      gives every rank the whole output;
//   MoE experts        each expert split like gate_up and down; the router replicated, so every
//                      rank picks the same experts;
//   embeddings, norms  replicated; lm_head on rank 0 only (it alone computes logits).
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace fp6serve {

// The shape one rank of `ranks` computes: the config with num_heads, num_kv_heads and the
// MLPs' intermediate sizes (dense, each expert's, the shared expert's) divided by `ranks`.
// Throws Error(kInvalidArgument) naming the first of them that `ranks` does not divide.
model::ModelConfig rank_config(const model::ModelConfig& config, int ranks);

// Every rank's shard of one linear layer of `config` (as the loader made it for one rank:
// q/k/v or gate/up stacked), rank r's at [r]: column-parallel layers (qkv, gate_up, the
// experts' and the shared expert's gate_up) keep rank r's rows of each stacked part with
// their biases; row-parallel ones (o, down and theirs) keep rank r's columns, the bias on
// rank 0 only. FPx codes and row scales are copied, never quantized again: each shard holds
// exactly the whole layer's weights, a row-parallel shard each whole row's scale. lm_head is
// not split (throws kInternal).
std::vector<model::HostLinear> shard_linear(const model::HostLinear& full, const model::ModelConfig& config, int ranks);

// The threads of the ranks: rank 0 runs on the calling thread, rank r >= 1 on a thread of its
// own that lives as long as this object. A backend is driven from its rank's thread (a GPU
// backend's thread keeps its device current; the CUDA backend also sets it on entry).
class RankThreads {
 public:
  explicit RankThreads(int ranks);
  ~RankThreads();
  RankThreads(const RankThreads&) = delete;
  RankThreads& operator=(const RankThreads&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(r) for every rank at once, each on its rank's thread; returns when every call
  // has returned, rethrowing the exception of the lowest rank that threw. With one rank: fn(0).
  void run(const std::function<void(int)>& fn);

 private:
  struct Worker {
    std::thread thread;
    std::mutex mutex;
    std::condition_variable wake;
    const std::function<void(int)>* task = nullptr;  // set while the worker has work
    std::exception_ptr error;
    bool stop = false;
  };
  void loop(Worker& w, int rank);

  std::vector<std::unique_ptr<Worker>> workers_;  // ranks 1..
  std::mutex done_mutex_;
  std::condition_variable done_;
  int pending_ = 0;
};

}  // namespace fp6serve
