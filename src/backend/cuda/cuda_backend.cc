// The CUDA backend (cuda_backend.h): FPx weights run by cuda::fpx_linear (linear.h), dense
// weights by cuBLAS, the other ops by ops.h, sampling by sampling.h. Everything runs on one
// stream; the host waits for the GPU only when the sampled tokens (or the logits) come back.
// The ops of a pass are recorded as a CUDA graph and replayed for later passes of the same
// shape (graph_cache.h); Options::cuda_graphs turns that off.
#include "backend/cuda/cuda_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "backend/cuda/device.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/fpx_quantize.h"
#include "backend/cuda/graph_cache.h"
#include "backend/cuda/linear.h"
#include "backend/cuda/moe.h"
#include "backend/cuda/ops.h"
#include "backend/cuda/sampling.h"
#include "core/check.h"
#include "fpx/format.h"

namespace fp6serve::cuda {

using model::ModelConfig;

namespace {

class CudaLinear : public LinearWeight {
 public:
  std::optional<DeviceFpxWeight> fpx;
  DeviceDenseWeight dense;
  DeviceBuffer bias;  // f32 [rows] or empty
};

// The experts of one kind of one MoE layer: FPx in one buffer (one grouped launch runs them
// all, moe.h), or dense, one cuBLAS weight each.
class CudaExperts : public ExpertWeights {
 public:
  DeviceExperts dev;
  std::vector<DeviceDenseWeight> dense;
};

// A device tensor owning its cudaMalloc'ed memory (on the current device).
Tensor device_tensor(const std::vector<int64_t>& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* p = nullptr;
  if (bytes) {
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      FP6_THROW(kOutOfMemory, "cannot allocate {} bytes on the GPU: {}", bytes, cudaGetErrorString(err));
    }
  }
  int device = 0;
  FP6_CUDA_CHECK(cudaGetDevice(&device));
  // Freed on its own device, from whichever thread drops the last reference (a KV cache of a
  // tensor-parallel rank may be released by another rank's thread).
  std::shared_ptr<void> owner(p, [device](void* q) {
    if (!q) return;
    int current = device;
    cudaGetDevice(&current);
    if (current != device) cudaSetDevice(device);
    cudaFree(q);
    if (current != device) cudaSetDevice(current);
  });
  return Tensor::wrap(p, shape, dtype, Device::kCuda, std::move(owner));
}

// A device buffer that grows to the largest size asked for (contents not kept).
struct Scratch {
  DeviceBuffer buf;
  template <typename T>
  T* upload(const std::vector<T>& host) {
    reserve(host.size() * sizeof(T));
    if (!host.empty()) buf.upload(host.data(), host.size() * sizeof(T));
    return buf.as<T>();
  }
  void reserve(size_t bytes) {
    if (bytes > buf.size()) buf = DeviceBuffer(std::max(bytes, buf.size() * 2));
  }
};

class CudaBackend : public Backend {
 public:
  CudaBackend(const ModelConfig& config, const Options& options, int device)
      : device_(device),
        config_(config),
        act_(config.dtype == DType::kBF16 ? DType::kBF16 : DType::kF16),
        crossover_(options.fpx_crossover),
        graphs_((require_device(), options.cuda_graphs)) {
    use_device();
    FP6_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    inv_freq_ = inv_freq_buf_.upload(config.rope_inv_freq());
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::kCuda; }
  DType act_dtype() const override { return act_; }
  DType pack_target(fpx::Format) const override { return act_; }
  std::string describe() const override {
    return fmt::format("cuda ({}{}, {}, CUDA graphs {})", device_ > 0 ? fmt::format("GPU {}: ", device_) : "",
                       device_summary(device_), dtype_name(act_), graphs_.describe());
  }
  Memory memory() const override {
    use_device();
    Memory m;
    FP6_CUDA_CHECK(cudaMemGetInfo(&m.free, &m.total));
    return m;
  }

  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& host) override {
    use_device();
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
      w->dense = upload_dense(dense.data(), act_, host.rows, host.cols);
      w->weight_bytes = w->dense.data.size();
    }
    if (!host.bias.empty()) {
      w->bias = DeviceBuffer(host.bias.size() * sizeof(float));
      w->bias.upload(host.bias.data(), w->bias.size());
    }
    return w;
  }

  std::unique_ptr<LinearWeight> random_linear(int64_t rows, int64_t cols, const QuantizationMode& mode, float stddev,
                                              uint64_t seed) override {
    use_device();
    auto w = std::make_unique<CudaLinear>();
    w->rows = rows;
    w->cols = cols;
    w->quantized = mode.quantized;
    DeviceBuffer values(static_cast<size_t>(rows * cols) * dtype_size(act_));
    fill_normal(values.data(), rows * cols, seed, stddev, act_ == DType::kBF16);
    if (mode.quantized) {
      w->fpx = quantize_on_device(values.data(), act_, rows, cols, mode.format, act_, "random weight");
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
    use_device();
    Tensor t = device_tensor(shape, act_);
    fill_normal(t.data(), t.numel(), seed, stddev, act_ == DType::kBF16);
    FP6_CUDA_CHECK(cudaDeviceSynchronize());
    return t;
  }

  std::unique_ptr<ExpertWeights> adopt_experts(std::vector<HostLinear>&& experts) override {
    FP6_CHECK(!experts.empty(), kInvalidArgument, "adopt_experts: no experts");
    use_device();
    auto w = std::make_unique<CudaExperts>();
    const HostLinear& first = experts.front();
    w->num_experts = static_cast<int64_t>(experts.size());
    w->rows = first.rows;
    w->cols = first.cols;
    w->quantized = first.packed != nullptr;
    for (const HostLinear& h : experts)
      FP6_CHECK(h.rows == w->rows && h.cols == w->cols && (h.packed != nullptr) == w->quantized && h.bias.empty() &&
                    (!h.packed || (h.packed->plan.format == first.packed->plan.format &&
                                   h.packed->plan.target == first.packed->plan.target)),
                kInvalidArgument, "adopt_experts: {} is [{}, {}]{}, unlike the first expert [{}, {}]{}",
                model::weight_name(h.id), h.rows, h.cols, h.packed ? " FPx" : " dense", w->rows, w->cols,
                w->quantized ? " FPx" : " dense");
    DeviceExperts& d = w->dev;
    d.num_experts = w->num_experts;
    d.rows = w->rows;
    d.cols = w->cols;
    if (w->quantized) {
      const fpx::PackPlan& plan = first.packed->plan;
      FP6_CHECK(fpx_gpu_format_supported(plan.format), kUnsupported,
                "the GPU kernels are built for e3m2, e2m3, e2m2 and e2m1 (FP6, FP6, FP5, FP4), not {}",
                plan.format.name());
      d.plan = plan;
      const auto bytes = static_cast<size_t>(d.expert_bytes());
      const auto scales = static_cast<size_t>(d.row_tiles() * fpx::kUnitRows);
      d.data = DeviceBuffer(bytes * static_cast<size_t>(d.num_experts));
      d.scales = DeviceBuffer(scales * sizeof(float) * static_cast<size_t>(d.num_experts));
      for (size_t e = 0; e < experts.size(); ++e) {
        const fpx::PackedWeight& p = *experts[e].packed;
        FP6_ASSERT(p.bytes() == bytes && p.scales.size() == scales);
        d.data.upload(p.data.data(), bytes, e * bytes);
        d.scales.upload(p.scales.data(), scales * sizeof(float), e * scales * sizeof(float));
      }
      w->weight_bytes = d.data.size() + d.scales.size();
    } else {
      d.dense_dtype = act_;
      for (const HostLinear& h : experts) {
        const Tensor dense = in_act_dtype(h.dense);
        w->dense.push_back(upload_dense(dense.data(), act_, h.rows, h.cols));
        w->weight_bytes += w->dense.back().data.size();
      }
      dense_experts_ = true;
    }
    expert_weights_.push_back(w.get());
    return w;
  }

  std::unique_ptr<ExpertWeights> random_experts(int64_t experts, int64_t rows, int64_t cols,
                                                const QuantizationMode& mode, float stddev, uint64_t seed) override {
    use_device();
    if (!mode.quantized) {  // dense: each expert filled in place
      auto w = std::make_unique<CudaExperts>();
      w->num_experts = w->dev.num_experts = experts;
      w->rows = w->dev.rows = rows;
      w->cols = w->dev.cols = cols;
      w->dev.dense_dtype = act_;
      for (int64_t e = 0; e < experts; ++e) {
        DeviceBuffer values(static_cast<size_t>(rows * cols) * dtype_size(act_));
        fill_normal(values.data(), rows * cols, seed + static_cast<uint64_t>(e), stddev, act_ == DType::kBF16);
        w->weight_bytes += values.size();
        w->dense.push_back({act_, rows, cols, std::move(values)});
      }
      FP6_CUDA_CHECK(cudaDeviceSynchronize());  // the fills ran on the default stream
      dense_experts_ = true;
      expert_weights_.push_back(w.get());
      return w;
    }
    FP6_CHECK(fpx_gpu_format_supported(mode.format), kUnsupported,
              "the GPU kernels are built for e3m2, e2m3, e2m2 and e2m1 (FP6, FP6, FP5, FP4), not {}",
              mode.format.name());
    auto w = std::make_unique<CudaExperts>();
    w->num_experts = experts;
    w->rows = rows;
    w->cols = cols;
    w->quantized = true;
    DeviceExperts& d = w->dev;
    d.num_experts = experts;
    d.rows = rows;
    d.cols = cols;
    d.plan = fpx::pack_plan(mode.format, act_);
    const auto bytes = static_cast<size_t>(d.expert_bytes());
    const auto scales = static_cast<size_t>(d.row_tiles() * fpx::kUnitRows);
    d.data = DeviceBuffer(bytes * static_cast<size_t>(experts));
    d.scales = DeviceBuffer(scales * sizeof(float) * static_cast<size_t>(experts));
    DeviceBuffer values(static_cast<size_t>(rows * cols) * dtype_size(act_));
    for (int64_t e = 0; e < experts; ++e) {
      fill_normal(values.data(), rows * cols, seed + static_cast<uint64_t>(e), stddev, act_ == DType::kBF16);
      FP6_CUDA_CHECK(cudaDeviceSynchronize());  // the fill ran on the default stream
      const int64_t bad = quantize_pack(values.data(), act_, rows, cols, *d.plan, fpx::Codec(mode.format).params(),
                                        d.data.as<uint8_t>() + static_cast<size_t>(e) * bytes,
                                        d.scales.as<float>() + e * scales, nullptr);
      FP6_CHECK(bad < 0, kInternal, "random expert {}: not finite at {}", e, bad);
    }
    w->weight_bytes = d.data.size() + d.scales.size();
    expert_weights_.push_back(w.get());
    return w;
  }

  Tensor adopt_tensor(Tensor host) override {
    use_device();
    Tensor t = device_tensor(host.shape(), host.dtype());
    FP6_CUDA_CHECK(cudaMemcpy(t.data(), host.data(), host.bytes(), cudaMemcpyHostToDevice));
    return t;
  }

  void upload(const Tensor& host, Tensor& dst) override {
    FP6_CHECK(host.numel() == dst.numel(), kInternal, "upload of {} into {}", host.shape_string(), dst.shape_string());
    use_device();
    std::vector<float> f(static_cast<size_t>(host.numel()));
    convert_to_f32(host.data(), host.dtype(), f.data(), f.size());
    Tensor converted = Tensor::empty(dst.shape(), dst.dtype());
    convert_from_f32(f.data(), converted.data(), dst.dtype(), f.size());
    FP6_CUDA_CHECK(cudaStreamSynchronize(stream_));
    FP6_CUDA_CHECK(cudaMemcpy(dst.data(), converted.data(), converted.bytes(), cudaMemcpyHostToDevice));
  }

  KvCache make_kv_cache(int64_t num_blocks, int64_t block_size) override {
    use_device();
    KvCache c;
    c.num_blocks = num_blocks;
    c.block_size = block_size;
    const std::vector<int64_t> shape = {num_blocks, block_size, config_.num_kv_heads, config_.head_dim};
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      for (auto* side : {&c.k, &c.v}) {
        side->push_back(device_tensor(shape, act_));
        FP6_CUDA_CHECK(cudaMemset(side->back().data(), 0, side->back().bytes()));
      }
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

  // The pass's host-side work, once for all layers: recycle the activations, check the
  // batch, plan its per-token arrays and attention, upload them in one copy, size the
  // workspaces, and name the pass for the graph cache.
  void begin_forward(const Batch& batch, const KvCache& cache) override {
    use_device();
    if (arena_peak_ > arena_.size()) arena_ = DeviceBuffer(arena_peak_ + arena_peak_ / 4);
    arena_used_ = 0;
    check_batch(batch, config_.vocab_size, cache.num_blocks, cache.block_size);
    upload_pass(batch, cache);
    num_tokens_ = batch.num_tokens();
    num_logit_rows_ = static_cast<int64_t>(batch.logit_rows.size());
    size_workspaces(num_tokens_, num_logit_rows_);
    if (config_.is_moe()) take_moe_scratch(num_tokens_);
    graph_key_ = pass_key(batch, cache);
  }

  bool replay_forward() override {
    // Activations that did not fit the arena were allocated afresh: not replayable.
    // (Dense experts read the routing back to the host: not capturable.)
    recordable_ = graphs_.enabled() && arena_used_ <= arena_.size() && !dense_experts_;
    return recordable_ && graphs_.replay(graph_key_, stream_);
  }
  void begin_recording() override {
    if (recordable_) graphs_.begin(stream_);
  }
  bool end_recording() override { return !graphs_.capturing() || graphs_.end(graph_key_, stream_); }
  void abort_recording() override { graphs_.abort(stream_); }

  void embed(const Tensor& table, Tensor& out) override {
    embedding(table.data(), table.dtype(), table.dim(1), tokens_, num_tokens_, out.data(), act_, stream_);
  }

  void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    FP6_ASSERT(w.dtype() == DType::kF32);
    cuda::rms_norm(x.data(), w.data_as<float>(), x.dim(0), x.dim(1), eps, out.data(), act_, stream_);
  }

  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    FP6_ASSERT(w.dtype() == DType::kF32);
    cuda::add_rms_norm(residual.data(), x.data(), w.data_as<float>(), x.dim(0), x.dim(1), eps, out.data(), act_,
                       stream_);
  }

  void linear(const Tensor& x, const LinearWeight& lw, Tensor& y) override {
    const auto& w = static_cast<const CudaLinear&>(lw);
    const int64_t n = x.dim(0);
    const float* bias = w.bias.size() ? w.bias.as<float>() : nullptr;
    if (!w.fpx) return dense_linear(x.data(), act_, n, w.dense, bias, y.data(), nullptr, 0, stream_);
    fpx_linear(x.data(), act_, n, *w.fpx, bias, y.data(), linear_ws_.data(), linear_ws_.size(), stream_, crossover_);
  }

  void rope_write_kv(Tensor& qkv, KvCache& cache, int64_t layer) override {
    cuda::rope_write_kv(qkv.data(), num_tokens_, config_.num_heads, positions_, slots_, inv_freq_, view(cache, layer),
                        act_, stream_);
  }

  void attention(const Tensor& qkv, const KvCache& cache, int64_t layer, Tensor& out) override {
    paged_attention(qkv.data(), attn_work_, config_.num_heads, positions_, seq_of_token_, tables_, max_blocks_,
                    view(cache, layer), config_.sliding_window, max_context_, out.data(), attn_ws_.buf.as<float>(),
                    attn_floats_, act_, stream_);
  }

  void qk_norm(Tensor& qkv, const Tensor& q_w, const Tensor& k_w, double eps) override {
    FP6_ASSERT(q_w.dtype() == DType::kF32 && k_w.dtype() == DType::kF32);
    cuda::qk_norm(qkv.data(), num_tokens_, config_.num_heads, config_.num_kv_heads, config_.head_dim,
                  q_w.data_as<float>(), k_w.data_as<float>(), eps, act_, stream_);
  }

  // moe.h's launches (dense experts: a cuBLAS call per expert with tokens, after reading the
  // offsets back), and the shared expert's linears.
  void moe(const Tensor& x, const MoeWeights& w, Tensor& out) override {
    const model::MoeConfig& m = config_.moe;
    FP6_CHECK(m.num_experts > 0, kInvalidArgument, "moe on a backend made for a dense model");
    FP6_ASSERT(w.router.dtype() == DType::kF32 && x.dim(0) == num_tokens_);
    const auto& gate_up = static_cast<const CudaExperts&>(*w.gate_up);
    const auto& down = static_cast<const CudaExperts&>(*w.down);
    const int64_t n = num_tokens_, hidden = x.dim(1), k = m.top_k, rows = n * k, inter = down.cols;
    const MoeScratch& s = moe_;
    const bool shared = w.shared_gate_up != nullptr;
    moe_route(x.data(), act_, n, hidden, w.router.data_as<float>(), m.num_experts, k, m.renormalize, s.ids, s.weights,
              shared ? s.scale : nullptr, stream_);
    moe_group(s.ids, rows, m.num_experts, s.block_tokens, s.offsets, s.order, s.row_of, s.work, s.num_work, stream_);
    moe_gather(x.data(), hidden, s.order, rows, k, s.xs, act_, stream_);
    const size_t act_bytes = dtype_size(act_);
    if (gate_up.quantized) {
      const ExpertGemmPlan gp = plan_expert_gemm(gate_up.dev, n, k), dp = plan_expert_gemm(down.dev, n, k);
      expert_gemm(s.xs, act_, gate_up.dev, s.work, s.num_work, rows, gp, s.gu, linear_ws_.data(), linear_ws_.size(),
                  stream_);
      silu_rows(s.gu, rows, inter, s.act);
      expert_gemm(s.act, act_, down.dev, s.work, s.num_work, rows, dp, s.ys, linear_ws_.data(), linear_ws_.size(),
                  stream_);
    } else {
      std::vector<int32_t> offsets(static_cast<size_t>(m.num_experts) + 1);
      FP6_CUDA_CHECK(cudaMemcpyAsync(offsets.data(), s.offsets, offsets.size() * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream_));
      FP6_CUDA_CHECK(cudaStreamSynchronize(stream_));
      auto each = [&](const CudaExperts& ew, const uint8_t* in, int64_t in_cols, uint8_t* o, int64_t o_cols) {
        for (int64_t e = 0; e < m.num_experts; ++e) {
          const int64_t r0 = offsets[e], count = offsets[e + 1] - r0;
          if (count > 0)
            dense_linear(in + r0 * in_cols * act_bytes, act_, count, ew.dense[e], nullptr, o + r0 * o_cols * act_bytes,
                         nullptr, 0, stream_);
        }
      };
      each(gate_up, static_cast<const uint8_t*>(s.xs), hidden, static_cast<uint8_t*>(s.gu), 2 * inter);
      silu_rows(s.gu, rows, inter, s.act);
      each(down, static_cast<const uint8_t*>(s.act), inter, static_cast<uint8_t*>(s.ys), hidden);
    }
    if (shared) {
      Tensor sgu = wrap(s.shared_gu, n, w.shared_gate_up->rows), sact = wrap(s.shared_act, n, w.shared_down->cols),
             sy = wrap(s.shared_y, n, hidden);
      linear(x, *w.shared_gate_up, sgu);
      cuda::silu_mul(sgu.data(), n, sact.dim(1), sact.data(), act_, stream_);
      linear(sact, *w.shared_down, sy);
    }
    moe_combine(s.ys, s.row_of, s.weights, n, k, hidden, shared ? s.scale : nullptr, s.shared_y, out.data(), act_,
                stream_);
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    cuda::silu_mul(gate_up.data(), gate_up.dim(0), out.dim(1), out.data(), act_, stream_);
  }

  void add(Tensor& acc, const Tensor& x) override { cuda::add(acc.data(), x.data(), acc.numel(), act_, stream_); }

  void gather_logit_rows(const Tensor& x, Tensor& out) override {
    gather_rows(x.data(), x.dim(1), logit_rows_, num_logit_rows_, out.data(), act_, stream_);
  }

  std::vector<Sample> sample(const Tensor& logits, const std::vector<SampleRow>& rows) override {
    use_device();
    return sample_rows(logits.data(), act_, logits.dim(1), rows, sample_scratch_, stream_);
  }

  Tensor to_host_f32(const Tensor& x) override {
    use_device();
    Tensor host = Tensor::empty(x.shape(), DType::kF32);
    if (x.dtype() == DType::kF32) {
      FP6_CUDA_CHECK(cudaStreamSynchronize(stream_));
      FP6_CUDA_CHECK(cudaMemcpy(host.data(), x.data(), host.bytes(), cudaMemcpyDeviceToHost));
      return host;
    }
    Tensor f = arena_tensor(x.shape(), DType::kF32);
    to_f32(x.data(), x.numel(), f.data_as<float>(), x.dtype(), stream_);
    FP6_CUDA_CHECK(cudaStreamSynchronize(stream_));
    FP6_CUDA_CHECK(cudaMemcpy(host.data(), f.data(), host.bytes(), cudaMemcpyDeviceToHost));
    return host;
  }

  int gpu() const { return device_; }
  cudaStream_t stream() const { return stream_; }

 private:
  // This backend's GPU, current on the calling thread.
  void use_device() const { FP6_CUDA_CHECK(cudaSetDevice(device_)); }

  // The per-token arrays (tokens, positions, KV slots, sequence of each token, block tables
  // padded to max_blocks_, logit rows) and the attention plan, packed into one upload.
  void upload_pass(const Batch& batch, const KvCache& cache) {
    max_blocks_ = 1;
    max_context_ = 0;
    std::vector<int64_t> starts, counts;  // per sequence, for the attention plan
    for (const BatchSeq& s : batch.seqs) {
      max_blocks_ = std::max<int64_t>(max_blocks_, static_cast<int64_t>(s.block_table.size()));
      max_context_ = std::max(max_context_, s.start_pos + s.token_count);
      starts.push_back(s.start_pos);
      counts.push_back(s.token_count);
    }
    max_blocks_ = (max_blocks_ + 15) / 16 * 16;  // changes every 256 positions, not every block
    std::vector<int32_t> seq_of_token, tables(batch.seqs.size() * static_cast<size_t>(max_blocks_), 0);
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      const BatchSeq& s = batch.seqs[i];
      std::copy(s.block_table.begin(), s.block_table.end(), tables.begin() + static_cast<int64_t>(i) * max_blocks_);
      seq_of_token.insert(seq_of_token.end(), static_cast<size_t>(s.token_count), static_cast<int32_t>(i));
    }
    const AttentionPlan plan = plan_attention(starts, counts, config_.num_heads, config_.head_dim, sm_count());
    staging_.clear();
    const size_t o_tiles = stage(plan.tiles), o_singles = stage(plan.singles), o_tokens = stage(batch.tokens),
                 o_positions = stage(batch.positions), o_slots = stage(kv_slots(batch, cache.block_size)),
                 o_seq = stage(seq_of_token), o_tables = stage(tables), o_rows = stage(batch.logit_rows);
    pass_buf_.reserve(staging_.size());
    FP6_CUDA_CHECK(
        cudaMemcpyAsync(pass_buf_.buf.data(), staging_.data(), staging_.size(), cudaMemcpyHostToDevice, stream_));
    auto at = [&]<typename T>(size_t offset) {
      return reinterpret_cast<const T*>(pass_buf_.buf.as<uint8_t>() + offset);
    };
    attn_work_.tiles = at.operator()<int32_t>(o_tiles);
    attn_work_.num_tiles = static_cast<int64_t>(plan.tiles.size() / 2);
    attn_work_.singles = at.operator()<int32_t>(o_singles);
    attn_work_.num_singles = static_cast<int64_t>(plan.singles.size());
    attn_work_.splits = plan.splits;
    attn_work_.split_keys = plan.split_keys;
    attn_work_.one_token_tiles = plan.one_token_tiles;
    tokens_ = at.operator()<int32_t>(o_tokens);
    positions_ = at.operator()<int32_t>(o_positions);
    slots_ = at.operator()<int32_t>(o_slots);
    seq_of_token_ = at.operator()<int32_t>(o_seq);
    tables_ = at.operator()<int32_t>(o_tables);
    logit_rows_ = at.operator()<int64_t>(o_rows);
  }

  // The attention and FPx workspaces for every layer at n tokens (and the logits rows): no
  // allocation may happen among the ops (they may be recorded).
  void size_workspaces(int64_t n, int64_t rows) {
    attn_floats_ = paged_attention_workspace(attn_work_, config_.num_heads, config_.head_dim, max_context_);
    attn_ws_.reserve(std::max<size_t>(attn_floats_, 1) * sizeof(float));
    size_t& need = workspace_need_[{n, rows}];  // once per batch shape, not per step
    if (need == 0) {
      for (const DeviceFpxWeight* w : fpx_weights_)
        need = std::max(
            {need, fpx_linear_workspace_bytes(*w, n, crossover_), fpx_linear_workspace_bytes(*w, rows, crossover_)});
      for (const CudaExperts* w : expert_weights_)
        if (w->quantized)
          need = std::max(need, expert_gemm_workspace_bytes(w->dev, n * config_.moe.top_k,
                                                            plan_expert_gemm(w->dev, n, config_.moe.top_k)));
    }
    if (need > linear_ws_.size()) {
      linear_ws_ = DeviceBuffer(need);
      FP6_CUDA_CHECK(cudaMemset(linear_ws_.data(), 0, need));  // the workspace contract
    }
  }

  // What a recording of this pass depends on besides the weights: shapes, every buffer.
  std::vector<int64_t> pass_key(const Batch& batch, const KvCache& cache) const {
    auto address = [](const void* p) { return reinterpret_cast<int64_t>(p); };
    return {batch.num_tokens(),
            static_cast<int64_t>(batch.logit_rows.size()),
            static_cast<int64_t>(batch.seqs.size()),
            max_blocks_,
            attn_work_.num_tiles,
            attn_work_.num_singles,
            attn_work_.splits,
            attn_work_.split_keys,
            static_cast<int64_t>(attn_floats_),
            address(cache.k.empty() ? nullptr : cache.k[0].data()),
            address(pass_buf_.buf.data()),
            address(attn_ws_.buf.data()),
            address(linear_ws_.data()),
            address(arena_.data())};
  }

  // The MoE op's buffers for n tokens, from the arena (they live for the pass, like the
  // activations).
  struct MoeScratch {
    int block_tokens = 8;
    int32_t *ids, *offsets, *order, *row_of, *work, *num_work;
    float *weights, *scale;
    void *xs, *gu, *act, *ys, *shared_gu, *shared_act, *shared_y;
  };
  void take_moe_scratch(int64_t n) {
    const model::MoeConfig& m = config_.moe;
    const int64_t rows = n * m.top_k, hidden = config_.hidden_size, inter = m.intermediate_size;
    const int64_t shared = m.shared_intermediate_size;
    MoeScratch& s = moe_;
    s.block_tokens = expert_gemm_block_tokens(n, m.top_k, m.num_experts);
    moe_tensors_.clear();
    auto take = [&](int64_t count, DType dtype) {
      moe_tensors_.push_back(arena_tensor({std::max<int64_t>(count, 1)}, dtype));
      return moe_tensors_.back().data();
    };
    s.ids = static_cast<int32_t*>(take(rows, DType::kI32));
    s.offsets = static_cast<int32_t*>(take(m.num_experts + 1, DType::kI32));
    s.order = static_cast<int32_t*>(take(rows, DType::kI32));
    s.row_of = static_cast<int32_t*>(take(rows, DType::kI32));
    s.work = static_cast<int32_t*>(take(3 * moe_max_work_items(rows, m.num_experts, s.block_tokens), DType::kI32));
    s.num_work = static_cast<int32_t*>(take(1, DType::kI32));
    s.weights = static_cast<float*>(take(rows, DType::kF32));
    s.scale = static_cast<float*>(take(n, DType::kF32));
    s.xs = take(rows * hidden, act_);
    s.gu = take(rows * 2 * inter, act_);
    s.act = take(rows * inter, act_);
    s.ys = take(rows * hidden, act_);
    s.shared_gu = shared ? take(n * 2 * shared, act_) : nullptr;
    s.shared_act = shared ? take(n * shared, act_) : nullptr;
    s.shared_y = shared ? take(n * hidden, act_) : nullptr;
  }
  // silu_mul over `rows` rows of gate_up, in launches of at most 65535 rows (its grid's y).
  void silu_rows(const void* gate_up, int64_t rows, int64_t inter, void* out) {
    const size_t b = dtype_size(act_);
    for (int64_t r0 = 0; r0 < rows; r0 += 65535)
      cuda::silu_mul(static_cast<const uint8_t*>(gate_up) + r0 * 2 * inter * b, std::min<int64_t>(65535, rows - r0),
                     inter, static_cast<uint8_t*>(out) + r0 * inter * b, act_, stream_);
  }
  Tensor wrap(void* p, int64_t rows, int64_t cols) const { return Tensor::wrap(p, {rows, cols}, act_, Device::kCuda); }

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
    if (arena_used_ > arena_.size()) return device_tensor(shape, dtype);
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
  PagedKvView view(const KvCache& cache, int64_t layer) const {
    return {cache.k[layer].data(), cache.v[layer].data(), cache.block_size, config_.num_kv_heads, config_.head_dim};
  }

  int device_;
  ModelConfig config_;
  DType act_;
  int64_t crossover_;  // FPx linears above this many tokens dequantize + cuBLAS (0: fpx_path's choice)
  GraphCache graphs_;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer linear_ws_, arena_;
  std::vector<const DeviceFpxWeight*> fpx_weights_;
  std::vector<const CudaExperts*> expert_weights_;
  bool dense_experts_ = false;  // dense experts: no CUDA graphs (moe reads the routing back)
  MoeScratch moe_{};
  std::vector<Tensor> moe_tensors_;
  std::map<std::pair<int64_t, int64_t>, size_t> workspace_need_;  // (tokens, logit rows) -> FPx workspace
  std::vector<int64_t> graph_key_;
  bool recordable_ = false;
  const int64_t* logit_rows_ = nullptr;
  size_t arena_used_ = 0, arena_peak_ = 0;
  Scratch inv_freq_buf_, pass_buf_, attn_ws_;
  std::vector<uint8_t> staging_;  // the per-pass arrays, packed for pass_buf_
  AttentionWork attn_work_;
  DeviceBuffer sample_scratch_;
  const float* inv_freq_ = nullptr;
  const int32_t* tokens_ = nullptr;
  const int32_t* positions_ = nullptr;
  const int32_t* slots_ = nullptr;
  const int32_t* seq_of_token_ = nullptr;
  const int32_t* tables_ = nullptr;
  int64_t num_tokens_ = 0, num_logit_rows_ = 0, max_blocks_ = 1, max_context_ = 0;
  size_t attn_floats_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const ModelConfig& config, const Options& options, int device) {
  return std::make_unique<CudaBackend>(config, options, device);
}

int backend_device(const Backend& backend) {
  return static_cast<const CudaBackend&>(backend).gpu();
}

cudaStream_t backend_stream(const Backend& backend) {
  return static_cast<const CudaBackend&>(backend).stream();
}

}  // namespace fp6serve::cuda
