// fp6serve generate: load a model and stream a completion to stdout.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "core/check.h"
#include "fp6serve/pipeline.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve::cli {

Action add_generate(CLI::App& app) {
  struct Args {
    std::string model, prompt, prompt_ids, chat_template_file;
    bool json = false, chat = false;
    Options options;
    ModelFlags flags;
    GenerateOptions generate;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt with a Hugging Face model");
  cmd->add_option("--model", a->model, "Model directory (Hugging Face checkpoint or fp6serve quantize output)")
      ->required();
  auto* prompt = cmd->add_option("--prompt", a->prompt, "Prompt text");
  auto* ids = cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt as comma-separated token ids, e.g. 1,2,3");
  prompt->excludes(ids);
  cmd->add_flag("--json", a->json, "Print prompt ids, generated ids, text and finish reason as JSON");
  cmd->add_flag("--chat", a->chat, "Send the prompt as a user message through the model's chat template");
  cmd->add_option("--chat-template", a->chat_template_file,
                  "With --chat: a Jinja template file instead of the model's");
  add_generate_options(cmd, a->generate);
  add_model_options(cmd, a->options, a->flags, true);
  return [a] {
    FP6_CHECK(!a->prompt.empty() || !a->prompt_ids.empty(), kInvalidArgument, "give --prompt or --prompt-ids");
    finish_model_options(a->options, a->flags);
    const GenerateOptions& g = a->generate;
    g.validate();
    Pipeline pipe(a->model, a->options);
    std::vector<int32_t> prompt_ids;
    if (a->chat) {
      FP6_CHECK(a->prompt_ids.empty(), kInvalidArgument, "--chat takes --prompt (text), not --prompt-ids");
      const Tokenizer tok = Tokenizer::load(a->model);
      const ChatTemplate t = load_chat_template(a->chat_template_file, tok.chat_template(), a->model);
      prompt_ids = pipe.encode(render_chat(t, tok, {{"user", a->prompt}}), false);
    } else if (a->prompt_ids.empty()) {
      prompt_ids = pipe.encode(a->prompt, g.add_special_tokens);
    } else {
      for (int64_t id : parse_int_list(a->prompt_ids, "--prompt-ids", 0, INT32_MAX))
        prompt_ids.push_back(static_cast<int32_t>(id));
    }
    if (a->json) {
      const Response r = pipe.generate(prompt_ids, g);
      const nlohmann::json j = {{"prompt_ids", r.prompt_ids},
                                {"generated_ids", r.generated_ids},
                                {"text", r.generated_text},
                                {"finish_reason", r.finish_reason}};
      fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
      const auto start = std::chrono::steady_clock::now();
      const Response r = pipe.generate(prompt_ids, g, [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
      std::fputc('\n', stdout);
      std::fflush(stdout);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fmt::print(stderr, "[{} prompt tokens, {} generated in {:.2f} s: {:.1f} tokens/s, {}]\n", r.prompt_tokens,
                 r.generated_tokens, s, s > 0 ? static_cast<double>(r.generated_tokens) / s : 0.0, r.finish_reason);
    }
    return 0;
  };
}

}  // namespace fp6serve::cli
