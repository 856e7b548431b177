// Model shapes by name (random-weight benchmarks): the presets are the real models' shapes.
#include <gtest/gtest.h>

#include "fp6serve/error.h"
#include "model/config.h"
#include "tests/model/fixture.h"

namespace fp6serve::model {
namespace {

TEST(ModelShape, PresetsHaveTheRealModelsShapes) {
  const ModelConfig l7 = ModelConfig::shape("llama2-7b");
  EXPECT_EQ(l7.hidden_size, 4096);
  EXPECT_EQ(l7.intermediate_size, 11008);
  EXPECT_EQ(l7.num_layers, 32);
  EXPECT_EQ(l7.num_kv_heads, 32);
  EXPECT_EQ(l7.head_dim, 128);
  const ModelConfig l70 = ModelConfig::shape("llama2-70b");
  EXPECT_EQ(l70.num_layers, 80);
  EXPECT_EQ(l70.num_heads, 64);
  EXPECT_EQ(l70.num_kv_heads, 8);
  EXPECT_EQ(l70.intermediate_size, 28672);
  const ModelConfig l3 = ModelConfig::shape("llama3-8b");
  EXPECT_EQ(l3.vocab_size, 128256);
  EXPECT_EQ(l3.num_kv_heads, 8);
  EXPECT_EQ(ModelConfig::shape("llama2-13b").hidden_size, 5120);
  for (const char* name : {"llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b"})
    EXPECT_EQ(ModelConfig::shape(name).dtype, DType::kF16) << name;
}

TEST(ModelShape, AConfigFileOrDirectoryAndAClearErrorOtherwise) {
  const std::string dir = testing::fixture_dir("tiny-llama");
  EXPECT_EQ(ModelConfig::shape(dir).hidden_size, 128);
  EXPECT_EQ(ModelConfig::shape(dir + "/config.json").num_layers, 4);
  try {
    ModelConfig::shape("llama2-8b");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("llama2-70b"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fp6serve::model
