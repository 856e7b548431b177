#include "backend/cuda/graph_cache.h"

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"

namespace fp6serve::cuda {

GraphCache::~GraphCache() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
}

std::string GraphCache::describe() const {
  return enabled_ ? fmt::format("on, {} recorded", graphs_.size()) : "off" + off_why_;
}

void GraphCache::clear() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

bool GraphCache::replay(const std::vector<int64_t>& key, cudaStream_t stream) {
  const auto it = graphs_.find(key);
  if (it == graphs_.end()) return false;
  FP6_CUDA_CHECK(cudaGraphLaunch(it->second, stream));
  return true;
}

void GraphCache::begin(cudaStream_t stream) {
  if (graphs_.size() >= kMaxGraphs) {
    FP6_CUDA_CHECK(cudaStreamSynchronize(stream));
    clear();
  }
  FP6_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
}

bool GraphCache::end(const std::vector<int64_t>& key, cudaStream_t stream) {
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaStreamEndCapture(stream, &graph);
  if (err == cudaSuccess && graph) err = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (err != cudaSuccess || !exec) {
    cudaGetLastError();
    off_why_ = fmt::format(" (recording failed: {})", cudaGetErrorString(err));
    enabled_ = false;
    return false;
  }
  graphs_.emplace(key, exec);
  FP6_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  return true;
}

void GraphCache::abort(cudaStream_t stream) {
  if (!capturing_) return;
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

}  // namespace fp6serve::cuda
