// FPx number formats: a sign bit, E >= 1 exponent bits and M >= 0 mantissa bits,
// 3 <= 1 + E + M <= 8, exponent bias 2^(E-1) - 1, subnormals, and no Inf/NaN codes: the
// all-ones exponent is an ordinary binade (as in FP6-LLM and qtorch), so E3M2 reaches 28.
//
// A code is an unsigned byte holding the value in its low 1+E+M bits: sign, exponent,
// mantissa, most significant first. Encoding rounds to nearest, ties to even, keeps the sign
// of zero and saturates at +-max; decoding is exact.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace fp6serve::fpx {

struct Format {
  int exp_bits = 3;
  int man_bits = 2;

  constexpr int bits() const { return 1 + exp_bits + man_bits; }
  constexpr int bias() const { return (1 << (exp_bits - 1)) - 1; }
  // Number of distinct codes, and the largest magnitude code (all ones without the sign).
  constexpr int num_codes() const { return 1 << bits(); }
  constexpr uint32_t max_magnitude_code() const { return (1u << (exp_bits + man_bits)) - 1; }
  constexpr uint32_t sign_bit() const { return 1u << (exp_bits + man_bits); }
  constexpr bool valid() const { return exp_bits >= 1 && man_bits >= 0 && bits() >= 3 && bits() <= 8; }
  double max_value() const;      // (2 - 2^-M) * 2^(2^E - 1 - bias)
  double min_normal() const;     // 2^(1 - bias)
  double min_subnormal() const;  // 2^(1 - bias - M), or min_normal() when M == 0

  std::string name() const;  // "e3m2"
  friend constexpr bool operator==(Format a, Format b) { return a.exp_bits == b.exp_bits && a.man_bits == b.man_bits; }
};

inline constexpr Format kE3M2{3, 2};  // FP6, the default
inline constexpr Format kE2M3{2, 3};  // FP6
inline constexpr Format kE2M2{2, 2};  // FP5
inline constexpr Format kE3M1{3, 1};  // FP5
inline constexpr Format kE2M1{2, 1};  // FP4
inline constexpr Format kE4M3{4, 3};  // 8-bit, as a check of the general code
inline constexpr Format kE5M2{5, 2};  // 8-bit, as a check of the general code

// "e3m2" (any E, M in range), or the aliases fp6 (e3m2), fp5 (e2m2), fp4 (e2m1).
// Throws kInvalidArgument naming the accepted spellings.
Format parse_format(std::string_view text);
// Throws kInvalidArgument unless f.valid().
void check_format(Format f);

#if defined(__CUDACC__)
#define FP6_HOST_DEVICE __host__ __device__
#else
#define FP6_HOST_DEVICE
#endif

// The constants of one format's encoder, shared by host and device code.
struct EncodeParams {
  float max_value;
  float min_normal;
  float subnormal_scale;  // 2^(bias - 1 + M): |x| * this is the subnormal code
  uint32_t shift;         // 23 - M
  uint32_t rebias;        // (127 - bias) << M
  uint32_t max_magnitude;
  uint32_t sign_bit;
};

// Round to nearest even, saturate at +-max. x must not be NaN (quantize() rejects NaN and Inf
// before encoding; a NaN here would saturate to +-max). Branch-free, so loops over rows
// vectorize; the same code runs in the GPU quantizer, bit for bit.
FP6_HOST_DEVICE inline uint8_t encode(const EncodeParams& p, float x) {
  const uint32_t bits = __builtin_bit_cast(uint32_t, x);
  const uint32_t sign = (bits >> 31) ? p.sign_bit : 0u;
  const uint32_t u = bits & 0x7FFFFFFFu;
  const float a = __builtin_bit_cast(float, u);
  // Normal: round the dropped mantissa bits to nearest even, then rebias the exponent.
  const uint32_t rounded = u + (1u << (p.shift - 1)) - 1u + ((u >> p.shift) & 1u);
  const uint32_t normal = (rounded >> p.shift) - p.rebias;
  // Subnormal: scaling by a power of two is exact (so a fused multiply-add rounds the same);
  // adding 2^23 rounds to an integer, ties to even, in the low mantissa bits. 2^M (rounded
  // up to the smallest normal) is also that normal's code.
  const float scaled = a * p.subnormal_scale + 0x1p23f;
  const uint32_t subnormal = __builtin_bit_cast(uint32_t, scaled) - 0x4B000000u;
  // Selected by masks, not branches: which of the two applies is a coin toss for e2m3 on
  // Gaussian rows (a third of the values are subnormal), and a mispredicted branch per value
  // made e2m3 quantize 2.4 times slower than e3m2 on the CPU.
  const uint32_t is_subnormal = 0u - static_cast<uint32_t>(a < p.min_normal);
  const uint32_t magnitude = (subnormal & is_subnormal) | (normal & ~is_subnormal);
  const uint32_t saturate =
      0u - (static_cast<uint32_t>(!(a < p.max_value)) | static_cast<uint32_t>(magnitude > p.max_magnitude));
  return static_cast<uint8_t>(sign | (p.max_magnitude & saturate) | (magnitude & ~saturate));
}

// The encoder constants plus the decode table of one format.
class Codec {
 public:
  explicit Codec(Format format);

  Format format() const { return format_; }
  float decode(uint8_t code) const { return table_[code]; }
  uint8_t encode(float x) const { return fpx::encode(params_, x); }
  const EncodeParams& params() const { return params_; }
  const std::array<float, 256>& table() const { return table_; }

 private:
  Format format_;
  EncodeParams params_;
  std::array<float, 256> table_{};
};

}  // namespace fp6serve::fpx
