// Errors inside the Jinja interpreter. A RuntimeError is a Python-level failure (TypeError,
// UndefinedError, ...); the innermost expression that sees it stamps its position, and the
// renderer turns it into fp6serve::Error. raise_exception() and exceeded limits throw
// fp6serve::Error directly, so their messages reach the caller unchanged.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace fp6serve::jinja {

class RuntimeError : public std::runtime_error {
 public:
  explicit RuntimeError(const std::string& message) : std::runtime_error(message) {}

  bool has_position() const { return line_ > 0; }
  void set_position(int line, int col) {
    line_ = line;
    col_ = col;
  }
  int line() const { return line_; }
  int col() const { return col_; }

 private:
  int line_ = 0;
  int col_ = 0;
};

}  // namespace fp6serve::jinja
