// Loading a checkpoint's weights, quantizing every linear layer on the way in.
//
// Every tensor's name, dtype and shape is checked against the config before any work. Then
// the layers are loaded one at a time: q/k/v and gate/up are stacked into one weight each,
// quantized and packed tile by tile straight from the memory-mapped file (quantize_pack), and
// handed to the backend, which keeps them (CPU) or uploads them and drops the host copy
// (CUDA). The 16-bit model is never copied whole into memory: peak is the quantized model
// plus one layer's packed weights.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "fpx/pack.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace fp6serve::model {

// "wf6af16" (default, FP6 e3m2), "wf5af16" (e2m2), "wf4af16" (e2m1), any "eXmY" format, or
// the unquantized baselines "fp16", "bf16", "fp32".
struct QuantizationMode {
  std::string name = "wf6af16";
  bool quantized = true;
  fpx::Format format = fpx::kE3M2;
  DType dense_dtype = DType::kF16;  // the weight dtype when not quantized

  static QuantizationMode parse(std::string_view name);
};

struct LoadOptions {
  QuantizationMode mode;
  bool mode_explicit = false;  // the user chose the mode (a prequantized checkpoint must then match)
  bool quantize_lm_head = false;
  bool progress = true;  // a progress bar when stderr is a terminal
};

// One linear layer on the host, as the loader produces it: packed FPx, or dense.
struct HostLinear {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;
  std::unique_ptr<fpx::PackedWeight> packed;  // when quantized
  Tensor dense;                               // [rows, cols] otherwise
  std::vector<float> bias;                    // [rows] or empty
};

// A linear layer's weight as a backend keeps it.
class LinearWeight {
 public:
  virtual ~LinearWeight() = default;
  int64_t rows = 0;
  int64_t cols = 0;
  bool quantized = false;
  size_t weight_bytes = 0;  // resident bytes of the weight itself
};

class Backend;

struct LayerWeights {
  Tensor input_norm;  // [hidden] f32 on the backend
  Tensor post_norm;
  std::unique_ptr<LinearWeight> qkv;      // [q + 2 kv, hidden]
  std::unique_ptr<LinearWeight> o;        // [hidden, q]
  std::unique_ptr<LinearWeight> gate_up;  // [2 inter, hidden]
  std::unique_ptr<LinearWeight> down;     // [hidden, inter]
};

struct ModelWeights {
  Tensor embed;  // [vocab, hidden] in the checkpoint's 16-bit dtype (or f32)
  std::vector<LayerWeights> layers;
  Tensor final_norm;
  std::unique_ptr<LinearWeight> lm_head;  // [vocab, hidden]
  size_t bytes() const;
};

// Throws (naming file and tensor) on anything missing or inconsistent with the config.
void validate_checkpoint(const Checkpoint& ckpt, const ModelConfig& config);

// Receives the weights one by one, in file order: embeddings, final norm, then per layer
// input norm, post-attention norm, qkv, o, gate_up, down, and last lm_head. Tensor names are
// fp6serve's (qkv and gate_up are stacked).
class WeightSink {
 public:
  virtual ~WeightSink() = default;
  virtual void tensor(const std::string& name, Tensor host) = 0;
  virtual void linear(HostLinear&& host) = 0;
};

// Reads a Hugging Face checkpoint (validated first) and quantizes its linear layers,
// feeding `sink`. pack_target: the raw placement FPx weights are packed for.
void visit_weights(const Checkpoint& ckpt, const ModelConfig& config, const LoadOptions& options, DType pack_target,
                   WeightSink& sink);

// Collects what a WeightSink receives into a backend's ModelWeights.
ModelWeights adopt_weights(const ModelConfig& config, Backend& backend,
                           const std::function<void(WeightSink&)>& produce);

// Loads and quantizes the weights of a Hugging Face checkpoint, or reads a checkpoint that
// `fp6serve quantize` wrote (detected by its metadata).
ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& config, const LoadOptions& options,
                          Backend& backend);

// Names of the Hugging Face tensors of layer i.
std::string layer_prefix(int64_t layer);

}  // namespace fp6serve::model
