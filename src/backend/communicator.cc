#include "backend/communicator.h"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "core/check.h"

namespace fp6serve {

namespace {

class SoloCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(Tensor&) override {}
  void abort() override {}
};

// What the ranks of one host group share: each rank's tensor during a collective, and a
// barrier that an abort breaks.
class HostGroup {
 public:
  explicit HostGroup(int size) : inputs_(static_cast<size_t>(size)) {}

  int size() const { return static_cast<int>(inputs_.size()); }

  void all_reduce_sum(int rank, Tensor& x) {
    FP6_CHECK(x.device() == Device::kCpu && x.dtype() == DType::kF32, kInternal,
              "host all-reduce of a {} tensor on {}: the host group sums f32 host tensors", dtype_name(x.dtype()),
              x.device() == Device::kCpu ? "the host" : "a GPU");
    const int64_t n = x.numel();
    inputs_[static_cast<size_t>(rank)] = {x.data_as<float>(), n};
    wait();  // every rank's input is published
    for (const Input& in : inputs_)
      FP6_CHECK(in.count == n, kInternal, "host all-reduce: rank {} has {} elements, another {}", rank, n, in.count);
    std::vector<float> sum(static_cast<size_t>(n), 0.0f);
    for (const Input& in : inputs_)  // in rank order on every rank: the same bits everywhere
      for (int64_t i = 0; i < n; ++i) sum[static_cast<size_t>(i)] += in.data[i];
    wait();  // every rank has read every input
    std::memcpy(x.data(), sum.data(), sum.size() * sizeof(float));
  }

  void abort() {
    std::lock_guard lock(mutex_);
    aborted_ = true;
    wake_.notify_all();
  }

 private:
  struct Input {
    const float* data = nullptr;
    int64_t count = 0;
  };

  // A reusable barrier of size() ranks.
  void wait() {
    std::unique_lock lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == size()) {
      arrived_ = 0;
      ++generation_;
      wake_.notify_all();
    } else {
      wake_.wait(lock, [&] { return generation_ != generation || aborted_; });
    }
    FP6_CHECK(!aborted_, kInternal, "another tensor-parallel rank failed during the pass");
  }

  std::vector<Input> inputs_;
  std::mutex mutex_;
  std::condition_variable wake_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
};

class HostCommunicator : public Communicator {
 public:
  HostCommunicator(std::shared_ptr<HostGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  void all_reduce_sum(Tensor& x) override { group_->all_reduce_sum(rank_, x); }
  void abort() override { group_->abort(); }

 private:
  std::shared_ptr<HostGroup> group_;
  int rank_;
};

}  // namespace

std::unique_ptr<Communicator> solo_communicator() {
  return std::make_unique<SoloCommunicator>();
}

std::vector<std::unique_ptr<Communicator>> host_communicators(int size) {
  FP6_CHECK(size >= 1, kInvalidArgument, "a communicator group of {} ranks", size);
  auto group = std::make_shared<HostGroup>(size);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < size; ++r) out.push_back(std::make_unique<HostCommunicator>(group, r));
  return out;
}

}  // namespace fp6serve
