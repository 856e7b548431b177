// Internal to the chat engine (src/chat/): the Python methods templates call on
// values, `message.content.strip()`, `d.items()`, `names.index(x)`, and loop.cycle().
//
// Looking a method up (`obj.name`) and calling it are separate steps, as in Python: get_attr
// (jinja_operators.h) asks bound_method() first, which yields a Callable of kind kMethod
// bound to its receiver; the evaluator then calls it through call_method(). Values are
// immutable, as in jinja2's ImmutableSandboxedEnvironment: the mutating list and dict methods
// are found (so `x.append` is not undefined) but calling them fails.
#pragma once

#include <string>

#include "chat/jinja_runtime.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

// `obj.name` as a bound method when obj's type has a method of that name (str, dict and list
// methods), else Undefined.
Value bound_method(const Value& obj, const std::string& name);

// Calls method `name` of `self` (a str, dict or list), or "loop.cycle" with the iteration
// index as `self`.
Value call_method(Budget& budget, const Value& self, const std::string& name, const Args& args);

}  // namespace fp6serve::jinja
