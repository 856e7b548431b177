#include "chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "chat/jinja_error.h"
#include "chat/jinja_runtime.h"
#include "core/check.h"
#include "tokenizer/unicode.h"

namespace fp6serve::jinja {
namespace {

// Printing or comparing deeper than kMaxValueDepth can only be a cycle through a namespace
// (built values are no deeper); Python would raise RecursionError.
void check_depth(int depth) {
  if (depth > kMaxValueDepth) throw RuntimeError(fmt::format("values nested deeper than {}", kMaxValueDepth));
}

// The depth of a new container, checked.
uint16_t nest(int depth) {
  check_depth(depth);
  return static_cast<uint16_t>(depth);
}

// The meter of the render running on this thread (MeterScope), if any.
thread_local std::shared_ptr<MemoryMeter> t_meter;

// What each shared block costs besides its contents: the control block (with the deleter that
// releases the charge) and the allocator's headers.
constexpr size_t kBlockOverhead = 64;

size_t string_bytes(const std::string& s) {
  // Short strings live inside the std::string object (libstdc++'s small-string buffer).
  return sizeof(std::string) + (s.capacity() > 15 ? s.capacity() + 1 : 0);
}

// Frees a metered object and gives its bytes back to the meter.
template <typename T>
struct Release {
  std::shared_ptr<MemoryMeter> meter;
  size_t bytes;
  void operator()(T* p) const {
    meter->release(bytes);
    delete p;
  }
};

// `object` moved into a shared block, charged to this thread's meter (if one is installed)
// until the last reference goes.
template <typename T>
std::shared_ptr<T> share(T object, size_t bytes) {
  if (!t_meter) return std::make_shared<T>(std::move(object));
  bytes += kBlockOverhead;
  auto owned = std::make_unique<T>(std::move(object));
  t_meter->add(bytes);
  // If allocating the control block throws, shared_ptr runs the deleter, which releases.
  return std::shared_ptr<T>(owned.release(), Release<T>{t_meter, bytes});
}

template <typename Json>
Value value_from_json(const Json& j, int depth) {
  check_depth(depth);
  switch (j.type()) {
    case Json::value_t::null:
      return Value::none();
    case Json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case Json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case Json::value_t::number_unsigned: {
      const uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::floating(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case Json::value_t::number_float:
      return Value::floating(j.template get<double>());
    case Json::value_t::string:
      return Value::string(j.template get<std::string>());
    case Json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(value_from_json(e, depth + 1));
      return Value::list(std::move(items));
    }
    case Json::value_t::object: {
      ValueDict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.append_new(it.key(), value_from_json(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    default:
      throw RuntimeError("JSON value of an unsupported type (binary or discarded)");
  }
}

void repr_string(std::string& out, const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out += quote;
  for (char32_t cp : decode_utf8(s)) {
    if (cp == static_cast<char32_t>(quote) || cp == U'\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == U'\n') {
      out += "\\n";
    } else if (cp == U'\r') {
      out += "\\r";
    } else if (cp == U'\t') {
      out += "\\t";
    } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
      out += fmt::format("\\x{:02x}", static_cast<uint32_t>(cp));
    } else if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x2064) ||
               cp == 0x1680 || cp == 0x3000 || cp == 0xfeff || (cp >= 0xd800 && cp <= 0xdfff) ||
               (cp >= 0xe000 && cp <= 0xf8ff)) {
      // Unicode separators, format and private-use characters are not printable in Python.
      out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
    } else {
      append_utf8(out, cp);
    }
  }
  out += quote;
}

// Appends repr(v) to `out`, stopping once `out` passes `max` bytes (every item appends at
// least one byte, so the work is bounded by `max` too).
void append_repr(std::string& out, const Value& v, int depth, size_t max) {
  check_depth(depth);
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      out += "Undefined";
      return;
    case Value::Kind::kNone:
      out += "None";
      return;
    case Value::Kind::kBool:
      out += v.as_bool() ? "True" : "False";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.as_int());
      return;
    case Value::Kind::kFloat:
      out += float_repr(v.as_float());
      return;
    case Value::Kind::kString:
      repr_string(out, v.as_string());
      return;
    case Value::Kind::kList: {
      out += v.is_tuple() ? '(' : '[';
      const auto& items = v.as_list();
      for (size_t i = 0; i < items.size() && out.size() <= max; ++i) {
        if (i) out += ", ";
        append_repr(out, items[i], depth + 1, max);
      }
      if (v.is_tuple() && items.size() == 1) out += ',';
      out += v.is_tuple() ? ')' : ']';
      return;
    }
    case Value::Kind::kDict: {
      out += '{';
      bool first = true;
      for (const auto& [k, e] : v.as_dict().items()) {
        if (out.size() > max) return;
        if (!first) out += ", ";
        first = false;
        repr_string(out, k);
        out += ": ";
        append_repr(out, e, depth + 1, max);
      }
      out += '}';
      return;
    }
    case Value::Kind::kNamespace: {
      out += "<Namespace {";
      bool first = true;
      for (const auto& [k, e] : v.as_namespace()->attrs.items()) {
        if (out.size() > max) return;
        if (!first) out += ", ";
        first = false;
        repr_string(out, k);
        out += ": ";
        append_repr(out, e, depth + 1, max);
      }
      out += "}>";
      return;
    }
    case Value::Kind::kCallable:
      out += "<function>";
      return;
  }
}

void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (char32_t cp : decode_utf8(s)) {
    switch (cp) {
      case U'"':
        out += "\\\"";
        continue;
      case U'\\':
        out += "\\\\";
        continue;
      case U'\n':
        out += "\\n";
        continue;
      case U'\r':
        out += "\\r";
        continue;
      case U'\t':
        out += "\\t";
        continue;
      case U'\b':
        out += "\\b";
        continue;
      case U'\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    if (cp < 0x20 || (ensure_ascii && cp >= 0x7f)) {
      if (cp >= 0x10000) {
        const char32_t v = cp - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", static_cast<uint32_t>(0xd800 + (v >> 10)),
                           static_cast<uint32_t>(0xdc00 + (v & 0x3ff)));
      } else {
        out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
      }
    } else {
      append_utf8(out, cp);
    }
  }
  out += '"';
}

// JSON of `v` appended to `out`, stopping past `max` bytes as append_repr() does.
void append_json(std::string& out, const Value& v, const JsonOptions& o, int depth, size_t max) {
  check_depth(depth);
  const bool pretty = o.indent >= 0 || !o.indent_string.empty();
  const std::string item_sep = o.has_separators ? o.item_separator : (pretty ? "," : ", ");
  const std::string key_sep = o.has_separators ? o.key_separator : ": ";
  const auto newline = [&](int level) {
    if (!pretty) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += o.indent_string;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      out += "null";
      return;
    case Value::Kind::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      out += std::to_string(v.as_int());
      return;
    case Value::Kind::kFloat: {
      const double f = v.as_float();
      if (std::isnan(f))
        out += "NaN";
      else if (std::isinf(f))
        out += f > 0 ? "Infinity" : "-Infinity";
      else
        out += float_repr(f);
      return;
    }
    case Value::Kind::kString:
      json_string(out, v.as_string(), o.ensure_ascii);
      return;
    case Value::Kind::kList: {
      const auto& items = v.as_list();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (out.size() > max) return;
        if (i) out += item_sep;
        newline(depth + 1);
        append_json(out, items[i], o, depth + 1, max);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::kDict: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.as_dict().items()) items.push_back(&kv);
      if (items.empty()) {
        out += "{}";
        return;
      }
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (out.size() > max) return;
        if (i) out += item_sep;
        newline(depth + 1);
        json_string(out, items[i]->first, o.ensure_ascii);
        out += key_sep;
        append_json(out, items[i]->second, o, depth + 1, max);
      }
      newline(depth);
      out += '}';
      return;
    }
    default:
      throw RuntimeError(
          fmt::format("Object of type {} is not JSON serializable", v.is_undefined() ? "Undefined" : v.type_name()));
  }
}

bool equal_at(const Value& a, const Value& b, int depth, Budget* budget) {
  check_depth(depth);
  if (budget) budget->charge(1);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_float() == b.as_float();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      if (budget) budget->charge(std::min(a.as_string().size(), b.as_string().size()) / 16);
      return a.as_string() == b.as_string();
    case Value::Kind::kList: {
      const auto& x = a.as_list();
      const auto& y = b.as_list();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!equal_at(x[i], y[i], depth + 1, budget)) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      const auto& x = a.as_dict();
      const auto& y = b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, e] : x.items()) {
        if (budget) budget->charge(y.size() / 16);  // find() is a linear search
        const Value* other = y.find(k);
        if (!other || !equal_at(e, *other, depth + 1, budget)) return false;
      }
      return true;
    }
    case Value::Kind::kNamespace:
      return a.as_namespace() == b.as_namespace();
    case Value::Kind::kCallable:
      return a.as_callable() == b.as_callable();
    default:
      return false;
  }
}

int compare_at(const Value& a, const Value& b, int depth, Budget* budget) {
  check_depth(depth);
  if (budget) budget->charge(1);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    const double x = a.as_float(), y = b.as_float();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    // UTF-8 byte order is code point order, which is Python's str order.
    if (budget) budget->charge(std::min(a.as_string().size(), b.as_string().size()) / 16);
    const int c = a.as_string().compare(b.as_string());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    const auto& x = a.as_list();
    const auto& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equal_at(x[i], y[i], depth + 1, budget)) return compare_at(x[i], y[i], depth + 1, budget);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  throw RuntimeError(fmt::format("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name()));
}

}  // namespace

const Value* ValueDict::find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void ValueDict::set(std::string key, Value value) {
  for (auto& [k, v] : items_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items_.emplace_back(std::move(key), std::move(value));
}

void ValueDict::append_new(std::string key, Value value) {
  items_.emplace_back(std::move(key), std::move(value));
}

void ValueDict::clear() {
  items_.clear();
}

size_t ValueDict::heap_bytes() const {
  size_t n = items_.capacity() * sizeof(items_[0]);
  for (const auto& [k, v] : items_) n += string_bytes(k) - sizeof(std::string);
  return n;
}

void MemoryMeter::add(size_t bytes) {
  check(bytes);
  live_ += bytes;
  peak_ = std::max(peak_, live_);
}

void MemoryMeter::check(size_t bytes) const {
  if (bytes > limit_ || live_ > limit_ - bytes) {
    FP6_THROW(kInvalidArgument, "chat template rendering exceeded its memory limit of {} bytes", limit_);
  }
}

MeterScope::MeterScope(std::shared_ptr<MemoryMeter> meter) : previous_(std::exchange(t_meter, std::move(meter))) {}

MeterScope::~MeterScope() {
  t_meter = std::move(previous_);
}

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.hint_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

const std::string& Value::undefined_hint() const {
  static const std::string kNone;
  return hint_ ? *hint_ : kNone;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::floating(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  const size_t bytes = string_bytes(s);
  v.s_ = share(std::move(s), bytes);
  return v;
}

Value Value::list(ValueList items, bool tuple) {
  int depth = 0;
  for (const Value& item : items) depth = std::max(depth, item.depth());
  Value v;
  v.kind_ = Kind::kList;
  v.tuple_ = tuple;
  v.depth_ = nest(depth + 1);
  const size_t bytes = sizeof(ValueList) + items.capacity() * sizeof(Value);
  v.list_ = share(std::move(items), bytes);
  return v;
}

Value Value::dict(ValueDict d) {
  int depth = 0;
  for (const auto& [k, e] : d.items()) depth = std::max(depth, e.depth());
  Value v;
  v.kind_ = Kind::kDict;
  v.depth_ = nest(depth + 1);
  const size_t bytes = sizeof(ValueDict) + d.heap_bytes();
  v.dict_ = share(std::move(d), bytes);
  return v;
}

// A namespace counts one level whatever it holds: its attributes change after it is built,
// the renderer empties every namespace when it ends (so none is freed recursively), and
// printing one checks the depth as it goes.
Value Value::ns(ValueDict attrs) {
  Value v;
  v.kind_ = Kind::kNamespace;
  v.depth_ = 1;
  const size_t bytes = sizeof(Namespace) + attrs.heap_bytes();
  v.ns_ = share(Namespace{std::move(attrs)}, bytes);
  return v;
}

Value Value::callable(std::shared_ptr<const Callable> fn, int depth) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.depth_ = nest(depth);
  v.fn_ = std::move(fn);
  return v;
}

Value Value::from_json(const nlohmann::json& j) {
  return value_from_json(j, 0);
}
Value Value::from_json(const nlohmann::ordered_json& j) {
  return value_from_json(j, 0);
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0;
    case Kind::kString:
      return !s_->empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return dict_->size() != 0;
    default:
      return true;
  }
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return tuple_ ? "tuple" : "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kCallable:
      return "function";
  }
  return "object";
}

std::string to_str(const Value& v, size_t max_bytes) {
  if (v.is_string()) return v.as_string();
  if (v.is_undefined()) return {};
  return to_repr(v, max_bytes);
}

std::string to_repr(const Value& v, size_t max_bytes) {
  std::string out;
  append_repr(out, v, 0, max_bytes);
  return out;
}

std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: scientific when the exponent is
  // below -4 or at least 16, else positional with at least one decimal.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), f, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e_pos = sci.find('e');
  std::string digits = sci.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(sci.substr(e_pos + 1));
  if (exponent < -4 || exponent >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out;
  }
  std::string out = sign;
  if (exponent < 0) {
    out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
    out += digits + std::string(static_cast<size_t>(exponent) + 1 - digits.size(), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(exponent) + 1) + "." + digits.substr(static_cast<size_t>(exponent) + 1);
  }
  return out;
}

std::string to_json_text(const Value& v, const JsonOptions& options, size_t max_bytes) {
  std::string out;
  append_json(out, v, options, 0, max_bytes);
  return out;
}

bool values_equal(const Value& a, const Value& b, Budget* budget) {
  return equal_at(a, b, 0, budget);
}
int compare_values(const Value& a, const Value& b, Budget* budget) {
  return compare_at(a, b, 0, budget);
}

std::vector<char32_t> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = 1;
    char32_t cp = c;
    if (c >= 0xf0 && c < 0xf8) {
      len = 4;
      cp = c & 0x07;
    } else if (c >= 0xe0) {
      len = c < 0xf0 ? 3 : 1;
      cp = c & 0x0f;
    } else if (c >= 0xc0) {
      len = 2;
      cp = c & 0x1f;
    }
    bool ok = len > 1 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) {
      // A stray byte stands for itself, so invalid UTF-8 survives a round trip.
      out.push_back(c);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  out += text::codepoint_to_utf8(static_cast<uint32_t>(cp));
}

std::string encode_utf8(const std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t cp : cps) append_utf8(out, cp);
  return out;
}

size_t count_code_points(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return decode_utf8(s).size();
  }
  return s.size();
}

bool is_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

}  // namespace fp6serve::jinja
