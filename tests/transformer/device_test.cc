// Choosing the backend from --device and the quantization mode.
#include "transformer/device.h"

#include <gtest/gtest.h>

#include "fp6serve/error.h"
#include "tests/support/fixture.h"

namespace fp6serve {
namespace {

TEST(MakeBackend, Fp32RunsOnTheCpuAndIsAnErrorOnCuda) {
  const ModelConfig config = ModelConfig::load(testing::fixture_dir("tiny-llama"));
  const auto fp32 = model::QuantizationMode::parse("fp32");
  auto on = [](const char* device) {
    Options o;
    o.device = device;
    return o;
  };
  EXPECT_EQ(make_backend(config, fp32, on("auto"))->device(), Device::kCpu);
  EXPECT_EQ(make_backend(config, model::QuantizationMode::parse("wf6af16"), on("cpu"))->device(), Device::kCpu);
  try {
    make_backend(config, fp32, on("cuda"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_backend(config, fp32, on("tpu")), Error);
}

}  // namespace
}  // namespace fp6serve
