// Internal to the chat engine (src/chat/): Python's str operations, as the
// filters (jinja_filters.cc) and str methods (jinja_methods.cc) need them.
//
// Python strings are sequences of code points, so everything here decodes UTF-8 where Python
// would count characters (strip sets, split on whitespace, case mapping). Case mapping
// covers ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (docs/chat_templates.md):
// Python maps every script, but those are the languages chat content mostly comes in.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "chat/jinja_runtime.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

// str.upper(), str.lower(), str.capitalize() (first character upper, the rest lower).
std::string to_upper(const std::string& s);
std::string to_lower(const std::string& s);
std::string capitalize(const std::string& s);
// str.title(): a cased character after an uncased one starts a word ("they're" -> "They'Re").
std::string py_title(const std::string& s);
// jinja2's title filter, which differs: words start after whitespace, '-', '(', '{', '[' or '<'.
std::string jinja_title(const std::string& s);

// str.strip/lstrip/rstrip: `chars` null or none strips Unicode whitespace, else the code
// points of that string.
std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right);

// The first occurrence of `needle` in `hay` at or after `from` (rfind_text: the last one that
// starts at or before `from`), or npos. Work is charged as the search goes (the bytes scanned,
// and each candidate's comparison before it is made), so a search that would take quadratic
// time, a long needle on repetitive text, stops at the work limit instead of hanging.
size_t find_text(Budget& budget, std::string_view hay, std::string_view needle, size_t from);
size_t rfind_text(Budget& budget, std::string_view hay, std::string_view needle, size_t from);

// str.split()/rsplit() without a separator: runs of whitespace separate, none are kept at the
// ends; with `maxsplit` >= 0 the unsplit rest keeps its whitespace.
ValueList split_whitespace(const std::string& s, int64_t maxsplit, bool from_right);
// str.split(sep)/rsplit(sep): every occurrence separates, empty pieces included.
ValueList split_on(Budget& budget, const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right);
// str.splitlines() for \n, \r and \r\n.
ValueList split_lines(const std::string& s);

// str.replace(old, new, count); count < 0 replaces all. An empty `old` inserts `repl` around
// every character, as Python does. The result is checked against the output limit as it
// grows ('x'*10**6).replace('', 'y'*10**6) would be a terabyte).
std::string replace_all(Budget& budget, const std::string& s, const std::string& old, const std::string& repl,
                        int64_t count);

// markupsafe's escape(), which jinja2's escape filter is: & < > " ' as entities.
std::string html_escape(const std::string& s);

// str.format with {} / {0} / {name} fields and {{ }} escapes; format specs, conversions and
// field attributes fail. The result is checked against the output limit as it grows.
std::string python_format(Budget& budget, const std::string& s, const Args& args);

}  // namespace fp6serve::jinja
