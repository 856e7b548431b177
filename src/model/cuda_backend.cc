// The CUDA backend: activations and the paged KV cache in FP16 (BF16 for BF16 checkpoints),
// FPx weights packed for that dtype and run by cuda::fpx_linear (kernels/cuda/fpx_linear.h),
// dense weights by cuBLAS, the other ops by kernels/cuda/transformer_ops.h, sampling by
// kernels/cuda/sampling.h. Everything runs on one stream; the host waits for the GPU only
// when the sampled tokens (or the logits) come back. The ops of a pass are recorded as a
// CUDA graph and replayed for later passes of the same shape (decode steps: one launch
// instead of ~10 per layer); FP6SERVE_CUDA_GRAPHS=0 turns that off. Built only with CUDA
// (src/CMakeLists.txt).
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

#include "core/check.h"
#include "core/gpu.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/fpx_linear.h"
#include "kernels/cuda/measure.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/transformer_ops.h"
#include "model/backend.h"

namespace fp6serve::model {

namespace {

class CudaLinear : public LinearWeight {
 public:
  std::optional<cuda::DeviceFpxWeight> fpx;
  cuda::DeviceDenseWeight dense;
  cuda::DeviceBuffer bias;  // f32 [rows] or empty
};

// A device buffer that grows to the largest size asked for (contents not kept).
struct Scratch {
  cuda::DeviceBuffer buf;
  template <typename T>
  T* upload(const std::vector<T>& host) {
    reserve(host.size() * sizeof(T));
    if (!host.empty()) buf.upload(host.data(), host.size() * sizeof(T));
    return buf.as<T>();
  }
  void reserve(size_t bytes) {
    if (bytes > buf.size()) buf = cuda::DeviceBuffer(std::max(bytes, buf.size() * 2));
  }
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(const ModelConfig& config)
      : config_(config), act_(config.dtype == DType::kBF16 ? DType::kBF16 : DType::kF16) {
    require_cuda();
    FP6_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    inv_freq_ = inv_freq_buf_.upload(config.rope_inv_freq());
    const char* env = std::getenv("FP6SERVE_CUDA_GRAPHS");
    graphs_enabled_ = !(env && std::string(env) == "0");
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::kCuda; }
  DType act_dtype() const override { return act_; }
  DType pack_target(fpx::Format) const override { return act_; }
  std::string describe() const override {
    return fmt::format("cuda ({}, {}, CUDA graphs {})", cuda_device_summary(), dtype_name(act_),
                       graphs_enabled_ ? fmt::format("on, {} recorded", graphs_.size()) : "off" + graphs_off_why_);
  }

  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& host) override {
    auto w = std::make_unique<CudaLinear>();
    w->rows = host.rows;
    w->cols = host.cols;
    w->quantized = host.packed != nullptr;
    if (host.packed) {
      w->fpx = cuda::upload(*host.packed);
      fpx_weights_.push_back(&*w->fpx);
      w->weight_bytes = w->fpx->data.size() + w->fpx->scales.size();
    } else {
      const Tensor dense = in_act_dtype(host.dense);
      w->dense = cuda::upload_dense(dense.data(), act_, host.rows, host.cols);
      w->weight_bytes = w->dense.data.size();
    }
    if (!host.bias.empty()) {
      w->bias = cuda::DeviceBuffer(host.bias.size() * sizeof(float));
      w->bias.upload(host.bias.data(), w->bias.size());
    }
    return w;
  }

  std::unique_ptr<LinearWeight> random_linear(int64_t rows, int64_t cols, const QuantizationMode& mode, float stddev,
                                              uint64_t seed) override {
    auto w = std::make_unique<CudaLinear>();
    w->rows = rows;
    w->cols = cols;
    w->quantized = mode.quantized;
    cuda::DeviceBuffer values(static_cast<size_t>(rows * cols) * dtype_size(act_));
    cuda::fill_normal(values.data(), rows * cols, seed, stddev, act_ == DType::kBF16);
    if (mode.quantized) {
      w->fpx = cuda::quantize_on_device(values.data(), act_, rows, cols, mode.format, act_, "random weight");
      fpx_weights_.push_back(&*w->fpx);
      w->weight_bytes = w->fpx->data.size() + w->fpx->scales.size();
    } else {
      w->dense = {act_, rows, cols, std::move(values)};
      w->weight_bytes = w->dense.data.size();
    }
    FP6_CUDA_CHECK(cudaDeviceSynchronize());  // the fill ran on the default stream
    return w;
  }

  Tensor random_tensor(const std::vector<int64_t>& shape, float stddev, uint64_t seed) override {
    Tensor t = Tensor::empty(shape, act_, Device::kCuda);
    cuda::fill_normal(t.data(), t.numel(), seed, stddev, act_ == DType::kBF16);
    FP6_CUDA_CHECK(cudaDeviceSynchronize());
    return t;
  }

  Tensor adopt_tensor(Tensor host) override {
    Tensor t = Tensor::empty(host.shape(), host.dtype(), Device::kCuda);
    host.copy_to(t);
    return t;
  }

  KvCache make_kv_cache(int64_t num_blocks, int64_t block_size) override {
    KvCache c;
    c.num_blocks = num_blocks;
    c.block_size = block_size;
    const std::vector<int64_t> shape = {num_blocks, block_size, config_.num_kv_heads, config_.head_dim};
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      c.k.push_back(Tensor::zeros(shape, act_, Device::kCuda));
      c.v.push_back(Tensor::zeros(shape, act_, Device::kCuda));
    }
    FP6_CUDA_CHECK(cudaDeviceSynchronize());  // the zero-fill ran on the default stream
    return c;
  }
  size_t kv_block_bytes(int64_t block_size) const override {
    return static_cast<size_t>(2 * config_.num_layers * block_size * config_.kv_size()) * dtype_size(act_);
  }

  // Activations come from an arena reset by begin_forward (no cudaMalloc/cudaFree, which
  // synchronizes, per step); one that does not fit is allocated normally and the arena grows
  // to the high-water mark at the next forward.
  Tensor activations(int64_t rows, int64_t cols) override { return arena_tensor({rows, cols}, act_); }

  // Uploads the batch's per-token arrays once for all layers.
  void begin_forward(const Batch& batch, const KvCache& cache) override {
    if (arena_peak_ > arena_.size()) arena_ = cuda::DeviceBuffer(arena_peak_ + arena_peak_ / 4);
    arena_used_ = 0;
    const int64_t vocab = config_.vocab_size;
    for (int32_t t : batch.tokens)
      FP6_CHECK(t >= 0 && t < vocab, kInvalidArgument, "token id {} is outside the vocabulary [0, {})", t, vocab);
    max_blocks_ = 1;
    max_context_ = 0;
    for (const BatchSeq& s : batch.seqs) {
      max_blocks_ = std::max<int64_t>(max_blocks_, static_cast<int64_t>(s.block_table.size()));
      max_context_ = std::max(max_context_, s.start_pos + s.token_count);
    }
    max_blocks_ = (max_blocks_ + 15) / 16 * 16;  // changes every 256 positions, not every block
    std::vector<int32_t> slots, seq_of_token, tables(batch.seqs.size() * static_cast<size_t>(max_blocks_), 0);
    std::vector<int64_t> starts, counts;  // per sequence, for the attention plan
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      const BatchSeq& s = batch.seqs[i];
      starts.push_back(s.start_pos);
      counts.push_back(s.token_count);
      FP6_CHECK(static_cast<int64_t>(s.block_table.size()) * cache.block_size >= s.start_pos + s.token_count,
                kInvalidArgument, "sequence {} needs {} positions but its {} KV blocks hold {}", i,
                s.start_pos + s.token_count, s.block_table.size(), s.block_table.size() * cache.block_size);
      for (int32_t b : s.block_table)
        FP6_CHECK(b >= 0 && b < cache.num_blocks, kInvalidArgument, "KV block {} outside the cache of {} blocks", b,
                  cache.num_blocks);
      std::copy(s.block_table.begin(), s.block_table.end(), tables.begin() + static_cast<int64_t>(i) * max_blocks_);
      for (int64_t t = 0; t < s.token_count; ++t) {
        const int64_t p = s.start_pos + t;
        slots.push_back(static_cast<int32_t>(s.block_table[p / cache.block_size] * cache.block_size +
                                             p % cache.block_size));
        seq_of_token.push_back(static_cast<int32_t>(i));
      }
    }
    const cuda::AttentionPlan plan =
        cuda::plan_attention(starts, counts, config_.num_heads, config_.head_dim, cuda::sm_count());
    // Every per-pass array in one upload, ordered on the stream (one copy, not one sync per array).
    staging_.clear();
    const size_t o_tiles = stage(plan.tiles), o_singles = stage(plan.singles), o_tokens = stage(batch.tokens),
                 o_positions = stage(batch.positions), o_slots = stage(slots), o_seq = stage(seq_of_token),
                 o_tables = stage(tables), o_rows = stage(batch.logit_rows);
    pass_buf_.reserve(staging_.size());
    FP6_CUDA_CHECK(cudaMemcpyAsync(pass_buf_.buf.data(), staging_.data(), staging_.size(), cudaMemcpyHostToDevice, stream_));
    auto at = [&]<typename T>(size_t offset) { return reinterpret_cast<const T*>(pass_buf_.buf.as<uint8_t>() + offset); };
    attn_work_.tiles = at.operator()<int32_t>(o_tiles);
    attn_work_.num_tiles = static_cast<int64_t>(plan.tiles.size() / 2);
    attn_work_.singles = at.operator()<int32_t>(o_singles);
    attn_work_.num_singles = static_cast<int64_t>(plan.singles.size());
    attn_work_.splits = plan.splits;
    attn_work_.split_keys = plan.split_keys;
    tokens_ = at.operator()<int32_t>(o_tokens);
    positions_ = at.operator()<int32_t>(o_positions);
    slots_ = at.operator()<int32_t>(o_slots);
    seq_of_token_ = at.operator()<int32_t>(o_seq);
    tables_ = at.operator()<int32_t>(o_tables);
    logit_rows_ = at.operator()<int64_t>(o_rows);
    const int64_t n = batch.num_tokens(), rows = static_cast<int64_t>(batch.logit_rows.size());
    attn_floats_ = cuda::paged_attention_workspace(attn_work_, config_.num_heads, config_.head_dim, max_context_);
    attn_ws_.reserve(std::max<size_t>(attn_floats_, 1) * sizeof(float));
    // The FPx workspace for every layer at n (and the logits rows), sized here: no allocation
    // may happen among the ops (they may be recorded).
    size_t& need = workspace_need_[{n, rows}];  // once per batch shape, not per step
    if (need == 0)
      for (const cuda::DeviceFpxWeight* w : fpx_weights_)
        need = std::max({need, cuda::fpx_linear_workspace_bytes(*w, n), cuda::fpx_linear_workspace_bytes(*w, rows)});
    if (need > linear_ws_.size()) {
      linear_ws_ = cuda::DeviceBuffer(need);
      FP6_CUDA_CHECK(cudaMemset(linear_ws_.data(), 0, need));  // the workspace contract
    }
    // What a recording of this pass depends on besides the weights: shapes, every buffer.
    key_ = {n,
            rows,
            static_cast<int64_t>(batch.seqs.size()),
            max_blocks_,
            attn_work_.num_tiles,
            attn_work_.num_singles,
            attn_work_.splits,
            attn_work_.split_keys,
            static_cast<int64_t>(attn_floats_),
            reinterpret_cast<int64_t>(cache.k.empty() ? nullptr : cache.k[0].data())};
    for (const Scratch* b : {&pass_buf_, &attn_ws_}) key_.push_back(reinterpret_cast<int64_t>(b->buf.data()));
    key_.push_back(reinterpret_cast<int64_t>(linear_ws_.data()));
    key_.push_back(reinterpret_cast<int64_t>(arena_.data()));
  }

  bool replay_forward() override {
    // Activations that did not fit the arena were allocated afresh: not replayable.
    recordable_ = graphs_enabled_ && arena_used_ <= arena_.size();
    if (!recordable_) return false;
    const auto it = graphs_.find(key_);
    if (it == graphs_.end()) return false;
    FP6_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
    return true;
  }

  void begin_recording() override {
    if (!recordable_) return;
    if (graphs_.size() >= kMaxGraphs) {
      FP6_CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
      graphs_.clear();
    }
    FP6_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    recording_ = true;
  }

  bool end_recording() override {
    if (!recording_) return true;
    recording_ = false;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaError_t err = cudaStreamEndCapture(stream_, &graph);
    if (err == cudaSuccess && graph) err = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (err != cudaSuccess || !exec) {
      cudaGetLastError();
      graphs_off_why_ = fmt::format(" (recording failed: {})", cudaGetErrorString(err));
      graphs_enabled_ = false;  // this build or driver cannot record these ops: run them directly
      return false;
    }
    graphs_.emplace(key_, exec);
    FP6_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
    return true;
  }

  void abort_recording() override {
    if (!recording_) return;
    recording_ = false;
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
  }

  void embed(const Tensor& table, const Batch& batch, Tensor& out) override {
    cuda::embedding(table.data(), table.dtype(), table.dim(1), tokens_, batch.num_tokens(), out.data(), act_, stream_);
  }

  void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    cuda::rms_norm(x.data(), w.data_as<float>(), x.dim(0), x.dim(1), eps, out.data(), act_, stream_);
  }

  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    cuda::add_rms_norm(residual.data(), x.data(), w.data_as<float>(), x.dim(0), x.dim(1), eps, out.data(), act_,
                       stream_);
  }

  void linear(const Tensor& x, const LinearWeight& lw, Tensor& y) override {
    const auto& w = static_cast<const CudaLinear&>(lw);
    const int64_t n = x.dim(0);
    const float* bias = w.bias.size() ? w.bias.as<float>() : nullptr;
    if (!w.fpx) return cuda::dense_linear(x.data(), act_, n, w.dense, bias, y.data(), nullptr, 0, stream_);
    cuda::fpx_linear(x.data(), act_, n, *w.fpx, bias, y.data(), linear_ws_.data(), linear_ws_.size(), stream_);
  }

  void rope_write_kv(Tensor& qkv, const Batch& batch, KvCache& cache, int64_t layer) override {
    cuda::rope_write_kv(qkv.data(), batch.num_tokens(), config_.num_heads, positions_, slots_,
                        inv_freq_, view(cache, layer), act_, stream_);
  }

  void attention(const Tensor& qkv, const Batch&, const KvCache& cache, int64_t layer, Tensor& out) override {
    cuda::paged_attention(qkv.data(), attn_work_, config_.num_heads, positions_, seq_of_token_, tables_,
                          max_blocks_, view(cache, layer), config_.sliding_window, max_context_, out.data(),
                          attn_ws_.buf.as<float>(), attn_floats_, act_, stream_);
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    cuda::silu_mul(gate_up.data(), gate_up.dim(0), out.dim(1), out.data(), act_, stream_);
  }

  void add(Tensor& acc, const Tensor& x) override { cuda::add(acc.data(), x.data(), acc.numel(), act_, stream_); }

  void gather_logit_rows(const Tensor& x, const Batch& batch, Tensor& out) override {
    cuda::gather_rows(x.data(), x.dim(1), logit_rows_, static_cast<int64_t>(batch.logit_rows.size()), out.data(), act_,
                      stream_);
  }

  std::vector<Sample> sample(const Tensor& logits, const std::vector<SampleRow>& rows) override {
    return cuda::sample_rows(logits.data(), act_, logits.dim(1), rows, sample_scratch_, stream_);
  }

  Tensor to_host_f32(const Tensor& x) override {
    Tensor f = arena_tensor(x.shape(), DType::kF32);
    cuda::to_f32(x.data(), x.numel(), f.data_as<float>(), act_, stream_);
    FP6_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return f.to_host();
  }

 private:
  // A dense host weight in the activation dtype (checkpoints may hold f32 or the other 16-bit type).
  Tensor in_act_dtype(const Tensor& host) const {
    if (host.dtype() == act_) return host;
    std::vector<float> f(static_cast<size_t>(host.numel()));
    convert_to_f32(host.data(), host.dtype(), f.data(), f.size());
    Tensor out = Tensor::empty(host.shape(), act_);
    convert_from_f32(f.data(), out.data(), act_, f.size());
    return out;
  }
  Tensor arena_tensor(const std::vector<int64_t>& shape, DType dtype) {
    const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    const size_t offset = arena_used_;
    arena_used_ += (bytes + 255) / 256 * 256;
    arena_peak_ = std::max(arena_peak_, arena_used_);
    if (arena_used_ > arena_.size()) return Tensor::empty(shape, dtype, Device::kCuda);
    return Tensor::wrap(static_cast<uint8_t*>(arena_.data()) + offset, shape, dtype, Device::kCuda);
  }
  // Appends an array to staging_ at a 256-byte boundary; returns its offset.
  template <typename T>
  size_t stage(const std::vector<T>& v) {
    const size_t offset = (staging_.size() + 255) / 256 * 256;
    staging_.resize(offset + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(staging_.data() + offset, v.data(), v.size() * sizeof(T));
    return offset;
  }
  cuda::PagedKvView view(const KvCache& cache, int64_t layer) const {
    return {cache.k[layer].data(), cache.v[layer].data(), cache.block_size, config_.num_kv_heads, config_.head_dim};
  }

  ModelConfig config_;
  DType act_;
  cudaStream_t stream_ = nullptr;
  static constexpr size_t kMaxGraphs = 64;
  cuda::DeviceBuffer linear_ws_, arena_;
  std::vector<const cuda::DeviceFpxWeight*> fpx_weights_;
  std::map<std::pair<int64_t, int64_t>, size_t> workspace_need_;  // (tokens, logit rows) -> FPx workspace
  std::map<std::vector<int64_t>, cudaGraphExec_t> graphs_;
  std::vector<int64_t> key_;
  std::string graphs_off_why_;
  bool graphs_enabled_ = true, recordable_ = false, recording_ = false;
  const int64_t* logit_rows_ = nullptr;
  size_t arena_used_ = 0, arena_peak_ = 0;
  Scratch inv_freq_buf_, pass_buf_, attn_ws_;
  std::vector<uint8_t> staging_;  // the per-pass arrays, packed for pass_buf_
  cuda::AttentionWork attn_work_;
  cuda::DeviceBuffer sample_scratch_;
  const float* inv_freq_ = nullptr;
  const int32_t* tokens_ = nullptr;
  const int32_t* positions_ = nullptr;
  const int32_t* slots_ = nullptr;
  const int32_t* seq_of_token_ = nullptr;
  const int32_t* tables_ = nullptr;
  int64_t max_blocks_ = 1, max_context_ = 0;
  size_t attn_floats_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& config) { return std::make_unique<CudaBackend>(config); }

}  // namespace fp6serve::model
