// Throwing helpers: FP6_THROW(kind, fmt, args...) and FP6_CHECK(cond, kind, fmt, args...).
// Messages are formatted with {fmt}; internal checks add file:line so a bug report points home.
// CUDA sources (.cu) do not include this header: nvcc cannot compile {fmt} 9 in C++20 mode;
// they use backend/cuda/cuda_check.h.
#pragma once

#include <fmt/format.h>

#include "fp6serve/error.h"

namespace fp6serve {

template <typename... Args>
[[noreturn]] void throw_error(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace fp6serve

#define FP6_THROW(kind, ...) ::fp6serve::throw_error(::fp6serve::ErrorKind::kind, __VA_ARGS__)

#define FP6_CHECK(cond, kind, ...)             \
  do {                                         \
    if (!(cond)) FP6_THROW(kind, __VA_ARGS__); \
  } while (0)

// A broken invariant inside fp6serve (never the user's fault).
#define FP6_ASSERT(cond)                                                                                \
  do {                                                                                                  \
    if (!(cond)) FP6_THROW(kInternal, "internal error: {} failed at {}:{}", #cond, __FILE__, __LINE__); \
  } while (0)
