// Perplexity and divergence of a model on fixed token windows (fp6serve perplexity), the way
// transformers and llama.cpp's llama-perplexity define them: each window is scored from its own
// first token (no BOS added, no context carried between windows), token t + 1 by the logits
// at position t. With a baseline model (e.g. the same checkpoint in bf16) each position also
// gets the KL divergence KL(baseline || model) of the two next-token distributions and whether
// their top-1 tokens agree.
#pragma once

#include <cstdint>
#include <vector>

#include "transformer/model.h"

namespace fp6serve {

struct WindowScore {
  std::vector<double> nll;           // -log p(token t + 1 | tokens 0..t), t = 0..L-2
  std::vector<double> baseline_nll;  // the same under the baseline (empty without one)
  std::vector<double> kl;            // KL(baseline || model) at each of those positions
  int64_t top1_agree = 0;            // positions whose argmax tokens agree
  double mean_nll() const;
};

// Scores windows with `model` (and `baseline`, when given) through their KV caches, `chunk`
// positions per forward pass (so a long window never needs logits of all its positions at
// once). Windows hold at least 2 tokens and at most max_window.
class PerplexityScorer {
 public:
  PerplexityScorer(Model& model, Model* baseline, int64_t max_window, int64_t chunk = 256);
  WindowScore score(const std::vector<int32_t>& window);

 private:
  Model& model_;
  Model* baseline_;
  int64_t max_window_, chunk_;
  KvCache cache_, baseline_cache_;
  std::vector<int32_t> blocks_;
};

// The summary of many windows: perplexity = exp(mean over windows of their mean NLL), with the
// standard error of that mean NLL (over windows) carried to the perplexity; KL mean, 99th
// percentile and maximum over all positions; top-1 agreement.
struct PerplexitySummary {
  int64_t windows = 0, positions = 0;
  double ppl = 0, ppl_stderr = 0;
  bool has_baseline = false;
  double baseline_ppl = 0;
  double kl_mean = 0, kl_p99 = 0, kl_max = 0, top1 = 0;
};
PerplexitySummary summarize(const std::vector<WindowScore>& scores);

}  // namespace fp6serve
