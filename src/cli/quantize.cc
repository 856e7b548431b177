// fp6serve quantize: write a prequantized checkpoint that loads without quantizing again.
#include "fpx/quantize.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "engine/calibration.h"
#include "loader/prequantized.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve::cli {

Action add_quantize(CLI::App& app) {
  struct Args {
    std::string model, out, calibration;
    int64_t calibration_ctx = 512, calibration_windows = 128;
    Options options;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("quantize", "Quantize a Hugging Face checkpoint once and save it (docs/checkpoint.md)");
  cmd->add_option("--model", a->model, "Hugging Face model directory")->required();
  cmd->add_option("--out", a->out, "Output directory")->required();
  cmd->add_option("--quantization-mode", a->options.quantization_mode,
                  fmt::format("An FPx mode: wf6af16 (default; FP6, e2m3 or e3m2 per layer), wf5af16, wf4af16 or "
                              "eXmY (that format in every layer, e.g. e3m2)"));
  cmd->add_option("--quantization-scale", a->options.quantization_scale,
                  "Each row's scale: absmax, or min-error (least squared error; docs/quality.md)")
      ->capture_default_str();
  cmd->add_flag("--quantize-lm-head", a->options.quantize_lm_head, "Quantize lm_head too");
  cmd->add_option("--calibration", a->calibration,
                  "A text file: round with error feedback (GPTQ) from the layers' inputs on it (docs/quality.md)");
  cmd->add_option("--calibration-ctx", a->calibration_ctx,
                  "Tokens per calibration window (at most the model's context)")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--calibration-windows", a->calibration_windows, "Calibration windows to use at most (0: all)")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--threads", a->options.threads, "CPU threads (0: every core)")->capture_default_str();
  return [a] {
    Options& o = a->options;
    apply_environment(o);
    o.validate();
    ThreadPool::resize_global(o.threads);
    loader::LinearSpec spec;
    spec.mode = model::QuantizationMode::parse(o.quantization_mode.empty() ? model::QuantizationMode::kDefault
                                                                           : o.quantization_mode);
    spec.quantize_lm_head = o.quantize_lm_head;
    spec.scale_rule = fpx::parse_scale_rule(o.quantization_scale);
    spec.progress = o.progress;
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<LayerCalibration> calibration;
    if (!a->calibration.empty()) {
      FP6_CHECK(a->calibration_windows >= 0, kInvalidArgument, "--calibration-windows must be >= 0");
      const model::ModelConfig config = model::ModelConfig::load(a->model);
      const int64_t ctx = std::min(a->calibration_ctx, config.max_position_embeddings);
      auto windows = token_windows(read_file(a->calibration), Tokenizer::load(a->model), ctx, a->calibration_windows,
                                   a->calibration);
      calibration = std::make_unique<LayerCalibration>(a->model, std::move(windows), o, o.quantize_lm_head);
      spec.calibration = calibration.get();
      fmt::print(stderr, "calibration: {} tokens of {}\n", calibration->tokens(), a->calibration);
    }
    loader::write_prequantized(a->model, a->out, spec);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    uintmax_t bytes = 0;
    for (const auto& f : std::filesystem::directory_iterator(a->out)) bytes += f.is_regular_file() ? f.file_size() : 0;
    fmt::print("wrote {} ({}, {:.1f} MiB{}) in {:.1f} s\n", a->out, spec.mode.name, bytes / 1048576.0,
               calibration ? fmt::format(", GPTQ rounding, {} calibration passes", calibration->passes()) : "", s);
    return 0;
  };
}

}  // namespace fp6serve::cli
