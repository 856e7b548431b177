// Tensor shapes: element counts are checked, since shapes come from files.
#include "core/tensor.h"

#include <gtest/gtest.h>

#include "fp6serve/error.h"

namespace fp6serve {
namespace {

TEST(ShapeNumel, CountsElements) {
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({4096, 11008}), 4096 * 11008);
  EXPECT_EQ(shape_numel({3, 0, int64_t{1} << 62}), 0);
  EXPECT_EQ(checked_shape_numel({int64_t{1} << 31, int64_t{1} << 31}), int64_t{1} << 62);
}

// [2^32, 2^32, 96] is 96 * 2^64 elements: the product wrapped to 0 in int64 (signed overflow,
// undefined), which a size check of an empty data range then accepted.
TEST(ShapeNumel, OverflowIsAnErrorNotAWrappedCount) {
  const std::vector<int64_t> huge = {int64_t{1} << 32, int64_t{1} << 32, 96};
  EXPECT_EQ(checked_shape_numel(huge), std::nullopt);
  EXPECT_EQ(checked_shape_numel({int64_t{1} << 62, 2}), std::nullopt);
  EXPECT_EQ(checked_shape_numel({2, -1}), std::nullopt);
  try {
    shape_numel(huge);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("[4294967296, 4294967296, 96]"), std::string::npos) << e.what();
  }
}

TEST(Tensor, EmptyRefusesShapesBeyondTheAddressSpace) {
  // 2^62 elements of 4 bytes: the element count fits int64, the byte count does not fit 2^64.
  EXPECT_THROW(Tensor::empty({int64_t{1} << 31, int64_t{1} << 31}, DType::kF32), Error);
  EXPECT_THROW(Tensor::empty({int64_t{1} << 32, int64_t{1} << 32, 96}, DType::kF16), Error);
  EXPECT_EQ(Tensor::empty({2, 3}, DType::kF16).bytes(), 12u);
}

}  // namespace
}  // namespace fp6serve
