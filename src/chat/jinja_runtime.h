// Internal to the chat engine (src/chat/): what every part of the Jinja interpreter
// shares. The evaluator (jinja_render.cc), the operators, methods, globals and filters all
// raise Python's errors the same way, take arguments the same way, iterate as Python does,
// and charge one budget, so those live here rather than in any one of them.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <memory>
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

// repr(v) for an error message: at most about 100 bytes, so naming a huge value costs nothing.
std::string short_repr(const Value& v);
// jinja2's UndefinedError message for `v`: its hint ("'x' is undefined") when it has one.
std::string undefined_message(const Value& v);
// jinja2's default Undefined is falsy and prints empty, but using it as an operand fails.
const Value& require_defined(const Value& v);
// Python's TypeError for an argument of the wrong type; `what` names the argument.
const std::string& require_string(const Value& v, std::string_view what);
int64_t require_int(const Value& v, std::string_view what);

// d's value for `key`, or null. ValueDict searches linearly, so each lookup costs work for
// the dict's size: a request's message with 100,000 keys, read once per message of a long
// conversation, reaches the work limit instead of taking minutes.
const Value* find_key(Budget& budget, const ValueDict& d, std::string_view key);

// Python len(), in code points for strings; Undefined has length 0.
int64_t length_of(const Value& v);

// The work, output and memory limits of one render (RenderLimits). Whatever builds strings
// or lists charges the work it does, so a hostile template fails fast instead of exhausting
// time; the memory of the values it builds is charged to meter() (installed on the thread by
// the renderer) for as long as they live. Limits exceeded throw
// fp6serve::Error(kInvalidArgument) directly, not a RuntimeError, so no template construct can
// catch or reword them.
class Budget {
 public:
  Budget(const RenderLimits& limits, std::shared_ptr<MemoryMeter> meter) : limits_(limits), meter_(std::move(meter)) {}

  // Adds `units` of work (about one per evaluated node, per item or per 16 bytes built).
  void charge(uint64_t units);
  // Fails when a string of `bytes` would pass the output limit.
  void check_size(size_t bytes) const;
  // Fails when values of `bytes` more would pass the memory limit: a size known before building
  // (a list repeated n times), checked before anything is allocated.
  void check_memory(size_t bytes) const { meter_->check(bytes); }
  // A built string or list, charged and checked.
  Value make_string(std::string s);
  Value make_list(ValueList items, bool tuple = false);
  // str(v) and JSON of v: printing stops past the output limit (then fails), and the bytes
  // are charged, so printing a value that shares one long string a million times is cheap
  // to refuse.
  std::string str(const Value& v);
  std::string json(const Value& v, const JsonOptions& options);

  const std::shared_ptr<MemoryMeter>& meter() const { return meter_; }

 private:
  const RenderLimits& limits_;
  uint64_t work_ = 0;
  std::shared_ptr<MemoryMeter> meter_;
};

// Python iteration: list items, a string's characters (code points), a dict's keys;
// Undefined iterates as empty, as jinja2's default Undefined does. A list is not copied: the
// Iteration shares it, so `for` over a long list (or loops nested over it) costs no memory.
// Iterating a string or dict builds its items, which costs work per item.
class Iteration {
 public:
  Iteration(Budget& budget, const Value& v);
  const ValueList& items() const { return list_.as_list(); }
  ValueList::const_iterator begin() const { return items().begin(); }
  ValueList::const_iterator end() const { return items().end(); }
  size_t size() const { return items().size(); }
  bool empty() const { return items().empty(); }
  const Value& operator[](size_t i) const { return items()[i]; }

 private:
  Value list_;  // v itself when it is a list, else a list of what it iterates as
};
inline Iteration iterate(Budget& budget, const Value& v) {
  return Iteration(budget, v);
}

}  // namespace fp6serve::jinja
