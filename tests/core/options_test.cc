// Options: each bad setting is named, and the environment's knobs are read in one place.
#include "fp6serve/options.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "fp6serve/error.h"

namespace fp6serve {
namespace {

std::string error_of(const Options& o) {
  try {
    o.validate();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(Options, TheDefaultsAreValidAndEachBadSettingIsNamed) {
  EXPECT_EQ(error_of(Options{}), "");
  Options o;
  o.device = "tpu";
  EXPECT_NE(error_of(o).find("device"), std::string::npos);
  o = {};
  o.max_batch_tokens = 0;
  EXPECT_NE(error_of(o).find("max_batch_tokens"), std::string::npos);
  o = {};
  o.kv_block_size = 0;
  EXPECT_NE(error_of(o).find("kv_block_size"), std::string::npos);
  o = {};
  o.cpu_isa = "neon";
  EXPECT_NE(error_of(o).find("cpu_isa"), std::string::npos);
  o = {};
  o.quantization_scale = "mse";
  EXPECT_NE(error_of(o).find("quantization_scale"), std::string::npos);
  o = {};
  o.threads = -1;
  EXPECT_NE(error_of(o).find("threads"), std::string::npos);
}

// Sets the variables for one scope and restores the environment after it.
struct Env {
  explicit Env(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [k, v] : vars) {
      names.push_back(k);
      setenv(k, v, 1);
    }
  }
  ~Env() {
    for (const char* k : names) unsetenv(k);
  }
  std::vector<const char*> names;
};

TEST(Options, TheEnvironmentOverridesTheKnobsAndNamesABadValue) {
  Options o;
  apply_environment(o);  // none set: nothing changes
  EXPECT_EQ(o.threads, Options{}.threads);
  EXPECT_TRUE(o.cuda_graphs);
  {
    Env env({{"FP6SERVE_THREADS", "3"},
             {"FP6SERVE_CUDA_GRAPHS", "0"},
             {"FP6SERVE_FPX_CROSSOVER", "32"},
             {"FP6SERVE_CPU_ISA", "scalar"}});
    apply_environment(o);
  }
  EXPECT_EQ(o.threads, 3);
  EXPECT_FALSE(o.cuda_graphs);
  EXPECT_EQ(o.fpx_crossover, 32);
  EXPECT_EQ(o.cpu_isa, "scalar");
  for (const char* bad : {"x", "-1", "2", "1e3", ""}) {
    if (!*bad) continue;  // an empty variable counts as unset
    Env env({{"FP6SERVE_CUDA_GRAPHS", bad}});
    try {
      apply_environment(o);
      ADD_FAILURE() << "accepted FP6SERVE_CUDA_GRAPHS=" << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("FP6SERVE_CUDA_GRAPHS"), std::string::npos) << e.what();
    }
  }
}

TEST(GenerateOptions, EachBadOptionIsNamed) {
  auto error_of = [](const GenerateOptions& g) -> std::string {
    try {
      g.validate();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of(GenerateOptions{}), "");
  GenerateOptions g;
  g.max_new_tokens = 0;
  EXPECT_NE(error_of(g).find("max_new_tokens"), std::string::npos);
  g = {};
  g.stop = {"ok", ""};
  EXPECT_NE(error_of(g).find("stop"), std::string::npos);
  g = {};
  g.stop_token_ids = {-4};
  EXPECT_NE(error_of(g).find("stop_token_ids"), std::string::npos);
  g = {};
  g.frequency_penalty = 2.5;
  EXPECT_NE(error_of(g).find("frequency_penalty"), std::string::npos);
}

}  // namespace
}  // namespace fp6serve
