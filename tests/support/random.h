// Seeds of the randomized tests: fresh each run (so inputs vary from run to run), or fixed by
// FP6SERVE_TEST_SEED=<n> to reproduce a failure. The k-th seed a test draws is base + k; the
// base is printed and recorded as a property of the test, so a failing run says how to repeat
// it (FP6SERVE_TEST_SEED=<base> with --gtest_filter=<that test>).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace fp6serve::testing {

inline uint64_t test_seed() {
  static std::string test;
  static uint64_t base = 0, drawn = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
  if (drawn == 0 || name != test) {
    test = name;
    drawn = 0;
    const char* env = std::getenv("FP6SERVE_TEST_SEED");
    base = env && *env ? std::strtoull(env, nullptr, 10)
                       : ((static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}()) >> 1;
    std::printf("[ seed     ] %s: FP6SERVE_TEST_SEED=%llu\n", name.c_str(), static_cast<unsigned long long>(base));
    if (info) ::testing::Test::RecordProperty("seed", std::to_string(base));
  }
  return base + drawn++;
}

}  // namespace fp6serve::testing
