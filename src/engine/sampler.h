// A request's sampling, turned into each step's SampleRow (backend/sampling.h defines what a
// row does to the logits: penalties, temperature, top-k, min-p, top-p, the draw, the
// log-probabilities; the CPU and GPU backends carry it out identically).
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "backend/sampling.h"
#include "fp6serve/options.h"
#include "model/config.h"

namespace fp6serve {

class Sampler {
 public:
  // What the request set, else the checkpoint's generation_config (Hugging Face semantics:
  // without do_sample its temperature, top-p and top-k do not apply), else greedy. The
  // options must be valid (GenerateOptions::validate).
  Sampler(const GenerateOptions& options, const model::GenerationDefaults& defaults = {});
  // prompt and generated: the sequence so far (penalties look at them).
  SampleRow next_row(std::span<const int32_t> prompt, std::span<const int32_t> generated);

 private:
  double temperature_, top_p_, min_p_, repetition_penalty_, presence_penalty_, frequency_penalty_;
  int64_t top_k_;
  int top_logprobs_;
  std::mt19937_64 rng_;
};

}  // namespace fp6serve
