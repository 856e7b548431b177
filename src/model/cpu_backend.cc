// The CPU backend: f32 activations and KV cache, FPx weights packed for an F16 target and
// run by cpu::fpx_linear, dense weights by cpu::dense_linear, the rest by kernels/cpu/ops.h.
#include <fmt/format.h>

#include <cstring>

#include "core/check.h"
#include "core/thread_pool.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/sampling.h"
#include "model/backend.h"

namespace fp6serve::model {

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
  explicit CpuBackend(const ModelConfig& config) : config_(config), inv_freq_(config.rope_inv_freq()) {}

  Device device() const override { return Device::kCpu; }
  DType act_dtype() const override { return DType::kF32; }
  DType pack_target(fpx::Format format) const override { return fpx::default_target(format); }
  std::string describe() const override {
    return fmt::format("cpu ({} threads, {})", ThreadPool::global().size(), cpu::isa_name(cpu::best_isa()));
  }

  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& host) override {
    return std::make_unique<CpuLinear>(std::move(host));
  }
  Tensor adopt_tensor(Tensor host) override { return host; }

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

  void embed(const Tensor& table, const Batch& batch, Tensor& out) override {
    cpu::embedding(table.data(), table.dtype(), table.dim(0), table.dim(1), batch.tokens.data(), batch.num_tokens(),
                   out.data_as<float>());
  }

  void rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    cpu::rms_norm(x.data_as<float>(), w.data_as<float>(), x.dim(0), x.dim(1), eps, out.data_as<float>());
  }

  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, double eps, Tensor& out) override {
    cpu::add_rms_norm(residual.data_as<float>(), x.data_as<float>(), w.data_as<float>(), x.dim(0), x.dim(1), eps,
                      out.data_as<float>());
  }

  void linear(const Tensor& x, const LinearWeight& w, Tensor& y) override {
    const HostLinear& h = static_cast<const CpuLinear&>(w).host;
    const float* bias = h.bias.empty() ? nullptr : h.bias.data();
    if (h.packed)
      cpu::fpx_linear(x.data(), DType::kF32, x.dim(0), *h.packed, bias, y.data());
    else
      cpu::dense_linear(x.data(), DType::kF32, x.dim(0), h.dense.data(), h.dense.dtype(), h.rows, h.cols, bias,
                        y.data());
  }

  void rope_write_kv(Tensor& qkv, const Batch& batch, KvCache& cache, int64_t layer) override {
    const int64_t stride = qkv.dim(1), q = config_.q_size(), kv = config_.kv_size();
    auto* base = qkv.data_as<float>();
    cpu::rope(base, qkv.dim(0), stride, config_.num_heads, config_.head_dim, batch.positions.data(), inv_freq_.data());
    cpu::rope(base + q, qkv.dim(0), stride, config_.num_kv_heads, config_.head_dim, batch.positions.data(),
              inv_freq_.data());
    const auto seqs = attention_seqs(batch);
    cpu::write_kv(base + q, base + q + kv, stride, seqs.data(), static_cast<int64_t>(seqs.size()),
                  paged(cache, layer));
  }

  void attention(const Tensor& qkv, const Batch& batch, const KvCache& cache, int64_t layer, Tensor& out) override {
    const auto seqs = attention_seqs(batch);
    cpu::attention(qkv.data_as<float>(), qkv.dim(1), config_.num_heads, seqs.data(), static_cast<int64_t>(seqs.size()),
                   paged(cache, layer), config_.sliding_window, out.data_as<float>());
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    cpu::silu_mul(gate_up.data_as<float>(), gate_up.dim(0), out.dim(1), out.data_as<float>());
  }

  void add(Tensor& acc, const Tensor& x) override {
    float* a = acc.data_as<float>();
    const float* b = x.data_as<float>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] += b[i];
  }

  void gather_logit_rows(const Tensor& x, const Batch& batch, Tensor& out) override {
    const std::vector<int64_t>& rows = batch.logit_rows;
    const size_t row = static_cast<size_t>(x.dim(1)) * sizeof(float);
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(out.data_as<float>() + i * x.dim(1), x.data_as<float>() + rows[i] * x.dim(1), row);
  }

  Tensor to_host_f32(const Tensor& x) override { return x; }
  std::vector<Sample> sample(const Tensor& logits, const std::vector<SampleRow>& rows) override {
    return cpu::sample_rows(logits.data_as<float>(), logits.dim(1), rows);
  }

 private:
  static std::vector<cpu::AttentionSeq> attention_seqs(const Batch& batch) {
    std::vector<cpu::AttentionSeq> out;
    for (const BatchSeq& s : batch.seqs)
      out.push_back({s.token_begin, s.token_count, s.start_pos, s.block_table.data(),
                     static_cast<int64_t>(s.block_table.size())});
    return out;
  }
  cpu::PagedKv paged(const KvCache& cache, int64_t layer) const {
    return {cache.k[layer].data_as<float>(), cache.v[layer].data_as<float>(), cache.num_blocks, cache.block_size,
            config_.num_kv_heads, config_.head_dim};
  }

  ModelConfig config_;
  std::vector<float> inv_freq_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const ModelConfig& config) { return std::make_unique<CpuBackend>(config); }

}  // namespace fp6serve::model
