#include "backend/cpu/linear_reference.h"

namespace fp6serve::cpu {

std::vector<double> fpx_linear_reference(const float* x, int64_t n, const fpx::QuantizedMatrix& w, const float* bias) {
  const fpx::Codec codec(w.format);
  std::vector<double> y(static_cast<size_t>(n * w.rows));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c)
        acc += static_cast<double>(x[i * w.cols + c]) * codec.decode(w.codes[r * w.cols + c]);
      y[i * w.rows + r] = acc * w.scales[r] + (bias ? bias[r] : 0.0);
    }
  }
  return y;
}

std::vector<double> dense_linear_reference(const float* x, int64_t n, const float* w, int64_t rows, int64_t cols,
                                           const float* bias) {
  std::vector<double> y(static_cast<size_t>(n * rows));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0.0;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(x[i * cols + c]) * w[r * cols + c];
      y[i * rows + r] = acc + (bias ? bias[r] : 0.0);
    }
  }
  return y;
}

}  // namespace fp6serve::cpu
