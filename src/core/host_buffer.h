// An owning, 64-byte aligned, uninitialised host allocation (cache-line and AVX-512 aligned).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "core/check.h"

namespace fp6serve {

class HostBuffer {
 public:
  static constexpr size_t kAlignment = 64;

  HostBuffer() = default;
  explicit HostBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    void* p = ::operator new(bytes, std::align_val_t(kAlignment), std::nothrow);
    FP6_CHECK(p != nullptr, kOutOfMemory, "out of host memory allocating {} bytes", bytes);
    data_.reset(static_cast<uint8_t*>(p));
  }

  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return bytes_; }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data_.get());
  }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data_.get());
  }

 private:
  struct Free {
    void operator()(uint8_t* p) const { ::operator delete(p, std::align_val_t(kAlignment)); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t bytes_ = 0;
};

}  // namespace fp6serve
