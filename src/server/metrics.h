// Server metrics in the Prometheus text exposition format: counters, gauges and
// histograms with fixed buckets. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace fp6serve::server {

class Metrics {
 public:
  Metrics();

  // endpoint: one of the server's route names (a fixed set: never a client's string).
  void count_request(const std::string& endpoint, int status);
  void add_tokens(int64_t prompt, int64_t generated);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds);
  void observe_e2e(double seconds);

  struct Gauges {
    int64_t waiting = 0;
    int64_t running = 0;
    int64_t kv_blocks_used = 0;
    int64_t kv_blocks_total = 0;
    int64_t preemptions = 0;
    int64_t open_connections = 0;
    int64_t in_flight = 0;  // generation requests not answered yet
  };
  // The Prometheus text, with the engine's gauges of this moment.
  std::string render(const Gauges& gauges) const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // per bucket (non-cumulative), plus +Inf at the end
    double sum = 0;
    uint64_t count = 0;
    void observe(double v);
  };
  static void render_histogram(std::string& out, const std::string& name, const std::string& help, const Histogram& h);

  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  Histogram ttft_, itl_, e2e_;
};

}  // namespace fp6serve::server
