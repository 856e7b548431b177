// fp6serve quantize: write a prequantized checkpoint that loads without quantizing again.
#include <fmt/core.h>

#include <chrono>
#include <filesystem>

#include "cli/commands.h"
#include "model/prequantized.h"

namespace fp6serve::cli {

Action add_quantize(CLI::App& app) {
  struct Options {
    std::string model, out, mode = "wf6af16";
    bool quantize_lm_head = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a Hugging Face checkpoint once and save it (docs/checkpoint.md)");
  cmd->add_option("--model", o->model, "Hugging Face model directory")->required();
  cmd->add_option("--out", o->out, "Output directory")->required();
  cmd->add_option("--quantization-mode", o->mode, "wf6af16 (default), wf5af16, wf4af16 or eXmY");
  cmd->add_flag("--quantize-lm-head", o->quantize_lm_head, "Quantize lm_head too");
  return [o] {
    model::LoadOptions options;
    options.mode = model::QuantizationMode::parse(o->mode);
    options.quantize_lm_head = o->quantize_lm_head;
    const auto start = std::chrono::steady_clock::now();
    model::write_prequantized(o->model, o->out, options);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    uintmax_t bytes = 0;
    for (const auto& f : std::filesystem::directory_iterator(o->out)) bytes += f.is_regular_file() ? f.file_size() : 0;
    fmt::print("wrote {} ({}, {:.1f} MiB) in {:.1f} s\n", o->out, o->mode, bytes / 1048576.0, s);
    return 0;
  };
}

}  // namespace fp6serve::cli
