// Internal to the chat engine (src/chat/): jinja2's builtin filters and tests, the
// ones chat templates use (docs/chat_templates.md lists them). They are looked up by name
// when applied, so an unknown name fails at render time, naming its line.
#pragma once

#include <string>

#include "chat/jinja_runtime.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

// `input | name(args)`. An unknown name fails with "no filter named '...'".
Value apply_filter(Budget& budget, const std::string& name, const Value& input, const Args& args);
// `input is name(args)`, before any `not`. An unknown name fails with "no test named '...'".
bool apply_test(Budget& budget, const std::string& name, const Value& input, const Args& args);

}  // namespace fp6serve::jinja
