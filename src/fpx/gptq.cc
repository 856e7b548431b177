#include "fpx/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
#include "core/thread_pool.h"

namespace fp6serve::fpx {

namespace {

// In-place lower Cholesky factor of the symmetric positive definite [n, n] matrix a (row-major;
// only the lower triangle is read, the upper is zeroed). Left-looking, each column's rows
// spread over the thread pool. False when a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    double d = rj[j];
    for (int64_t k = 0; k < j; ++k) d -= rj[k] * rj[k];
    if (!(d > 0.0)) return false;
    const double l = std::sqrt(d);
    rj[j] = l;
    ThreadPool::global()->parallel_for(n - j - 1, [&](int64_t b, int64_t e) {
      for (int64_t i = j + 1 + b; i < j + 1 + e; ++i) {
        double* ri = a.data() + i * n;
        double s = ri[j];
        for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
        ri[j] = s / l;
      }
    });
  }
  for (int64_t i = 0; i < n; ++i) std::fill(a.begin() + i * n + i + 1, a.begin() + (i + 1) * n, 0.0);
  return true;
}

}  // namespace

std::vector<double> gptq_factor(const Hessian& h, const std::vector<int64_t>& order, double damp) {
  const int64_t n = h.cols;
  FP6_CHECK(n > 0 && static_cast<int64_t>(h.xtx.size()) == n * n && static_cast<int64_t>(order.size()) == n,
            kInvalidArgument, "gptq: a Hessian of {} values for {} columns", h.xtx.size(), n);
  FP6_CHECK(h.samples > 0, kInvalidArgument, "gptq: no calibration samples");
  // H / samples in the rounding order; a column no input ever reached gets 1 on the diagonal
  // (it is rounded to nearest and its error goes nowhere).
  std::vector<double> a(static_cast<size_t>(n * n));
  double mean_diag = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) a[i * n + j] = h.xtx[order[i] * n + order[j]] / static_cast<double>(h.samples);
    if (a[i * n + i] == 0.0) a[i * n + i] = 1.0;
    mean_diag += a[i * n + i] / static_cast<double>(n);
  }
  // Damped, and more if rounding in the sums leaves the matrix not positive definite.
  std::vector<double> l;
  for (double d = damp;; d *= 10) {
    FP6_CHECK(d <= 1e3, kBadInput, "gptq: the calibration statistics are not positive definite");
    l = a;
    for (int64_t i = 0; i < n; ++i) l[i * n + i] += d * mean_diag;
    if (cholesky_lower(l, n)) break;
  }
  // (L L^T)^-1 = L^-T L^-1: first L^-1 (lower), one column per task, stored transposed so
  // that each of its columns is a contiguous row.
  std::vector<double> inv_t(static_cast<size_t>(n * n), 0.0);  // inv_t[j * n + i] = (L^-1)[i, j]
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      double* x = inv_t.data() + j * n;
      for (int64_t i = j; i < n; ++i) {
        double s = i == j ? 1.0 : 0.0;
        const double* li = l.data() + i * n;
        for (int64_t k = j; k < i; ++k) s -= li[k] * x[k];
        x[i] = s / li[i];
      }
    }
  });
  // H^-1[p, q] = sum over k >= max(p, q) of (L^-1)[k, p] (L^-1)[k, q]; lower triangle.
  std::vector<double> hinv(static_cast<size_t>(n * n), 0.0);
  ThreadPool::global()->parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const double* xp = inv_t.data() + p * n;
      for (int64_t q = 0; q <= p; ++q) {
        const double* xq = inv_t.data() + q * n;
        double s = 0;
        for (int64_t k = p; k < n; ++k) s += xp[k] * xq[k];
        hinv[p * n + q] = s;
      }
    }
  });
  // H^-1 = U^T U with U upper: U^T is H^-1's lower Cholesky factor.
  FP6_CHECK(cholesky_lower(hinv, n), kBadInput, "gptq: the inverse calibration statistics are not positive definite");
  std::vector<double> u(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) u[i * n + j] = hinv[j * n + i];
  return u;
}

QuantizedMatrix gptq_quantize(std::span<const MatrixView> parts, const Hessian& h, Format format, ScaleRule rule,
                              const GptqOptions& options) {
  FP6_CHECK(!parts.empty(), kInvalidArgument, "gptq: no matrix given");
  const int64_t n = parts[0].cols;
  FP6_CHECK(h.cols == n, kInvalidArgument, "gptq: tensor '{}' has {} columns but its calibration statistics {}",
            parts[0].name, n, h.cols);
  // Round to nearest first: it checks every value (NaN, Inf, shapes) and gives each row's
  // absmax scale.
  QuantizedMatrix q;
  q.format = format;
  q.cols = n;
  std::vector<std::vector<float>> rows;  // the stacked rows in f32
  for (const MatrixView& part : parts) {
    FP6_CHECK(part.cols == n, kInvalidArgument, "tensor '{}' has {} columns but '{}' has {}: cannot stack them",
              part.name, part.cols, parts[0].name, n);
    const QuantizedMatrix rtn = quantize(part, format, ScaleRule::kAbsmax);
    q.scales.insert(q.scales.end(), rtn.scales.begin(), rtn.scales.end());
    q.rows += part.rows;
  }
  q.codes.resize(static_cast<size_t>(q.rows * n));

  // Which part, and which row of it, stacked row r is.
  std::vector<std::pair<const MatrixView*, int64_t>> where;
  for (const MatrixView& part : parts)
    for (int64_t r = 0; r < part.rows; ++r) where.emplace_back(&part, r);
  // Stacked row r in f32.
  const auto read_row = [&](int64_t r, std::vector<float>& out) {
    const auto [part, pr] = where[static_cast<size_t>(r)];
    convert_to_f32(static_cast<const uint8_t*>(part->data) + static_cast<size_t>(pr * n) * dtype_size(part->dtype),
                   part->dtype, out.data(), out.size());
  };
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (options.act_order)
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return h.xtx[a * n + a] > h.xtx[b * n + b]; });
  const std::vector<double> u = gptq_factor(h, order, options.damp);

  const Codec codec(format);
  if (rule == ScaleRule::kMinError) {
    // The candidates of quantize.h's min-error rule, judged by the error weighted by each
    // column's input energy H[c, c] instead of the plain squared error (first best on ties).
    ThreadPool::global()->parallel_for(q.rows, [&](int64_t begin, int64_t end) {
      std::vector<float> f32(static_cast<size_t>(n));
      for (int64_t r = begin; r < end; ++r) {
        read_row(r, f32);
        float amax = 0;
        for (float v : f32) amax = std::max(amax, std::fabs(v));
        if (amax == 0) continue;
        const float s0 = amax / static_cast<float>(format.max_value());
        double best = INFINITY;
        for (int step = 0; step <= kMinErrorSteps; ++step) {
          const float s = s0 * (1.0f - kMinErrorStep * static_cast<float>(step));
          if (s == 0.0f) break;
          double e = 0;
          for (int64_t c = 0; c < n; ++c) {
            const double d = f32[c] - static_cast<double>(s * codec.decode(codec.encode(f32[c] / s)));
            e += h.xtx[c * n + c] * d * d;
          }
          if (e < best) best = e, q.scales[static_cast<size_t>(r)] = s;
        }
      }
    });
  }
  constexpr int64_t kTile = 16;
  const int64_t tiles = (q.rows + kTile - 1) / kTile;
  ThreadPool::global()->parallel_for(tiles, [&](int64_t begin, int64_t end) {
    std::vector<float> f32(static_cast<size_t>(n));
    std::vector<double> w(static_cast<size_t>(kTile * n));
    double err[kTile];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r0 = t * kTile, count = std::min(kTile, q.rows - r0);
      for (int64_t r = 0; r < count; ++r) {  // row r0 + r, its columns in rounding order
        read_row(r0 + r, f32);
        for (int64_t i = 0; i < n; ++i) w[r * n + i] = f32[static_cast<size_t>(order[i])];
      }
      for (int64_t i = 0; i < n; ++i) {
        const double* ui = u.data() + i * n;
        for (int64_t r = 0; r < count; ++r) {
          const float scale = q.scales[static_cast<size_t>(r0 + r)];
          const uint8_t code = codec.encode(static_cast<float>(w[r * n + i]) / scale);
          q.codes[static_cast<size_t>((r0 + r) * n + order[i])] = code;
          err[r] = (w[r * n + i] - static_cast<double>(scale * codec.decode(code))) / ui[i];
        }
        for (int64_t r = 0; r < count; ++r) {
          double* wr = w.data() + r * n;
          const double e = err[r];
          for (int64_t j = i + 1; j < n; ++j) wr[j] -= e * ui[j];
        }
      }
    }
  });
  return q;
}

}  // namespace fp6serve::fpx
