#include "core/tensor.h"

#include <cstring>

#include "core/check.h"
#include "core/host_buffer.h"

namespace fp6serve {

const char* device_name(Device device) {
  return device == Device::kCpu ? "cpu" : "cuda";
}

namespace {

std::shared_ptr<void> allocate(size_t bytes) {
  auto buffer = std::make_shared<HostBuffer>(bytes);
  return std::shared_ptr<void>(buffer, buffer->data());
}

void check_shape(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) FP6_CHECK(d >= 0, kInvalidArgument, "negative tensor dimension {}", d);
}

}  // namespace

std::optional<int64_t> checked_shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  return n;
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  const std::optional<int64_t> n = checked_shape_numel(shape);
  FP6_CHECK(n.has_value(), kInvalidArgument, "tensor shape {} has a negative dimension or more than 2^63 elements",
            shape_string(shape));
  return *n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype) {
  check_shape(shape);
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  // bytes() would wrap for a shape whose byte count passes 2^64 (its element count may not).
  size_t bytes = 0;
  FP6_CHECK(!__builtin_mul_overflow(static_cast<size_t>(t.numel()), dtype_size(dtype), &bytes), kInvalidArgument,
            "a {} tensor of shape {} needs more than 2^64 bytes", dtype_name(dtype), t.shape_string());
  t.storage_ = allocate(bytes);
  t.data_ = t.storage_.get();
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  std::memset(t.data_, 0, t.bytes());
  return t;
}

Tensor Tensor::wrap(void* data, std::vector<int64_t> shape, DType dtype, Device device,
                    std::shared_ptr<void> keep_alive) {
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
  FP6_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], kInternal, "slice_rows({}, {}) of {}", begin,
            end, shape_string());
  Tensor t = *this;
  const size_t row_bytes = shape_[0] ? bytes() / static_cast<size_t>(shape_[0]) : 0;
  t.data_ = static_cast<uint8_t*>(data_) + static_cast<size_t>(begin) * row_bytes;
  t.shape_[0] = end - begin;
  return t;
}

}  // namespace fp6serve
