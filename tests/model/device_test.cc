// Choosing the backend from --device and the quantization mode.
#include <gtest/gtest.h>

#include "fp6serve/error.h"
#include "model/device.h"
#include "tests/model/fixture.h"

namespace fp6serve::model {
namespace {

TEST(MakeBackend, Fp32RunsOnTheCpuAndIsAnErrorOnCuda) {
  const ModelConfig config = ModelConfig::load(testing::fixture_dir("tiny-llama"));
  const QuantizationMode fp32 = QuantizationMode::parse("fp32");
  EXPECT_EQ(make_backend("auto", config, fp32)->device(), Device::kCpu);
  EXPECT_EQ(make_backend("cpu", config, QuantizationMode::parse("wf6af16"))->device(), Device::kCpu);
  try {
    make_backend("cuda", config, fp32);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_backend("tpu", config, fp32), Error);
}

}  // namespace
}  // namespace fp6serve::model
