#include "fpx/format.h"

#include <bit>
#include <cctype>
#include <cmath>
#include <string>

#include "core/check.h"

namespace fp6serve::fpx {

double Format::max_value() const {
  return (2.0 - std::ldexp(1.0, -man_bits)) * std::ldexp(1.0, (1 << exp_bits) - 1 - bias());
}

double Format::min_normal() const {
  return std::ldexp(1.0, 1 - bias());
}

double Format::min_subnormal() const {
  return man_bits == 0 ? min_normal() : std::ldexp(1.0, 1 - bias() - man_bits);
}

std::string Format::name() const {
  return "e" + std::to_string(exp_bits) + "m" + std::to_string(man_bits);
}

void check_format(Format f) {
  FP6_CHECK(f.valid(), kInvalidArgument, "invalid FPx format e{}m{}: need E >= 1, M >= 0 and 3 <= 1+E+M <= 8",
            f.exp_bits, f.man_bits);
}

Format parse_format(std::string_view text) {
  std::string t;
  for (char c : text) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "fp6") return kE3M2;
  if (t == "fp5") return kE2M2;
  if (t == "fp4") return kE2M1;
  if (t.size() == 4 && t[0] == 'e' && t[2] == 'm' && std::isdigit(static_cast<unsigned char>(t[1])) &&
      std::isdigit(static_cast<unsigned char>(t[3]))) {
    const Format f{t[1] - '0', t[3] - '0'};
    if (f.valid()) return f;
  }
  FP6_THROW(kInvalidArgument,
            "unknown FPx format '{}': expected eXmY with X >= 1 and 3 <= 1+X+Y <= 8 (e3m2, e2m3, "
            "e2m2, e3m1, e2m1, e4m3, e5m2, ...) or fp6, fp5, fp4",
            text);
}

Codec::Codec(Format format) : format_(format) {
  check_format(format);
  const int m = format.man_bits;
  params_.max_value = static_cast<float>(format.max_value());
  params_.min_normal = static_cast<float>(format.min_normal());
  params_.subnormal_scale = std::ldexp(1.0f, format.bias() - 1 + m);
  params_.shift = static_cast<uint32_t>(23 - m);
  params_.rebias = static_cast<uint32_t>(127 - format.bias()) << m;
  params_.max_magnitude = format.max_magnitude_code();
  params_.sign_bit = format.sign_bit();
  for (int code = 0; code < format.num_codes(); ++code) {
    const uint32_t magnitude = static_cast<uint32_t>(code) & format.max_magnitude_code();
    const int e = static_cast<int>(magnitude >> m);
    const int mantissa = static_cast<int>(magnitude & ((1u << m) - 1));
    // Subnormal: mantissa * 2^(1-bias-M); normal: (2^M + mantissa) * 2^(e-bias-M).
    const float v = e == 0 ? std::ldexp(static_cast<float>(mantissa), 1 - format.bias() - m)
                           : std::ldexp(static_cast<float>((1 << m) + mantissa), e - format.bias() - m);
    table_[code] = (static_cast<uint32_t>(code) & format.sign_bit()) ? -v : v;
  }
}

}  // namespace fp6serve::fpx
