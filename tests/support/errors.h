// The message of the fp6serve::Error a call throws, for tests of error texts.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "fp6serve/error.h"

namespace fp6serve::testing {

// Runs fn; expects it to throw an fp6serve::Error of `expected_kind` and returns its message
// (a test failure and "" when it throws none).
inline std::string error_of(const std::function<void()>& fn, ErrorKind expected_kind) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), expected_kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return {};
}

}  // namespace fp6serve::testing
