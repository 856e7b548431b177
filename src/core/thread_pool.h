// A fixed pool of worker threads for data-parallel loops on the CPU backend.
//
// parallel_for hands out contiguous chunks of [0, n) from an atomic counter (dynamic
// scheduling: a slow core does not hold the others back); the calling thread works too.
// A parallel_for issued from inside a worker runs inline, so nesting cannot deadlock, and
// calls from different outside threads take turns. The first exception thrown by the body
// is rethrown in the caller after every chunk has finished.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fp6serve {

class ThreadPool {
 public:
  using Body = std::function<void(int64_t begin, int64_t end)>;

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // The process-wide pool (every core until resized). Hold the pointer only for the call
  // (ThreadPool::global()->parallel_for(...)): resize_global may replace the pool.
  static std::shared_ptr<ThreadPool> global();
  // Makes the process-wide pool `threads` wide (0: every core); calls already running finish
  // on the old pool. Options::threads arrives here when a model is loaded.
  static void resize_global(int threads);

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls body(begin, end) over disjoint chunks covering [0, n), each at least `grain` long
  // (except the last).
  void parallel_for(int64_t n, const Body& body, int64_t grain = 1);

 private:
  struct Job;
  void worker_loop();
  static void run_chunks(Job& job);

  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one parallel_for at a time from outside threads
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  Job* job_ = nullptr;
  uint64_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
};

}  // namespace fp6serve
