// Which linear layer costs the most agreement when quantized: quantizes one kind of linear
// layer at a time to FP6 e3m2, starting from the exact f32 weights of each tiny fixture, and
// prints top-1 agreement with transformers' f32 logits. A diagnostic, not a benchmark of speed:
//   build/bench/fp6serve_linear_sensitivity
#include <fmt/core.h>

#include <algorithm>

#include "tests/support/delegating_backend.h"
#include "tests/support/fixture.h"

namespace fp6serve {
namespace {

// The CPU backend, quantizing the dense f32 weights of `only` to FP6 (then the exact model of
// those quantized weights, through DequantizingBackend).
class QuantizingBackend : public testing::DequantizingBackend {
 public:
  QuantizingBackend(const model::ModelConfig& c, model::WeightKind only)
      : DequantizingBackend(c, [](model::WeightId) { return false; }), only_(only) {}
  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& h) override {
    if (h.id.kind == only_) {
      const fpx::MatrixView view{h.dense.data(), h.dense.dtype(), h.rows, h.cols, model::weight_name(h.id)};
      h.packed = std::make_unique<fpx::PackedWeight>(fpx::quantize_pack(view, fpx::kE3M2, DType::kF16));
      h.dense = Tensor();
    }
    return DequantizingBackend::adopt_linear(std::move(h));
  }

 private:
  model::WeightKind only_;
};

int run() {
  using model::WeightKind;
  const std::pair<WeightKind, const char*> kinds[] = {{WeightKind::kQkv, "qkv_proj"},
                                                      {WeightKind::kO, "o_proj"},
                                                      {WeightKind::kGateUp, "gate_up_proj"},
                                                      {WeightKind::kDown, "down_proj"},
                                                      {WeightKind::kLmHead, "lm_head"}};
  for (const char* name : {"tiny-llama", "tiny-qwen2"}) {
    testing::Reference ref(name);
    const model::ModelConfig config = model::ModelConfig::load(testing::fixture_dir(name));
    for (const auto& [kind, label] : kinds) {
      auto m = Model::load(testing::fixture_dir(name), testing::options("fp32"),
                           std::make_unique<QuantizingBackend>(config, kind));
      int agree = 0, total = 0;
      testing::for_each_reference_row(*m, ref, [&](int, const float* q, const float* p) {
        const int64_t v = config.vocab_size;
        agree += std::max_element(q, q + v) - q == std::max_element(p, p + v) - p;
        ++total;
      });
      fmt::print("{} only {} quantized: top-1 {:.1f}%\n", name, label, 100.0 * agree / total);
    }
  }
  return 0;
}

}  // namespace
}  // namespace fp6serve

int main() {
  return fp6serve::run();
}
