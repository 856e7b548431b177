// fp6serve generate: load a model and stream a completion to stdout.
#include <fmt/core.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "core/check.h"
#include "fp6serve/pipeline.h"

namespace fp6serve::cli {

namespace {

// --prompt-ids: comma-separated token ids.
std::vector<int32_t> parse_ids(const std::string& text) {
  const auto ids = parse_int_list(text, "--prompt-ids", 0, INT32_MAX);
  return {ids.begin(), ids.end()};
}

}  // namespace

Action add_generate(CLI::App& app) {
  struct Options {
    std::string model, prompt, prompt_ids, mode = "wf6af16", device = "auto";
    int64_t max_new_tokens = 128;
    double temperature = -1, top_p = -1, min_p = -1, repetition_penalty = -1;
    int64_t top_k = -1;
    int64_t seed = -1;
    std::vector<std::string> stop;
    bool json = false, ignore_eos = false, quantize_lm_head = false, no_special = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt with a Hugging Face model");
  cmd->add_option("--model", o->model, "Model directory (Hugging Face checkpoint or fp6serve quantize output)")->required();
  auto* prompt = cmd->add_option("--prompt", o->prompt, "Prompt text");
  auto* ids = cmd->add_option("--prompt-ids", o->prompt_ids, "Prompt as comma-separated token ids, e.g. 1,2,3");
  prompt->excludes(ids);
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to generate at most")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy; default: the model's)");
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling probability mass");
  cmd->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0: off)");
  cmd->add_option("--min-p", o->min_p, "Drop tokens below min-p times the top probability");
  cmd->add_option("--repetition-penalty", o->repetition_penalty, "Penalty for tokens already seen (1: off)");
  cmd->add_option("--seed", o->seed, "Random seed for sampling");
  cmd->add_option("--stop", o->stop, "Stop string (repeatable)");
  cmd->add_option("--quantization-mode", o->mode, "wf6af16 (default), wf5af16, wf4af16, eXmY, or fp16, bf16, fp32");
  cmd->add_option("--device", o->device, "auto, cpu or cuda");
  cmd->add_flag("--quantize-lm-head", o->quantize_lm_head, "Quantize lm_head too");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Do not stop at end-of-sequence tokens");
  cmd->add_flag("--no-special-tokens", o->no_special, "Do not add BOS/special tokens to the prompt");
  cmd->add_flag("--json", o->json, "Print prompt ids, generated ids, text and finish reason as JSON");
  return [o] {
    FP6_CHECK(!o->prompt.empty() || !o->prompt_ids.empty(), kInvalidArgument, "give --prompt or --prompt-ids");
    PipelineOptions po;
    po.quantization_mode = o->mode;
    po.device = o->device;
    po.quantize_lm_head = o->quantize_lm_head;
    Pipeline pipe(o->model, po);
    GenerateOptions g;
    g.max_new_tokens = o->max_new_tokens;
    if (o->temperature >= 0) g.temperature = o->temperature;
    if (o->top_p >= 0) g.top_p = o->top_p;
    if (o->top_k >= 0) g.top_k = o->top_k;
    if (o->min_p >= 0) g.min_p = o->min_p;
    if (o->repetition_penalty >= 0) g.repetition_penalty = o->repetition_penalty;
    if (o->seed >= 0) g.seed = static_cast<uint64_t>(o->seed);
    g.stop = o->stop;
    g.ignore_eos = o->ignore_eos;
    g.add_special_tokens = !o->no_special;
    const std::vector<int32_t> prompt_ids =
        o->prompt_ids.empty() ? pipe.encode(o->prompt, g.add_special_tokens) : parse_ids(o->prompt_ids);
    if (o->json) {
      const Response r = pipe.generate(prompt_ids, g);
      const nlohmann::json j = {{"prompt_ids", r.prompt_ids},
                                {"generated_ids", r.generated_ids},
                                {"text", r.generated_text},
                                {"finish_reason", r.finish_reason}};
      fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
      pipe.generate(prompt_ids, g, [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
      std::fputc('\n', stdout);
    }
    return 0;
  };
}

}  // namespace fp6serve::cli
