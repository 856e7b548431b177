#include "core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace fp6serve {

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && ::isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  finish();
}

void Progress::advance(int64_t amount, const std::string& note) {
  done_ += amount;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(100) || done_ >= total_) {
    last_draw_ = now;
    draw(note);
  }
}

void Progress::draw(const std::string& note) {
  if (!enabled_ || total_ <= 0) return;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done_ / total_);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  fmt::print(stderr, "\r{} [{}{}] {}/{} {:.1f}s {:<40.40}", label_, std::string(filled, '#'),
             std::string(kWidth - filled, ' '), done_, total_, seconds, note);
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_ && total_ > 0) fmt::print(stderr, "\n");
}

}  // namespace fp6serve
