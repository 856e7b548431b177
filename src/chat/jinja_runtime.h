// Internal to the chat engine (src/chat/): what every part of the Jinja interpreter
// shares. The evaluator (jinja_render.cc), the operators, methods, globals and filters all
// raise Python's errors the same way, take arguments the same way, iterate as Python does,
// and charge one budget, so those live here rather than in any one of them.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chat/jinja_render.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

// Raises a Python-level error (TypeError, ValueError, ...) as RuntimeError; the innermost
// expression being evaluated stamps its line:column on it (jinja_error.h).
[[noreturn]] void fail(const std::string& message);

// The arguments of a call, filter or test, evaluated: positional, then keyword.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  // The argument at position `index`, or passed as `name`; null when absent.
  const Value* get(size_t index, std::string_view name) const {
    if (index < pos.size()) return &pos[index];
    for (const auto& [k, v] : kw) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  void check_max(size_t n, std::string_view what) const {
    if (pos.size() > n) fail(fmt::format("{}() takes at most {} positional arguments ({} given)", what, n, pos.size()));
  }
};

// jinja2's UndefinedError message for `v`: its hint ("'x' is undefined") when it has one.
std::string undefined_message(const Value& v);
// jinja2's default Undefined is falsy and prints empty, but using it as an operand fails.
const Value& require_defined(const Value& v);
// Python's TypeError for an argument of the wrong type; `what` names the argument.
const std::string& require_string(const Value& v, std::string_view what);
int64_t require_int(const Value& v, std::string_view what);

// Python iteration: list items, a string's characters (code points), a dict's keys;
// Undefined iterates as empty, as jinja2's default Undefined does.
ValueList iterate(const Value& v);
// Python len(), in code points for strings; Undefined has length 0.
int64_t length_of(const Value& v);

// The work and output limits of one render (RenderLimits). Whatever builds strings or lists
// charges the work it does, so a hostile template fails fast instead of exhausting memory or
// time; limits exceeded throw fp6serve::Error(kInvalidArgument) directly, not a RuntimeError,
// so no template construct can catch or reword them.
class Budget {
 public:
  explicit Budget(const RenderLimits& limits) : limits_(limits) {}

  // Adds `units` of work (about one per evaluated node, per item or per 16 bytes built).
  void charge(uint64_t units);
  // Fails when a string of `bytes` would pass the output limit.
  void check_size(size_t bytes) const;
  // A built string or list, charged and checked.
  Value make_string(std::string s);
  Value make_list(ValueList items);

 private:
  const RenderLimits& limits_;
  uint64_t work_ = 0;
};

}  // namespace fp6serve::jinja
