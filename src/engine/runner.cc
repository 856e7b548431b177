#include "engine/runner.h"

#include <spdlog/spdlog.h>

namespace fp6serve {

EngineRunner::EngineRunner(Engine& engine) : engine_(engine), thread_([this] { loop(); }) {}

EngineRunner::~EngineRunner() {
  stop();
}

uint64_t EngineRunner::submit(std::vector<int32_t> prompt, const GenerateOptions& options, StreamCallback on_chunk) {
  const uint64_t id = engine_.submit(std::move(prompt), options, std::move(on_chunk));
  wake();
  return id;
}

void EngineRunner::cancel(uint64_t id) {
  engine_.cancel(id);
  wake();
}

void EngineRunner::wake() {
  {
    std::lock_guard lock(mutex_);
    ++news_;
  }
  wake_.notify_all();
}

void EngineRunner::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EngineRunner::loop() {
  for (;;) {
    uint64_t seen;
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;
      seen = news_;
    }
    bool worked = false;
    try {
      worked = engine_.step();
    } catch (const std::exception& e) {
      // step() fails requests, not itself; anything else is logged and the loop goes on.
      spdlog::error("engine step failed: {}", e.what());
    }
    if (!worked) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || news_ != seen; });
    }
  }
}

}  // namespace fp6serve
