// GPU quantize + prepack equals the CPU's fpx::quantize_pack byte for byte.
#include "backend/cuda/fpx_quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "backend/cuda/device.h"
#include "backend/cuda/device_buffer.h"
#include "core/half.h"
#include "fpx/pack.h"
#include "tests/support/random.h"

namespace fp6serve {
namespace {

TEST(CudaQuantize, EqualsTheCpuPackerBitForBit) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {17, 130}, {100, 4097}, {256, 512}};
  for (fpx::Format f : {fpx::kE3M2, fpx::kE2M2, fpx::kE2M1, fpx::kE2M3})
    for (DType target : {DType::kF16, DType::kBF16})
      for (DType src : {DType::kBF16, DType::kF16, DType::kF32})
        for (auto [rows, cols] : shapes) {
          std::vector<uint8_t> host(static_cast<size_t>(rows * cols) * dtype_size(src));
          for (int64_t i = 0; i < rows * cols; ++i) {
            float v = normal(rng);
            if (i % 97 == 5) v = 0.0f;  // zeros and an all-zero row
            if (i / cols == rows / 2) v = 0.0f;
            if (src == DType::kF32) std::memcpy(host.data() + 4 * i, &v, 4);
            const uint16_t b = src == DType::kF16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
            if (src != DType::kF32) std::memcpy(host.data() + 2 * i, &b, 2);
          }
          const fpx::PackedWeight want = fpx::quantize_pack({host.data(), src, rows, cols, "w"}, f, target);
          cuda::DeviceBuffer dsrc(host.size()), dpacked(want.bytes()), dscales(want.scales.size() * 4);
          dsrc.upload(host.data(), host.size());
          const int64_t bad = cuda::quantize_pack(dsrc.data(), src, rows, cols, want.plan, fpx::Codec(f).params(),
                                                  dpacked.as<uint8_t>(), dscales.as<float>(), nullptr);
          ASSERT_EQ(bad, -1);
          std::vector<uint8_t> got(want.bytes());
          std::vector<float> scales(want.scales.size());
          dpacked.download(got.data(), got.size());
          dscales.download(scales.data(), scales.size() * 4);
          ASSERT_EQ(std::memcmp(got.data(), want.data.data(), got.size()), 0)
              << f.name() << " " << dtype_name(target) << " " << dtype_name(src) << " " << rows << "x" << cols;
          ASSERT_EQ(scales, want.scales);
        }
}

// The min-error rule (fpx/quantize.h) on the GPU chooses the same scale as the CPU for every
// row, so the packed bytes are equal too: rows with outliers (where the search clips), rows of
// equal values, an all-zero row and a row whose absmax scale underflows.
TEST(CudaQuantize, MinErrorScalesEqualTheCpusBitForBit) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  std::mt19937 rng(static_cast<uint32_t>(testing::test_seed()));
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const std::pair<int64_t, int64_t> shapes[] = {{1, 7}, {33, 300}, {64, 4096}};
  for (fpx::Format f : {fpx::kE3M2, fpx::kE2M3, fpx::kE2M2, fpx::kE2M1})
    for (DType src : {DType::kBF16, DType::kF32})
      for (auto [rows, cols] : shapes) {
        std::vector<uint8_t> host(static_cast<size_t>(rows * cols) * dtype_size(src));
        for (int64_t i = 0; i < rows * cols; ++i) {
          const int64_t r = i / cols;
          float v = normal(rng);
          if (r % 5 == 1 && i % cols == 3) v *= 40.0f;  // an outlier
          if (r % 7 == 2) v = 0.0125f;                  // all equal
          if (r == rows / 2 && rows > 1) v = 0.0f;      // all zero
          if (r == rows - 1 && rows > 2) v *= 1e-38f;   // the absmax scale underflows
          if (src == DType::kF32) std::memcpy(host.data() + 4 * i, &v, 4);
          const uint16_t b = f32_to_bf16_bits(v);
          if (src != DType::kF32) std::memcpy(host.data() + 2 * i, &b, 2);
        }
        const fpx::PackedWeight want =
            fpx::quantize_pack({host.data(), src, rows, cols, "w"}, f, DType::kBF16, fpx::ScaleRule::kMinError);
        cuda::DeviceBuffer dsrc(host.size()), dpacked(want.bytes()), dscales(want.scales.size() * 4);
        dsrc.upload(host.data(), host.size());
        ASSERT_EQ(cuda::quantize_pack(dsrc.data(), src, rows, cols, want.plan, fpx::Codec(f).params(),
                                      dpacked.as<uint8_t>(), dscales.as<float>(), nullptr, fpx::ScaleRule::kMinError),
                  -1);
        std::vector<uint8_t> got(want.bytes());
        std::vector<float> scales(want.scales.size());
        dpacked.download(got.data(), got.size());
        dscales.download(scales.data(), scales.size() * 4);
        const std::string what =
            f.name() + " " + dtype_name(src) + " " + std::to_string(rows) + "x" + std::to_string(cols);
        for (size_t r = 0; r < scales.size(); ++r) ASSERT_EQ(scales[r], want.scales[r]) << what << " row " << r;
        ASSERT_EQ(std::memcmp(got.data(), want.data.data(), got.size()), 0) << what;
        // The search moved some scales off absmax (else this test would not test it).
        const fpx::PackedWeight absmax = fpx::quantize_pack({host.data(), src, rows, cols, "w"}, f, DType::kBF16);
        if (rows > 1) EXPECT_NE(absmax.scales, want.scales) << what;
      }
}

TEST(CudaQuantize, ReportsTheFirstNanOrInf) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU";
  std::vector<float> w(40 * 300, 0.5f);
  w[7 * 300 + 11] = NAN;
  w[30 * 300 + 2] = INFINITY;
  cuda::DeviceBuffer dsrc(w.size() * 4), dpacked(48 * 384), dscales(48 * 4);
  dsrc.upload(w.data(), dsrc.size());
  const auto plan = fpx::pack_plan(fpx::kE3M2, DType::kF16);
  EXPECT_EQ(cuda::quantize_pack(dsrc.data(), DType::kF32, 40, 300, plan, fpx::Codec(fpx::kE3M2).params(),
                                dpacked.as<uint8_t>(), dscales.as<float>(), nullptr),
            7 * 300 + 11);
}

}  // namespace
}  // namespace fp6serve
