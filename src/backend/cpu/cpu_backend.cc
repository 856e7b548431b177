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
    const HostLinear& h = static_cast<const CpuLinear&>(w).host;
    const float* bias = h.bias.empty() ? nullptr : h.bias.data();
    if (h.packed)
      fpx_linear(x.data(), DType::kF32, x.dim(0), *h.packed, bias, y.data(), isa_);
    else
      dense_linear(x.data(), DType::kF32, x.dim(0), h.dense.data(), h.dense.dtype(), h.rows, h.cols, bias, y.data(),
                   isa_);
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
