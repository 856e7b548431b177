// The interpreter of parsed chat templates: jinja2's scoping (a for-loop iteration has its
// own scope, `if` does not), its default Undefined, the builtin filters and tests chat
// templates use, Python's string and dict methods, and the globals transformers provides
// (raise_exception, strftime_now, namespace, range, dict). Rendering is bounded: output size,
// total work and call depth are limited, so a hostile template fails instead of hanging.
//
// jinja_render.cc holds the evaluator; the rest of the interpreter is in internal files:
// jinja_operators (arithmetic, comparison, lookup), jinja_methods and python_strings (Python's
// methods), jinja_globals, jinja_filters (filters and tests) and jinja_runtime (shared parts).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "chat/jinja_parser.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

struct RenderLimits {
  size_t max_output_bytes = 0;
  uint64_t max_work = 0;  // roughly: evaluated nodes plus bytes and items built
  int max_call_depth = 64;
};

// A value that can be called: a global function, a method bound to its receiver, or a macro.
struct Callable {
  enum class Kind { kBuiltin, kMethod, kMacro };
  Kind kind = Kind::kBuiltin;
  std::string name;
  Value receiver;
  const Stmt* macro = nullptr;
};

// Renders `program` with `variables` as the template's context. raise_exception() throws
// fp6serve::Error(kInvalidArgument) with the template's message; other failures throw
// fp6serve::Error(kInvalidArgument) naming the template line.
std::string render_program(const Program& program, const ValueDict& variables, const RenderLimits& limits);

}  // namespace fp6serve::jinja
