// fp6serve perplexity: perplexity of a model on a text or on token-id windows, and with
// --kl-baseline the KL divergence and top-1 agreement to another mode of the same checkpoint
// (engine/perplexity.h says how each is defined).
#include "engine/perplexity.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/check.h"
#include "core/file.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"
#include "transformer/model.h"

namespace fp6serve::cli {

namespace {

// One window per non-empty line: token ids separated by spaces or commas.
std::vector<std::vector<int32_t>> read_id_windows(const std::string& path, int64_t vocab) {
  const std::string text = read_file(path);
  std::vector<std::vector<int32_t>> windows;
  std::istringstream lines(text);
  int line_no = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_no;
    std::replace(line.begin(), line.end(), ',', ' ');
    std::istringstream in(line);
    std::vector<int32_t> w;
    for (std::string item; in >> item;) {
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      FP6_CHECK(used == item.size() && id >= 0 && id < vocab, kBadInput,
                "{}: line {}: '{}' is not a token id of this model (0 to {})", path, line_no, item.substr(0, 32),
                vocab - 1);
      w.push_back(static_cast<int32_t>(id));
    }
    if (w.empty()) continue;
    FP6_CHECK(w.size() >= 2, kBadInput, "{}: line {}: a window needs at least 2 tokens", path, line_no);
    windows.push_back(std::move(w));
  }
  FP6_CHECK(!windows.empty(), kBadInput, "{}: no windows (one line of token ids per window)", path);
  return windows;
}

// The text's tokens (no BOS) cut into windows of ctx tokens; a last piece of fewer than 2 is
// dropped.
std::vector<std::vector<int32_t>> text_windows(const std::string& path, const Tokenizer& tok, int64_t ctx) {
  const std::vector<int32_t> ids = tok.encode(read_file(path), false);
  std::vector<std::vector<int32_t>> windows;
  for (size_t i = 0; i + 1 < ids.size(); i += static_cast<size_t>(ctx))
    windows.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(i),
                         ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + static_cast<size_t>(ctx))));
  if (!windows.empty() && windows.back().size() < 2) windows.pop_back();
  FP6_CHECK(!windows.empty(), kBadInput, "{}: fewer than 2 tokens of text", path);
  return windows;
}

std::unique_ptr<Model> load(const std::string& dir, Options o, const std::string& mode) {
  if (!mode.empty()) o.quantization_mode = mode;
  return Model::load(dir, o);
}

}  // namespace

Action add_perplexity(CLI::App& app) {
  struct Args {
    std::string model, text, ids, kl_baseline;
    int64_t ctx = 0, max_windows = 0;
    bool json = false;
    Options options;
    ModelFlags flags;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity on a text or token windows, and KL to another mode");
  cmd->add_option("--model", a->model, "Model directory (Hugging Face checkpoint or fp6serve quantize output)")
      ->required();
  auto* text = cmd->add_option("--text", a->text, "A text file: tokenized (no BOS), cut into windows of --ctx");
  auto* ids = cmd->add_option("--ids", a->ids, "Token-id windows: one per line, ids separated by spaces or commas");
  text->excludes(ids);
  cmd->add_option("--ctx", a->ctx, "Tokens per window of --text (0: the model's context, at most 4096)")
      ->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "Score only the first N windows (0: all)")->capture_default_str();
  cmd->add_option("--kl-baseline", a->kl_baseline,
                  "Also run this mode (e.g. bf16, fp32) and report KL(baseline || model) and top-1 agreement");
  cmd->add_flag("--json", a->json, "Print the summary and every window's figures as JSON");
  add_model_options(cmd, a->options, a->flags, false);
  return [a] {
    FP6_CHECK(!a->text.empty() || !a->ids.empty(), kInvalidArgument, "give --text FILE or --ids FILE");
    FP6_CHECK(a->ctx >= 0 && a->max_windows >= 0, kInvalidArgument, "--ctx and --max-windows must be >= 0");
    Options& o = a->options;
    finish_model_options(o, a->flags);
    apply_environment(o);
    o.validate();
    ThreadPool::resize_global(o.threads);
    auto model = load(a->model, o, "");
    std::unique_ptr<Model> baseline = a->kl_baseline.empty() ? nullptr : load(a->model, o, a->kl_baseline);
    const ModelConfig& c = model->config();
    std::vector<std::vector<int32_t>> windows;
    if (!a->ids.empty()) {
      windows = read_id_windows(a->ids, c.vocab_size);
    } else {
      const int64_t ctx = a->ctx > 0 ? a->ctx : std::min<int64_t>(c.max_position_embeddings, 4096);
      FP6_CHECK(ctx >= 2, kInvalidArgument, "--ctx must be at least 2");
      windows = text_windows(a->text, Tokenizer::load(a->model), ctx);
    }
    if (a->max_windows > 0 && static_cast<int64_t>(windows.size()) > a->max_windows)
      windows.resize(static_cast<size_t>(a->max_windows));
    int64_t longest = 0;
    for (const auto& w : windows) longest = std::max<int64_t>(longest, static_cast<int64_t>(w.size()));
    FP6_CHECK(longest <= c.max_position_embeddings, kInvalidArgument,
              "a window of {} tokens is longer than the model's context ({})", longest, c.max_position_embeddings);

    PerplexityScorer scorer(*model, baseline.get(), longest);
    std::vector<WindowScore> scores;
    Progress progress("perplexity", static_cast<int64_t>(windows.size()));
    double nll_sum = 0;  // of the windows' mean NLLs: the running perplexity, without re-summarizing
    for (const auto& w : windows) {
      scores.push_back(scorer.score(w));
      nll_sum += scores.back().mean_nll();
      progress.advance(1, fmt::format("ppl {:.4f}", std::exp(nll_sum / static_cast<double>(scores.size()))));
    }
    progress.finish();
    const PerplexitySummary s = summarize(scores);
    const std::string mode = model->quantization().name;
    if (a->json) {
      nlohmann::json j = {{"model", a->model},        {"mode", mode},        {"windows", s.windows},
                          {"positions", s.positions}, {"perplexity", s.ppl}, {"perplexity_stderr", s.ppl_stderr}};
      nlohmann::json per = nlohmann::json::array();
      for (const WindowScore& w : scores) {
        nlohmann::json e = {{"tokens", w.nll.size() + 1}, {"mean_nll", w.mean_nll()}};
        if (!w.kl.empty()) {
          e["kl_mean"] = std::accumulate(w.kl.begin(), w.kl.end(), 0.0) / static_cast<double>(w.kl.size());
          e["top1_agreement"] = static_cast<double>(w.top1_agree) / static_cast<double>(w.kl.size());
        }
        per.push_back(std::move(e));
      }
      if (s.has_baseline)
        j["baseline"] = {{"mode", a->kl_baseline},
                         {"perplexity", s.baseline_ppl},
                         {"delta_ppl_percent", 100 * (s.ppl / s.baseline_ppl - 1)},
                         {"kl_mean", s.kl_mean},
                         {"kl_p99", s.kl_p99},
                         {"kl_max", s.kl_max},
                         {"top1_agreement", s.top1}};
      j["per_window"] = std::move(per);
      fmt::print("{}\n", j.dump(1));
      return 0;
    }
    fmt::print("{} ({}): {} windows, {} scored positions\nperplexity {:.4f} +/- {:.4f}\n", a->model, mode, s.windows,
               s.positions, s.ppl, s.ppl_stderr);
    if (s.has_baseline)
      fmt::print(
          "baseline {}: perplexity {:.4f}; {} vs baseline: {:+.3f}%\nKL(baseline || {}): mean {:.6f}, p99 {:.6f}, max "
          "{:.6f}; top-1 agreement {:.2f}%\n",
          a->kl_baseline, s.baseline_ppl, mode, 100 * (s.ppl / s.baseline_ppl - 1), mode, s.kl_mean, s.kl_p99, s.kl_max,
          100 * s.top1);
    return 0;
  };
}

}  // namespace fp6serve::cli
