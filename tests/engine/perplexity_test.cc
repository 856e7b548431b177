// fp6serve perplexity's scoring (engine/perplexity.h) against transformers on the trained
// fixture (tests/data/tiny-trained): the FP32 mode reproduces its perplexity and every
// window's NLL, FP6 RTN the fake-quantized reference (same arithmetic, so any larger gap is a
// bug), and the BF16 mode stays within 1e-3 of FP32 in KL divergence. Then what the
// quantization options cost there (docs/quality.md): the default (min-error scales), GPTQ
// rounding from a calibration text, a quantized lm_head.
#include "engine/perplexity.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "core/file.h"
#include "engine/calibration.h"
#include "loader/prequantized.h"
#include "tests/support/fixture.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve {
namespace {

using testing::fixture_dir;
using testing::options;
using testing::Reference;

constexpr int64_t kWindow = 512;

std::vector<std::vector<int32_t>> windows(const Reference& ref, int64_t count) {
  const std::vector<int32_t> ids = ref.ids("eval_window_ids");
  std::vector<std::vector<int32_t>> out;
  for (int64_t w = 0; w < count; ++w) out.emplace_back(ids.begin() + w * kWindow, ids.begin() + (w + 1) * kWindow);
  return out;
}

std::vector<WindowScore> score(const std::string& mode, const std::vector<std::vector<int32_t>>& ws,
                               const std::string& baseline = "", const std::string& scale = "absmax") {
  Options o = options(mode);
  o.quantization_scale = scale;
  auto m = Model::load(fixture_dir("tiny-trained"), o);
  auto b = baseline.empty() ? nullptr : Model::load(fixture_dir("tiny-trained"), options(baseline));
  PerplexityScorer scorer(*m, b.get(), kWindow, 200);  // chunks that do not divide a window
  std::vector<WindowScore> out;
  for (const auto& w : ws) out.push_back(scorer.score(w));
  return out;
}

double figure(const Reference& ref, const char* name) {
  return ref.json["figures"][name]["ppl"].get<double>();
}

TEST(Perplexity, Fp32ReproducesTransformersPerplexityAndEveryWindow) {
  Reference ref("tiny-trained");
  const auto scores = score("fp32", windows(ref, 32));
  const PerplexitySummary s = summarize(scores);
  EXPECT_EQ(s.windows, 32);
  EXPECT_EQ(s.positions, 32 * (kWindow - 1));
  EXPECT_NEAR(s.ppl / figure(ref, "fp32"), 1.0, 1e-3);
  const std::vector<float> nll = ref.floats("nll_fp32");  // [32, 511]
  for (size_t w = 0; w < scores.size(); ++w) {
    double want = 0;
    for (int64_t t = 0; t < kWindow - 1; ++t) want += nll[w * (kWindow - 1) + static_cast<size_t>(t)];
    want /= kWindow - 1;
    EXPECT_NEAR(scores[w].mean_nll(), want, 1e-3) << "window " << w;
    EXPECT_NEAR(scores[w].nll[100], nll[w * (kWindow - 1) + 100], 2e-3) << "window " << w << " position 100";
  }
}

TEST(Perplexity, Fp6RoundToNearestReproducesTheFakeQuantizedReference) {
  Reference ref("tiny-trained");
  const PerplexitySummary s = summarize(score("e3m2", windows(ref, 32)));
  const double want = 100 * (figure(ref, "fp6_e3m2_row") / figure(ref, "fp32") - 1);  // +1.70%
  EXPECT_NEAR(100 * (s.ppl / figure(ref, "fp32") - 1), want, 0.1);
}

// The least-error scale, the default (docs/quality.md), lowers FP6 e3m2's perplexity on the
// trained model: +0.96% against absmax's +1.70% on the 32 windows.
TEST(Perplexity, MinErrorScalesAreTheDefaultAndBeatAbsmax) {
  EXPECT_EQ(Options{}.quantization_scale, "min-error");
  Reference ref("tiny-trained");
  const PerplexitySummary s = summarize(score("e3m2", windows(ref, 32), "", "min-error"));
  const double percent = 100 * (s.ppl / figure(ref, "fp32") - 1);
  EXPECT_LT(percent, 1.0);
  EXPECT_LT(percent, 100 * (figure(ref, "fp6_e3m2_row") / figure(ref, "fp32") - 1) - 0.5);
}

// Issue #16's target: the default settings (wf6af16: e2m3 or e3m2 per layer, min-error
// scales) within +1% of FP32 on held-out text: the 32 shared windows (+0.41% measured,
// docs/quality.md) and the held-out Debian text, where e3m2 alone missed (+1.77%; the default
// +0.72%). On tiny-trained every layer chooses e2m3.
TEST(Perplexity, TheDefaultIsWithinOnePercentOfFp32OnHeldOutText) {
  EXPECT_EQ(std::string(model::QuantizationMode::kDefault), "wf6af16");
  Reference ref("tiny-trained");
  const double shared =
      100 * (summarize(score("wf6af16", windows(ref, 32), "", "min-error")).ppl / figure(ref, "fp32") - 1);
  EXPECT_LT(shared, 0.6);
  EXPECT_GT(shared, 0.2);
  const std::string dir = fixture_dir("tiny-trained");
  const auto debian =
      token_windows(read_file(dir + "/heldout-debian.txt"), Tokenizer::load(dir), kWindow, 0, "heldout-debian.txt");
  const std::vector<WindowScore> both = score("wf6af16", debian, "fp32", "min-error");
  std::vector<WindowScore> fp32;  // the baseline's own NLLs: FP32 on the same windows
  for (const WindowScore& w : both) fp32.push_back({w.baseline_nll, {}, {}, {}});
  const double percent = 100 * (summarize(both).ppl / summarize(fp32).ppl - 1);
  EXPECT_LT(percent, 1.0);
  EXPECT_GT(percent, 0.3);
}

// GPTQ rounding from calibration text that is not held out (tiny-trained/calibration.txt),
// stored in a prequantized checkpoint: FP6 e3m2 (named, not the default's per-layer choice)
// well inside +1% of FP32 on the 32 windows.
TEST(Perplexity, GptqRoundingFromACalibrationTextIsWellInsideOnePercent) {
  Reference ref("tiny-trained");
  const std::string dir = fixture_dir("tiny-trained");
  const auto calibration_windows =
      token_windows(read_file(dir + "/calibration.txt"), Tokenizer::load(dir), 512, 0, "calibration.txt");
  LayerCalibration calibration(dir, calibration_windows, options("fp32"), false);
  loader::LinearSpec spec{
      model::QuantizationMode::parse("e3m2"), false, DType::kF16, false, fpx::ScaleRule::kMinError, &calibration};
  const auto out = std::filesystem::temp_directory_path() / ("fp6serve-gptq-" + std::to_string(::getpid()));
  loader::write_prequantized(dir, out, spec);
  EXPECT_EQ(calibration.passes(), 1);
  auto m = Model::load(out, options(""));
  PerplexityScorer scorer(*m, nullptr, kWindow);
  std::vector<WindowScore> scores;
  for (const auto& w : windows(ref, 32)) scores.push_back(scorer.score(w));
  std::filesystem::remove_all(out);
  const double percent = 100 * (summarize(scores).ppl / figure(ref, "fp32") - 1);
  EXPECT_LT(percent, 0.6);  // +0.40% measured (docs/quality.md)
  EXPECT_GT(percent, 0.0);
}

// --quantize-lm-head: lm_head is an FPx linear too; it costs perplexity, measured (not zero).
TEST(Perplexity, AQuantizedLmHeadIsQuantizedAndCostsSomething) {
  Reference ref("tiny-trained");
  const auto ws = windows(ref, 4);
  Options o = options("wf6af16");
  o.quantize_lm_head = true;
  auto m = Model::load(fixture_dir("tiny-trained"), o);
  EXPECT_TRUE(m->weights().lm_head->quantized);
  EXPECT_TRUE(m->weights().layers[0].qkv->quantized);
  PerplexityScorer scorer(*m, nullptr, kWindow);
  std::vector<WindowScore> scores;
  for (const auto& w : ws) scores.push_back(scorer.score(w));
  const double with = summarize(scores).ppl, without = summarize(score("wf6af16", ws, "", "min-error")).ppl;
  EXPECT_NE(with, without);
  EXPECT_NEAR(with / without, 1.0, 0.02);
  EXPECT_FALSE(Model::load(fixture_dir("tiny-trained"), options("wf6af16"))->weights().lm_head->quantized);
}

TEST(Perplexity, Bf16StaysWithin1e3OfFp32AndTheSummaryAddsUp) {
  Reference ref("tiny-trained");
  const auto scores = score("bf16", windows(ref, 4), "fp32");
  const PerplexitySummary s = summarize(scores);
  ASSERT_TRUE(s.has_baseline);
  EXPECT_LT(s.kl_mean, 1e-3);
  EXPECT_LE(s.kl_p99, s.kl_max);
  EXPECT_GE(s.top1, 0.95);
  // The baseline's own NLLs give the FP32 figures of the same windows.
  double mean = 0;
  for (const auto& w : scores) {
    ASSERT_EQ(w.kl.size(), w.nll.size());
    mean += std::accumulate(w.baseline_nll.begin(), w.baseline_nll.end(), 0.0) / (kWindow - 1);
  }
  EXPECT_NEAR(s.baseline_ppl, std::exp(mean / 4), 1e-9 * s.baseline_ppl);
}

TEST(Perplexity, AQuantizedModelDivergesAndWindowsAreChecked) {
  Reference ref("tiny-trained");
  const auto ws = windows(ref, 2);
  const PerplexitySummary s = summarize(score("wf4af16", ws, "fp32"));
  EXPECT_GT(s.kl_mean, 0.01);  // FP4 is far from FP32: the divergence is measured, not zero
  EXPECT_LT(s.top1, 1.0);
  auto m = Model::load(fixture_dir("tiny-trained"), options("fp32"));
  PerplexityScorer scorer(*m, nullptr, 64);
  EXPECT_THROW(scorer.score(std::vector<int32_t>(65, 1)), Error);
  EXPECT_THROW(scorer.score(std::vector<int32_t>(1, 1)), Error);
}

}  // namespace
}  // namespace fp6serve
