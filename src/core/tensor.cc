#include "core/tensor.h"

#include <cstring>

#include "core/check.h"
#include "core/host_buffer.h"

#ifdef FP6SERVE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fp6serve {

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

namespace {

std::shared_ptr<void> allocate(size_t bytes, Device device) {
  if (device == Device::kCpu) {
    auto buffer = std::make_shared<HostBuffer>(bytes);
    return std::shared_ptr<void>(buffer, buffer->data());
  }
#ifdef FP6SERVE_WITH_CUDA
  void* p = nullptr;
  if (bytes) {
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      FP6_THROW(kOutOfMemory, "cannot allocate {} bytes on the GPU: {}", bytes, cudaGetErrorString(err));
    }
  }
  return std::shared_ptr<void>(p, [](void* q) {
    if (q) cudaFree(q);
  });
#else
  (void)bytes;
  FP6_THROW(kUnsupported, "a CUDA tensor was requested but the CUDA backend was not built");
#endif
}

void check_shape(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) FP6_CHECK(d >= 0, kInvalidArgument, "negative tensor dimension {}", d);
}

}  // namespace

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype, Device device) {
  check_shape(shape);
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = allocate(t.bytes(), device);
  t.data_ = t.storage_.get();
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  if (device == Device::kCpu) {
    std::memset(t.data_, 0, t.bytes());
  } else {
#ifdef FP6SERVE_WITH_CUDA
    FP6_CHECK(cudaMemset(t.data_, 0, t.bytes()) == cudaSuccess, kCuda, "cudaMemset failed");
#endif
  }
  return t;
}

Tensor Tensor::wrap(void* data, std::vector<int64_t> shape, DType dtype, Device device, std::shared_ptr<void> keep_alive) {
  check_shape(shape);
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::move(keep_alive);
  t.data_ = data;
  return t;
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  FP6_CHECK(t.numel() == numel(), kInternal, "reshape {} -> {} changes the element count", shape_string(),
            t.shape_string());
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  FP6_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], kInternal, "slice_rows({}, {}) of {}",
            begin, end, shape_string());
  Tensor t = *this;
  const size_t row_bytes = shape_[0] ? bytes() / static_cast<size_t>(shape_[0]) : 0;
  t.data_ = static_cast<uint8_t*>(data_) + static_cast<size_t>(begin) * row_bytes;
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::to_host() const {
  if (device_ == Device::kCpu) return *this;
  Tensor t = empty(shape_, dtype_, Device::kCpu);
  copy_to(t);
  return t;
}

void Tensor::copy_to(Tensor& dst) const {
  FP6_CHECK(dst.dtype_ == dtype_ && dst.numel() == numel(), kInternal, "copy {} {} into {} {}", dtype_name(dtype_),
            shape_string(), dtype_name(dst.dtype_), dst.shape_string());
  if (device_ == Device::kCpu && dst.device_ == Device::kCpu) {
    std::memcpy(dst.data_, data_, bytes());
    return;
  }
#ifdef FP6SERVE_WITH_CUDA
  FP6_CHECK(cudaMemcpy(dst.data_, data_, bytes(), cudaMemcpyDefault) == cudaSuccess, kCuda, "cudaMemcpy failed");
#else
  FP6_THROW(kUnsupported, "CUDA tensors need the CUDA backend");
#endif
}

}  // namespace fp6serve
