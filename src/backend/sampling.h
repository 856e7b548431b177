// Turning a row of logits into the next token, defined once for both backends: the CPU
// reference (cpu/sampling.h) and the GPU twin (cuda/sampling.h) pick the same
// token bit for bit, so a seeded request samples the same text on either device.
//
// The order is Hugging Face's: repetition penalty (over prompt and output), OpenAI's presence
// and frequency penalties (over the output), then argmax (temperature 0) or: temperature,
// top-k, min-p, top-p, and a draw. Every filter is a threshold (top-k keeps the tokens tied
// with the k-th, as transformers' TopKLogitsWarper does; top-p the smallest set of most likely
// tokens whose probability reaches p, with ties at its edge), and the draw walks the kept
// tokens in vocabulary order. What makes the two devices agree exactly:
// - weights e^z come from exp_nonpositive, built from correctly rounded float operations
//   only (no library exp, no contraction), identical on host and device;
// - probabilities are summed as 2^-40 fixed point (mass), exact in any order, so the top-p
//   threshold and the draw do not depend on how a GPU reduction is ordered;
// - the uniform draw u comes from the request's generator on the host (SampleRow::u).
// Log-probabilities (OpenAI's logprobs) are of the raw model distribution, in f32/f64; they
// are reported values, not decisions, and agree to rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__CUDACC__)
#define FP6_HOST_DEVICE __host__ __device__
#else
#define FP6_HOST_DEVICE
#endif

namespace fp6serve {

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct Sample {
  int32_t token = -1;
  float logprob = 0.0f;           // when requested
  std::vector<TokenLogprob> top;  // most likely alternatives, when requested
};

// A token whose logit is penalized: divided (positive) or multiplied (negative) by the
// repetition penalty when `repeat`, then reduced by `subtract` (presence + frequency x count).
struct PenaltyEntry {
  int32_t token;
  float subtract;
  int32_t repeat;
};

// One row's sampling, stateless (engine/sampler.h makes it from a request's parameters and
// generator).
struct SampleRow {
  float inv_temperature = 0.0f;  // 0: greedy (argmax, the lowest id among ties)
  int32_t top_k = 0;             // 0: off
  float min_p = 0.0f;            // 0: off
  double top_p = 1.0;            // 1: off
  double repetition_penalty = 1.0;
  double u = 0.0;                       // uniform in [0, 1), the draw
  int32_t top_logprobs = -1;            // -1: none; n: the chosen token's and the n most likely
  std::vector<PenaltyEntry> penalties;  // distinct tokens
};

namespace sampling {

constexpr int kMaxTopLogprobs = 20;
constexpr double kMassScale = 1099511627776.0;  // 2^40

FP6_HOST_DEVICE inline float fma_f(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// e^z for z <= 0 (0 from -87 down, and for NaN), within 2.5e-7 relative: e^z = 2^n e^r with
// n = round(z / ln 2) and r = z - n ln 2 in [-0.35, 0.35] (Cody-Waite: ln 2 in two parts, so
// r is nearly exact), e^r by a degree-8 Taylor polynomial. Only single correctly rounded
// operations (and exact ones: the float-to-int conversion, 2^n built from its bits), so host
// and device compute the same bits.
FP6_HOST_DEVICE inline float exp_nonpositive(float z) {
  if (!(z > -87.0f)) return 0.0f;
  const float x = fma_f(z, 1.44269504f, 0.0f);  // z log2(e), rounded once (no contraction)
  const int n = static_cast<int>(x - 0.5f);     // nearest integer for x <= 0 (ties down)
  const auto fn = static_cast<float>(n);
  float r = fma_f(-fn, 0.693145752f, z);  // ln 2 = 0.693145752 (exact in 16 bits) + 1.42860677e-6
  r = fma_f(-fn, 1.42860677e-6f, r);
  float p = 2.48015873e-5f;  // 1/8!
  p = fma_f(p, r, 1.98412698e-4f);
  p = fma_f(p, r, 1.38888889e-3f);
  p = fma_f(p, r, 8.33333333e-3f);
  p = fma_f(p, r, 4.16666667e-2f);
  p = fma_f(p, r, 1.66666667e-1f);
  p = fma_f(p, r, 0.5f);
  p = fma_f(p, r, 1.0f);
  p = fma_f(p, r, 1.0f);
  const uint32_t two_n_bits = static_cast<uint32_t>(n + 127) << 23;  // 2^n, normal: n >= -126
  float two_n;
  std::memcpy(&two_n, &two_n_bits, sizeof two_n);
  return p * two_n;  // exact unless the result is subnormal, then correctly rounded
}

// A weight in [0, 1] as 2^-40 fixed point (a vocabulary of 2^20 sums below 2^60).
FP6_HOST_DEVICE inline uint64_t mass(float weight) {
  return static_cast<uint64_t>(static_cast<double>(weight) * kMassScale);
}

// An unsigned key with the order of the floats.
FP6_HOST_DEVICE inline uint32_t order_key(float v) {
#if defined(__CUDA_ARCH__)
  const uint32_t b = __float_as_uint(v);
#else
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
#endif
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

FP6_HOST_DEVICE inline float penalize(float logit, const PenaltyEntry& e, double repetition_penalty) {
  if (e.repeat)
    logit = logit > 0 ? static_cast<float>(logit / repetition_penalty) : static_cast<float>(logit * repetition_penalty);
  return logit - e.subtract;
}

// The draw's position in the kept mass: u * total, below total.
FP6_HOST_DEVICE inline uint64_t draw_point(double u, uint64_t total) {
  const auto r = static_cast<uint64_t>(u * static_cast<double>(total));
  return r < total ? r : total - 1;
}

// The top-p target: the kept mass must reach it (at least the most likely token's).
FP6_HOST_DEVICE inline uint64_t top_p_target(double top_p, uint64_t total) {
  const auto t = static_cast<uint64_t>(top_p * static_cast<double>(total));
  return t > 0 ? t : 1;
}

}  // namespace sampling

}  // namespace fp6serve
