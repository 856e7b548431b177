// fp6serve bench serve (bench_serve.cc): the serving benchmark, and its plot
// (bench_serve_plot.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fp6serve::cli {

struct ServeBenchOptions {
  std::string url = "http://127.0.0.1:8000";
  std::string model;    // empty: the first of /v1/models
  std::string api_key;  // empty: $FP6SERVE_API_KEY, else none
  std::string label = "server";
  std::vector<int64_t> clients = {32};
  std::vector<int64_t> gen_lens = {250};
  int64_t requests = 128;  // per run; 0: 4 x clients, at least 16
  int64_t prompt_len = 100;
  int64_t min_token_id = 100, max_token_id = 20000;  // random prompt ids
  std::string prompt_file;                           // one prompt per line instead
  bool random_gen_len = false;                       // uniform in [1, gen_len]
  uint64_t seed = 1;
  double timeout_s = 600;  // one request
  std::string csv, plot;   // append the runs' rows; draw the whole CSV
  bool plot_only = false;  // draw --plot from an existing --csv, run nothing
};

// Runs every (clients, gen_len) pair; prints a table, appends to the CSV, draws the plot.
// Returns 0, or 1 when some request failed.
int run_serve_bench(const ServeBenchOptions& options);

std::vector<std::string> serve_bench_csv_columns();

// Throughput against mean end-to-end latency, a panel per generation length, a line per
// label, each point a client count: drawn with gnuplot into a PNG.
void plot_serve_bench(const std::string& csv, const std::string& png);

}  // namespace fp6serve::cli
