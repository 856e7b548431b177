// Error-feedback rounding (fpx/gptq.h): the same codes and scales as round-to-nearest when the
// inputs are uncorrelated, less output error when they are correlated, and the factor it uses.
#include "fpx/gptq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/check.h"

namespace fp6serve::fpx {
namespace {

// x x^T summed over `samples` inputs x = A z (z ~ N(0, 1)): correlated columns when mix > 0.
Hessian correlated_inputs(int64_t cols, int64_t samples, double mix, uint32_t seed, std::vector<float>* xs = nullptr) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Hessian h{cols, samples, std::vector<double>(static_cast<size_t>(cols * cols), 0.0)};
  std::vector<double> x(static_cast<size_t>(cols));
  for (int64_t s = 0; s < samples; ++s) {
    const double shared = normal(rng);
    for (int64_t c = 0; c < cols; ++c) x[c] = normal(rng) * (1 + c % 3) + mix * shared;
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) h.xtx[a * cols + b] += x[a] * x[b];
    if (xs) xs->insert(xs->end(), x.begin(), x.end());
  }
  return h;
}

std::vector<float> random_weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = normal(rng);
  return w;
}

TEST(Gptq, UncorrelatedInputsGiveRoundToNearest) {
  const int64_t rows = 37, cols = 64;
  const std::vector<float> w = random_weights(rows, cols, 1);
  Hessian h{cols, 10, std::vector<double>(static_cast<size_t>(cols * cols), 0.0)};
  for (int64_t c = 0; c < cols; ++c) h.xtx[c * cols + c] = 1.0 + static_cast<double>(c % 5);
  const MatrixView view{w.data(), DType::kF32, rows, cols, "w"};
  for (Format f : {kE3M2, kE2M3, kE2M1}) {
    const QuantizedMatrix rtn = quantize(view, f, ScaleRule::kAbsmax);
    const QuantizedMatrix q = gptq_quantize({&view, 1}, h, f, ScaleRule::kAbsmax);
    EXPECT_EQ(q.codes, rtn.codes) << f.name();
    EXPECT_EQ(q.scales, rtn.scales) << f.name();
    // With equal weights on every column the min-error search is quantize()'s own.
    Hessian flat = h;
    for (int64_t c = 0; c < cols; ++c) flat.xtx[c * cols + c] = 2.0;
    const QuantizedMatrix me = gptq_quantize({&view, 1}, flat, f, ScaleRule::kMinError);
    EXPECT_EQ(me.scales, quantize(view, f, ScaleRule::kMinError).scales) << f.name();
    EXPECT_EQ(me.codes, quantize(view, f, ScaleRule::kMinError).codes) << f.name();
  }
}

TEST(Gptq, CorrelatedInputsGetLessOutputErrorThanRoundToNearest) {
  const int64_t rows = 48, cols = 96, samples = 400;
  std::vector<float> xs;
  const Hessian h = correlated_inputs(cols, samples, 3.0, 2, &xs);
  const std::vector<float> w = random_weights(rows, cols, 3);
  const MatrixView view{w.data(), DType::kF32, rows, cols, "w"};
  for (Format f : {kE3M2, kE2M1}) {
    const Codec codec(f);
    auto output_error = [&](const QuantizedMatrix& q) {
      double e = 0;
      for (int64_t s = 0; s < samples; ++s)
        for (int64_t r = 0; r < rows; ++r) {
          double d = 0;
          for (int64_t c = 0; c < cols; ++c)
            d += (w[r * cols + c] - static_cast<double>(dequantize(q, codec, r, c))) * xs[s * cols + c];
          e += d * d;
        }
      return e;
    };
    const double rtn = output_error(quantize(view, f, ScaleRule::kAbsmax));
    const double gptq = output_error(gptq_quantize({&view, 1}, h, f, ScaleRule::kAbsmax));
    EXPECT_LT(gptq, 0.8 * rtn) << f.name() << ": GPTQ " << gptq << ", round to nearest " << rtn;
  }
}

TEST(Gptq, StackedPartsAreOneMatrixAndTheResultIsDeterministic) {
  const int64_t cols = 80;
  const Hessian h = correlated_inputs(cols, 200, 1.0, 4);
  const std::vector<float> w = random_weights(50, cols, 5);
  const MatrixView whole{w.data(), DType::kF32, 50, cols, "w"};
  const MatrixView parts[] = {{w.data(), DType::kF32, 20, cols, "a"},
                              {w.data() + 20 * cols, DType::kF32, 30, cols, "b"}};
  const QuantizedMatrix a = gptq_quantize({&whole, 1}, h, kE3M2, ScaleRule::kMinError);
  const QuantizedMatrix b = gptq_quantize(parts, h, kE3M2, ScaleRule::kMinError);
  EXPECT_EQ(a.rows, 50);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(gptq_quantize({&whole, 1}, h, kE3M2, ScaleRule::kMinError).codes, a.codes);
}

TEST(Gptq, TheFactorIsTheUpperCholeskyFactorOfTheDampedInverse) {
  const int64_t n = 24;
  const Hessian h = correlated_inputs(n, 100, 2.0, 6);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = (i * 7) % n;  // a permutation (7 and 24 are coprime)
  const double damp = 0.01;
  const std::vector<double> u = gptq_factor(h, order, damp);
  // The damped, permuted H / samples ...
  std::vector<double> hp(static_cast<size_t>(n * n));
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += h.xtx[order[i] * n + order[i]] / 100.0 / n;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      hp[i * n + j] = h.xtx[order[i] * n + order[j]] / 100.0 + (i == j ? damp * mean : 0.0);
  // ... times U^T U is the identity, and U is upper triangular with a positive diagonal.
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_GT(u[i * n + i], 0.0);
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ(u[i * n + j], 0.0);
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) {
        double utu = 0;  // (U^T U)[k, j]
        for (int64_t m = 0; m < n; ++m) utu += u[m * n + k] * u[m * n + j];
        s += hp[i * n + k] * utu;
      }
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-9) << i << ", " << j;
    }
  }
}

TEST(Gptq, BadInputsAreErrors) {
  std::vector<float> w = random_weights(4, 8, 7);
  const Hessian h = correlated_inputs(8, 20, 0.0, 8);
  const MatrixView view{w.data(), DType::kF32, 4, 8, "w"};
  const Hessian wrong = correlated_inputs(6, 20, 0.0, 8);
  EXPECT_THROW(gptq_quantize({&view, 1}, wrong, kE3M2, ScaleRule::kAbsmax), Error);
  Hessian none = h;
  none.samples = 0;
  EXPECT_THROW(gptq_quantize({&view, 1}, none, kE3M2, ScaleRule::kAbsmax), Error);
  w[13] = NAN;
  EXPECT_THROW(gptq_quantize({&view, 1}, h, kE3M2, ScaleRule::kAbsmax), Error);
  // A column no input reached (zero row and column of H) rounds to nearest without failing.
  Hessian dead = h;
  for (int64_t c = 0; c < 8; ++c) dead.xtx[3 * 8 + c] = dead.xtx[c * 8 + 3] = 0.0;
  w[13] = 0.5f;
  EXPECT_NO_THROW(gptq_quantize({&view, 1}, dead, kE3M2, ScaleRule::kAbsmax));
}

}  // namespace
}  // namespace fp6serve::fpx
