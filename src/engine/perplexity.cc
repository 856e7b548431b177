#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"

namespace fp6serve {

namespace {

constexpr int64_t kBlock = 16;

// log-softmax of one logits row, in double.
void log_softmax(const float* row, int64_t vocab, std::vector<double>& out) {
  out.resize(static_cast<size_t>(vocab));
  double m = -INFINITY;
  for (int64_t v = 0; v < vocab; ++v) m = std::max(m, static_cast<double>(row[v]));
  double s = 0;
  for (int64_t v = 0; v < vocab; ++v) s += std::exp(static_cast<double>(row[v]) - m);
  const double lse = m + std::log(s);
  for (int64_t v = 0; v < vocab; ++v) out[static_cast<size_t>(v)] = static_cast<double>(row[v]) - lse;
}

int64_t argmax(const std::vector<double>& x) {
  return std::max_element(x.begin(), x.end()) - x.begin();
}

}  // namespace

double WindowScore::mean_nll() const {
  return nll.empty() ? 0.0 : std::accumulate(nll.begin(), nll.end(), 0.0) / static_cast<double>(nll.size());
}

PerplexityScorer::PerplexityScorer(Model& model, Model* baseline, int64_t max_window, int64_t chunk)
    : model_(model),
      baseline_(baseline),
      max_window_(max_window),
      chunk_(chunk),
      cache_(model.make_kv_cache((max_window + kBlock - 1) / kBlock, kBlock)),
      baseline_cache_(baseline ? baseline->make_kv_cache((max_window + kBlock - 1) / kBlock, kBlock)
                               : model.make_kv_cache(1, kBlock)) {
  FP6_CHECK(max_window >= 2 && chunk >= 1, kInvalidArgument, "perplexity: windows of {} tokens, chunks of {}",
            max_window, chunk);
  FP6_CHECK(!baseline || baseline->config().vocab_size == model.config().vocab_size, kInvalidArgument,
            "perplexity: the baseline's vocabulary ({}) differs from the model's ({})",
            baseline ? baseline->config().vocab_size : 0, model.config().vocab_size);
  blocks_.resize(static_cast<size_t>((max_window + kBlock - 1) / kBlock));
  std::iota(blocks_.begin(), blocks_.end(), 0);
}

WindowScore PerplexityScorer::score(const std::vector<int32_t>& w) {
  const auto n = static_cast<int64_t>(w.size());
  FP6_CHECK(n >= 2 && n <= max_window_, kInvalidArgument, "perplexity: a window of {} tokens (2 to {} allowed)", n,
            max_window_);
  const int64_t vocab = model_.config().vocab_size;
  WindowScore s;
  std::vector<double> lp, base_lp;
  for (int64_t start = 0; start < n - 1; start += chunk_) {
    const int64_t count = std::min(chunk_, n - 1 - start);  // the last token predicts nothing
    const std::vector<int32_t> table(blocks_.begin(), blocks_.begin() + (start + count + kBlock - 1) / kBlock);
    Batch b;
    b.add(w.data() + start, count, start, table, true, true);
    const Tensor logits = model_.forward(b, cache_);
    Tensor base;
    if (baseline_) base = baseline_->forward(b, baseline_cache_);
    for (int64_t i = 0; i < count; ++i) {
      const int32_t next = w[static_cast<size_t>(start + i + 1)];
      log_softmax(logits.data_as<float>() + i * vocab, vocab, lp);
      s.nll.push_back(-lp[static_cast<size_t>(next)]);
      if (!baseline_) continue;
      log_softmax(base.data_as<float>() + i * vocab, vocab, base_lp);
      s.baseline_nll.push_back(-base_lp[static_cast<size_t>(next)]);
      double kl = 0;
      for (int64_t v = 0; v < vocab; ++v) {
        const double p = std::exp(base_lp[static_cast<size_t>(v)]);
        if (p > 0) kl += p * (base_lp[static_cast<size_t>(v)] - lp[static_cast<size_t>(v)]);
      }
      s.kl.push_back(std::max(kl, 0.0));  // rounding can make a zero divergence slightly negative
      s.top1_agree += argmax(lp) == argmax(base_lp);
    }
  }
  return s;
}

PerplexitySummary summarize(const std::vector<WindowScore>& scores) {
  PerplexitySummary r;
  r.windows = static_cast<int64_t>(scores.size());
  if (scores.empty()) return r;
  std::vector<double> means, kl;
  double base_sum = 0;
  int64_t agree = 0;
  for (const WindowScore& s : scores) {
    means.push_back(s.mean_nll());
    r.positions += static_cast<int64_t>(s.nll.size());
    if (!s.baseline_nll.empty()) {
      r.has_baseline = true;
      base_sum += std::accumulate(s.baseline_nll.begin(), s.baseline_nll.end(), 0.0) /
                  static_cast<double>(s.baseline_nll.size());
      kl.insert(kl.end(), s.kl.begin(), s.kl.end());
      agree += s.top1_agree;
    }
  }
  const double n = static_cast<double>(means.size());
  const double mean = std::accumulate(means.begin(), means.end(), 0.0) / n;
  double var = 0;
  for (double m : means) var += (m - mean) * (m - mean);
  const double stderr_mean = means.size() > 1 ? std::sqrt(var / (n - 1) / n) : 0.0;
  r.ppl = std::exp(mean);
  r.ppl_stderr = r.ppl * stderr_mean;
  if (r.has_baseline) {
    r.baseline_ppl = std::exp(base_sum / n);
    std::sort(kl.begin(), kl.end());
    r.kl_mean = std::accumulate(kl.begin(), kl.end(), 0.0) / static_cast<double>(kl.size());
    r.kl_p99 = kl[std::min(kl.size() - 1, static_cast<size_t>(0.99 * static_cast<double>(kl.size())))];
    r.kl_max = kl.back();
    r.top1 = static_cast<double>(agree) / static_cast<double>(kl.size());
  }
  return r;
}

}  // namespace fp6serve
