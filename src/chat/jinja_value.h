// Values of the Jinja subset that renders chat templates. They follow Python's data model
// because the reference renderer is Python jinja2: str() and repr() of lists and floats,
// truthiness, == between ints and floats, ordered dicts, and jinja2's default Undefined.
//
// Values are cheap to copy (strings, lists and dicts are shared and immutable once built);
// only a Namespace is mutable, as in jinja2, and it lives in one render only.
//
// Bounds that keep a hostile template from crashing the process: a value nests at most
// kMaxValueDepth levels (freeing, printing and comparing recurse once per level), and while a
// render runs, the memory of every value it builds is charged to its MemoryMeter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp6serve::jinja {

class Value;
class Budget;
struct Callable;

using ValueList = std::vector<Value>;

// Lists, dicts and bound methods nest at most this deep (a list holding a list ... 200 times);
// building a deeper one fails as Python's RecursionError would when printing it. Requests'
// JSON is held to the same depth, so every value prints, compares and frees within the stack.
constexpr int kMaxValueDepth = 200;

// The memory that one render's values take, counted live: while a meter is installed on the
// thread (MeterScope), each string, list, dict and namespace the Value factories build charges
// its bytes until it is freed, and one that would pass the limit throws
// fp6serve::Error(kInvalidArgument) instead of being built. Values built outside a render (the
// template's constants, the request's messages) are not charged. One render runs on one
// thread, so the counts need no atomics.
class MemoryMeter {
 public:
  explicit MemoryMeter(size_t limit) : limit_(limit) {}
  // Charges `bytes`, or throws (charging nothing) when the live total would pass the limit.
  void add(size_t bytes);
  // Throws when `bytes` more would pass the limit: for a size known before building.
  void check(size_t bytes) const;
  void release(size_t bytes) { live_ -= bytes; }
  size_t live() const { return live_; }
  size_t peak() const { return peak_; }

 private:
  size_t limit_;
  size_t live_ = 0;
  size_t peak_ = 0;
};

// Installs a meter on this thread for the scope's lifetime (the previous one comes back after).
class MeterScope {
 public:
  explicit MeterScope(std::shared_ptr<MemoryMeter> meter);
  ~MeterScope();
  MeterScope(const MeterScope&) = delete;
  MeterScope& operator=(const MeterScope&) = delete;

 private:
  std::shared_ptr<MemoryMeter> previous_;
};

// Insertion-ordered string-keyed map, as a Python dict built from JSON.
class ValueDict {
 public:
  const Value* find(std::string_view key) const;
  // Replaces the value of an existing key in place (Python keeps the first position).
  void set(std::string key, Value value);
  // Appends a key the caller knows is not there yet (JSON objects' keys are unique): no search,
  // so building a dict of n keys is linear, not quadratic.
  void append_new(std::string key, Value value);
  void clear();
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  size_t size() const;
  // The heap bytes this dict holds itself (its entries and long keys, not what they point to).
  size_t heap_bytes() const;

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
  // Containers fail (RuntimeError) when they would nest deeper than kMaxValueDepth, and while a
  // MemoryMeter is installed these charge it (fp6serve::Error past its limit).
  static Value string(std::string s);
  static Value list(ValueList items, bool tuple = false);
  static Value dict(ValueDict d);
  static Value ns(ValueDict attrs);
  // `depth`: the nesting depth of what the callable holds (a bound method's receiver).
  static Value callable(std::shared_ptr<const Callable> fn, int depth = 0);
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
  const std::string& undefined_hint() const;
  // Levels of lists, dicts, namespaces and bound methods: 0 for a scalar or string.
  int depth() const { return depth_; }

  bool truthy() const;
  // Python's type name, for messages: 'str object', 'list object'.
  std::string type_name() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  uint16_t depth_ = 0;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<const ValueDict> dict_;
  std::shared_ptr<Namespace> ns_;
  std::shared_ptr<const Callable> fn_;
  std::shared_ptr<const std::string> hint_;  // shared: copies of an Undefined allocate nothing
};

// Out of the class: clang instantiates the vector's size() where it is defined, which needs
// Value complete.
inline size_t ValueDict::size() const {
  return items_.size();
}

// Python str() and repr(); nested values print with repr as Python does. Nesting deeper than
// kMaxValueDepth levels (a namespace holding itself) throws. Printing stops soon after the
// text passes `max_bytes` (the caller's size check then fails), so a list holding one long
// string a million times costs no more than its limit.
std::string to_str(const Value& v, size_t max_bytes = SIZE_MAX);
std::string to_repr(const Value& v, size_t max_bytes = SIZE_MAX);
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
// Python json.dumps (transformers' tojson filter). Throws on values JSON cannot hold; stops
// past `max_bytes` as to_str() does.
std::string to_json_text(const Value& v, const JsonOptions& options, size_t max_bytes = SIZE_MAX);

// Python ==, and <, for the types where Python defines them (throws otherwise). With a
// budget, each item and each 16 bytes of string compared is charged as it goes, so comparing
// huge (or hugely shared) values stops at the work limit.
bool values_equal(const Value& a, const Value& b, Budget* budget = nullptr);
int compare_values(const Value& a, const Value& b, Budget* budget = nullptr);

// UTF-8 helpers: Python strings index by code point.
std::vector<char32_t> decode_utf8(std::string_view s);
void append_utf8(std::string& out, char32_t cp);
std::string encode_utf8(const std::u32string_view cps);
size_t count_code_points(std::string_view s);
// Python str.isspace() of one code point.
bool is_space(char32_t cp);

}  // namespace fp6serve::jinja
