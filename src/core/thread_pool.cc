#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>

namespace fp6serve {

namespace {
thread_local bool t_inside_pool = false;
}

struct ThreadPool::Job {
  const Body* body;
  int64_t n;
  int64_t chunk;
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
};

ThreadPool::ThreadPool(int threads) {
  const int workers = std::max(threads, 1) - 1;
  workers_.reserve(workers);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {

int cores() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::mutex g_global_mutex;
std::shared_ptr<ThreadPool> g_global;

}  // namespace

std::shared_ptr<ThreadPool> ThreadPool::global() {
  std::lock_guard lock(g_global_mutex);
  if (!g_global) g_global = std::make_shared<ThreadPool>(cores());
  return g_global;
}

void ThreadPool::resize_global(int threads) {
  const int want = threads > 0 ? threads : cores();
  std::lock_guard lock(g_global_mutex);
  if (!g_global || g_global->size() != want) g_global = std::make_shared<ThreadPool>(want);
}

void ThreadPool::run_chunks(Job& job) {
  const bool was_inside = t_inside_pool;
  t_inside_pool = true;
  for (;;) {
    const int64_t begin = job.next.fetch_add(job.chunk);
    if (begin >= job.n) break;
    try {
      (*job.body)(begin, std::min(job.n, begin + job.chunk));
    } catch (...) {
      std::lock_guard lock(job.error_mutex);
      if (!job.error) job.error = std::current_exception();
    }
  }
  t_inside_pool = was_inside;
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    Job* job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      if (job == nullptr) continue;  // woke after that job had already finished
      ++busy_;
    }
    run_chunks(*job);
    {
      std::lock_guard lock(mutex_);
      if (--busy_ == 0) done_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const Body& body, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (workers_.empty() || t_inside_pool || n <= grain) {
    body(0, n);
    return;
  }
  std::lock_guard submit(submit_mutex_);
  Job job;
  job.body = &body;
  job.n = n;
  // About four chunks per thread balances load without much counter traffic.
  job.chunk = std::max(grain, (n + 4 * size() - 1) / (4 * size()));
  {
    std::lock_guard lock(mutex_);
    job_ = &job;
    ++generation_;
  }
  wake_.notify_all();
  run_chunks(job);
  {
    std::unique_lock lock(mutex_);
    // Workers that never woke for this generation must not pick up a dangling job later.
    done_.wait(lock, [&] { return busy_ == 0; });
    job_ = nullptr;
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace fp6serve
