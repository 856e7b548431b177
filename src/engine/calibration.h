// Calibration for error-feedback rounding (fpx/gptq.h) at `fp6serve quantize --calibration`
// time: the input second moment H = sum x x^T of every dense linear layer (qkv, o, gate_up,
// down; lm_head too when it is quantized), measured by running the unquantized checkpoint on
// token windows of a calibration text on the CPU (f32 arithmetic, the checkpoint's own 16-bit
// weights). Mixture-of-experts layers are not measured: their experts round to nearest.
//
// H of a layer with c inputs takes c^2 doubles, so the layers are measured a group at a time:
// when the loader asks for a layer outside the group measured last, the windows are run again
// measuring the group that starts there, as many layers as fit in `max_bytes` (at least one).
// The statistics come from the unquantized model (the layers before are not quantized while
// measuring).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fp6serve/options.h"
#include "loader/weight_sink.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve {

class Model;
class CapturingBackend;

// The text's tokens (no BOS) cut into windows of `ctx` tokens, at most `max_windows` of them
// (0: all); a last piece of fewer than 2 tokens is dropped. Throws when none is left.
std::vector<std::vector<int32_t>> token_windows(const std::string& text, const Tokenizer& tok, int64_t ctx,
                                                int64_t max_windows, const std::string& what);

class LayerCalibration : public loader::Calibration {
 public:
  // model_dir: a Hugging Face checkpoint (not a prequantized one). options: threads and CPU ISA.
  LayerCalibration(const std::filesystem::path& model_dir, std::vector<std::vector<int32_t>> windows,
                   const Options& options, bool lm_head, size_t max_bytes = size_t{4} << 30);
  ~LayerCalibration() override;

  const fpx::Hessian* hessian(model::WeightId id) override;

  int64_t passes() const { return passes_; }  // how many times the windows were run
  int64_t tokens() const;                     // tokens per pass

 private:
  void measure(int64_t first_layer);

  std::vector<std::vector<int32_t>> windows_;
  bool lm_head_;
  size_t max_bytes_;
  std::unique_ptr<Model> model_;
  CapturingBackend* capture_ = nullptr;  // model_'s backend
  int64_t first_ = -1, last_ = -1;       // the layers measured last, [first_, last_)
  int64_t passes_ = 0;
  std::map<std::string, fpx::Hessian> stats_;  // by weight_name
};

}  // namespace fp6serve
