// fp6serve bench decode | prefill: the model's speed on the GPU (or, with --device cpu or
// without one, on the CPU), FP6 against the FP16 mode in one run, on random weights of a real shape (--random-weights
// llama2-7b ...). Decode rows report ms per step, tokens/s and the share of the roofline: (weight bytes + the KV bytes
// a step reads) over the read bandwidth measured at the start of the same run.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <numeric>
#include <sstream>

#include "cli/bench_serve.h"
#include "cli/commands.h"
#include "core/check.h"
#include "core/thread_pool.h"
#include "transformer/device.h"
#include "transformer/model.h"

namespace fp6serve::cli {

namespace {

struct BenchOptions {
  std::string shape = "llama2-7b";
  std::string modes = "wf6af16,fp16";
  std::string batches = "1,2,4,8,16,32,64";
  std::string contexts = "128,1024,4096";
  std::string prompts = "512,2048";
  std::string device = "auto";  // auto: the GPU when there is one
  int tensor_parallel = 1;      // GPUs the model is split over
  bool quantize_lm_head = false;
  int steps = 16;
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The CPU's read bandwidth: every thread sums its part of a 512 MiB buffer (after touching it
// once), best of 3.
double cpu_read_bandwidth_gbs() {
  const size_t n = (size_t{512} << 20) / sizeof(uint64_t);
  std::vector<uint64_t> data(n, 1);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::atomic<uint64_t> sum{0};
    const auto t0 = std::chrono::steady_clock::now();
    ThreadPool::global()->parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4) s0 += data[i], s1 += data[i + 1], s2 += data[i + 2], s3 += data[i + 3];
      for (; i < e; ++i) s0 += data[i];
      sum += s0 + s1 + s2 + s3;
    });
    const double sec = seconds_since(t0);
    FP6_CHECK(sum.load() == n, kInternal, "bandwidth probe: wrong sum");
    best = std::max(best, static_cast<double>(n * sizeof(uint64_t)) / sec / 1e9);
  }
  return best;
}

double free_gib(Model& m) {
  return m.backend().memory().free / double(1 << 30);
}

// Builds the random-weight model of one mode, or says why it cannot (e.g. FP16 70B on 80 GB).
std::unique_ptr<Model> build(const model::ModelConfig& config, const std::string& mode, const Options& options,
                             std::string& why) {
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const auto qmode = model::QuantizationMode::parse(mode);
    auto m = Model::random(config, qmode, options);
    fmt::print(stderr, "{}: built in {:.1f} s, weights {:.2f} GiB, {:.2f} GiB free on the device\n", mode,
               seconds_since(t0), m->weights().bytes() / double(1 << 30), free_gib(*m));
    return m;
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kOutOfMemory) throw;
    why = fmt::format("does not fit: {}", e.what());
    return nullptr;
  }
}

struct Row {
  double ms = 0, tok_s = 0, roof = 0;
  std::string note;
};

// Decode: `b` sequences, each with `context` tokens cached at its last step; `steps` steps
// of one token per sequence, timed after one warm-up step.
Row decode(Model& m, int64_t b, int64_t context, int steps, double read_gbs, int64_t block) {
  const model::ModelConfig& c = m.config();
  const int64_t first = context - steps;  // the steps end at position context - 1
  const int64_t blocks = (context + block - 1) / block;
  const size_t kv_token = m.backend().kv_block_bytes(block) / block;
  const size_t need = static_cast<size_t>(b * blocks) * m.backend().kv_block_bytes(block);
  Row r;
  if (need + (size_t{1} << 30) > m.backend().memory().free) {
    r.note = fmt::format("KV {:.1f} GiB does not fit", need / double(1 << 30));
    return r;
  }
  KvCache cache = m.make_kv_cache(b * blocks, block);
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(b));
  for (int64_t s = 0; s < b; ++s) {
    tables[s].resize(static_cast<size_t>(blocks));
    std::iota(tables[s].begin(), tables[s].end(), static_cast<int32_t>(s * blocks));
  }
  auto step = [&](int64_t pos) {
    Batch batch;
    for (int64_t s = 0; s < b; ++s) {
      const int32_t token = static_cast<int32_t>((s * 7919 + pos * 104729) % c.vocab_size);
      batch.add(&token, 1, pos, tables[s], true);
    }
    // What the engine does for greedy requests: the pass, then argmax on the device; the
    // tokens are on the host when it returns.
    m.forward_sample(batch, cache, std::vector<SampleRow>(static_cast<size_t>(b)));
  };
  step(first - 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step(first + i);
  const double sec = seconds_since(t0) / steps;
  const double kv_read = static_cast<double>(b) * (first + steps / 2.0) * kv_token;
  r.ms = sec * 1e3;
  r.tok_s = b / sec;
  // A dense model reads every weight; a MoE step only the experts its tokens pick (uniform
  // router expectation: ModelWeights::bytes_read).
  r.roof = (static_cast<double>(m.weights().bytes_read(b, c.moe.top_k)) + kv_read) / (read_gbs * 1e9) / sec;
  return r;
}

// Prefill of one prompt of `len` tokens and its first token (greedy, on the device), median of
// 3 after a warm-up.
Row prefill(Model& m, int64_t len, int64_t block) {
  const int64_t blocks = (len + block - 1) / block;
  Row r;
  KvCache cache = m.make_kv_cache(blocks, block);
  std::vector<int32_t> table(static_cast<size_t>(blocks)), tokens(static_cast<size_t>(len));
  std::iota(table.begin(), table.end(), 0);
  for (int64_t i = 0; i < len; ++i) tokens[i] = static_cast<int32_t>((i * 7919) % m.config().vocab_size);
  std::vector<double> times;
  for (int rep = 0; rep < 4; ++rep) {
    Batch batch;
    batch.add(tokens.data(), len, 0, table, true);
    const auto t0 = std::chrono::steady_clock::now();
    m.forward_sample(batch, cache, {SampleRow{}});
    if (rep > 0) times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  r.ms = times[1] * 1e3;
  r.tok_s = len / times[1];
  return r;
}

int run(const BenchOptions& o, bool is_decode) {
  const model::ModelConfig config = model::ModelConfig::shape(o.shape);
  const auto modes = split(o.modes);
  FP6_CHECK(!modes.empty(), kInvalidArgument, "--modes: empty list");
  constexpr int64_t kMax = int64_t{1} << 30;
  const auto batches = parse_int_list(o.batches, "--batch", 1, kMax),
             contexts = parse_int_list(o.contexts, "--context", 1, kMax),
             prompts = parse_int_list(o.prompts, "--prompt-len", 1, kMax);
  FP6_CHECK(o.steps > 0, kInvalidArgument, "--steps must be positive");
  for (int64_t c : is_decode ? contexts : std::vector<int64_t>{})
    FP6_CHECK(c > o.steps && c <= config.max_position_embeddings, kInvalidArgument,
              "--context {}: must exceed --steps ({}) and be at most the model's {} positions", c, o.steps,
              config.max_position_embeddings);
  for (int64_t p : is_decode ? std::vector<int64_t>{} : prompts)
    FP6_CHECK(p <= config.max_position_embeddings, kInvalidArgument, "--prompt-len {}: the model has {} positions", p,
              config.max_position_embeddings);
  FP6_CHECK(o.device == "auto" || o.device == "cpu" || o.device == "cuda", kInvalidArgument,
            "--device '{}' is not one of auto, cpu, cuda", o.device);
  const bool gpu = o.device == "cuda" || (o.device == "auto" && cuda_built() && cuda_device_count() > 0);
  FP6_CHECK(!gpu || (cuda_built() && cuda_device_count() > 0), kUnsupported, "--device cuda: {}",
            cuda_device_summary());
  Options options;
  options.device = gpu ? "cuda" : "cpu";
  options.tensor_parallel_size = o.tensor_parallel;
  options.quantize_lm_head = o.quantize_lm_head;
  options.progress = false;
  apply_environment(options);
  ThreadPool::resize_global(options.threads);
  const double read_gbs = gpu ? cuda_read_bandwidth_gbs() : cpu_read_bandwidth_gbs();
  fmt::print("device: {}; read bandwidth {:.0f} GB/s (measured now)\nmodel: {} shape, random weights{}{}\n\n",
             gpu ? cuda_device_summary() : fmt::format("cpu, {} threads", ThreadPool::global()->size()), read_gbs,
             o.shape,
             o.tensor_parallel > 1 ? fmt::format(", tensor parallel over {} {} (weights, KV and roofline per rank)",
                                                 o.tensor_parallel, gpu ? "GPUs" : "CPU threads")
                                   : "",
             o.quantize_lm_head ? ", lm_head quantized in the FPx modes" : "");

  // results[mode][(context or prompt, batch)]
  std::map<std::string, std::map<std::pair<int64_t, int64_t>, Row>> results;
  std::map<std::string, std::string> memory;
  for (const std::string& mode : modes) {
    std::string why;
    auto m = build(config, mode, options, why);
    if (!m) {
      memory[mode] = why;
      continue;
    }
    memory[mode] = fmt::format("weights {:.2f} GiB, {:.2f} GiB free for the KV cache and activations",
                               m->weights().bytes() / double(1 << 30), free_gib(*m));
    if (is_decode) {
      for (int64_t ctx : contexts)
        for (int64_t b : batches)
          results[mode][{ctx, b}] = decode(*m, b, ctx, o.steps, read_gbs, options.kv_block_size);
    } else {
      for (int64_t len : prompts) results[mode][{len, 1}] = prefill(*m, len, options.kv_block_size);
    }
    memory[mode] += "; " + m->backend().describe();
  }

  fmt::print("=== table ===\n");
  for (const std::string& mode : modes) fmt::print("{}: {}\n", mode, memory[mode]);
  const std::string& base = modes.back();  // the last mode is the baseline of the ratio column
  std::string header = is_decode ? "| context | batch |" : "| prompt tokens |";
  std::string rule = is_decode ? "|---|---|" : "|---|";
  for (const std::string& mode : modes) {
    header += is_decode ? fmt::format(" {0} ms/step | {0} tok/s | {0} % roofline |", mode)
                        : fmt::format(" {0} ms | {0} tok/s |", mode);
    rule += is_decode ? "---|---|---|" : "---|---|";
  }
  if (modes.size() > 1) header += fmt::format(" {} / {} |", modes.front(), base), rule += "---|";
  fmt::print("\n{}\n{}\n", header, rule);
  std::vector<std::pair<int64_t, int64_t>> keys;
  if (is_decode)
    for (int64_t ctx : contexts)
      for (int64_t b : batches) keys.emplace_back(ctx, b);
  else
    for (int64_t len : prompts) keys.emplace_back(len, 1);
  for (const auto& key : keys) {
    std::string line = is_decode ? fmt::format("| {} | {} |", key.first, key.second) : fmt::format("| {} |", key.first);
    for (const std::string& mode : modes) {
      const auto it = results[mode].find(key);
      if (it == results[mode].end() || !it->second.note.empty()) {
        const std::string note = it == results[mode].end() ? "n/a" : it->second.note;
        line += is_decode ? fmt::format(" {} | | |", note) : fmt::format(" {} | |", note);
        continue;
      }
      const Row& r = it->second;
      line += is_decode ? fmt::format(" {:.2f} | {:.0f} | {:.0f}% |", r.ms, r.tok_s, 100 * r.roof)
                        : fmt::format(" {:.1f} | {:.0f} |", r.ms, r.tok_s);
    }
    if (modes.size() > 1) {
      const auto a = results[modes.front()].find(key), z = results[base].find(key);
      const bool both =
          a != results[modes.front()].end() && z != results[base].end() && a->second.ms > 0 && z->second.ms > 0;
      line += both ? fmt::format(" {:.2f}x |", z->second.ms / a->second.ms) : " |";
    }
    fmt::print("{}\n", line);
  }
  fmt::print("=== end ===\n");
  return 0;
}

}  // namespace

Action add_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks: the model on the GPU (decode, prefill), a server (serve)");
  bench->require_subcommand(1);
  auto o = std::make_shared<BenchOptions>();
  auto s = std::make_shared<ServeBenchOptions>();
  auto serve_cmd =
      bench->add_subcommand("serve", "Drive an OpenAI-compatible server with concurrent streaming clients");
  auto clients = std::make_shared<std::string>("32"), gens = std::make_shared<std::string>("250");
  serve_cmd->add_option("--url", s->url, "The server (http://HOST:PORT)")->capture_default_str();
  serve_cmd->add_option("--model", s->model, "Model name to request (default: the first of /v1/models)");
  serve_cmd->add_option("--api-key", s->api_key, "Bearer key (default: $FP6SERVE_API_KEY)");
  serve_cmd->add_option("--label", s->label, "Name of this server/mode in the CSV and the plot")->capture_default_str();
  serve_cmd->add_option("--clients", *clients, "Concurrent clients, comma-separated for a sweep")
      ->capture_default_str();
  serve_cmd->add_option("--gen-len", *gens, "Tokens to generate, comma-separated for a sweep")->capture_default_str();
  serve_cmd->add_flag("--random-gen-len", s->random_gen_len, "Draw each request's length in [1, gen-len]");
  serve_cmd->add_option("--requests", s->requests, "Requests per run (0: 4 x clients, at least 16)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24))
      ->capture_default_str();
  serve_cmd->add_option("--prompt-len", s->prompt_len, "Random token ids per prompt")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  serve_cmd->add_option("--min-token-id", s->min_token_id, "Smallest random prompt id")->capture_default_str();
  serve_cmd->add_option("--max-token-id", s->max_token_id, "Largest random prompt id")->capture_default_str();
  serve_cmd->add_option("--prompt-file", s->prompt_file, "Text prompts, one per line, instead of random ids");
  serve_cmd->add_option("--seed", s->seed, "Seed of the prompts and lengths")->capture_default_str();
  serve_cmd->add_option("--timeout", s->timeout_s, "Seconds one request may take")->capture_default_str();
  serve_cmd->add_option("--csv", s->csv, "Append one row per run to this CSV");
  serve_cmd->add_option("--plot", s->plot, "Draw the whole CSV (all labels) into this PNG (gnuplot)");
  serve_cmd->add_flag("--plot-only", s->plot_only, "Only draw --plot from an existing --csv (no server needed)");
  auto decode_cmd = bench->add_subcommand("decode", "Decode steps: ms/step, tokens/s, % of the bandwidth roofline");
  auto prefill_cmd = bench->add_subcommand("prefill", "Prompt processing: tokens/s");
  for (CLI::App* sub : {decode_cmd, prefill_cmd}) {
    sub->add_option(
        "--random-weights", o->shape,
        fmt::format("{}, or a config.json (default llama2-7b)", fmt::join(model::ModelConfig::shape_names(), ", ")));
    sub->add_option("--modes", o->modes,
                    "quantization modes, comma-separated; the last is the baseline (default wf6af16,fp16)");
    sub->add_option("--device", o->device, "auto (the GPU when there is one), cpu or cuda")->capture_default_str();
    sub->add_option("--tensor-parallel-size", o->tensor_parallel,
                    "GPUs to split the model over (on the CPU: threads, for testing only)")
        ->check(CLI::Range(1, 64))
        ->capture_default_str();
    sub->add_flag("--quantize-lm-head", o->quantize_lm_head, "Quantize lm_head too (FPx modes)");
  }
  decode_cmd->add_option("--batch", o->batches, "batch sizes (default 1,2,4,8,16,32,64)");
  decode_cmd->add_option("--context", o->contexts,
                         "tokens in each sequence's cache at the last step (default 128,1024,4096)");
  decode_cmd->add_option("--steps", o->steps, "timed steps (default 16)");
  prefill_cmd->add_option("--prompt-len", o->prompts, "prompt lengths (default 512,2048)");
  return [o, s, clients, gens, decode_cmd, serve_cmd] {
    if (serve_cmd->parsed()) {
      s->clients = parse_int_list(*clients, "--clients", 1, 1 << 16);
      s->gen_lens = parse_int_list(*gens, "--gen-len", 1, 1 << 24);
      FP6_CHECK(s->min_token_id >= 0 && s->min_token_id <= s->max_token_id, kInvalidArgument,
                "--token-ids {} and --max-token-id {}: need 0 <= min <= max", s->min_token_id, s->max_token_id);
      if (s->api_key.empty())
        if (const char* k = std::getenv("FP6SERVE_API_KEY")) s->api_key = k;
      return run_serve_bench(*s);
    }
    return run(*o, decode_cmd->parsed());
  };
}

}  // namespace fp6serve::cli
