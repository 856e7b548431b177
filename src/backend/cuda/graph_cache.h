// Recorded forward passes (CUDA graphs), keyed by what a recording depends on besides the
// weights: shapes and every buffer address. A decode step of an already-seen shape is one
// graph launch instead of ~10 launches per layer. Recording can fail on some drivers or
// builds; then recording is switched off for good and the ops run directly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fp6serve::cuda {

class GraphCache {
 public:
  explicit GraphCache(bool enabled) : enabled_(enabled) {}
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  bool enabled() const { return enabled_; }
  // "on, 3 recorded" / "off" / "off (recording failed: ...)".
  std::string describe() const;

  // Launches the recording of `key` on `stream`; false when there is none.
  bool replay(const std::vector<int64_t>& key, cudaStream_t stream);
  // Starts capturing `stream` (drops every recording first when the cache is full).
  void begin(cudaStream_t stream);
  // Ends the capture, keeps it under `key` and launches it; false (and recording off from now
  // on) when the capture could not be made into a graph: the caller then runs the ops again.
  bool end(const std::vector<int64_t>& key, cudaStream_t stream);
  // Discards a capture an op threw in the middle of.
  void abort(cudaStream_t stream);
  bool capturing() const { return capturing_; }

 private:
  void clear();
  static constexpr size_t kMaxGraphs = 64;
  bool enabled_;
  bool capturing_ = false;
  std::string off_why_;
  std::map<std::vector<int64_t>, cudaGraphExec_t> graphs_;
};

}  // namespace fp6serve::cuda
