// Internal to the chat engine (src/chat/): what the Jinja operators do to values.
// Arithmetic, comparison, membership, slicing and attribute/item lookup follow Python and
// jinja2's sandboxed environment, because the reference renderer is Python jinja2: ints are
// 64-bit here (overflow fails instead of growing), everything else is Python's result.
#pragma once

#include <cstdint>
#include <string>

#include "chat/jinja_parser.h"
#include "chat/jinja_runtime.h"
#include "chat/jinja_value.h"

namespace fp6serve::jinja {

// `-x` and `+x` (kind kNeg or kPos): numbers only; +True is 1.
Value unary_op(ExprKind kind, const Value& v);
// `a op b` for the arithmetic operators and `~` (which joins str() of both sides).
Value binary_op(Budget& budget, BinOp op, const Value& a, const Value& b);
// One link of a comparison chain: == and != take any two values; <, <=, >, >= numbers,
// strings or lists, and fail on others as Python's TypeError.
bool compare_op(Budget& budget, CmpOp op, const Value& a, const Value& b);
// `item in container`: substring, list element, dict key; nothing is in Undefined.
bool contains(Budget& budget, const Value& container, const Value& item);
// obj[start:stop:step] on a string (by code point) or a list/tuple; null bounds are absent.
Value slice_value(Budget& budget, const Value& obj, const Value* start, const Value* stop, const Value* step);

// jinja2's environment.getattr (`obj.name`): a method of the object first, then its item.
// A missing attribute is Undefined (failing only when used), as in jinja2.
Value get_attr(Budget& budget, const Value& obj, const std::string& name);
// jinja2's environment.getitem (`obj[key]`): the item first, then for a string key the
// attribute, so `d['items']` is the item and `d.items` the method.
// Indexing a string costs work for its length (Python indexes code points, so it is decoded).
Value get_item(Budget& budget, const Value& obj, const Value& key);
// jinja2's make_attrgetter, behind map(attribute=), sort(attribute=), selectattr...:
// "a.b.0" looks up a, then b, then item 0.
Value attribute_path(Budget& budget, const Value& item, const std::string& path);

// Python's % on ints: the result takes the divisor's sign; a zero divisor fails.
int64_t floor_mod(int64_t a, int64_t b);
// `v`, unless `overflow`: then fails with "integer overflow" (Python's ints would grow).
int64_t checked(bool overflow, int64_t v);

}  // namespace fp6serve::jinja
