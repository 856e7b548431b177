// Values of the Jinja subset that renders chat templates. They follow Python's data model
// because the reference renderer is Python jinja2: str() and repr() of lists and floats,
// truthiness, == between ints and floats, ordered dicts, and jinja2's default Undefined.
//
// Values are cheap to copy (strings, lists and dicts are shared and immutable once built);
// only a Namespace is mutable, as in jinja2, and it lives in one render only.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp6serve::jinja {

class Value;
struct Callable;

using ValueList = std::vector<Value>;

// Insertion-ordered string-keyed map, as a Python dict built from JSON.
class ValueDict {
 public:
  const Value* find(std::string_view key) const;
  // Replaces the value of an existing key in place (Python keeps the first position).
  void set(std::string key, Value value);
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<std::string, Value>> items_;
};

// jinja2's namespace(): the one object a template may change (set ns.attr = ...).
struct Namespace {
  ValueDict attrs;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable };

  Value() = default;  // Undefined
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  static Value list(ValueList items, bool tuple = false);
  static Value dict(ValueDict d);
  static Value ns(std::shared_ptr<Namespace> ns);
  static Value callable(std::shared_ptr<const Callable> fn);
  // JSON objects keep their member order (ordered_json) or come sorted (json).
  static Value from_json(const nlohmann::json& j);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  // Python's bool is an int: True + 1 == 2.
  bool is_integral() const { return kind_ == Kind::kInt || kind_ == Kind::kBool; }
  bool is_number() const { return is_integral() || kind_ == Kind::kFloat; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == Kind::kBool ? (b_ ? 1 : 0) : i_; }
  double as_float() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(as_int()); }
  const std::string& as_string() const { return *s_; }
  const ValueList& as_list() const { return *list_; }
  bool is_tuple() const { return tuple_; }
  const ValueDict& as_dict() const { return *dict_; }
  const std::shared_ptr<Namespace>& as_namespace() const { return ns_; }
  const std::shared_ptr<const Callable>& as_callable() const { return fn_; }
  // What an Undefined stands for ("'x' is undefined"), for error messages.
  const std::string& undefined_hint() const { return hint_; }

  bool truthy() const;
  // Python's type name, for messages: 'str object', 'list object'.
  std::string type_name() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<const ValueDict> dict_;
  std::shared_ptr<Namespace> ns_;
  std::shared_ptr<const Callable> fn_;
  std::string hint_;
};

// Python str() and repr(); nested values print with repr as Python does. Nesting deeper than
// 200 levels (a namespace holding itself) throws.
std::string to_str(const Value& v);
std::string to_repr(const Value& v);
// Python float repr: shortest round trip, ".0" on integral values, exponent outside 1e-4..1e16.
std::string float_repr(double f);

struct JsonOptions {
  bool ensure_ascii = false;
  int indent = -1;  // < 0: one line
  std::string indent_string;
  bool has_separators = false;
  std::string item_separator;
  std::string key_separator;
  bool sort_keys = false;
};
// Python json.dumps (transformers' tojson filter). Throws on values JSON cannot hold.
std::string to_json_text(const Value& v, const JsonOptions& options);

// Python ==, and <, for the types where Python defines them (throws otherwise).
bool values_equal(const Value& a, const Value& b);
int compare_values(const Value& a, const Value& b);

// UTF-8 helpers: Python strings index by code point.
std::vector<char32_t> decode_utf8(std::string_view s);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(const std::u32string_view cps);
size_t count_code_points(std::string_view s);
// Python str.isspace() of one code point.
bool is_space(char32_t cp);

}  // namespace fp6serve::jinja
