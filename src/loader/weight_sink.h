// What the loader produces, one weight at a time, in file order: embeddings, final norm, then
// per layer input norm, post-attention norm, q and k norms (qwen3_moe), qkv, o, then the MLP:
// gate_up and down, or in a MoE layer the router, every expert's gate_up (one experts() call),
// every expert's down (another), and the shared expert's gate_up and down (qwen2_moe); last
// lm_head. The model's backend consumes it (transformer/load.cc), and so does the prequantized
// writer.
#pragma once

#include "core/tensor.h"
#include "fpx/gptq.h"
#include "fpx/quantize.h"
#include "model/quantization.h"
#include "model/weights.h"

namespace fp6serve::loader {

class WeightSink {
 public:
  virtual ~WeightSink() = default;
  // An embedding or norm, as a host tensor (norms f32, embeddings in their stored dtype).
  virtual void tensor(model::WeightId id, Tensor host) = 0;
  virtual void linear(model::HostLinear&& host) = 0;
  // Every expert of one kind of one layer (kExpertGateUp or kExpertDown), in expert order, of
  // one shape and one form (all packed alike, or all dense in one dtype).
  virtual void experts(std::vector<model::HostLinear>&& experts) = 0;
};

// Calibration statistics for error-feedback rounding (fpx/gptq.h): the input second moment of
// a linear layer, or nullptr for one to round to nearest. Asked in the loader's order.
class Calibration {
 public:
  virtual ~Calibration() = default;
  virtual const fpx::Hessian* hessian(model::WeightId id) = 0;
};

// How the linear layers are to be loaded.
struct LinearSpec {
  model::QuantizationMode mode;
  bool quantize_lm_head = false;
  DType pack_target = DType::kF16;  // the raw placement FPx weights are packed for (fpx/pack_plan.h)
  bool progress = true;             // a progress bar when stderr is a terminal
  fpx::ScaleRule scale_rule = fpx::ScaleRule::kMinError;  // each row's scale: Options' default
  Calibration* calibration = nullptr;                     // when set, GPTQ rounding of the layers it has statistics for
};

}  // namespace fp6serve::loader
