// An owning device allocation (cudaMalloc/cudaFree), movable, never copied.
#pragma once

#include <cstddef>
#include <utility>

#include "backend/cuda/cuda_check.h"

namespace fp6serve::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) FP6_CUDA_CHECK(cudaMalloc(&data_, bytes));
  }
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (data_) cudaFree(data_);
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t size() const { return bytes_; }

  void upload(const void* host, size_t bytes, size_t offset = 0) {
    FP6_CUDA_REQUIRE(offset + bytes <= bytes_, kInternal, "upload overflows the device buffer");
    FP6_CUDA_CHECK(cudaMemcpy(static_cast<char*>(data_) + offset, host, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* host, size_t bytes, size_t offset = 0) const {
    FP6_CUDA_REQUIRE(offset + bytes <= bytes_, kInternal, "download overflows the device buffer");
    FP6_CUDA_CHECK(cudaMemcpy(host, static_cast<const char*>(data_) + offset, bytes, cudaMemcpyDeviceToHost));
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace fp6serve::cuda
