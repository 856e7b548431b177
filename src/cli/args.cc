// The flags shared by the subcommands (commands.h).
#include <fmt/format.h>

#include <charconv>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "model/quantization.h"

namespace fp6serve::cli {

namespace {

template <typename T>
std::string decimal_error(const std::string& v) {
  const char* end = v.data() + v.size();
  const size_t digits = !v.empty() && v[0] == '-' ? 1 : 0;
  T x{};
  const auto [stop, ec] = std::from_chars(v.data(), end, x);
  if (ec == std::errc::result_out_of_range)
    return fmt::format("'{}' is out of range: {} to {}", v, std::numeric_limits<T>::min(),
                       std::numeric_limits<T>::max());
  if (ec != std::errc() || stop != end || (v.size() > digits + 1 && v[digits] == '0'))
    return fmt::format("'{}' is not a {}decimal integer", v, std::is_signed_v<T> ? "" : "non-negative ");
  return "";
}

}  // namespace

const CLI::Validator kDecimalInteger([](std::string& v) { return decimal_error<int64_t>(v); }, "", "decimal");
const CLI::Validator kNonNegativeInteger([](std::string& v) { return decimal_error<uint64_t>(v); }, "", "unsigned");

std::vector<int64_t> parse_int_list(const std::string& text, const char* option, int64_t min, int64_t max) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    FP6_CHECK(used == item.size() && !item.empty() && v >= min && v <= max, kInvalidArgument,
              "{}: '{}' is not an integer in [{}, {}] (expected a comma-separated list)", option, item, min, max);
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

void add_model_options(CLI::App* cmd, Options& o, ModelFlags& flags, bool engine) {
  cmd->add_option("--quantization-mode", o.quantization_mode,
                  std::string(model::QuantizationMode::kChoices) + " (default: " + model::QuantizationMode::kDefault +
                      ", or a prequantized checkpoint's own)");
  cmd->add_option("--quantization-scale", o.quantization_scale,
                  "Each row's scale: absmax, or min-error (least squared error; docs/quality.md)")
      ->capture_default_str();
  cmd->add_flag("--quantize-lm-head", o.quantize_lm_head, "Quantize lm_head too");
  cmd->add_option("--device", o.device, "auto, cpu or cuda")->capture_default_str();
  cmd->add_option("--threads", o.threads, "CPU threads (0: every core)")->check(kDecimalInteger)->capture_default_str();
  if (!engine) return;
  cmd->add_option("--tensor-parallel-size", o.tensor_parallel_size,
                  "Split the model over this many GPUs (tensor parallelism, one thread per GPU; at most the GPUs "
                  "there are). On the CPU the ranks are threads over host memory: for testing only, no faster")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--max-batch-tokens", o.max_batch_tokens, "Tokens per forward pass (the SplitFuse budget)")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--max-num-seqs", o.max_num_seqs, "Sequences in the KV cache at once")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--max-model-len", o.max_model_len, "Context length limit (0: the model's)")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--kv-block-size", o.kv_block_size, "Tokens per KV-cache block")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--kv-cache-gib", flags.kv_cache_gib,
                  "KV cache size in GiB (0: on the CPU room for 4 full-context sequences, at most 1 GiB; on the GPU "
                  "what --gpu-memory-utilization leaves, else 90% of the free memory less 2 GiB)")
      ->capture_default_str();
  cmd->add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                  "GPU only, as vLLM's: the fraction of the GPU's memory, in (0, 1], for the weights, 2 GiB of "
                  "activations and the KV cache, which gets the rest (0: not set)")
      ->capture_default_str();
}

void finish_model_options(Options& o, const ModelFlags& flags) {
  FP6_CHECK(flags.kv_cache_gib >= 0 && flags.kv_cache_gib < 1 << 20, kInvalidArgument,
            "--kv-cache-gib must be in [0, 1048576), got {}", flags.kv_cache_gib);
  o.kv_cache_bytes = static_cast<size_t>(flags.kv_cache_gib * (1ull << 30));
  FP6_CHECK(flags.kv_cache_gib == 0 || o.kv_cache_bytes > 0, kInvalidArgument,
            "--kv-cache-gib {} is less than one byte (0: the default size)", flags.kv_cache_gib);
}

void add_generate_options(CLI::App* cmd, GenerateOptions& g) {
  cmd->add_option("--max-new-tokens", g.max_new_tokens, "Tokens to generate at most")
      ->check(kDecimalInteger)
      ->capture_default_str();
  cmd->add_option("--temperature", g.temperature, "Sampling temperature (0: greedy; default: the model's)");
  cmd->add_option("--top-p", g.top_p, "Nucleus sampling probability mass (default: the model's, else 1: off)");
  cmd->add_option("--top-k", g.top_k, "Sample among the k most likely tokens (default: the model's, else 0: off)")
      ->check(kDecimalInteger);
  cmd->add_option("--min-p", g.min_p, "Drop tokens below min-p times the top probability (default: 0, off)");
  cmd->add_option("--repetition-penalty", g.repetition_penalty,
                  "Penalty for tokens already seen (default: the model's, else 1: off)");
  cmd->add_option("--seed", g.seed,
                  "Random seed for sampling, a non-negative integer (default: a fresh one per request)")
      ->check([](const std::string& v) { return v.rfind('-', 0) == 0 ? std::string("must not be negative") : ""; })
      ->check(kNonNegativeInteger);
  cmd->add_option("--stop", g.stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", g.ignore_eos, "Do not stop at end-of-sequence tokens");
  cmd->add_flag(
      "--no-special-tokens", [&g](int64_t) { g.add_special_tokens = false; },
      "Do not add BOS/special tokens to the prompt");
}

ChatTemplate load_chat_template(const std::string& file, const std::string& model_source,
                                const std::string& model_dir) {
  if (!file.empty()) {
    const std::string source = read_file(file);
    return naming_file(file, [&] { return ChatTemplate(source); });
  }
  FP6_CHECK(!model_source.empty(), kInvalidArgument,
            "{} ships no chat template (tokenizer_config.json chat_template): give --chat-template FILE", model_dir);
  return ChatTemplate(model_source);
}

std::string render_chat(const ChatTemplate& t, const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  return t.render(messages, true, {{"bos_token", tok.bos_token()}, {"eos_token", tok.eos_token()}});
}

}  // namespace fp6serve::cli
