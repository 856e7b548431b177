// The plot of fp6serve bench serve's CSV (bench_serve.h), drawn by gnuplot (Debian's
// gnuplot-nox): the seed's Figure 1, generated tokens/s against mean request latency.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cli/bench_serve.h"
#include "core/check.h"
#include "core/file.h"

namespace fp6serve::cli {

namespace {

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  for (std::string cell; std::getline(ss, cell, ',');) out.push_back(cell);
  return out;
}

}  // namespace

void plot_serve_bench(const std::string& csv, const std::string& png) {
  FP6_CHECK(!csv.empty(), kInvalidArgument, "--plot needs --csv (the plot is drawn from the CSV)");
  FP6_CHECK(std::system("command -v gnuplot >/dev/null 2>&1") == 0, kUnsupported,
            "gnuplot is not installed (Debian: apt-get install gnuplot-nox); the CSV is {}", csv);
  std::istringstream in(read_file(csv));
  std::string header;
  std::getline(in, header);
  const std::vector<std::string> cols = split_csv(header);
  auto col = [&](const char* name) {
    const auto it = std::find(cols.begin(), cols.end(), name);
    FP6_CHECK(it != cols.end(), kBadInput, "{}: no column '{}'", csv, name);
    return static_cast<size_t>(it - cols.begin());
  };
  const size_t c_label = col("label"), c_clients = col("clients"), c_gen = col("gen_len"), c_tok = col("gen_tok_s"),
               c_lat = col("e2e_mean"), c_ok = col("ok");
  // gen_len -> label -> rows "latency throughput clients", by client count.
  std::map<int64_t, std::map<std::string, std::map<int64_t, std::string>>> series;
  for (std::string line; std::getline(in, line);) {
    const auto cells = split_csv(line);
    if (cells.size() < cols.size() || std::stoll(cells[c_ok]) == 0) continue;
    series[std::stoll(cells[c_gen])][cells[c_label]][std::stoll(cells[c_clients])] =
        fmt::format("{} {} {}", cells[c_lat], cells[c_tok], cells[c_clients]);
  }
  FP6_CHECK(!series.empty(), kInvalidArgument, "{}: no successful run to plot", csv);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("fp6serve-plot-{}", getpid());
  std::filesystem::create_directories(dir);
  std::string script = fmt::format(
      "set terminal pngcairo size {},420 font ',10'\nset output '{}'\nset multiplot layout 1,{}\n"
      "set grid\nset key top left\nset xlabel 'mean request latency (s)'\nset ylabel 'generated tokens/s'\n",
      420 * series.size(), png, series.size());
  int file = 0;
  for (const auto& [gen, labels] : series) {
    script += fmt::format("set title 'generation length {}'\nplot ", gen);
    bool first = true;
    for (const auto& [label, points] : labels) {
      const auto data = dir / fmt::format("{}.dat", file++);
      std::ofstream out(data);
      for (const auto& [clients, row] : points) out << row << "\n";
      script += fmt::format(
          "{}'{}' using 1:2 with linespoints title '{}', '' using 1:2:3 with labels offset 0,0.8 "
          "notitle",
          first ? "" : ", ", data.string(), label);
      first = false;
    }
    script += "\n";
  }
  script += "unset multiplot\n";
  const auto gp = dir / "plot.gp";
  std::ofstream(gp) << script;
  const int rc = std::system(fmt::format("gnuplot '{}'", gp.string()).c_str());
  std::filesystem::remove_all(dir);
  FP6_CHECK(rc == 0, kInternal, "gnuplot failed (exit {}) drawing {}", rc, png);
  fmt::print("plot: {}\n", png);
}

}  // namespace fp6serve::cli
