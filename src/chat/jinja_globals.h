// Internal to the chat engine (src/chat/): the global functions a chat template
// can call, as transformers' environment provides them: range, dict, namespace,
// raise_exception and strftime_now.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_runtime.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

// The globals as name/value pairs (Callables of kind kBuiltin), for the outermost scope: the
// template's variables are looked up first, so a variable named like a global hides it.
std::vector<std::pair<std::string, Value>> global_functions();

// Calls global `name`. raise_exception(msg) throws fp6serve::Error(kInvalidArgument) with the
// template's message as it is (the server answers 400 with it); the others raise Python's
// errors through fail().
Value call_global(Budget& budget, const std::string& name, const Args& args);

}  // namespace fp6serve::jinja
