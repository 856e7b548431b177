// fp6serve bench serve: a serving benchmark in the manner of DeepSpeed-MII's (the seed's
// Figure 1). It drives any OpenAI-compatible server over HTTP only (ours, or another one):
// C clients, each sending its next streaming completion as soon as its previous one is done,
// until R requests are answered; prompts of random token ids (or lines of a text file); fixed
// or random generation lengths, with ignore_eos so that they are the lengths asked for.
// Per run: generated tokens/s, requests/s, TTFT, inter-token latency and end-to-end latency
// percentiles, errors. A sweep (clients x generation lengths) appends one CSV row per run,
// labelled (e.g. fp6 / fp16, a run per server), and draws throughput against latency per
// generation length with gnuplot, one line per label.
#include "cli/bench_serve.h"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/check.h"

namespace fp6serve::cli {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct Url {
  std::string host, port, base;  // base: the path prefix before /v1 (usually empty)
};

Url parse_url(const std::string& url) {
  const std::string prefix = "http://";
  FP6_CHECK(url.rfind(prefix, 0) == 0, kInvalidArgument, "--url {}: only http://HOST:PORT URLs are supported", url);
  std::string rest = url.substr(prefix.size());
  Url u;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    u.base = rest.substr(slash);
    rest = rest.substr(0, slash);
  }
  while (!u.base.empty() && u.base.back() == '/') u.base.pop_back();
  if (u.base.size() >= 3 && u.base.substr(u.base.size() - 3) == "/v1") u.base.resize(u.base.size() - 3);
  const size_t colon = rest.rfind(':');
  u.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  u.port = colon == std::string::npos ? "80" : rest.substr(colon + 1);
  FP6_CHECK(!u.host.empty(), kInvalidArgument, "--url {}: no host", url);
  return u;
}

// One blocking HTTP connection (a client of the benchmark; reconnects when the server closes).
class Client {
 public:
  Client(const Url& url, const std::string& api_key, double timeout_s)
      : url_(url), api_key_(api_key), timeout_(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000))) {}

  // GET path; returns status and body.
  std::pair<int, std::string> get(const std::string& path) {
    connect();
    http::request<http::empty_body> req{http::verb::get, url_.base + path, 11};
    set_headers(req);
    stream_->expires_after(timeout_);
    http::write(*stream_, req);
    http::response<http::string_body> res;
    http::read(*stream_, buffer_, res);
    if (!res.keep_alive()) reset();
    return {res.result_int(), res.body()};
  }

  // POST body to path and calls on_data with each piece of the response body as it arrives.
  // Returns the status.
  int post_stream(const std::string& path, const std::string& body,
                  const std::function<void(std::string_view)>& on_data) {
    connect();
    http::request<http::string_body> req{http::verb::post, url_.base + path, 11};
    set_headers(req);
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    stream_->expires_after(timeout_);
    http::write(*stream_, req);
    http::response_parser<http::buffer_body> parser;
    // Not boost::none: Beast 1.74 compares a Content-Length against an empty limit as if it were 0.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read_header(*stream_, buffer_, parser);
    char data[8192];
    while (!parser.is_done()) {
      parser.get().body().data = data;
      parser.get().body().size = sizeof(data);
      beast::error_code ec;
      // read_some, not read: read fills the whole buffer before returning, which would hold
      // events back until 8 KB of them arrived and time them all at once.
      http::read_some(*stream_, buffer_, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) throw beast::system_error(ec);
      on_data(std::string_view(data, sizeof(data) - parser.get().body().size));
    }
    if (!parser.get().keep_alive()) reset();
    return parser.get().result_int();
  }

  void reset() { stream_.reset(); }

 private:
  template <typename Req>
  void set_headers(Req& req) {
    req.set(http::field::host, url_.host);
    req.set(http::field::user_agent, "fp6serve-bench");
    if (!api_key_.empty()) req.set(http::field::authorization, "Bearer " + api_key_);
  }
  void connect() {
    if (stream_) return;
    tcp::resolver resolver(io_);
    stream_ = std::make_unique<beast::tcp_stream>(io_);
    stream_->expires_after(timeout_);
    stream_->connect(resolver.resolve(url_.host, url_.port));
    stream_->socket().set_option(tcp::no_delay(true));
  }

  Url url_;
  std::string api_key_;
  std::chrono::milliseconds timeout_;
  net::io_context io_;
  std::unique_ptr<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
};

// What one request measured.
struct Record {
  bool ok = false;
  std::string error;
  double start = 0, first = -1, end = 0;  // seconds from the run's start
  int64_t tokens = 0;
  std::vector<double> gaps;  // between consecutive token chunks
};

struct Run {
  int64_t clients, requests, gen_len;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double f = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

// One streaming completion: the SSE events' text chunks and the final usage.
Record one_request(Client& client, const json& body, Clock::time_point t0) {
  Record r;
  r.start = seconds(Clock::now() - t0);
  std::string pending;
  int64_t chunks = 0, usage_tokens = -1;
  double last = 0;
  bool done = false;
  try {
    const int status = client.post_stream("/v1/completions", body.dump(), [&](std::string_view data) {
      pending.append(data);
      size_t end;
      while ((end = pending.find("\n\n")) != std::string::npos) {
        const std::string event = pending.substr(0, end);
        pending.erase(0, end + 2);
        if (event.rfind("data: ", 0) != 0) continue;  // SSE comments
        const std::string payload = event.substr(6);
        if (payload == "[DONE]") {
          done = true;
          continue;
        }
        const json j = json::parse(payload, nullptr, false);
        if (j.is_discarded()) continue;
        if (j.contains("error")) r.error = j["error"].value("message", "error event");
        if (j.contains("usage") && j["usage"].is_object()) usage_tokens = j["usage"].value("completion_tokens", -1);
        if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
          const json& c = j["choices"][0];
          if (c.contains("text") && c["text"].is_string() && !c["text"].get<std::string>().empty()) {
            const double now = seconds(Clock::now() - t0);
            if (r.first < 0)
              r.first = now;
            else
              r.gaps.push_back(now - last);
            last = now;
            ++chunks;
          }
        }
      }
    });
    if (status != 200 && r.error.empty()) {
      const json j = json::parse(pending, nullptr, false);
      r.error =
          fmt::format("HTTP {}{}", status,
                      j.is_object() && j.contains("error") ? ": " + j["error"].value("message", std::string()) : "");
    }
  } catch (const std::exception& e) {
    client.reset();
    if (r.error.empty()) r.error = std::string("connection: ") + e.what();
  }
  r.end = seconds(Clock::now() - t0);
  r.tokens = usage_tokens >= 0 ? usage_tokens : chunks;
  r.ok = r.error.empty() && done;
  if (r.error.empty() && !done) r.error = "the stream ended without [DONE]";
  return r;
}

}  // namespace

std::vector<std::string> serve_bench_csv_columns() {
  return {"label",   "clients",   "requests", "prompt_len", "gen_len",  "ok",       "errors",
          "seconds", "gen_tok_s", "req_s",    "ttft_p50",   "ttft_p90", "ttft_p99", "itl_p50",
          "itl_p90", "itl_p99",   "e2e_mean", "e2e_p50",    "e2e_p90",  "e2e_p99"};
}

int run_serve_bench(const ServeBenchOptions& o) {
  if (o.plot_only) {
    FP6_CHECK(!o.plot.empty() && std::filesystem::exists(o.csv), kInvalidArgument,
              "--plot-only needs --plot and an existing --csv");
    plot_serve_bench(o.csv, o.plot);
    return 0;
  }
  const Url url = parse_url(o.url);
  std::string model = o.model;
  if (model.empty()) {
    Client c(url, o.api_key, o.timeout_s);
    const auto [status, body] = c.get("/v1/models");
    const json j = json::parse(body, nullptr, false);
    FP6_CHECK(status == 200 && j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty(),
              kInvalidArgument, "{}/v1/models answered {}: give --model", o.url, status);
    model = j["data"][0].value("id", "");
  }
  std::vector<std::string> lines;
  if (!o.prompt_file.empty()) {
    std::ifstream in(o.prompt_file);
    FP6_CHECK(in.good(), kNotFound, "--prompt-file {}: cannot read it", o.prompt_file);
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) lines.push_back(l);
    FP6_CHECK(!lines.empty(), kInvalidArgument, "--prompt-file {}: no non-empty line", o.prompt_file);
  }
  std::vector<Run> runs;
  for (int64_t c : o.clients)
    for (int64_t g : o.gen_lens) runs.push_back({c, o.requests > 0 ? o.requests : std::max<int64_t>(16, 4 * c), g});

  const bool new_csv = !o.csv.empty() && !std::filesystem::exists(o.csv);
  std::ofstream csv;
  if (!o.csv.empty()) {
    csv.open(o.csv, std::ios::app);
    FP6_CHECK(csv.good(), kInvalidArgument, "--csv {}: cannot write it", o.csv);
    if (new_csv) csv << fmt::format("{}\n", fmt::join(serve_bench_csv_columns(), ","));
  }
  fmt::print("server {} model '{}'{}; prompts {}; label {}\n", o.url, model, o.api_key.empty() ? "" : " (with a key)",
             lines.empty() ? fmt::format("{} random token ids", o.prompt_len) : o.prompt_file, o.label);
  fmt::print(
      "| clients | requests | gen len | ok | errors | gen tok/s | req/s | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms "
      "| e2e mean/p50/p99 s |\n|---|---|---|---|---|---|---|---|---|---|\n");
  int64_t total_errors = 0;
  for (const Run& run : runs) {
    std::mt19937_64 rng(o.seed + static_cast<uint64_t>(run.clients * 1000003 + run.gen_len));
    std::vector<json> bodies;
    for (int64_t i = 0; i < run.requests; ++i) {
      const int64_t gen = o.random_gen_len ? std::uniform_int_distribution<int64_t>(1, run.gen_len)(rng) : run.gen_len;
      json b = {{"model", model}, {"max_tokens", gen},  {"temperature", 0},
                {"stream", true}, {"ignore_eos", true}, {"stream_options", {{"include_usage", true}}}};
      if (lines.empty()) {
        std::vector<int64_t> ids(static_cast<size_t>(o.prompt_len));
        for (auto& t : ids) t = std::uniform_int_distribution<int64_t>(o.min_token_id, o.max_token_id)(rng);
        b["prompt"] = ids;
      } else {
        b["prompt"] = lines[static_cast<size_t>(i) % lines.size()];
      }
      bodies.push_back(std::move(b));
    }
    std::vector<Record> records(bodies.size());
    std::atomic<int64_t> next{0}, finished{0}, tokens{0};
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int64_t c = 0; c < run.clients; ++c)
      threads.emplace_back([&] {
        Client client(url, o.api_key, o.timeout_s);
        for (int64_t i; (i = next++) < run.requests;) {
          records[static_cast<size_t>(i)] = one_request(client, bodies[static_cast<size_t>(i)], t0);
          tokens += records[static_cast<size_t>(i)].tokens;
          ++finished;
        }
      });
    std::atomic<bool> stop_progress{false};
    std::thread progress([&] {
      while (!stop_progress) {
        const double s = seconds(Clock::now() - t0);
        fmt::print(stderr, "\r[{}] clients {} gen {}: {}/{} done, {:.0f} tok/s, {:.0f} s   ", o.label, run.clients,
                   run.gen_len, finished.load(), run.requests, s > 0 ? tokens / s : 0.0, s);
        for (int i = 0; i < 10 && !stop_progress; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      fmt::print(stderr, "\r{:80}\r", "");
    });
    for (auto& t : threads) t.join();
    const double duration = seconds(Clock::now() - t0);
    stop_progress = true;
    progress.join();
    std::vector<double> ttft, itl, e2e;
    int64_t ok = 0, errors = 0, gen_tokens = 0;
    std::string first_error;
    for (const Record& r : records) {
      if (!r.ok) {
        ++errors;
        if (first_error.empty()) first_error = r.error;
        continue;
      }
      ++ok;
      gen_tokens += r.tokens;
      if (r.first >= 0) ttft.push_back(r.first - r.start);
      itl.insert(itl.end(), r.gaps.begin(), r.gaps.end());
      e2e.push_back(r.end - r.start);
    }
    total_errors += errors;
    double e2e_mean = 0;
    for (double v : e2e) e2e_mean += v / static_cast<double>(e2e.size());
    const double tok_s = gen_tokens / duration, req_s = ok / duration;
    fmt::print(
        "| {} | {} | {}{} | {} | {} | {:.0f} | {:.2f} | {:.0f} / {:.0f} / {:.0f} | {:.1f} / {:.1f} / {:.1f} | "
        "{:.2f} / {:.2f} / {:.2f} |\n",
        run.clients, run.requests, run.gen_len, o.random_gen_len ? " (random)" : "", ok, errors, tok_s, req_s,
        1e3 * percentile(ttft, 0.5), 1e3 * percentile(ttft, 0.9), 1e3 * percentile(ttft, 0.99),
        1e3 * percentile(itl, 0.5), 1e3 * percentile(itl, 0.9), 1e3 * percentile(itl, 0.99), e2e_mean,
        percentile(e2e, 0.5), percentile(e2e, 0.99));
    if (!first_error.empty()) fmt::print("  first error: {}\n", first_error);
    if (csv.is_open())
      csv << fmt::format(
                 "{},{},{},{},{},{},{},{:.3f},{:.1f},{:.3f},{:.4f},{:.4f},{:.4f},{:.5f},{:.5f},{:.5f},{:.3f},{:.3f},"
                 "{:.3f},{:.3f}\n",
                 o.label, run.clients, run.requests, lines.empty() ? o.prompt_len : -1, run.gen_len, ok, errors,
                 duration, tok_s, req_s, percentile(ttft, 0.5), percentile(ttft, 0.9), percentile(ttft, 0.99),
                 percentile(itl, 0.5), percentile(itl, 0.9), percentile(itl, 0.99), e2e_mean, percentile(e2e, 0.5),
                 percentile(e2e, 0.9), percentile(e2e, 0.99))
          << std::flush;
  }
  if (!o.plot.empty()) plot_serve_bench(o.csv, o.plot);
  return total_errors > 0 ? 1 : 0;
}

}  // namespace fp6serve::cli
