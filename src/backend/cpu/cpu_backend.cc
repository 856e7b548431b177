// The CPU backend (cpu_backend.h): FPx weights run by cpu::fpx_linear, dense weights by
// cpu::dense_linear (linear.h), the other ops by ops.h, sampling by sampling.h.
#include "backend/cpu/cpu_backend.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstring>

#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/sampling.h"
#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::cpu {

using model::ModelConfig;

namespace {

class CpuLinear : public LinearWeight {
 public:
  explicit CpuLinear(HostLinear&& h) : host(std::move(h)) {
    rows = host.rows;
    cols = host.cols;
    quantized = host.packed != nullptr;
    weight_bytes = quantized ? host.packed->bytes() + host.packed->scales.size() * sizeof(float) : host.dense.bytes();
  }
  HostLinear host;
};

class CpuExperts : public ExpertWeights {
 public:
  explicit CpuExperts(std::vector<HostLinear>&& all) : experts(std::move(all)) {
    FP6_CHECK(!experts.empty(), kInvalidArgument, "adopt_experts: no experts");
    const HostLinear& first = experts.front();
    num_experts = static_cast<int64_t>(experts.size());
    rows = first.rows;
    cols = first.cols;
    quantized = first.packed != nullptr;
    for (const HostLinear& h : experts) {
      FP6_CHECK(h.rows == rows && h.cols == cols && (h.packed != nullptr) == quantized && h.bias.empty(),
                kInvalidArgument, "adopt_experts: {} is [{}, {}]{}, unlike the first expert [{}, {}]{}",
                model::weight_name(h.id), h.rows, h.cols, h.packed ? " FPx" : " dense", rows, cols,
                quantized ? " FPx" : " dense");
      weight_bytes += quantized ? h.packed->bytes() + h.packed->scales.size() * sizeof(float) : h.dense.bytes();
    }
  }
  std::vector<HostLinear> experts;
};

class CpuBackend : public Backend {
 public:
  CpuBackend(const ModelConfig& config, const Options& options)
      : config_(config), inv_freq_(config.rope_inv_freq()), isa_(parse_isa(options.cpu_isa)) {}

  Device device() const override { return Device::kCpu; }
  DType act_dtype() const override { return DType::kF32; }
  DType pack_target(fpx::Format format) const override { return fpx::default_target(format); }
  std::string describe() const override {
    return fmt::format("cpu ({} threads, {})", ThreadPool::global()->size(), isa_name(isa_));
  }
  Memory memory() const override {
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return {static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * page, static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * page};
  }

  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& host) override {
    return std::make_unique<CpuLinear>(std::move(host));
  }
  std::unique_ptr<ExpertWeights> adopt_experts(std::vector<HostLinear>&& experts) override {
    return std::make_unique<CpuExperts>(std::move(experts));
  }
  Tensor adopt_tensor(Tensor host) override { return host; }
  void upload(const Tensor& host, Tensor& dst) override {
    FP6_CHECK(host.numel() == dst.numel(), kInternal, "upload of {} into {}", host.shape_string(), dst.shape_string());
    std::vector<float> f(static_cast<size_t>(host.numel()));
    convert_to_f32(host.data(), host.dtype(), f.data(), f.size());
    convert_from_f32(f.data(), dst.data(), dst.dtype(), f.size());
  }

  KvCache make_kv_cache(int64_t num_blocks, int64_t block_size) override {
    KvCache c;
    c.num_blocks = num_blocks;
    c.block_size = block_size;
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      c.k.push_back(Tensor::zeros({num_blocks, block_size, config_.num_kv_heads, config_.head_dim}, DType::kF32));
      c.v.push_back(Tensor::zeros({num_blocks, block_size, config_.num_kv_heads, config_.head_dim}, DType::kF32));
    }
    return c;
  }
  size_t kv_block_bytes(int64_t block_size) const override {
    return static_cast<size_t>(2 * config_.num_layers * block_size * config_.kv_size()) * sizeof(float);
  }

  Tensor activations(int64_t rows, int64_t cols) override { return Tensor::empty({rows, cols}, DType::kF32); }

  void begin_forward(const Batch& batch, const KvCache& cache) override {
    check_batch(batch, config_.vocab_size, cache.num_blocks, cache.block_size);
    pass_ = &batch;
    slots_ = kv_slots(batch, cache.block_size);
    seqs_.clear();
    for (const BatchSeq& s : batch.seqs)
      seqs_.push_back({s.token_begin, s.token_count, s.start_pos, s.block_table.data(),
                       static_cast<int64_t>(s.block_table.size())});
  }

  void embed(const Tensor& table, Tensor& out) override {
    embedding(table.data(), table.dtype(), table.dim(0), table.dim(1), pass_->tokens.data(), pass_->num_tokens(),
              out.data_as<float>());
  }

  void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    FP6_ASSERT(w.dtype() == DType::kF32);
    cpu::rms_norm(x.data_as<float>(), w.data_as<float>(), x.dim(0), x.dim(1), eps, out.data_as<float>());
  }

  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    FP6_ASSERT(w.dtype() == DType::kF32);
    cpu::add_rms_norm(residual.data_as<float>(), x.data_as<float>(), w.data_as<float>(), x.dim(0), x.dim(1), eps,
                      out.data_as<float>());
  }

  void linear(const Tensor& x, const LinearWeight& w, Tensor& y) override {
    run_linear(static_cast<const CpuLinear&>(w).host, x.data(), x.dim(0), y.data());
  }

  void rope_write_kv(Tensor& qkv, KvCache& cache, int64_t layer) override {
    cpu::rope_write_kv(qkv.data_as<float>(), pass_->num_tokens(), config_.num_heads, pass_->positions.data(),
                       slots_.data(), inv_freq_.data(), paged(cache, layer));
  }

  void attention(const Tensor& qkv, const KvCache& cache, int64_t layer, Tensor& out) override {
    cpu::attention(qkv.data_as<float>(), qkv.dim(1), config_.num_heads, seqs_.data(),
                   static_cast<int64_t>(seqs_.size()), paged(cache, layer), config_.sliding_window,
                   out.data_as<float>());
  }

  void qk_norm(Tensor& qkv, const Tensor& q_w, const Tensor& k_w, double eps) override {
    FP6_ASSERT(q_w.dtype() == DType::kF32 && k_w.dtype() == DType::kF32);
    cpu::qk_norm(qkv.data_as<float>(), qkv.dim(0), config_.num_heads, config_.num_kv_heads, config_.head_dim,
                 q_w.data_as<float>(), k_w.data_as<float>(), eps);
  }

  // The steps of moe.cc around each expert's linears on its rows of the grouped order.
  void moe(const Tensor& x, const MoeWeights& w, Tensor& out) override {
    const model::MoeConfig& m = config_.moe;
    FP6_CHECK(m.num_experts > 0, kInvalidArgument, "moe on a backend made for a dense model");
    FP6_ASSERT(w.router.dtype() == DType::kF32);
    const int64_t n = x.dim(0), hidden = x.dim(1), k = m.top_k, rows = n * k;
    const auto& gate_up = static_cast<const CpuExperts&>(*w.gate_up);
    const auto& down = static_cast<const CpuExperts&>(*w.down);
    const int64_t inter = down.cols;
    const bool shared = w.shared_gate_up != nullptr;
    std::vector<int32_t> ids(rows), offsets(m.num_experts + 1), order(rows), row_of(rows);
    std::vector<float> weights(rows), scale(shared ? n : 0);
    moe_route(x.data_as<float>(), n, hidden, w.router.data_as<float>(), m.num_experts, k, m.renormalize, ids.data(),
              weights.data(), shared ? scale.data() : nullptr);
    moe_group(ids.data(), rows, m.num_experts, offsets.data(), order.data(), row_of.data());
    std::vector<float> xs(rows * hidden), gu(rows * 2 * inter), act(rows * inter), ys(rows * hidden);
    moe_gather(x.data_as<float>(), hidden, order.data(), rows, k, xs.data());
    for (int64_t e = 0; e < m.num_experts; ++e) {
      const int64_t r0 = offsets[e], count = offsets[e + 1] - r0;
      if (count == 0) continue;
      run_linear(gate_up.experts[e], xs.data() + r0 * hidden, count, gu.data() + r0 * 2 * inter);
    }
    cpu::silu_mul(gu.data(), rows, inter, act.data());
    for (int64_t e = 0; e < m.num_experts; ++e) {
      const int64_t r0 = offsets[e], count = offsets[e + 1] - r0;
      if (count == 0) continue;
      run_linear(down.experts[e], act.data() + r0 * inter, count, ys.data() + r0 * hidden);
    }
    std::vector<float> sy;
    if (shared) {
      const auto& sgu = static_cast<const CpuLinear&>(*w.shared_gate_up).host;
      const auto& sd = static_cast<const CpuLinear&>(*w.shared_down).host;
      std::vector<float> s1(n * sgu.rows), s2(n * sd.cols);
      sy.resize(n * hidden);
      run_linear(sgu, x.data_as<float>(), n, s1.data());
      cpu::silu_mul(s1.data(), n, sd.cols, s2.data());
      run_linear(sd, s2.data(), n, sy.data());
    }
    moe_combine(ys.data(), row_of.data(), weights.data(), n, k, hidden, shared ? scale.data() : nullptr, sy.data(),
                out.data_as<float>());
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    cpu::silu_mul(gate_up.data_as<float>(), gate_up.dim(0), out.dim(1), out.data_as<float>());
  }

  void add(Tensor& acc, const Tensor& x) override { cpu::add(acc.data_as<float>(), x.data_as<float>(), acc.numel()); }

  void gather_logit_rows(const Tensor& x, Tensor& out) override {
    gather_rows(x.data_as<float>(), x.dim(1), pass_->logit_rows.data(), static_cast<int64_t>(pass_->logit_rows.size()),
                out.data_as<float>());
  }

  Tensor to_host_f32(const Tensor& x) override {
    Tensor copy = Tensor::empty(x.shape(), DType::kF32);
    std::memcpy(copy.data(), x.data(), x.bytes());
    return copy;
  }
  std::vector<Sample> sample(const Tensor& logits, const std::vector<SampleRow>& rows) override {
    return sample_rows(logits.data_as<float>(), logits.dim(1), rows);
  }

 private:
  // y [n, h.rows] = x [n, h.cols] . h^T (+ bias), f32.
  void run_linear(const HostLinear& h, const void* x, int64_t n, void* y) const {
    const float* bias = h.bias.empty() ? nullptr : h.bias.data();
    if (h.packed)
      fpx_linear(x, DType::kF32, n, *h.packed, bias, y, isa_);
    else
      dense_linear(x, DType::kF32, n, h.dense.data(), h.dense.dtype(), h.rows, h.cols, bias, y, isa_);
  }

  PagedKv paged(const KvCache& cache, int64_t layer) const {
    return {cache.k[layer].data_as<float>(),
            cache.v[layer].data_as<float>(),
            cache.num_blocks,
            cache.block_size,
            config_.num_kv_heads,
            config_.head_dim};
  }

  // Options::cpu_isa, checked against this machine.
  static CpuIsa parse_isa(const std::string& name) {
    for (CpuIsa isa : {CpuIsa::kBest, CpuIsa::kAvx512, CpuIsa::kAvx2, CpuIsa::kScalar})
      if (name == isa_name(isa)) {
        FP6_CHECK(isa_available(isa), kUnsupported, "cpu_isa {}: this CPU does not have it (it has {})", name,
                  isa_name(best_isa()));
        return isa == CpuIsa::kBest ? best_isa() : isa;
      }
    FP6_THROW(kInvalidArgument, "cpu_isa '{}' is not one of best, avx512, avx2, scalar", name);
  }

  ModelConfig config_;
  std::vector<float> inv_freq_;
  CpuIsa isa_;
  // The pass begin_forward announced: its batch, each token's KV slot, each sequence's slice.
  const Batch* pass_ = nullptr;
  std::vector<int32_t> slots_;
  std::vector<AttentionSeq> seqs_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& config, const Options& options) {
  return std::make_unique<CpuBackend>(config, options);
}

}  // namespace fp6serve::cpu
