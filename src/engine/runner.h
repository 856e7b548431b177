// Drives an Engine: a thread of its own steps it whenever it has work and sleeps otherwise,
// woken by submit() and cancel() (no polling). The HTTP server and the Pipeline both run
// their engine through one; callbacks run on its thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace fp6serve {

class EngineRunner {
 public:
  explicit EngineRunner(Engine& engine);
  ~EngineRunner();  // stop()
  EngineRunner(const EngineRunner&) = delete;
  EngineRunner& operator=(const EngineRunner&) = delete;

  // Engine::submit (throws as it does), then wakes the thread.
  uint64_t submit(std::vector<int32_t> prompt, const GenerateOptions& options, StreamCallback on_chunk);
  void cancel(uint64_t id);
  const Engine& engine() const { return engine_; }

  // Returns once the thread has left its loop (after the step in progress). Requests not
  // finished then stay in the engine, unanswered: cancel them first to answer them.
  void stop();

 private:
  void loop();
  void wake();

  Engine& engine_;
  std::mutex mutex_;
  std::condition_variable wake_;
  uint64_t news_ = 0;  // submits and cancels so far: the loop sleeps only when none came during a step
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fp6serve
