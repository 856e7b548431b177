// A dense, row-major tensor on the host or on a device: a shared allocation plus dtype, shape
// and device. Views share the allocation. Deliberately small: no strides, no broadcasting, no
// autograd; ops take raw pointers from it. Host tensors are allocated here; device memory is
// the backend's, which wraps it (Tensor::wrap) and copies between host and device.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace fp6serve {

enum class Device : uint8_t { kCpu, kCuda };
const char* device_name(Device device);

// Elements of a shape, and the shape as "[4096, 11008]" (for Tensor, safetensors entries and
// error messages alike). Shapes come from files, so the product is checked: shape_numel
// throws Error(kInvalidArgument) when a dimension is negative or the product overflows
// int64 (a wrapped product could pass a size check); checked_shape_numel says nullopt, for
// callers that name the file in their own error.
int64_t shape_numel(const std::vector<int64_t>& shape);
std::optional<int64_t> checked_shape_numel(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised / zero-filled host storage (64-byte aligned).
  static Tensor empty(std::vector<int64_t> shape, DType dtype);
  static Tensor zeros(std::vector<int64_t> shape, DType dtype);
  // A view of memory owned elsewhere; `keep_alive` (may be null) is held by the tensor.
  static Tensor wrap(void* data, std::vector<int64_t> shape, DType dtype, Device device,
                     std::shared_ptr<void> keep_alive = nullptr);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(static_cast<size_t>(i < 0 ? i + static_cast<int>(shape_.size()) : i)); }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  std::string shape_string() const { return fp6serve::shape_string(shape_); }

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }

  // Same storage, new shape with the same element count.
  Tensor reshape(std::vector<int64_t> shape) const;
  // Rows [begin, end) of the first dimension.
  Tensor slice_rows(int64_t begin, int64_t end) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
};

}  // namespace fp6serve
