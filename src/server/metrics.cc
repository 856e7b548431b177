#include "server/metrics.h"

#include <fmt/format.h>

namespace fp6serve::server {

namespace {

// Prometheus label values escape backslash, double quote and newline.
std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

}  // namespace

void Metrics::Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

Metrics::Metrics() {
  auto make = [](std::vector<double> b) {
    Histogram h;
    h.counts.assign(b.size() + 1, 0);
    h.bounds = std::move(b);
    return h;
  };
  ttft_ = make({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80});
  itl_ = make({0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
               0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1,    2.5});
  e2e_ = make({0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480});
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::add_tokens(int64_t prompt, int64_t generated) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  generated_tokens_ += static_cast<uint64_t>(generated);
}

void Metrics::observe_ttft(double s) {
  std::lock_guard lock(mutex_);
  ttft_.observe(s);
}
void Metrics::observe_inter_token(double s) {
  std::lock_guard lock(mutex_);
  itl_.observe(s);
}
void Metrics::observe_e2e(double s) {
  std::lock_guard lock(mutex_);
  e2e_.observe(s);
}

void Metrics::render_histogram(std::string& out, const std::string& name, const std::string& help, const Histogram& h) {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], cumulative);
  }
  cumulative += h.counts.back();
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cumulative, name, h.sum, name,
                     h.count);
}

std::string Metrics::render(const Gauges& g) const {
  std::lock_guard lock(mutex_);
  std::string out;
  out +=
      "# HELP fp6serve_requests_total HTTP requests by endpoint and status code.\n# TYPE fp6serve_requests_total "
      "counter\n";
  for (const auto& [key, n] : requests_)
    out += fmt::format("fp6serve_requests_total{{endpoint=\"{}\",status=\"{}\"}} {}\n", escape_label(key.first),
                       key.second, n);
  out += fmt::format(
      "# HELP fp6serve_prompt_tokens_total Prompt tokens processed.\n# TYPE fp6serve_prompt_tokens_total counter\n"
      "fp6serve_prompt_tokens_total {}\n"
      "# HELP fp6serve_generation_tokens_total Tokens generated.\n# TYPE fp6serve_generation_tokens_total counter\n"
      "fp6serve_generation_tokens_total {}\n",
      prompt_tokens_, generated_tokens_);
  render_histogram(out, "fp6serve_time_to_first_token_seconds", "Time from request arrival to its first token.", ttft_);
  render_histogram(out, "fp6serve_inter_token_latency_seconds", "Time between consecutive tokens of a request.", itl_);
  render_histogram(out, "fp6serve_e2e_request_latency_seconds", "Time from request arrival to its last token.", e2e_);
  out += fmt::format(
      "# HELP fp6serve_queue_length Requests waiting for their prompt to be processed.\n# TYPE fp6serve_queue_length "
      "gauge\n"
      "fp6serve_queue_length {}\n"
      "# HELP fp6serve_running_requests Requests decoding.\n# TYPE fp6serve_running_requests gauge\n"
      "fp6serve_running_requests {}\n"
      "# HELP fp6serve_kv_blocks_in_use KV cache blocks held by requests.\n# TYPE fp6serve_kv_blocks_in_use gauge\n"
      "fp6serve_kv_blocks_in_use {}\n"
      "# HELP fp6serve_kv_blocks_total KV cache blocks.\n# TYPE fp6serve_kv_blocks_total gauge\n"
      "fp6serve_kv_blocks_total {}\n"
      "# HELP fp6serve_preemptions_total Sequences preempted for KV blocks.\n# TYPE fp6serve_preemptions_total "
      "counter\n"
      "fp6serve_preemptions_total {}\n"
      "# HELP fp6serve_open_connections HTTP connections open.\n# TYPE fp6serve_open_connections gauge\n"
      "fp6serve_open_connections {}\n"
      "# HELP fp6serve_requests_in_flight Generation requests not answered yet.\n"
      "# TYPE fp6serve_requests_in_flight gauge\n"
      "fp6serve_requests_in_flight {}\n",
      g.waiting, g.running, g.kv_blocks_used, g.kv_blocks_total, g.preemptions, g.open_connections, g.in_flight);
  return out;
}

}  // namespace fp6serve::server
