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

// The evaluator recurses once per statement and expression level it is inside, and a macro
// call starts again from the macro's body, so parse-time nesting (kMaxNestingDepth per
// template) times macro depth (max_call_depth) would be unbounded stack. This bounds the
// total: twice the parse limit, and 40 times what real templates reach (12 levels, plus a few
// per level of a recursive macro). A level takes about 1 KB of stack in an optimized build and
// up to 10 KB under AddressSanitizer, so 512 levels fit an 8 MB thread stack in both.
constexpr int kMaxRenderNesting = 512;

struct RenderLimits {
  size_t max_output_bytes = 0;
  uint64_t max_work = 0;                // roughly: evaluated nodes plus bytes and items built
  size_t max_memory_bytes = 0;          // live bytes of the values the render builds (MemoryMeter)
  int max_call_depth = 64;              // macro calls in progress
  int max_nesting = kMaxRenderNesting;  // statements and expressions being evaluated, across macro calls
};

// A value that can be called: a global function, a method bound to its receiver, or a macro.
struct Callable {
  enum class Kind { kBuiltin, kMethod, kMacro };
  Kind kind = Kind::kBuiltin;
  std::string name;
  Value receiver;
  const Stmt* macro = nullptr;
};

// What a render's memory meter saw, filled in whether the render succeeded or threw.
struct RenderStats {
  size_t peak_memory_bytes = 0;  // the most the values it built held at once
  // What its values still held once it was over: nonzero only if a value outlived the render
  // (a reference cycle the renderer failed to break), which would be a leak.
  size_t leaked_memory_bytes = 0;
};

// Renders `program` with `variables` as the template's context. raise_exception() throws
// fp6serve::Error(kInvalidArgument) with the template's message; other failures throw
// fp6serve::Error(kInvalidArgument) naming the template line.
std::string render_program(const Program& program, const ValueDict& variables, const RenderLimits& limits,
                           RenderStats* stats = nullptr);

}  // namespace fp6serve::jinja
