#include "backend/backend.h"

#include <random>

#include "core/check.h"
#include "fpx/pack.h"

namespace fp6serve {

void check_batch(const Batch& batch, int64_t vocab, int64_t num_blocks, int64_t block_size) {
  for (int32_t t : batch.tokens)
    FP6_CHECK(t >= 0 && t < vocab, kInvalidArgument, "token id {} is outside the vocabulary [0, {})", t, vocab);
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const BatchSeq& s = batch.seqs[i];
    FP6_CHECK(static_cast<int64_t>(s.block_table.size()) * block_size >= s.start_pos + s.token_count, kInvalidArgument,
              "sequence {} needs {} positions but its {} KV blocks hold {}", i, s.start_pos + s.token_count,
              s.block_table.size(), s.block_table.size() * block_size);
    for (int32_t b : s.block_table)
      FP6_CHECK(b >= 0 && b < num_blocks, kInvalidArgument, "KV block {} outside the cache of {} blocks", b,
                num_blocks);
  }
}

std::vector<int32_t> kv_slots(const Batch& batch, int64_t block_size) {
  std::vector<int32_t> slots;
  slots.reserve(batch.tokens.size());
  for (const BatchSeq& s : batch.seqs)
    for (int64_t t = 0; t < s.token_count; ++t) {
      const int64_t p = s.start_pos + t;
      slots.push_back(
          static_cast<int32_t>(s.block_table[static_cast<size_t>(p / block_size)] * block_size + p % block_size));
    }
  return slots;
}

namespace {

// n values ~ N(0, stddev) in f32 from a seeded generator.
std::vector<float> normal_values(int64_t n, float stddev, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

// A [rows, cols] weight ~ N(0, stddev) from a seeded generator, quantized or converted as
// mode says: what a loader would hand adopt_linear / adopt_experts (random weights are not
// named: id says only what kind).
HostLinear random_host_linear(const Backend& backend, int64_t rows, int64_t cols, const QuantizationMode& mode,
                              float stddev, uint64_t seed, model::WeightId id) {
  const std::vector<float> values = normal_values(rows * cols, stddev, seed);
  HostLinear h;
  h.id = id;
  h.rows = rows;
  h.cols = cols;
  if (mode.quantized) {
    const fpx::MatrixView view{values.data(), DType::kF32, rows, cols, "random weight"};
    h.packed =
        std::make_unique<fpx::PackedWeight>(fpx::quantize_pack(view, mode.format, backend.pack_target(mode.format)));
  } else {
    h.dense = Tensor::empty({rows, cols}, mode.dense_dtype);
    convert_from_f32(values.data(), h.dense.data(), mode.dense_dtype, values.size());
  }
  return h;
}

}  // namespace

// Made on the host and adopted like a loaded weight: slow for large shapes, but on every
// backend (the CUDA backend makes its own on the device).
std::unique_ptr<LinearWeight> Backend::random_linear(int64_t rows, int64_t cols, const QuantizationMode& mode,
                                                     float stddev, uint64_t seed) {
  return adopt_linear(random_host_linear(*this, rows, cols, mode, stddev, seed, {model::WeightKind::kLmHead}));
}

std::unique_ptr<ExpertWeights> Backend::adopt_experts(std::vector<HostLinear>&&) {
  FP6_THROW(kUnsupported, "the {} backend has no mixture-of-experts layers", describe());
}

std::unique_ptr<ExpertWeights> Backend::random_experts(int64_t experts, int64_t rows, int64_t cols,
                                                       const QuantizationMode& mode, float stddev, uint64_t seed) {
  std::vector<HostLinear> all;
  for (int64_t e = 0; e < experts; ++e)
    all.push_back(random_host_linear(*this, rows, cols, mode, stddev, seed + static_cast<uint64_t>(e),
                                     {model::WeightKind::kExpertGateUp, 0, e}));
  return adopt_experts(std::move(all));
}

void Backend::qk_norm(Tensor&, const Tensor&, const Tensor&, double) {
  FP6_THROW(kUnsupported, "the {} backend has no q/k norm (qwen3_moe)", describe());
}

void Backend::moe(const Tensor&, const MoeWeights&, Tensor&) {
  FP6_THROW(kUnsupported, "the {} backend has no mixture-of-experts layers", describe());
}

Tensor Backend::random_tensor(const std::vector<int64_t>& shape, float stddev, uint64_t seed) {
  const std::vector<float> values = normal_values(shape_numel(shape), stddev, seed);
  Tensor host = Tensor::empty(shape, act_dtype() == DType::kF32 ? DType::kF16 : act_dtype());
  convert_from_f32(values.data(), host.data(), host.dtype(), values.size());
  return adopt_tensor(std::move(host));
}

}  // namespace fp6serve
