// The Jinja operators on values (declared in jinja_operators.h): Python's arithmetic,
// comparisons, `in`, slicing, and jinja2's attribute and item lookup.
#include "chat/jinja_operators.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "chat/jinja_methods.h"
#include "chat/python_strings.h"

namespace fp6serve::jinja {
namespace {

// Python slice semantics over `n` items: negative bounds count from the end, out-of-range
// bounds clamp, a negative step walks backwards from the end.
std::vector<size_t> slice_indices(int64_t n, const Value* start_v, const Value* stop_v, const Value* step_v) {
  const auto bound = [](const Value* v) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    return require_int(*v, "slice index");
  };
  const int64_t step = bound(step_v).value_or(1);
  if (step == 0) fail("slice step cannot be zero");
  const auto clamp = [&](std::optional<int64_t> v, int64_t def) {
    if (!v) return def;
    int64_t x = *v;
    if (x < 0) x += n;
    if (step > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t start = clamp(bound(start_v), step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(bound(stop_v), step > 0 ? n : -1);
  // Counted first and indexed as start + k * step, never stepping past the end: `i += step`
  // would overflow int64 for a step near its limits (x[::9223372036854775807]).
  const uint64_t span = step > 0 ? (stop > start ? static_cast<uint64_t>(stop - start) : 0)
                                 : (start > stop ? static_cast<uint64_t>(start - stop) : 0);
  const uint64_t stride = step > 0 ? static_cast<uint64_t>(step) : uint64_t{0} - static_cast<uint64_t>(step);
  const uint64_t count = span == 0 ? 0 : (span - 1) / stride + 1;
  std::vector<size_t> out;
  out.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t offset = k * stride;  // < span <= n: no overflow
    out.push_back(
        static_cast<size_t>(step > 0 ? static_cast<uint64_t>(start) + offset : static_cast<uint64_t>(start) - offset));
  }
  return out;
}

// a * b, or SIZE_MAX when it would overflow (a size that can only fail its check).
size_t saturating_mul(size_t a, size_t b) {
  size_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

// Python's // on ints rounds toward negative infinity (C++ truncates toward zero).
int64_t floor_div(int64_t a, int64_t b) {
  if (b == 0) fail("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) fail("integer overflow");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

int64_t floor_mod(int64_t a, int64_t b) {
  if (b == 0) fail("integer division or modulo by zero");
  if (b == -1) return 0;  // INT64_MIN % -1 traps in C++
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

int64_t checked(bool overflow, int64_t v) {
  if (overflow) fail("integer overflow");
  return v;
}

Value unary_op(ExprKind kind, const Value& operand) {
  const Value& v = require_defined(operand);
  if (!v.is_number())
    fail(fmt::format("bad operand type for unary {}: '{}'", kind == ExprKind::kNeg ? '-' : '+', v.type_name()));
  if (kind == ExprKind::kPos) return v.kind() == Value::Kind::kBool ? Value::integer(v.as_int()) : v;
  if (v.kind() == Value::Kind::kFloat) return Value::floating(-v.as_float());
  return Value::integer(checked(v.as_int() == INT64_MIN, -v.as_int()));
}

Value binary_op(Budget& budget, BinOp op, const Value& a, const Value& b) {
  // jinja2's `~` converts both sides with str(), so an Undefined side joins as "".
  if (op == BinOp::kConcat) {
    std::string s = budget.str(a);
    s += budget.str(b);
    return budget.make_string(std::move(s));
  }
  require_defined(a);
  require_defined(b);
  const auto type_error = [&](const char* sym) -> Value {
    fail(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", sym, a.type_name(), b.type_name()));
  };
  switch (op) {
    case BinOp::kAdd:
      if (a.is_string() && b.is_string()) {
        budget.check_size(a.as_string().size() + b.as_string().size());
        return budget.make_string(a.as_string() + b.as_string());
      }
      // Python concatenates list + list and tuple + tuple, never a list with a tuple. The
      // copy's size is checked before it is made: doubling a list in a loop fails at the
      // memory limit, not after allocating gigabytes.
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        const size_t n = a.as_list().size() + b.as_list().size();
        budget.charge(n);
        budget.check_memory(saturating_mul(n, sizeof(Value)));
        ValueList items;
        items.reserve(n);
        items.insert(items.end(), a.as_list().begin(), a.as_list().end());
        items.insert(items.end(), b.as_list().begin(), b.as_list().end());
        return Value::list(std::move(items), a.is_tuple());
      }
      if (a.is_string() || b.is_string()) {
        fail(
            fmt::format("can only concatenate str (not \"{}\") to str", a.is_string() ? b.type_name() : a.type_name()));
      }
      if (!a.is_number() || !b.is_number()) return type_error("+");
      if (a.is_integral() && b.is_integral()) {
        int64_t r = 0;
        if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow");
        return Value::integer(r);
      }
      return Value::floating(a.as_float() + b.as_float());
    case BinOp::kSub:
      if (!a.is_number() || !b.is_number()) return type_error("-");
      if (a.is_integral() && b.is_integral()) {
        int64_t r = 0;
        if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow");
        return Value::integer(r);
      }
      return Value::floating(a.as_float() - b.as_float());
    case BinOp::kMul: {
      // Sequence repetition, either way round ('ab' * 3, 3 * [x]); a negative count gives
      // an empty sequence. The size is checked before building, so 'x' * 10**9 fails at once,
      // and an empty sequence is answered without looping ('' * 10**15 would spin for days).
      const Value* seq = a.is_string() || a.is_list() ? &a : b.is_string() || b.is_list() ? &b : nullptr;
      if (seq) {
        const Value& count = seq == &a ? b : a;
        if (!count.is_integral())
          fail(fmt::format("can't multiply sequence by non-int of type '{}'", count.type_name()));
        const size_t n = static_cast<size_t>(std::max<int64_t>(count.as_int(), 0));
        if (seq->is_string()) {
          const std::string& text = seq->as_string();
          if (text.empty() || n == 0) return Value::string("");
          budget.check_size(saturating_mul(n, text.size()));
          std::string out;
          out.reserve(n * text.size());
          for (size_t i = 0; i < n; ++i) out += text;
          return budget.make_string(std::move(out));
        }
        const ValueList& items = seq->as_list();
        if (items.empty() || n == 0) return Value::list({}, seq->is_tuple());
        const size_t total = saturating_mul(n, items.size());
        budget.check_memory(saturating_mul(total, sizeof(Value)));
        budget.charge(total);
        ValueList out;
        out.reserve(total);
        for (size_t i = 0; i < n; ++i) out.insert(out.end(), items.begin(), items.end());
        return Value::list(std::move(out), seq->is_tuple());
      }
      if (!a.is_number() || !b.is_number()) return type_error("*");
      if (a.is_integral() && b.is_integral()) {
        int64_t r = 0;
        if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow");
        return Value::integer(r);
      }
      return Value::floating(a.as_float() * b.as_float());
    }
    case BinOp::kDiv:  // always a float in Python 3
      if (!a.is_number() || !b.is_number()) return type_error("/");
      if (b.as_float() == 0) fail("division by zero");
      return Value::floating(a.as_float() / b.as_float());
    case BinOp::kFloorDiv:
      if (!a.is_number() || !b.is_number()) return type_error("//");
      if (a.is_integral() && b.is_integral()) return Value::integer(floor_div(a.as_int(), b.as_int()));
      if (b.as_float() == 0) fail("float floor division by zero");
      return Value::floating(std::floor(a.as_float() / b.as_float()));
    case BinOp::kMod:
      if (!a.is_number() || !b.is_number()) return type_error("%");
      if (a.is_integral() && b.is_integral()) return Value::integer(floor_mod(a.as_int(), b.as_int()));
      {
        // The float remainder takes the divisor's sign too, unlike fmod's.
        const double y = b.as_float();
        if (y == 0) fail("float modulo");
        double r = std::fmod(a.as_float(), y);
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value::floating(r);
      }
    case BinOp::kPow:
      if (!a.is_number() || !b.is_number()) return type_error("**");
      // int ** non-negative int stays an int; a negative exponent or a float gives a float.
      // Bases 0, 1 and -1 are answered directly; any other overflows int64 (an error) within
      // 63 multiplications.
      if (a.is_integral() && b.is_integral() && b.as_int() >= 0) {
        const int64_t base = a.as_int(), e = b.as_int();
        if (base == 0 || base == 1) return Value::integer(e == 0 ? 1 : base);
        if (base == -1) return Value::integer(e % 2 ? -1 : 1);
        int64_t r = 1;
        for (int64_t k = 0; k < e; ++k)
          if (__builtin_mul_overflow(r, base, &r)) fail("integer overflow");
        return Value::integer(r);
      }
      return Value::floating(std::pow(a.as_float(), b.as_float()));
    default:
      return Value();
  }
}

// Ordering uses compare_values (jinja_value.h), which fails where Python raises TypeError
// ('<' between str and int); an Undefined operand fails first, with its own message.
bool compare_op(Budget& budget, CmpOp op, const Value& a, const Value& b) {
  switch (op) {
    case CmpOp::kEq:
      return values_equal(a, b, &budget);
    case CmpOp::kNe:
      return !values_equal(a, b, &budget);
    case CmpOp::kIn:
      return contains(budget, b, a);
    case CmpOp::kNotIn:
      return !contains(budget, b, a);
    default:
      break;
  }
  require_defined(a);
  require_defined(b);
  const int c = compare_values(a, b, &budget);
  switch (op) {
    case CmpOp::kLt:
      return c < 0;
    case CmpOp::kLe:
      return c <= 0;
    case CmpOp::kGt:
      return c > 0;
    default:
      return c >= 0;
  }
}

bool contains(Budget& budget, const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string())
        fail(fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
      return find_text(budget, container.as_string(), item.as_string(), 0) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.as_list()) {
        if (values_equal(v, item, &budget)) return true;
      }
      return false;
    case Value::Kind::kDict:  // keys are strings, so nothing else is in a dict
      return item.is_string() && find_key(budget, container.as_dict(), item.as_string()) != nullptr;
    default:
      fail(fmt::format("argument of type '{}' is not iterable", container.type_name()));
  }
}

Value slice_value(Budget& budget, const Value& obj, const Value* start, const Value* stop, const Value* step) {
  if (obj.is_string()) {
    budget.charge(obj.as_string().size() / 16);  // decoded whole, whatever the slice
    const auto cps = decode_utf8(obj.as_string());
    std::u32string out;
    for (size_t i : slice_indices(static_cast<int64_t>(cps.size()), start, stop, step)) out += cps[i];
    return budget.make_string(encode_utf8(out));
  }
  if (obj.is_list()) {
    const auto& items = obj.as_list();
    ValueList out;
    for (size_t i : slice_indices(static_cast<int64_t>(items.size()), start, stop, step)) out.push_back(items[i]);
    return budget.make_list(std::move(out), obj.is_tuple());
  }
  fail(fmt::format("'{}' object is not subscriptable", obj.type_name()));
}

Value get_attr(Budget& budget, const Value& obj, const std::string& name) {
  require_defined(obj);
  // The sandbox hides underscore attributes (__class__ and the like); only using them fails.
  if (!name.empty() && name[0] == '_') return Value::undefined(fmt::format("access to '{}' is unsafe", name));
  if (Value method = bound_method(obj, name); !method.is_undefined()) return method;
  switch (obj.kind()) {
    case Value::Kind::kDict:
      if (const Value* v = find_key(budget, obj.as_dict(), name)) return *v;
      break;
    case Value::Kind::kNamespace:
      if (const Value* v = find_key(budget, obj.as_namespace()->attrs, name)) return *v;
      break;
    default:
      break;
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
}

Value get_item(Budget& budget, const Value& obj, const Value& key) {
  require_defined(obj);
  switch (obj.kind()) {
    case Value::Kind::kList:
      if (key.is_integral()) {
        const auto& items = obj.as_list();
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(items.size());
        if (i >= 0 && i < static_cast<int64_t>(items.size())) return items[static_cast<size_t>(i)];
        return Value::undefined(fmt::format("'{} object' has no element {}", obj.type_name(), key.as_int()));
      }
      break;
    case Value::Kind::kString:
      if (key.is_integral()) {
        budget.charge(obj.as_string().size() / 16);
        const auto cps = decode_utf8(obj.as_string());
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(cps.size());
        if (i >= 0 && i < static_cast<int64_t>(cps.size())) {
          std::string s;
          append_utf8(s, cps[static_cast<size_t>(i)]);
          return Value::string(std::move(s));
        }
        return Value::undefined(fmt::format("'str object' has no element {}", key.as_int()));
      }
      break;
    case Value::Kind::kDict:
      if (key.is_string()) {
        if (const Value* v = find_key(budget, obj.as_dict(), key.as_string())) return *v;
      }
      break;
    default:
      break;
  }
  if (key.is_string()) return get_attr(budget, obj, key.as_string());
  return Value::undefined(fmt::format("'{} object' has no element {}", obj.type_name(), short_repr(key)));
}

Value attribute_path(Budget& budget, const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (true) {
    budget.charge(1);
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    // jinja2 turns an all-digit part into an int; one too long for int64 names no item of
    // any list, so it stays a (missing) key rather than throwing std::out_of_range.
    int64_t index = 0;
    const auto parsed = std::from_chars(part.data(), part.data() + part.size(), index);
    const bool digits =
        !part.empty() && part[0] != '-' && parsed.ec == std::errc() && parsed.ptr == part.data() + part.size();
    v = get_item(budget, v, digits ? Value::integer(index) : Value::string(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

}  // namespace fp6serve::jinja
