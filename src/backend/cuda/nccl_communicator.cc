#include "backend/cuda/nccl_communicator.h"

#include "backend/cuda/cuda_backend.h"
#include "core/check.h"

#ifdef FP6SERVE_WITH_NCCL
#include <nccl.h>

#include <mutex>
#endif

namespace fp6serve::cuda {

#ifdef FP6SERVE_WITH_NCCL

namespace {

#define FP6_NCCL_CHECK(expr)                                                                       \
  do {                                                                                             \
    const ncclResult_t r_ = (expr);                                                                \
    FP6_CHECK(r_ == ncclSuccess, kCuda, "NCCL: {} failed: {} ({})", #expr, ncclGetErrorString(r_), \
              ncclGetLastError(nullptr));                                                          \
  } while (0)

// Every rank's communicator, for an abort of them all.
struct NcclGroup {
  std::vector<ncclComm_t> comms;
  std::mutex mutex;
  bool aborted = false;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclGroup> group, int rank, cudaStream_t stream)
      : group_(std::move(group)), rank_(rank), stream_(stream) {}
  ~NcclCommunicator() override {
    std::lock_guard lock(group_->mutex);
    if (!group_->aborted) ncclCommDestroy(comm());
  }

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(group_->comms.size()); }

  void all_reduce_sum(Tensor& x) override {
    FP6_CHECK(x.device() == Device::kCuda, kInternal, "NCCL all-reduce of a host tensor");
    ncclDataType_t type = ncclFloat32;
    switch (x.dtype()) {
      case DType::kF16:
        type = ncclFloat16;
        break;
      case DType::kBF16:
        type = ncclBfloat16;
        break;
      case DType::kF32:
        break;
      default:
        FP6_THROW(kInternal, "NCCL all-reduce of a {} tensor", dtype_name(x.dtype()));
    }
    FP6_CHECK(!group_->aborted, kInternal, "another tensor-parallel rank failed; the NCCL group was aborted");
    FP6_NCCL_CHECK(ncclAllReduce(x.data(), x.data(), static_cast<size_t>(x.numel()), type, ncclSum, comm(), stream_));
  }

  void abort() override {
    std::lock_guard lock(group_->mutex);
    if (group_->aborted) return;
    group_->aborted = true;
    for (ncclComm_t c : group_->comms) ncclCommAbort(c);
  }

 private:
  ncclComm_t comm() const { return group_->comms[static_cast<size_t>(rank_)]; }

  std::shared_ptr<NcclGroup> group_;
  int rank_;
  cudaStream_t stream_;
};

}  // namespace

bool nccl_built() {
  return true;
}

std::vector<std::unique_ptr<Communicator>> nccl_communicators(const std::vector<Backend*>& backends) {
  const int n = static_cast<int>(backends.size());
  std::vector<int> devices;
  for (const Backend* b : backends) devices.push_back(backend_device(*b));
  auto group = std::make_shared<NcclGroup>();
  group->comms.resize(static_cast<size_t>(n));
  int current = 0;
  cudaGetDevice(&current);
  FP6_NCCL_CHECK(ncclCommInitAll(group->comms.data(), n, devices.data()));
  cudaSetDevice(current);  // ncclCommInitAll may leave another device current
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < n; ++r)
    out.push_back(std::make_unique<NcclCommunicator>(group, r, backend_stream(*backends[static_cast<size_t>(r)])));
  return out;
}

#else

bool nccl_built() {
  return false;
}

std::vector<std::unique_ptr<Communicator>> nccl_communicators(const std::vector<Backend*>&) {
  FP6_THROW(kUnsupported, "tensor parallelism on the GPU needs NCCL, which this fp6serve was built without");
}

#endif

}  // namespace fp6serve::cuda
