// The builtin filters (`x | trim`) and tests (`x is defined`) of chat templates, as jinja2
// defines them (declared in jinja_filters.h). Each is a function of the input and the call's
// arguments, looked up by name in a table at the end of its section; arguments are read by
// position or by jinja2's parameter name, so `tojson(indent=2)` and `tojson(false, 2)` agree.
#include "chat/jinja_filters.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "chat/jinja_operators.h"
#include "chat/python_strings.h"

namespace fp6serve::jinja {
namespace {

using FilterFn = Value (*)(Budget&, const Value&, const Args&);
using TestFn = bool (*)(Budget&, const Value&, const Args&);

// select/reject and their attribute forms: `args` starts with the test name (after the
// attribute for selectattr/rejectattr); without a test, the item's truthiness decides.
Value select(Budget& b, const Value& seq, const Args& args, bool by_attribute, bool keep_if) {
  Args rest;
  std::string attribute;
  size_t first = 0;
  if (by_attribute) {
    if (args.pos.empty()) fail("selectattr needs an attribute name");
    attribute = b.str(args.pos[0]);
    first = 1;
  }
  std::string test;
  if (args.pos.size() > first) test = b.str(args.pos[first]);
  for (size_t i = first + 1; i < args.pos.size(); ++i) rest.pos.push_back(args.pos[i]);
  rest.kw = args.kw;
  ValueList out;
  for (const Value& item : iterate(b, seq)) {
    b.charge(1);
    const Value probe = by_attribute ? attribute_path(b, item, attribute) : item;
    const bool pass = test.empty() ? probe.truthy() : apply_test(b, test, probe, rest);
    if (pass == keep_if) out.push_back(item);
  }
  return b.make_list(std::move(out));
}

// ---- filters ----------------------------------------------------------------------------
// Filters that build text take str() of their input, as jinja2's do (`5|upper` is "5").

Value filter_trim(Budget& b, const Value& v, const Args& a) {
  return b.make_string(strip_chars(b.str(v), a.get(0, "chars"), true, true));
}
Value filter_length(Budget& b, const Value& v, const Args&) {
  if (v.is_string()) b.charge(v.as_string().size() / 16);  // code points are counted
  return Value::integer(length_of(v));
}
Value filter_upper(Budget& b, const Value& v, const Args&) {
  return b.make_string(to_upper(b.str(v)));
}
Value filter_lower(Budget& b, const Value& v, const Args&) {
  return b.make_string(to_lower(b.str(v)));
}
Value filter_title(Budget& b, const Value& v, const Args&) {
  return b.make_string(jinja_title(b.str(v)));
}
Value filter_capitalize(Budget& b, const Value& v, const Args&) {
  return b.make_string(capitalize(b.str(v)));
}
Value filter_string(Budget& b, const Value& v, const Args&) {
  return v.is_string() ? v : b.make_string(b.str(v));
}
// No autoescaping in chat templates, so a "safe" string is just a string.
Value filter_safe(Budget& b, const Value& v, const Args& a) {
  return filter_string(b, v, a);
}
Value filter_escape(Budget& b, const Value& v, const Args&) {
  return b.make_string(html_escape(b.str(v)));
}

// default(value, boolean=false): replaces Undefined only, or with boolean any falsy value.
Value filter_default(Budget&, const Value& v, const Args& a) {
  const Value* def = a.get(0, "default_value");
  const Value* boolean = a.get(1, "boolean");
  const bool use_default = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
  if (!use_default) return v;
  return def ? *def : Value::string("");
}

Value filter_join(Budget& b, const Value& v, const Args& a) {
  const Value* sep = a.get(0, "d");  // jinja2 names the separator `d`
  const Value* attribute = a.get(1, "attribute");
  const std::string separator = sep ? b.str(*sep) : std::string();
  std::string out;
  bool first = true;
  for (const Value& item : iterate(b, v)) {
    if (!first) out += separator;
    first = false;
    out += b.str(attribute ? attribute_path(b, item, b.str(*attribute)) : item);
    b.check_size(out.size());
  }
  return b.make_string(std::move(out));
}

Value filter_tojson(Budget& b, const Value& v, const Args& a) {
  // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  JsonOptions o;
  if (const Value* x = a.get(0, "ensure_ascii")) o.ensure_ascii = x->truthy();
  if (const Value* x = a.get(1, "indent"); x && !x->is_none()) {
    if (x->is_string()) {
      o.indent = 0;
      o.indent_string = x->as_string();
    } else {
      o.indent = static_cast<int>(std::clamp<int64_t>(require_int(*x, "indent"), 0, 64));
      o.indent_string.assign(static_cast<size_t>(o.indent), ' ');
    }
  }
  if (const Value* x = a.get(2, "separators"); x && !x->is_none()) {
    const Iteration parts = iterate(b, *x);
    if (parts.size() != 2) fail("separators must be a pair of strings");
    o.has_separators = true;
    o.item_separator = require_string(parts[0], "separator");
    o.key_separator = require_string(parts[1], "separator");
  }
  if (const Value* x = a.get(3, "sort_keys")) o.sort_keys = x->truthy();
  return b.make_string(b.json(v, o));
}

// A string's first or last character is read directly, without iterating all of them.
Value filter_first(Budget& b, const Value& v, const Args&) {
  if (v.is_string() && !v.as_string().empty()) {
    const std::string& s = v.as_string();
    const auto cps = decode_utf8(std::string_view(s).substr(0, 4));
    std::string first;
    append_utf8(first, cps[0]);
    return Value::string(std::move(first));
  }
  const Iteration items = iterate(b, v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items[0];
}

Value filter_last(Budget& b, const Value& v, const Args&) {
  if (v.is_string() && !v.as_string().empty()) {
    b.charge(v.as_string().size() / 16);
    const auto cps = decode_utf8(v.as_string());
    std::string last;
    append_utf8(last, cps.back());
    return Value::string(std::move(last));
  }
  const Iteration items = iterate(b, v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items[items.size() - 1];
}

Value filter_list(Budget& b, const Value& v, const Args&) {
  return b.make_list(iterate(b, v).items());
}

// (key, value) tuples; Undefined gives an empty list, as in jinja2.
Value filter_items(Budget& b, const Value& v, const Args&) {
  if (v.is_undefined()) return Value::list({});
  if (!v.is_dict()) fail("Can only get item pairs from a mapping.");
  ValueList out;
  for (const auto& [k, e] : v.as_dict().items()) out.push_back(Value::list({Value::string(k), e}, true));
  return b.make_list(std::move(out));
}

Value filter_replace(Budget& b, const Value& v, const Args& a) {
  const Value* old = a.get(0, "old");
  const Value* repl = a.get(1, "new");
  if (!old || !repl) fail("replace filter needs old and new");
  const Value* count = a.get(2, "count");
  return b.make_string(replace_all(b, b.str(v), b.str(*old), b.str(*repl),
                                   count && !count->is_none() ? require_int(*count, "count") : -1));
}

// A string's float value as the int and float filters read it (whitespace around and
// underscores ignored), or nullopt.
std::optional<double> parse_float(const std::string& text) {
  const std::string s = strip_chars(text, nullptr, true, true);
  if (s.empty()) return std::nullopt;
  std::string digits;
  for (char c : s) {
    if (c != '_') digits += c;
  }
  char* end = nullptr;
  const double f = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size()) return std::nullopt;
  return f;
}

// A float's int value truncated toward zero, as Python's int(); Python's ints grow, ours
// stop at int64 ("integer overflow" rather than undefined behavior of an out-of-range cast).
int64_t truncate_float(double f) {
  const double t = std::trunc(f);
  // -2^63 is exact in a double; 2^63 is the first value past INT64_MAX.
  if (!(t >= -9223372036854775808.0 && t < 9223372036854775808.0)) fail("integer overflow");
  return static_cast<int64_t>(t);
}

// int(default=0, base=10): a string that is no number gives the default.
Value filter_int(Budget& b, const Value& v, const Args& a) {
  const Value* def = a.get(0, "default");
  const Value* base_v = a.get(1, "base");
  const Value fallback = def ? *def : Value::integer(0);
  require_defined(v);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.kind() == Value::Kind::kFloat) {
    if (!std::isfinite(v.as_float())) return fallback;
    return Value::integer(truncate_float(v.as_float()));
  }
  if (v.is_string()) {
    b.charge(v.as_string().size() / 16);
    const std::string s = strip_chars(v.as_string(), nullptr, true, true);
    const int64_t base = base_v ? require_int(*base_v, "base") : 10;
    std::string digits;
    for (char c : s) {
      if (c != '_') digits += c;
    }
    // Python refuses other bases (ValueError), and jinja2 then retries through float.
    if (!digits.empty() && (base == 0 || (base >= 2 && base <= 36))) {
      char* end = nullptr;
      errno = 0;
      const long long i = std::strtoll(digits.c_str(), &end, static_cast<int>(base));
      if (end == digits.c_str() + digits.size() && errno == 0) return Value::integer(i);
    }
    // "42.23"|int is 42, as jinja2 retries through float.
    if (auto f = parse_float(v.as_string()); f && std::isfinite(*f)) return Value::integer(truncate_float(*f));
  }
  return fallback;
}

Value filter_float(Budget& b, const Value& v, const Args& a) {
  const Value* def = a.get(0, "default");
  const Value fallback = def ? *def : Value::floating(0.0);
  require_defined(v);
  if (v.is_number()) return Value::floating(v.as_float());
  if (v.is_string()) {
    b.charge(v.as_string().size() / 16);
    if (auto f = parse_float(v.as_string())) return Value::floating(*f);
  }
  return fallback;
}

Value filter_reverse(Budget& b, const Value& v, const Args&) {
  if (v.is_string()) {
    b.charge(v.as_string().size() / 16);
    auto cps = decode_utf8(v.as_string());
    std::reverse(cps.begin(), cps.end());
    return b.make_string(encode_utf8(std::u32string_view(cps.data(), cps.size())));
  }
  ValueList items = iterate(b, v).items();
  std::reverse(items.begin(), items.end());
  return b.make_list(std::move(items));
}

// map('filter', args...) applies a filter to each item; map(attribute='a.b', default=x)
// looks each item up. The attribute form is keyword-only, as in jinja2.
Value filter_map(Budget& b, const Value& v, const Args& a) {
  ValueList out;
  if (const Value* attribute = a.get(SIZE_MAX, "attribute")) {
    const Value* def = a.get(SIZE_MAX, "default");
    for (const Value& item : iterate(b, v)) {
      Value x = attribute_path(b, item, b.str(*attribute));
      if (x.is_undefined() && def) x = *def;
      out.push_back(std::move(x));
    }
    return b.make_list(std::move(out));
  }
  if (a.pos.empty()) fail("map requires a filter argument");
  const std::string filter = b.str(a.pos[0]);
  Args rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const Value& item : iterate(b, v)) out.push_back(apply_filter(b, filter, item, rest));
  return b.make_list(std::move(out));
}

Value filter_select(Budget& b, const Value& v, const Args& a) {
  return select(b, v, a, false, true);
}
Value filter_reject(Budget& b, const Value& v, const Args& a) {
  return select(b, v, a, false, false);
}
Value filter_selectattr(Budget& b, const Value& v, const Args& a) {
  return select(b, v, a, true, true);
}
Value filter_rejectattr(Budget& b, const Value& v, const Args& a) {
  return select(b, v, a, true, false);
}

Value filter_abs(Budget&, const Value& v, const Args&) {
  require_defined(v);
  if (v.kind() == Value::Kind::kFloat) return Value::floating(std::fabs(v.as_float()));
  if (v.is_integral()) return Value::integer(checked(v.as_int() == INT64_MIN, std::llabs(v.as_int())));
  fail(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}

// round(precision=0, method='common') always returns a float, as jinja2's does.
Value filter_round(Budget& b, const Value& v, const Args& a) {
  require_defined(v);
  if (!v.is_number()) fail(fmt::format("type {} doesn't define __round__ method", v.type_name()));
  const Value* precision_v = a.get(0, "precision");
  const Value* method_v = a.get(1, "method");
  const int64_t precision = precision_v ? require_int(*precision_v, "precision") : 0;
  const std::string method = method_v ? b.str(*method_v) : "common";
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  double rounded;
  if (method == "common") {
    rounded = std::nearbyint(x);  // Python's round(): halves go to even
  } else if (method == "ceil") {
    rounded = std::ceil(x);
  } else if (method == "floor") {
    rounded = std::floor(x);
  } else {
    fail("method must be common, ceil or floor");
  }
  return Value::floating(rounded / scale);
}

// sum(attribute=None, start=0), with ints staying ints until a float joins.
Value filter_sum(Budget& b, const Value& v, const Args& a) {
  const Value* attribute = a.get(0, "attribute");
  const Value* start = a.get(1, "start");
  Value total = start ? *start : Value::integer(0);
  for (const Value& item : iterate(b, v)) {
    const Value x = attribute ? attribute_path(b, item, b.str(*attribute)) : item;
    require_defined(x);
    if (!x.is_number() || !total.is_number()) fail("sum filter needs numbers");
    if (x.is_integral() && total.is_integral()) {
      int64_t s = 0;
      if (__builtin_add_overflow(total.as_int(), x.as_int(), &s)) fail("integer overflow");
      total = Value::integer(s);
    } else {
      total = Value::floating(total.as_float() + x.as_float());
    }
  }
  return total;
}

// Sort key of jinja2's sort/dictsort/min/max: strings compare case-insensitively by default.
Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(to_lower(v.as_string()));
  return v;
}

// sort(reverse, case_sensitive, attribute): stable, as Python's sorted().
Value filter_sort(Budget& b, const Value& v, const Args& a) {
  const Value* reverse = a.get(0, "reverse");
  const Value* case_sensitive = a.get(1, "case_sensitive");
  const Value* attribute = a.get(2, "attribute");
  std::vector<std::pair<Value, Value>> keyed;
  for (const Value& item : iterate(b, v)) {
    Value key = attribute ? attribute_path(b, item, b.str(*attribute)) : item;
    keyed.emplace_back(sort_key(key, case_sensitive && case_sensitive->truthy()), item);
  }
  const bool desc = reverse && reverse->truthy();
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return desc ? compare_values(y.first, x.first, &b) < 0 : compare_values(x.first, y.first, &b) < 0;
  });
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return b.make_list(std::move(out));
}

// dictsort(case_sensitive, by='key'|'value', reverse): (key, value) tuples in order.
Value filter_dictsort(Budget& b, const Value& v, const Args& a) {
  if (!v.is_dict()) fail("dictsort needs a mapping");
  const Value* case_sensitive = a.get(0, "case_sensitive");
  const Value* by = a.get(1, "by");
  const Value* reverse = a.get(2, "reverse");
  const bool by_value = by && b.str(*by) == "value";
  const bool cs = case_sensitive && case_sensitive->truthy();
  // The keys are made once, not in each of the n log n comparisons.
  std::vector<std::pair<Value, const std::pair<std::string, Value>*>> keyed;
  for (const auto& kv : v.as_dict().items()) {
    keyed.emplace_back(sort_key(by_value ? kv.second : Value::string(kv.first), cs), &kv);
  }
  const bool desc = reverse && reverse->truthy();
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return desc ? compare_values(y.first, x.first, &b) < 0 : compare_values(x.first, y.first, &b) < 0;
  });
  ValueList out;
  for (const auto& [key, kv] : keyed) out.push_back(Value::list({Value::string(kv->first), kv->second}, true));
  return b.make_list(std::move(out));
}

// min/max(case_sensitive, attribute): the first of equal items wins; empty gives Undefined.
Value min_max(Budget& b, const Value& v, const Args& a, bool want_max) {
  const Value* case_sensitive = a.get(0, "case_sensitive");
  const Value* attribute = a.get(1, "attribute");
  const bool cs = case_sensitive && case_sensitive->truthy();
  const Iteration items = iterate(b, v);
  if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
  const Value* best = &items[0];
  Value best_key = sort_key(attribute ? attribute_path(b, items[0], b.str(*attribute)) : items[0], cs);
  for (size_t i = 1; i < items.size(); ++i) {
    Value key = sort_key(attribute ? attribute_path(b, items[i], b.str(*attribute)) : items[i], cs);
    const int c = compare_values(key, best_key, &b);
    if (want_max ? c > 0 : c < 0) {
      best = &items[i];
      best_key = std::move(key);
    }
  }
  return *best;
}
Value filter_min(Budget& b, const Value& v, const Args& a) {
  return min_max(b, v, a, false);
}
Value filter_max(Budget& b, const Value& v, const Args& a) {
  return min_max(b, v, a, true);
}

// unique(case_sensitive, attribute): first occurrences, in order. Quadratic, hence the charge.
Value filter_unique(Budget& b, const Value& v, const Args& a) {
  const Value* case_sensitive = a.get(0, "case_sensitive");
  const Value* attribute = a.get(1, "attribute");
  const bool cs = case_sensitive && case_sensitive->truthy();
  ValueList out, keys;
  for (const Value& item : iterate(b, v)) {
    Value key = sort_key(attribute ? attribute_path(b, item, b.str(*attribute)) : item, cs);
    b.charge(keys.size());
    if (std::none_of(keys.begin(), keys.end(), [&](const Value& k) { return values_equal(k, key, &b); })) {
      keys.push_back(std::move(key));
      out.push_back(item);
    }
  }
  return b.make_list(std::move(out));
}

// indent(width=4, first=false, blank=false): width may be a string to indent with. Lines
// after the first are indented unless blank (whitespace only) and `blank` is off.
Value filter_indent(Budget& b, const Value& v, const Args& a) {
  const Value* width_v = a.get(0, "width");
  const Value* first_v = a.get(1, "first");
  const Value* blank_v = a.get(2, "blank");
  std::string pad = "    ";
  if (width_v)
    pad = width_v->is_string()
              ? width_v->as_string()
              : std::string(static_cast<size_t>(std::clamp<int64_t>(require_int(*width_v, "width"), 0, 1024)), ' ');
  const bool first = first_v && first_v->truthy();
  const bool blank = blank_v && blank_v->truthy();
  const std::string s = b.str(v);
  std::string out;
  size_t start = 0;
  bool line0 = true;
  while (true) {
    const size_t nl = s.find('\n', start);
    const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    const bool indent = line0 ? first : (blank || !strip_chars(line, nullptr, true, true).empty());
    if (indent && !(line0 && line.empty() && nl == std::string::npos && !first)) out += pad;
    out += line;
    b.check_size(out.size());  // a long pad on many short lines multiplies the size
    if (nl == std::string::npos) break;
    out += '\n';
    start = nl + 1;
    line0 = false;
  }
  return b.make_string(std::move(out));
}

Value filter_attr(Budget& b, const Value& v, const Args& a) {
  const Value* name = a.get(0, "name");
  if (!name) fail("attr filter needs a name");
  // jinja2's attr looks up attributes only, never items.
  const Value found = get_attr(b, v, b.str(*name));
  if (v.is_dict() && found.kind() != Value::Kind::kCallable) return Value::undefined("no such attribute");
  return found;
}

Value filter_wordcount(Budget& b, const Value& v, const Args&) {
  return Value::integer(static_cast<int64_t>(split_whitespace(b.str(v), -1, false).size()));
}

// The filter table; `count` and `length`, `d` and `default`, `e` and `escape` are aliases.
const FilterFn* find_filter(std::string_view name) {
  static const std::unordered_map<std::string_view, FilterFn> kFilters = {
      {"abs", filter_abs},           {"attr", filter_attr},       {"capitalize", filter_capitalize},
      {"count", filter_length},      {"d", filter_default},       {"default", filter_default},
      {"dictsort", filter_dictsort}, {"e", filter_escape},        {"escape", filter_escape},
      {"first", filter_first},       {"float", filter_float},     {"indent", filter_indent},
      {"int", filter_int},           {"items", filter_items},     {"join", filter_join},
      {"last", filter_last},         {"length", filter_length},   {"list", filter_list},
      {"lower", filter_lower},       {"map", filter_map},         {"max", filter_max},
      {"min", filter_min},           {"reject", filter_reject},   {"rejectattr", filter_rejectattr},
      {"replace", filter_replace},   {"reverse", filter_reverse}, {"round", filter_round},
      {"safe", filter_safe},         {"select", filter_select},   {"selectattr", filter_selectattr},
      {"sort", filter_sort},         {"string", filter_string},   {"sum", filter_sum},
      {"title", filter_title},       {"tojson", filter_tojson},   {"trim", filter_trim},
      {"unique", filter_unique},     {"upper", filter_upper},     {"wordcount", filter_wordcount},
  };
  const auto it = kFilters.find(name);
  return it == kFilters.end() ? nullptr : &it->second;
}

// ---- tests ------------------------------------------------------------------------------
// Type tests follow jinja2: a bool is not an `integer`, though arithmetic treats it as 1 or 0.

// The one argument of a comparison test (`x is eq 1`, `x is divisibleby(3)`).
const Value& test_arg(const Args& a, std::string_view test) {
  const Value* v = a.get(0, "other");
  if (!v) fail(fmt::format("test '{}' needs an argument", test));
  return *v;
}

bool test_defined(Budget&, const Value& v, const Args&) {
  return !v.is_undefined();
}
bool test_undefined(Budget&, const Value& v, const Args&) {
  return v.is_undefined();
}
bool test_none(Budget&, const Value& v, const Args&) {
  return v.is_none();
}
bool test_boolean(Budget&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kBool;
}
bool test_true(Budget&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kBool && v.as_bool();
}
bool test_false(Budget&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kBool && !v.as_bool();
}
bool test_integer(Budget&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kInt;
}
bool test_float(Budget&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kFloat;
}
bool test_number(Budget&, const Value& v, const Args&) {
  return v.is_number();
}
bool test_string(Budget&, const Value& v, const Args&) {
  return v.is_string();
}
bool test_mapping(Budget&, const Value& v, const Args&) {
  return v.is_dict();
}
// Undefined iterates as empty and has a length, so jinja2 calls it iterable and a sequence.
bool test_iterable(Budget&, const Value& v, const Args&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool test_sequence(Budget& b, const Value& v, const Args& a) {
  return test_iterable(b, v, a);
}
bool test_callable(Budget&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kCallable;
}
// Python's `is`, approximated: same kind and equal value (CPython shares the small ints and
// short strings templates compare this way).
bool test_sameas(Budget& b, const Value& v, const Args& a) {
  const Value& o = test_arg(a, "sameas");
  if (v.kind() != o.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kNone:
    case Value::Kind::kUndefined:
      return true;
    case Value::Kind::kBool:
      return v.as_bool() == o.as_bool();
    default:
      return values_equal(v, o, &b);
  }
}
bool test_even(Budget&, const Value& v, const Args&) {
  return require_int(v, "even test value") % 2 == 0;
}
bool test_odd(Budget&, const Value& v, const Args&) {
  return require_int(v, "odd test value") % 2 != 0;
}
bool test_divisibleby(Budget&, const Value& v, const Args& a) {
  return floor_mod(require_int(v, "divisibleby value"), require_int(test_arg(a, "divisibleby"), "divisor")) == 0;
}
bool test_eq(Budget& b, const Value& v, const Args& a) {
  return values_equal(v, test_arg(a, "eq"), &b);
}
bool test_ne(Budget& b, const Value& v, const Args& a) {
  return !values_equal(v, test_arg(a, "ne"), &b);
}
bool test_lt(Budget& b, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "lt"), &b) < 0;
}
bool test_le(Budget& b, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "le"), &b) <= 0;
}
bool test_gt(Budget& b, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "gt"), &b) > 0;
}
bool test_ge(Budget& b, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "ge"), &b) >= 0;
}
bool test_in(Budget& b, const Value& v, const Args& a) {
  return contains(b, test_arg(a, "in"), v);
}
bool test_lower(Budget& b, const Value& v, const Args&) {
  const std::string s = b.str(v);
  return to_lower(s) == s;
}
bool test_upper(Budget& b, const Value& v, const Args&) {
  const std::string s = b.str(v);
  return to_upper(s) == s;
}
// Nothing is Markup without autoescaping.
bool test_escaped(Budget&, const Value&, const Args&) {
  return false;
}

// The test table, with jinja2's aliases (equalto, ==, lessthan, <, ...).
const TestFn* find_test(std::string_view name) {
  static const std::unordered_map<std::string_view, TestFn> kTests = {
      {"defined", test_defined},
      {"undefined", test_undefined},
      {"none", test_none},
      {"boolean", test_boolean},
      {"true", test_true},
      {"false", test_false},
      {"integer", test_integer},
      {"float", test_float},
      {"number", test_number},
      {"string", test_string},
      {"mapping", test_mapping},
      {"iterable", test_iterable},
      {"sequence", test_sequence},
      {"callable", test_callable},
      {"sameas", test_sameas},
      {"even", test_even},
      {"odd", test_odd},
      {"divisibleby", test_divisibleby},
      {"eq", test_eq},
      {"equalto", test_eq},
      {"==", test_eq},
      {"ne", test_ne},
      {"!=", test_ne},
      {"lt", test_lt},
      {"lessthan", test_lt},
      {"<", test_lt},
      {"le", test_le},
      {"<=", test_le},
      {"gt", test_gt},
      {"greaterthan", test_gt},
      {">", test_gt},
      {"ge", test_ge},
      {">=", test_ge},
      {"in", test_in},
      {"lower", test_lower},
      {"upper", test_upper},
      {"escaped", test_escaped},
  };
  const auto it = kTests.find(name);
  return it == kTests.end() ? nullptr : &it->second;
}

}  // namespace

Value apply_filter(Budget& budget, const std::string& name, const Value& input, const Args& args) {
  const FilterFn* fn = find_filter(name);
  if (!fn) fail(fmt::format("no filter named '{}'", name));
  return (*fn)(budget, input, args);
}

bool apply_test(Budget& budget, const std::string& name, const Value& input, const Args& args) {
  const TestFn* fn = find_test(name);
  if (!fn) fail(fmt::format("no test named '{}'", name));
  return (*fn)(budget, input, args);
}

}  // namespace fp6serve::jinja
