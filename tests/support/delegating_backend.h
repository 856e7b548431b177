// Test backends built on another (backend/delegating_backend.h: derive and override what a
// test changes): DequantizingBackend is the CPU backend with
// the FPx weights `dequantize` picks unpacked and dequantized to dense f32 as they arrive: the
// exact model of the quantized weights, to tell quantization error from kernel error
// (tests/transformer, bench/linear_sensitivity.cc).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "backend/cpu/cpu_backend.h"
#include "backend/delegating_backend.h"
#include "fpx/pack.h"

namespace fp6serve::testing {

using fp6serve::DelegatingBackend;

class DequantizingBackend : public DelegatingBackend {
 public:
  DequantizingBackend(const model::ModelConfig& c, std::function<bool(model::WeightId)> dequantize)
      : DelegatingBackend(cpu::make_cpu_backend(c, Options{})), dequantize_(std::move(dequantize)) {}
  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& h) override {
    dequantized(h);
    return DelegatingBackend::adopt_linear(std::move(h));
  }
  std::unique_ptr<ExpertWeights> adopt_experts(std::vector<HostLinear>&& all) override {
    for (HostLinear& h : all) dequantized(h);
    return DelegatingBackend::adopt_experts(std::move(all));
  }

 private:
  void dequantized(HostLinear& h) const {
    if (!h.packed || !dequantize_(h.id)) return;
    const fpx::QuantizedMatrix q = fpx::unpack(*h.packed);
    const fpx::Codec codec(q.format);
    h.dense = Tensor::empty({h.rows, h.cols}, DType::kF32);
    for (int64_t r = 0; r < h.rows; ++r)
      for (int64_t c = 0; c < h.cols; ++c) h.dense.data_as<float>()[r * h.cols + c] = fpx::dequantize(q, codec, r, c);
    h.packed.reset();
  }

  std::function<bool(model::WeightId)> dequantize_;
};

}  // namespace fp6serve::testing
