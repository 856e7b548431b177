#include "chat/jinja_render.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "core/check.h"
#include "chat/jinja_error.h"

namespace fp6serve::jinja {
namespace {

// jinja2's sandbox refuses larger ranges (MAX_RANGE).
constexpr int64_t kMaxRange = 100000;
constexpr uint64_t kIterationCost = 16;

[[noreturn]] void fail(const std::string& message) {
  throw RuntimeError(message);
}

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;

  // The argument at position `index`, or passed as `name`; null when absent.
  const Value* get(size_t index, std::string_view name) const {
    if (index < pos.size()) return &pos[index];
    for (const auto& [k, v] : kw) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  void check_max(size_t n, std::string_view what) const {
    if (pos.size() > n) fail(fmt::format("{}() takes at most {} positional arguments ({} given)", what, n, pos.size()));
  }
};

std::string undefined_message(const Value& v) {
  return v.undefined_hint().empty() ? "value is undefined" : v.undefined_hint();
}

const Value& require_defined(const Value& v) {
  if (v.is_undefined()) fail(undefined_message(v));
  return v;
}

const std::string& require_string(const Value& v, std::string_view what) {
  if (!v.is_string()) fail(fmt::format("{} must be a string, not '{}'", what, v.type_name()));
  return v.as_string();
}

int64_t require_int(const Value& v, std::string_view what) {
  if (!v.is_integral()) fail(fmt::format("{} must be an integer, not '{}'", what, v.type_name()));
  return v.as_int();
}

// Python iteration: list items, a string's characters, a dict's keys; Undefined is empty.
ValueList iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return v.as_list();
    case Value::Kind::kString: {
      ValueList out;
      for (char32_t cp : decode_utf8(v.as_string())) {
        std::string s;
        append_utf8(s, cp);
        out.push_back(Value::string(std::move(s)));
      }
      return out;
    }
    case Value::Kind::kDict: {
      ValueList out;
      for (const auto& [k, e] : v.as_dict().items()) out.push_back(Value::string(k));
      return out;
    }
    default:
      fail(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

int64_t length_of(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(count_code_points(v.as_string()));
    case Value::Kind::kList:
      return static_cast<int64_t>(v.as_list().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.as_dict().size());
    default:
      fail(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

bool ascii_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Simple case mapping of Latin-1, Latin Extended-A, Greek and Cyrillic, which covers the
// languages chat content is mostly in; other scripts keep their case (Python would map them).
char32_t cp_upper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0xb5) return c;
  if (c == 0xb5) return 0x39c;
  if ((c >= 0xe0 && c <= 0xfe && c != 0xf7)) return c - 32;
  if (c == 0xff) return 0x178;
  if (c == 0x131) return 'I';
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c & ~char32_t{1};
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c : c - 1;
  if (c == 0x17f) return 'S';
  if (c == 0x3c2) return 0x3a3;
  if (c >= 0x3b1 && c <= 0x3cb) return c - 32;
  if (c >= 0x430 && c <= 0x44f) return c - 32;
  if (c >= 0x450 && c <= 0x45f) return c - 80;
  return c;
}

char32_t cp_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0xc0) return c;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
  if (c == 0x178) return 0xff;
  if (c == 0x130 || c == 0x131) return c;
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c | 1;
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3ab && c != 0x3a2) return c + 32;
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  if (c >= 0x400 && c <= 0x40f) return c + 80;
  return c;
}

bool is_cased(char32_t c) {
  return cp_upper(c) != c || cp_lower(c) != c || c == 0xdf;
}

template <typename Map>
std::string map_case(const std::string& s, Map map) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : decode_utf8(s)) map(out, cp);
  return out;
}

void put_upper(std::string& out, char32_t cp) {
  if (cp == 0xdf) {
    out += "SS";
  } else {
    append_utf8(out, cp_upper(cp));
  }
}
void put_lower(std::string& out, char32_t cp) {
  append_utf8(out, cp_lower(cp));
}

std::string to_upper(const std::string& s) {
  return map_case(s, put_upper);
}
std::string to_lower(const std::string& s) {
  return map_case(s, put_lower);
}
std::string capitalize(const std::string& s) {
  bool first = true;
  return map_case(s, [&](std::string& out, char32_t cp) {
    if (first) {
      put_upper(out, cp);
    } else {
      put_lower(out, cp);
    }
    first = false;
  });
}
// Python str.title(): a letter after a non-letter starts a word.
std::string py_title(const std::string& s) {
  bool prev_cased = false;
  return map_case(s, [&](std::string& out, char32_t cp) {
    if (prev_cased) {
      put_lower(out, cp);
    } else {
      put_upper(out, cp);
    }
    prev_cased = is_cased(cp);
  });
}
// jinja2's title filter: words start after whitespace, '-', '(', '{', '[' or '<'.
std::string jinja_title(const std::string& s) {
  bool word_start = true;
  return map_case(s, [&](std::string& out, char32_t cp) {
    const bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_space(cp);
    if (sep) {
      append_utf8(out, cp);
    } else if (word_start) {
      put_upper(out, cp);
    } else {
      put_lower(out, cp);
    }
    word_start = sep;
  });
}

std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  const auto cps = decode_utf8(s);
  std::vector<char32_t> set;
  const bool whitespace = !chars || chars->is_none();
  if (!whitespace) set = decode_utf8(require_string(*chars, "strip argument"));
  const auto drop = [&](char32_t cp) {
    return whitespace ? is_space(cp) : std::find(set.begin(), set.end(), cp) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && drop(cps[b])) ++b;
  }
  if (right) {
    while (e > b && drop(cps[e - 1])) --e;
  }
  if (b == 0 && e == cps.size()) return s;
  return encode_utf8(std::u32string_view(cps.data() + b, e - b));
}

ValueList split_whitespace(const std::string& s, int64_t maxsplit, bool from_right) {
  const auto cps = decode_utf8(s);
  std::vector<std::pair<size_t, size_t>> words;
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && is_space(cps[i])) ++i;
    if (i == cps.size()) break;
    size_t j = i;
    while (j < cps.size() && !is_space(cps[j])) ++j;
    words.emplace_back(i, j);
    i = j;
  }
  ValueList out;
  const auto piece = [&](size_t b, size_t e) {
    return Value::string(encode_utf8(std::u32string_view(cps.data() + b, e - b)));
  };
  if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= words.size()) {
    for (auto [b, e] : words) out.push_back(piece(b, e));
    return out;
  }
  const size_t keep = static_cast<size_t>(maxsplit);
  if (!from_right) {
    for (size_t w = 0; w < keep; ++w) out.push_back(piece(words[w].first, words[w].second));
    // The rest keeps its whitespace, trailing included.
    out.push_back(piece(words[keep].first, cps.size()));
  } else {
    const size_t first = words.size() - keep;
    out.push_back(piece(0, words[first - 1].second));
    for (size_t w = first; w < words.size(); ++w) out.push_back(piece(words[w].first, words[w].second));
  }
  return out;
}

ValueList split_on(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right) {
  if (sep.empty()) fail("empty separator");
  std::vector<size_t> cuts;
  if (!from_right) {
    for (size_t p = s.find(sep); p != std::string::npos; p = s.find(sep, p + sep.size())) {
      if (maxsplit >= 0 && cuts.size() >= static_cast<size_t>(maxsplit)) break;
      cuts.push_back(p);
    }
  } else {
    size_t end = s.size();
    while (end >= sep.size()) {
      const size_t p = s.rfind(sep, end - sep.size());
      if (p == std::string::npos) break;
      if (maxsplit >= 0 && cuts.size() >= static_cast<size_t>(maxsplit)) break;
      cuts.push_back(p);
      if (p < sep.size()) {
        end = 0;
        if (p == 0) break;
        continue;
      }
      end = p;
    }
    std::reverse(cuts.begin(), cuts.end());
  }
  ValueList out;
  size_t start = 0;
  for (size_t p : cuts) {
    out.push_back(Value::string(s.substr(start, p - start)));
    start = p + sep.size();
  }
  out.push_back(Value::string(s.substr(start)));
  return out;
}

std::string replace_all(const std::string& s, const std::string& old, const std::string& repl, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    // Python inserts the replacement around every character.
    const auto cps = decode_utf8(s);
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < cps.size()) append_utf8(out, cps[i]);
    }
    return out;
  }
  size_t start = 0;
  for (size_t p = s.find(old); p != std::string::npos && (count < 0 || done < count); p = s.find(old, start)) {
    out.append(s, start, p - start);
    out += repl;
    start = p + old.size();
    ++done;
  }
  out.append(s, start);
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Python slice semantics over `n` items.
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
  std::vector<size_t> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(static_cast<size_t>(i));
  return out;
}

int64_t floor_div(int64_t a, int64_t b) {
  if (b == 0) fail("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) fail("integer overflow");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t floor_mod(int64_t a, int64_t b) {
  if (b == 0) fail("integer division or modulo by zero");
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

int64_t checked(bool overflow, int64_t v) {
  if (overflow) fail("integer overflow");
  return v;
}

class Renderer;
using FilterFn = Value (*)(Renderer&, const Value&, const Args&);
using TestFn = bool (*)(Renderer&, const Value&, const Args&);
const FilterFn* find_filter(std::string_view name);
const TestFn* find_test(std::string_view name);

class Renderer {
 public:
  Renderer(const RenderLimits& limits, const ValueDict& variables) : limits_(limits) {
    frames_.emplace_back();
    for (const char* name : {"range", "dict", "namespace", "raise_exception", "strftime_now"}) {
      auto fn = std::make_shared<Callable>();
      fn->name = name;
      frames_.back().emplace_back(name, Value::callable(std::move(fn)));
    }
    frames_.emplace_back(variables.items());
  }

  std::string run(const Program& program) {
    exec_body(program.body);
    return std::move(out_);
  }

  void charge(uint64_t units) {
    work_ += units;
    if (work_ > limits_.max_work) {
      FP6_THROW(kInvalidArgument, "chat template rendering exceeded its work limit ({} units): a runaway loop?",
                limits_.max_work);
    }
  }

  void check_size(size_t bytes) {
    if (bytes > limits_.max_output_bytes) {
      FP6_THROW(kInvalidArgument, "chat template rendering exceeded the output limit of {} bytes",
                limits_.max_output_bytes);
    }
  }

  Value make_string(std::string s) {
    charge(s.size() / 16);
    check_size(s.size());
    return Value::string(std::move(s));
  }

  Value make_list(ValueList items) {
    charge(items.size());
    return Value::list(std::move(items));
  }

  // jinja2's environment.getattr: a method of the object first, then its item.
  Value get_attr(const Value& obj, const std::string& name) {
    require_defined(obj);
    if (!name.empty() && name[0] == '_') return Value::undefined(fmt::format("access to '{}' is unsafe", name));
    if (Value method = bound_method(obj, name); !method.is_undefined()) return method;
    switch (obj.kind()) {
      case Value::Kind::kDict:
        if (const Value* v = obj.as_dict().find(name)) return *v;
        break;
      case Value::Kind::kNamespace:
        if (const Value* v = obj.as_namespace()->attrs.find(name)) return *v;
        break;
      default:
        break;
    }
    return Value::undefined(fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
  }

  // jinja2's environment.getitem: the item first, then (for a string key) the attribute.
  Value get_item(const Value& obj, const Value& key) {
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
          if (const Value* v = obj.as_dict().find(key.as_string())) return *v;
        }
        break;
      default:
        break;
    }
    if (key.is_string()) return get_attr(obj, key.as_string());
    return Value::undefined(fmt::format("'{} object' has no element {}", obj.type_name(), to_repr(key)));
  }

  Value call(const Value& callee, const Args& args) {
    if (callee.is_undefined()) fail(undefined_message(callee));
    if (callee.kind() != Value::Kind::kCallable) fail(fmt::format("'{}' object is not callable", callee.type_name()));
    const Callable& fn = *callee.as_callable();
    switch (fn.kind) {
      case Callable::Kind::kBuiltin:
        return call_builtin(fn.name, args);
      case Callable::Kind::kMethod:
        return call_method(fn.receiver, fn.name, args);
      case Callable::Kind::kMacro:
        return call_macro(*fn.macro, args);
    }
    return Value();
  }

  Value apply_filter(const std::string& name, const Value& input, const Args& args) {
    const FilterFn* fn = find_filter(name);
    if (!fn) fail(fmt::format("no filter named '{}'", name));
    return (*fn)(*this, input, args);
  }

  bool apply_test(const std::string& name, const Value& input, const Args& args) {
    const TestFn* fn = find_test(name);
    if (!fn) fail(fmt::format("no test named '{}'", name));
    return (*fn)(*this, input, args);
  }

  // select/reject and their attribute forms: `args` starts with the test name.
  Value select(const Value& seq, const Args& args, bool by_attribute, bool keep_if) {
    Args rest;
    std::string attribute;
    size_t first = 0;
    if (by_attribute) {
      if (args.pos.empty()) fail("selectattr needs an attribute name");
      attribute = to_str(args.pos[0]);
      first = 1;
    }
    std::string test;
    if (args.pos.size() > first) test = to_str(args.pos[first]);
    for (size_t i = first + 1; i < args.pos.size(); ++i) rest.pos.push_back(args.pos[i]);
    rest.kw = args.kw;
    ValueList out;
    for (const Value& item : iterate(seq)) {
      charge(1);
      const Value probe = by_attribute ? attribute_path(item, attribute) : item;
      const bool pass = test.empty() ? probe.truthy() : apply_test(test, probe, rest);
      if (pass == keep_if) out.push_back(item);
    }
    return make_list(std::move(out));
  }

  // jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0.
  Value attribute_path(const Value& item, const std::string& path) {
    Value v = item;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      const bool digits =
          !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
      v = get_item(v, digits ? Value::integer(std::stoll(part)) : Value::string(part));
      if (dot == std::string::npos) return v;
      start = dot + 1;
    }
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Frame = std::vector<std::pair<std::string, Value>>;

  Value lookup(const std::string& name) const {
    for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
      for (auto it = f->rbegin(); it != f->rend(); ++it) {
        if (it->first == name) return it->second;
      }
    }
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }

  void assign(const std::string& name, Value value) {
    Frame& frame = frames_.back();
    for (auto& [k, v] : frame) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    frame.emplace_back(name, std::move(value));
  }

  void assign_target(const AssignTarget& target, const Value& value) {
    if (target.names.size() == 1) {
      assign(target.names[0], value);
      return;
    }
    const ValueList items = iterate(value);
    if (items.size() != target.names.size()) {
      fail(fmt::format("{} values to unpack (expected {}, got {})",
                       items.size() > target.names.size() ? "too many" : "not enough", target.names.size(),
                       items.size()));
    }
    for (size_t i = 0; i < items.size(); ++i) assign(target.names[i], items[i]);
  }

  void emit(const std::string& s) {
    charge(s.size() / 16 + 1);
    out_ += s;
    check_size(out_.size());
  }

  Flow exec_body(const Body& body) {
    for (const auto& stmt : body) {
      const Flow flow = exec(*stmt);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Flow exec(const Stmt& s) {
    charge(1);
    try {
      return exec_inner(s);
    } catch (RuntimeError& e) {
      const int line = e.has_position() ? e.line() : s.line;
      const int col = e.has_position() ? e.col() : s.col;
      FP6_THROW(kInvalidArgument, "chat template error at {}:{}: {}", line, col, e.what());
    }
  }

  std::string capture(const Body& body) {
    std::string saved = std::move(out_);
    out_.clear();
    exec_body(body);
    std::string captured = std::move(out_);
    out_ = std::move(saved);
    return captured;
  }

  Value apply_filters(const std::vector<ExprPtr>& filters, Value v) {
    for (const auto& f : filters) v = apply_filter(f->name, v, eval_args(*f));
    return v;
  }

  Flow exec_inner(const Stmt& s) {
    switch (s.kind) {
      case StmtKind::kText:
        emit(s.text);
        return Flow::kNormal;
      case StmtKind::kOutput: {
        const Value v = eval(*s.expr);
        if (v.is_string()) {
          emit(v.as_string());
        } else {
          emit(to_str(v));
        }
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (const auto& [cond, body] : s.branches) {
          if (eval(*cond).truthy()) return exec_body(body);
        }
        return exec_body(s.else_body);
      case StmtKind::kFor:
        return exec_for(s);
      case StmtKind::kSet: {
        const Value v = eval(*s.expr);
        if (!s.target.attr.empty()) {
          const Value ns = lookup(s.target.names[0]);
          if (ns.kind() != Value::Kind::kNamespace) fail("cannot assign attribute on non-namespace object");
          ns.as_namespace()->attrs.set(s.target.attr, v);
        } else {
          assign_target(s.target, v);
        }
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock:
        assign(s.target.names[0], apply_filters(s.filters, Value::string(capture(s.body))));
        return Flow::kNormal;
      case StmtKind::kMacro: {
        auto fn = std::make_shared<Callable>();
        fn->kind = Callable::Kind::kMacro;
        fn->name = s.text;
        fn->macro = &s;
        assign(s.text, Value::callable(std::move(fn)));
        return Flow::kNormal;
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kWith: {
        Frame frame;
        for (const auto& [name, expr] : s.params) frame.emplace_back(name, eval(*expr));
        frames_.push_back(std::move(frame));
        const Flow flow = exec_body(s.body);
        frames_.pop_back();
        return flow;
      }
      case StmtKind::kFilterBlock:
        emit(to_str(apply_filters(s.filters, Value::string(capture(s.body)))));
        return Flow::kNormal;
      case StmtKind::kBlock:
        return exec_body(s.body);
    }
    return Flow::kNormal;
  }

  void bind(Frame& frame, const AssignTarget& target, const Value& item) {
    if (target.names.size() == 1) {
      frame.emplace_back(target.names[0], item);
      return;
    }
    const ValueList parts = iterate(item);
    if (parts.size() != target.names.size()) {
      fail(fmt::format("{} values to unpack (expected {}, got {})",
                       parts.size() > target.names.size() ? "too many" : "not enough", target.names.size(),
                       parts.size()));
    }
    for (size_t i = 0; i < parts.size(); ++i) frame.emplace_back(target.names[i], parts[i]);
  }

  Flow exec_for(const Stmt& s) {
    const Value seq = eval(*s.expr);
    ValueList items = iterate(seq);
    charge(items.size());
    if (s.condition) {
      ValueList kept;
      for (const Value& item : items) {
        Frame frame;
        bind(frame, s.target, item);
        frames_.push_back(std::move(frame));
        const bool keep = eval(*s.condition).truthy();
        frames_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec_body(s.else_body);
    const int64_t n = static_cast<int64_t>(items.size());
    auto cycle = std::make_shared<Callable>();
    cycle->kind = Callable::Kind::kMethod;
    cycle->name = "loop.cycle";
    for (int64_t i = 0; i < n; ++i) {
      // An iteration builds its scope and loop object: several times a node's cost.
      charge(kIterationCost);
      ValueDict loop;
      loop.set("index", Value::integer(i + 1));
      loop.set("index0", Value::integer(i));
      loop.set("revindex", Value::integer(n - i));
      loop.set("revindex0", Value::integer(n - i - 1));
      loop.set("first", Value::boolean(i == 0));
      loop.set("last", Value::boolean(i == n - 1));
      loop.set("length", Value::integer(n));
      loop.set("depth", Value::integer(1));
      loop.set("depth0", Value::integer(0));
      if (i > 0) loop.set("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.set("nextitem", items[static_cast<size_t>(i + 1)]);
      auto bound_cycle = std::make_shared<Callable>(*cycle);
      bound_cycle->receiver = Value::integer(i);
      loop.set("cycle", Value::callable(std::move(bound_cycle)));
      Frame frame;
      bind(frame, s.target, items[static_cast<size_t>(i)]);
      frame.emplace_back("loop", Value::dict(std::move(loop)));
      frames_.push_back(std::move(frame));
      const Flow flow = exec_body(s.body);
      frames_.pop_back();
      if (flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Args eval_args(const Expr& e) {
    Args args;
    args.pos.reserve(e.args.size());
    for (const auto& a : e.args) args.pos.push_back(eval(*a));
    for (const auto& [k, a] : e.kwargs) args.kw.emplace_back(k, eval(*a));
    return args;
  }

  Value eval(const Expr& e) {
    charge(1);
    try {
      return eval_inner(e);
    } catch (RuntimeError& err) {
      if (!err.has_position()) err.set_position(e.line, e.col);
      throw;
    }
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kConst:
        return e.value;
      case ExprKind::kName:
        return lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        ValueList items;
        items.reserve(e.args.size());
        for (const auto& a : e.args) items.push_back(eval(*a));
        return Value::list(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {
        ValueDict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          const Value key = eval(*e.args[i]);
          if (!key.is_string()) fail(fmt::format("dict keys must be strings here, not '{}'", key.type_name()));
          d.set(key.as_string(), eval(*e.args[i + 1]));
        }
        return Value::dict(std::move(d));
      }
      case ExprKind::kAttr:
        return get_attr(eval(*e.target), e.name);
      case ExprKind::kItem:
        return get_item(eval(*e.target), eval(*e.args[0]));
      case ExprKind::kSlice:
        return eval_slice(e);
      case ExprKind::kCall:
        return call(eval(*e.target), eval_args(e));
      case ExprKind::kFilter:
        return apply_filter(e.name, eval(*e.target), eval_args(e));
      case ExprKind::kTest: {
        const bool result = apply_test(e.name, eval(*e.target), eval_args(e));
        return Value::boolean(result != e.negated);
      }
      case ExprKind::kNeg:
      case ExprKind::kPos: {
        const Value v = require_defined(eval(*e.target));
        if (!v.is_number())
          fail(fmt::format("bad operand type for unary {}: '{}'", e.kind == ExprKind::kNeg ? '-' : '+', v.type_name()));
        if (e.kind == ExprKind::kPos) return v.kind() == Value::Kind::kBool ? Value::integer(v.as_int()) : v;
        if (v.kind() == Value::Kind::kFloat) return Value::floating(-v.as_float());
        return Value::integer(checked(v.as_int() == INT64_MIN, -v.as_int()));
      }
      case ExprKind::kNot:
        return Value::boolean(!eval(*e.target).truthy());
      case ExprKind::kAnd: {
        Value left = eval(*e.target);
        return left.truthy() ? eval(*e.args[0]) : left;
      }
      case ExprKind::kOr: {
        Value left = eval(*e.target);
        return left.truthy() ? left : eval(*e.args[0]);
      }
      case ExprKind::kCond:
        if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined("the conditional expression's else is undefined");
      case ExprKind::kBinary:
        return binary(e.bin_op, eval(*e.target), eval(*e.args[0]));
      case ExprKind::kCompare: {
        Value left = eval(*e.args[0]);
        for (size_t i = 0; i < e.cmp_ops.size(); ++i) {
          Value right = eval(*e.args[i + 1]);
          if (!compare(e.cmp_ops[i], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
    }
    return Value();
  }

  Value eval_slice(const Expr& e) {
    const Value obj = require_defined(eval(*e.target));
    Value bounds[3];
    for (int i = 0; i < 3; ++i) {
      if (e.args[static_cast<size_t>(i)]) bounds[i] = eval(*e.args[static_cast<size_t>(i)]);
    }
    const auto ptr = [&](int i) { return e.args[static_cast<size_t>(i)] ? &bounds[i] : nullptr; };
    if (obj.is_string()) {
      const auto cps = decode_utf8(obj.as_string());
      std::u32string out;
      for (size_t i : slice_indices(static_cast<int64_t>(cps.size()), ptr(0), ptr(1), ptr(2))) out += cps[i];
      return make_string(encode_utf8(out));
    }
    if (obj.is_list()) {
      const auto& items = obj.as_list();
      ValueList out;
      for (size_t i : slice_indices(static_cast<int64_t>(items.size()), ptr(0), ptr(1), ptr(2)))
        out.push_back(items[i]);
      charge(out.size());
      return Value::list(std::move(out), obj.is_tuple());
    }
    fail(fmt::format("'{}' object is not subscriptable", obj.type_name()));
  }

  bool compare(CmpOp op, const Value& a, const Value& b) {
    switch (op) {
      case CmpOp::kEq:
        return values_equal(a, b);
      case CmpOp::kNe:
        return !values_equal(a, b);
      case CmpOp::kIn:
        return contains(b, a);
      case CmpOp::kNotIn:
        return !contains(b, a);
      default:
        break;
    }
    require_defined(a);
    require_defined(b);
    const int c = compare_values(a, b);
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

 public:
  bool contains(const Value& container, const Value& item) {
    switch (container.kind()) {
      case Value::Kind::kUndefined:
        return false;
      case Value::Kind::kString:
        if (!item.is_string())
          fail(fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
        return container.as_string().find(item.as_string()) != std::string::npos;
      case Value::Kind::kList:
        for (const Value& v : container.as_list()) {
          if (values_equal(v, item)) return true;
        }
        return false;
      case Value::Kind::kDict:
        return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
      default:
        fail(fmt::format("argument of type '{}' is not iterable", container.type_name()));
    }
  }

 private:
  Value binary(BinOp op, const Value& a, const Value& b) {
    if (op == BinOp::kConcat) {
      std::string s = to_str(a);
      s += to_str(b);
      return make_string(std::move(s));
    }
    require_defined(a);
    require_defined(b);
    const auto type_error = [&](const char* sym) -> Value {
      fail(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", sym, a.type_name(), b.type_name()));
    };
    switch (op) {
      case BinOp::kAdd:
        if (a.is_string() && b.is_string()) return make_string(a.as_string() + b.as_string());
        if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
          ValueList items = a.as_list();
          items.insert(items.end(), b.as_list().begin(), b.as_list().end());
          charge(items.size());
          return Value::list(std::move(items), a.is_tuple());
        }
        if (a.is_string() || b.is_string()) {
          fail(fmt::format("can only concatenate str (not \"{}\") to str",
                           a.is_string() ? b.type_name() : a.type_name()));
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
        const Value* seq = a.is_string() || a.is_list() ? &a : b.is_string() || b.is_list() ? &b : nullptr;
        if (seq) {
          const Value& count = seq == &a ? b : a;
          if (!count.is_integral())
            fail(fmt::format("can't multiply sequence by non-int of type '{}'", count.type_name()));
          const int64_t n = std::max<int64_t>(count.as_int(), 0);
          if (seq->is_string()) {
            check_size(static_cast<size_t>(std::min<int64_t>(n, INT32_MAX)) * seq->as_string().size());
            std::string out;
            for (int64_t i = 0; i < n; ++i) out += seq->as_string();
            return make_string(std::move(out));
          }
          check_size(static_cast<size_t>(std::min<int64_t>(n, INT32_MAX)) * seq->as_list().size());
          ValueList out;
          for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq->as_list().begin(), seq->as_list().end());
          charge(out.size());
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
      case BinOp::kDiv:
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
          const double y = b.as_float();
          if (y == 0) fail("float modulo");
          double r = std::fmod(a.as_float(), y);
          if (r != 0 && ((r < 0) != (y < 0))) r += y;
          return Value::floating(r);
        }
      case BinOp::kPow:
        if (!a.is_number() || !b.is_number()) return type_error("**");
        if (a.is_integral() && b.is_integral() && b.as_int() >= 0) {
          int64_t r = 1, base = a.as_int();
          for (int64_t e = b.as_int(); e > 0; --e) {
            if (__builtin_mul_overflow(r, base, &r)) fail("integer overflow");
            if (r == 0 || r == 1) break;
          }
          return Value::integer(r);
        }
        return Value::floating(std::pow(a.as_float(), b.as_float()));
      default:
        return Value();
    }
  }

  Value bound_method(const Value& obj, const std::string& name) {
    static const std::unordered_map<std::string_view, int> kStringMethods = [] {
      std::unordered_map<std::string_view, int> m;
      for (std::string_view n :
           {"strip",  "lstrip",  "rstrip",     "split",   "rsplit",  "startswith", "endswith", "upper",
            "lower",  "title",   "capitalize", "replace", "find",    "rfind",      "count",    "join",
            "format", "isdigit", "isalpha",    "isalnum", "isspace", "islower",    "isupper",  "splitlines"}) {
        m.emplace(n, 0);
      }
      return m;
    }();
    bool known = false;
    switch (obj.kind()) {
      case Value::Kind::kString:
        known = kStringMethods.count(name) != 0;
        break;
      case Value::Kind::kDict:
        known = name == "get" || name == "items" || name == "keys" || name == "values" || name == "update" ||
                name == "pop" || name == "setdefault" || name == "clear" || name == "popitem" || name == "copy";
        break;
      case Value::Kind::kList:
        known = name == "index" || name == "count" || name == "append" || name == "extend" || name == "insert" ||
                name == "pop" || name == "remove" || name == "reverse" || name == "sort" || name == "clear" ||
                name == "copy";
        break;
      default:
        break;
    }
    if (!known) return Value();
    auto fn = std::make_shared<Callable>();
    fn->kind = Callable::Kind::kMethod;
    fn->name = name;
    fn->receiver = obj;
    return Value::callable(std::move(fn));
  }

  Value call_method(const Value& self, const std::string& name, const Args& args) {
    if (name == "loop.cycle") {
      if (args.pos.empty()) fail("no items for cycling given");
      return args.pos[static_cast<size_t>(self.as_int()) % args.pos.size()];
    }
    if (self.is_string()) return call_string_method(self.as_string(), name, args);
    if (self.is_dict()) {
      const ValueDict& d = self.as_dict();
      if (name == "get") {
        const Value* key = args.get(0, "key");
        if (!key) fail("get expected at least 1 argument, got 0");
        if (key->is_string()) {
          if (const Value* v = d.find(key->as_string())) return *v;
        }
        const Value* def = args.get(1, "default");
        return def ? *def : Value::none();
      }
      if (name == "items" || name == "keys" || name == "values") {
        ValueList out;
        for (const auto& [k, v] : d.items()) {
          if (name == "items")
            out.push_back(Value::list({Value::string(k), v}, true));
          else if (name == "keys")
            out.push_back(Value::string(k));
          else
            out.push_back(v);
        }
        return make_list(std::move(out));
      }
      if (name == "copy") return self;
    }
    if (self.is_list()) {
      const ValueList& items = self.as_list();
      if (name == "index" || name == "count") {
        const Value* x = args.get(0, "value");
        if (!x) fail(fmt::format("{}() takes exactly one argument", name));
        int64_t n = 0;
        for (size_t i = 0; i < items.size(); ++i) {
          if (values_equal(items[i], *x)) {
            if (name == "index") return Value::integer(static_cast<int64_t>(i));
            ++n;
          }
        }
        if (name == "index") fail(fmt::format("{} is not in list", to_repr(*x)));
        return Value::integer(n);
      }
      if (name == "copy") return self;
    }
    // The sandbox jinja2 renders chat templates with keeps values immutable.
    fail(fmt::format("access to attribute '{}' of '{}' object is unsafe", name, self.type_name()));
  }

  Value call_string_method(const std::string& s, const std::string& name, const Args& args) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      args.check_max(1, name);
      const Value* chars = args.get(0, "chars");
      return make_string(strip_chars(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      args.check_max(2, name);
      const Value* sep = args.get(0, "sep");
      const Value* max = args.get(1, "maxsplit");
      const int64_t maxsplit = max ? require_int(*max, "maxsplit") : -1;
      ValueList parts = !sep || sep->is_none()
                            ? split_whitespace(s, maxsplit, name == "rsplit")
                            : split_on(s, require_string(*sep, "separator"), maxsplit, name == "rsplit");
      return make_list(std::move(parts));
    }
    if (name == "startswith" || name == "endswith") {
      const Value* arg = args.get(0, "prefix");
      if (!arg) fail(fmt::format("{}() takes at least 1 argument (0 given)", name));
      const auto test = [&](const std::string& p) {
        if (p.size() > s.size()) return false;
        return name == "startswith" ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0;
      };
      if (arg->is_list() && arg->is_tuple()) {
        for (const Value& p : arg->as_list()) {
          if (test(require_string(p, name + " argument"))) return Value::boolean(true);
        }
        return Value::boolean(false);
      }
      return Value::boolean(test(require_string(*arg, name + " argument")));
    }
    if (name == "upper") return make_string(to_upper(s));
    if (name == "lower") return make_string(to_lower(s));
    if (name == "title") return make_string(py_title(s));
    if (name == "capitalize") return make_string(capitalize(s));
    if (name == "replace") {
      const Value* old = args.get(0, "old");
      const Value* repl = args.get(1, "new");
      if (!old || !repl) fail("replace expected at least 2 arguments");
      const Value* count = args.get(2, "count");
      return make_string(replace_all(s, require_string(*old, "replace argument"),
                                     require_string(*repl, "replace argument"),
                                     count ? require_int(*count, "count") : -1));
    }
    if (name == "find" || name == "rfind" || name == "count") {
      const Value* sub_v = args.get(0, "sub");
      if (!sub_v) fail(fmt::format("{}() takes at least 1 argument (0 given)", name));
      const std::string& sub = require_string(*sub_v, name + " argument");
      if (name == "count") {
        if (sub.empty()) return Value::integer(static_cast<int64_t>(count_code_points(s)) + 1);
        int64_t n = 0;
        for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
        return Value::integer(n);
      }
      const size_t p = name == "find" ? s.find(sub) : s.rfind(sub);
      if (p == std::string::npos) return Value::integer(-1);
      return Value::integer(static_cast<int64_t>(count_code_points(std::string_view(s).substr(0, p))));
    }
    if (name == "join") {
      const Value* seq = args.get(0, "iterable");
      if (!seq) fail("join() takes exactly one argument (0 given)");
      std::string out;
      bool first = true;
      for (const Value& v : iterate(*seq)) {
        if (!first) out += s;
        first = false;
        out += require_string(v, "sequence item");
        check_size(out.size());
      }
      return make_string(std::move(out));
    }
    if (name == "format") return make_string(python_format(s, args));
    if (name == "splitlines") {
      ValueList out;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          out.push_back(Value::string(s.substr(start, i - start)));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) out.push_back(Value::string(s.substr(start)));
      return make_list(std::move(out));
    }
    // The is*() predicates, on ASCII classes.
    const auto cps = decode_utf8(s);
    if (cps.empty()) return Value::boolean(false);
    const auto all = [&](auto pred) { return std::all_of(cps.begin(), cps.end(), pred); };
    if (name == "isdigit") return Value::boolean(all([](char32_t c) { return c >= '0' && c <= '9'; }));
    if (name == "isalpha")
      return Value::boolean(all([](char32_t c) { return c < 0x80 && ascii_alpha(static_cast<char>(c)); }));
    if (name == "isalnum") {
      return Value::boolean(
          all([](char32_t c) { return c < 0x80 && (ascii_alpha(static_cast<char>(c)) || (c >= '0' && c <= '9')); }));
    }
    if (name == "isspace") return Value::boolean(all([](char32_t c) { return is_space(c); }));
    const bool has_upper = std::any_of(cps.begin(), cps.end(), [](char32_t c) { return c >= 'A' && c <= 'Z'; });
    const bool has_lower = std::any_of(cps.begin(), cps.end(), [](char32_t c) { return c >= 'a' && c <= 'z'; });
    if (name == "islower") return Value::boolean(has_lower && !has_upper);
    return Value::boolean(has_upper && !has_lower);
  }

  // str.format with {} / {0} / {name} fields and no format specs.
  std::string python_format(const std::string& s, const Args& args) {
    std::string out;
    size_t auto_index = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
        out += '{';
        ++i;
      } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
        out += '}';
        ++i;
      } else if (s[i] == '{') {
        const size_t end = s.find('}', i);
        if (end == std::string::npos) fail("Single '{' encountered in format string");
        const std::string field = s.substr(i + 1, end - i - 1);
        if (field.find_first_of(":!.[") != std::string::npos) fail("format specs are not supported in str.format");
        const Value* v = nullptr;
        if (field.empty()) {
          v = args.get(auto_index++, "");
        } else if (std::all_of(field.begin(), field.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          v = args.get(static_cast<size_t>(std::stoul(field)), "");
        } else {
          for (const auto& [k, val] : args.kw) {
            if (k == field) v = &val;
          }
        }
        if (!v) fail(fmt::format("format field '{}' has no argument", field));
        out += to_str(*v);
        i = end;
      } else if (s[i] == '}') {
        fail("Single '}' encountered in format string");
      } else {
        out += s[i];
      }
    }
    return out;
  }

  Value call_builtin(const std::string& name, const Args& args) {
    if (name == "raise_exception") {
      const Value* msg = args.get(0, "message");
      throw Error(ErrorKind::kInvalidArgument, msg ? to_str(*msg) : std::string());
    }
    if (name == "range") {
      if (args.pos.empty() || args.pos.size() > 3) fail("range expected 1 to 3 arguments");
      int64_t start = 0, stop, step = 1;
      if (args.pos.size() == 1) {
        stop = require_int(args.pos[0], "range argument");
      } else {
        start = require_int(args.pos[0], "range argument");
        stop = require_int(args.pos[1], "range argument");
        if (args.pos.size() == 3) step = require_int(args.pos[2], "range argument");
      }
      if (step == 0) fail("range() arg 3 must not be zero");
      const double count = std::max(
          0.0, std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step)));
      if (count > static_cast<double>(kMaxRange)) {
        fail(fmt::format("Range too big. The sandbox blocks ranges larger than MAX_RANGE ({}).", kMaxRange));
      }
      ValueList out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::integer(i));
      return make_list(std::move(out));
    }
    if (name == "dict" || name == "namespace") {
      ValueDict d;
      if (!args.pos.empty()) {
        if (args.pos.size() > 1 || !args.pos[0].is_dict())
          fail(fmt::format("{}() takes a mapping or keyword arguments", name));
        d = args.pos[0].as_dict();
      }
      for (const auto& [k, v] : args.kw) d.set(k, v);
      if (name == "dict") return Value::dict(std::move(d));
      auto ns = std::make_shared<Namespace>();
      ns->attrs = std::move(d);
      return Value::ns(std::move(ns));
    }
    if (name == "strftime_now") {
      const Value* format = args.get(0, "format");
      if (!format) fail("strftime_now() takes a format");
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), require_string(*format, "format").c_str(), &tm);
      return Value::string(std::string(buf, n));
    }
    fail(fmt::format("'{}' is not callable", name));
  }

  Value call_macro(const Stmt& macro, const Args& args) {
    if (call_depth_ >= limits_.max_call_depth) {
      FP6_THROW(kInvalidArgument, "chat template macro calls nested deeper than {}", limits_.max_call_depth);
    }
    if (args.pos.size() > macro.params.size()) {
      fail(fmt::format("macro '{}' takes not more than {} argument(s)", macro.text, macro.params.size()));
    }
    // The body sees the template's globals and its own parameters, not the caller's loops.
    std::vector<Frame> saved(std::make_move_iterator(frames_.begin() + 2), std::make_move_iterator(frames_.end()));
    frames_.resize(2);
    frames_.emplace_back();
    ++call_depth_;
    std::string result;
    try {
      for (size_t i = 0; i < macro.params.size(); ++i) {
        const auto& [param, def] = macro.params[i];
        const Value* given = i < args.pos.size() ? &args.pos[i] : nullptr;
        for (const auto& [k, v] : args.kw) {
          if (k == param) given = &v;
        }
        assign(param, given ? *given : def ? eval(*def) : Value::undefined(fmt::format("'{}' is undefined", param)));
      }
      for (const auto& [k, v] : args.kw) {
        const bool known =
            std::any_of(macro.params.begin(), macro.params.end(), [&](const auto& p) { return p.first == k; });
        if (!known) fail(fmt::format("macro '{}' has no argument named '{}'", macro.text, k));
      }
      result = capture(macro.body);
    } catch (...) {
      --call_depth_;
      frames_.resize(2);
      for (auto& f : saved) frames_.push_back(std::move(f));
      throw;
    }
    --call_depth_;
    frames_.resize(2);
    for (auto& f : saved) frames_.push_back(std::move(f));
    return Value::string(std::move(result));
  }

  const RenderLimits& limits_;
  std::vector<Frame> frames_;
  std::string out_;
  uint64_t work_ = 0;
  int call_depth_ = 0;
};

// ---- filters ----------------------------------------------------------------------------

Value filter_trim(Renderer& r, const Value& v, const Args& a) {
  return r.make_string(strip_chars(to_str(v), a.get(0, "chars"), true, true));
}
Value filter_length(Renderer&, const Value& v, const Args&) {
  return Value::integer(length_of(v));
}
Value filter_upper(Renderer& r, const Value& v, const Args&) {
  return r.make_string(to_upper(to_str(v)));
}
Value filter_lower(Renderer& r, const Value& v, const Args&) {
  return r.make_string(to_lower(to_str(v)));
}
Value filter_title(Renderer& r, const Value& v, const Args&) {
  return r.make_string(jinja_title(to_str(v)));
}
Value filter_capitalize(Renderer& r, const Value& v, const Args&) {
  return r.make_string(capitalize(to_str(v)));
}
Value filter_string(Renderer& r, const Value& v, const Args&) {
  return v.is_string() ? v : r.make_string(to_str(v));
}
Value filter_safe(Renderer& r, const Value& v, const Args& a) {
  return filter_string(r, v, a);
}
Value filter_escape(Renderer& r, const Value& v, const Args&) {
  return r.make_string(html_escape(to_str(v)));
}

Value filter_default(Renderer&, const Value& v, const Args& a) {
  const Value* def = a.get(0, "default_value");
  const Value* boolean = a.get(1, "boolean");
  const bool use_default = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
  if (!use_default) return v;
  return def ? *def : Value::string("");
}

Value filter_join(Renderer& r, const Value& v, const Args& a) {
  const Value* sep = a.get(0, "d");
  const Value* attribute = a.get(1, "attribute");
  const std::string separator = sep ? to_str(*sep) : std::string();
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    if (!first) out += separator;
    first = false;
    out += to_str(attribute ? r.attribute_path(item, to_str(*attribute)) : item);
    r.check_size(out.size());
  }
  return r.make_string(std::move(out));
}

Value filter_tojson(Renderer& r, const Value& v, const Args& a) {
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
    const ValueList parts = iterate(*x);
    if (parts.size() != 2) fail("separators must be a pair of strings");
    o.has_separators = true;
    o.item_separator = require_string(parts[0], "separator");
    o.key_separator = require_string(parts[1], "separator");
  }
  if (const Value* x = a.get(3, "sort_keys")) o.sort_keys = x->truthy();
  return r.make_string(to_json_text(v, o));
}

Value filter_first(Renderer&, const Value& v, const Args&) {
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value filter_last(Renderer&, const Value& v, const Args&) {
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value filter_list(Renderer& r, const Value& v, const Args&) {
  return r.make_list(iterate(v));
}

Value filter_items(Renderer& r, const Value& v, const Args&) {
  if (v.is_undefined()) return Value::list({});
  if (!v.is_dict()) fail("Can only get item pairs from a mapping.");
  ValueList out;
  for (const auto& [k, e] : v.as_dict().items()) out.push_back(Value::list({Value::string(k), e}, true));
  return r.make_list(std::move(out));
}

Value filter_replace(Renderer& r, const Value& v, const Args& a) {
  const Value* old = a.get(0, "old");
  const Value* repl = a.get(1, "new");
  if (!old || !repl) fail("replace filter needs old and new");
  const Value* count = a.get(2, "count");
  return r.make_string(replace_all(to_str(v), to_str(*old), to_str(*repl),
                                   count && !count->is_none() ? require_int(*count, "count") : -1));
}

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

Value filter_int(Renderer&, const Value& v, const Args& a) {
  const Value* def = a.get(0, "default");
  const Value* base_v = a.get(1, "base");
  const Value fallback = def ? *def : Value::integer(0);
  require_defined(v);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.kind() == Value::Kind::kFloat) {
    if (!std::isfinite(v.as_float())) return fallback;
    return Value::integer(static_cast<int64_t>(std::trunc(v.as_float())));
  }
  if (v.is_string()) {
    const std::string s = strip_chars(v.as_string(), nullptr, true, true);
    const int base = base_v ? static_cast<int>(require_int(*base_v, "base")) : 10;
    std::string digits;
    for (char c : s) {
      if (c != '_') digits += c;
    }
    if (!digits.empty()) {
      char* end = nullptr;
      errno = 0;
      const long long i = std::strtoll(digits.c_str(), &end, base);
      if (end == digits.c_str() + digits.size() && errno == 0) return Value::integer(i);
    }
    // "42.23"|int is 42, as jinja2 retries through float.
    if (auto f = parse_float(v.as_string()); f && std::isfinite(*f))
      return Value::integer(static_cast<int64_t>(std::trunc(*f)));
  }
  return fallback;
}

Value filter_float(Renderer&, const Value& v, const Args& a) {
  const Value* def = a.get(0, "default");
  const Value fallback = def ? *def : Value::floating(0.0);
  require_defined(v);
  if (v.is_number()) return Value::floating(v.as_float());
  if (v.is_string()) {
    if (auto f = parse_float(v.as_string())) return Value::floating(*f);
  }
  return fallback;
}

Value filter_reverse(Renderer& r, const Value& v, const Args&) {
  if (v.is_string()) {
    auto cps = decode_utf8(v.as_string());
    std::reverse(cps.begin(), cps.end());
    return r.make_string(encode_utf8(std::u32string_view(cps.data(), cps.size())));
  }
  ValueList items = iterate(v);
  std::reverse(items.begin(), items.end());
  return r.make_list(std::move(items));
}

Value filter_map(Renderer& r, const Value& v, const Args& a) {
  ValueList out;
  if (const Value* attribute = a.get(SIZE_MAX, "attribute")) {
    const Value* def = a.get(SIZE_MAX, "default");
    for (const Value& item : iterate(v)) {
      Value x = r.attribute_path(item, to_str(*attribute));
      if (x.is_undefined() && def) x = *def;
      out.push_back(std::move(x));
    }
    return r.make_list(std::move(out));
  }
  if (a.pos.empty()) fail("map requires a filter argument");
  const std::string filter = to_str(a.pos[0]);
  Args rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const Value& item : iterate(v)) out.push_back(r.apply_filter(filter, item, rest));
  return r.make_list(std::move(out));
}

Value filter_select(Renderer& r, const Value& v, const Args& a) {
  return r.select(v, a, false, true);
}
Value filter_reject(Renderer& r, const Value& v, const Args& a) {
  return r.select(v, a, false, false);
}
Value filter_selectattr(Renderer& r, const Value& v, const Args& a) {
  return r.select(v, a, true, true);
}
Value filter_rejectattr(Renderer& r, const Value& v, const Args& a) {
  return r.select(v, a, true, false);
}

Value filter_abs(Renderer&, const Value& v, const Args&) {
  require_defined(v);
  if (v.kind() == Value::Kind::kFloat) return Value::floating(std::fabs(v.as_float()));
  if (v.is_integral()) return Value::integer(checked(v.as_int() == INT64_MIN, std::llabs(v.as_int())));
  fail(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}

Value filter_round(Renderer&, const Value& v, const Args& a) {
  require_defined(v);
  if (!v.is_number()) fail(fmt::format("type {} doesn't define __round__ method", v.type_name()));
  const Value* precision_v = a.get(0, "precision");
  const Value* method_v = a.get(1, "method");
  const int64_t precision = precision_v ? require_int(*precision_v, "precision") : 0;
  const std::string method = method_v ? to_str(*method_v) : "common";
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

Value filter_sum(Renderer& r, const Value& v, const Args& a) {
  const Value* attribute = a.get(0, "attribute");
  const Value* start = a.get(1, "start");
  Value total = start ? *start : Value::integer(0);
  for (const Value& item : iterate(v)) {
    const Value x = attribute ? r.attribute_path(item, to_str(*attribute)) : item;
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

Value filter_sort(Renderer& r, const Value& v, const Args& a) {
  const Value* reverse = a.get(0, "reverse");
  const Value* case_sensitive = a.get(1, "case_sensitive");
  const Value* attribute = a.get(2, "attribute");
  ValueList items = iterate(v);
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) {
    Value key = attribute ? r.attribute_path(item, to_str(*attribute)) : item;
    keyed.emplace_back(sort_key(key, case_sensitive && case_sensitive->truthy()), std::move(item));
  }
  const bool desc = reverse && reverse->truthy();
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return desc ? compare_values(y.first, x.first) < 0 : compare_values(x.first, y.first) < 0;
  });
  ValueList out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return r.make_list(std::move(out));
}

Value filter_dictsort(Renderer& r, const Value& v, const Args& a) {
  if (!v.is_dict()) fail("dictsort needs a mapping");
  const Value* case_sensitive = a.get(0, "case_sensitive");
  const Value* by = a.get(1, "by");
  const Value* reverse = a.get(2, "reverse");
  const bool by_value = by && to_str(*by) == "value";
  const bool cs = case_sensitive && case_sensitive->truthy();
  std::vector<std::pair<std::string, Value>> items = v.as_dict().items();
  std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
    const Value kx = sort_key(by_value ? x.second : Value::string(x.first), cs);
    const Value ky = sort_key(by_value ? y.second : Value::string(y.first), cs);
    return reverse && reverse->truthy() ? compare_values(ky, kx) < 0 : compare_values(kx, ky) < 0;
  });
  ValueList out;
  for (auto& [k, e] : items) out.push_back(Value::list({Value::string(k), e}, true));
  return r.make_list(std::move(out));
}

Value min_max(Renderer& r, const Value& v, const Args& a, bool want_max) {
  const Value* case_sensitive = a.get(0, "case_sensitive");
  const Value* attribute = a.get(1, "attribute");
  const bool cs = case_sensitive && case_sensitive->truthy();
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
  const Value* best = &items[0];
  Value best_key = sort_key(attribute ? r.attribute_path(items[0], to_str(*attribute)) : items[0], cs);
  for (size_t i = 1; i < items.size(); ++i) {
    Value key = sort_key(attribute ? r.attribute_path(items[i], to_str(*attribute)) : items[i], cs);
    const int c = compare_values(key, best_key);
    if (want_max ? c > 0 : c < 0) {
      best = &items[i];
      best_key = std::move(key);
    }
  }
  return *best;
}
Value filter_min(Renderer& r, const Value& v, const Args& a) {
  return min_max(r, v, a, false);
}
Value filter_max(Renderer& r, const Value& v, const Args& a) {
  return min_max(r, v, a, true);
}

Value filter_unique(Renderer& r, const Value& v, const Args& a) {
  const Value* case_sensitive = a.get(0, "case_sensitive");
  const Value* attribute = a.get(1, "attribute");
  const bool cs = case_sensitive && case_sensitive->truthy();
  ValueList out, keys;
  for (const Value& item : iterate(v)) {
    Value key = sort_key(attribute ? r.attribute_path(item, to_str(*attribute)) : item, cs);
    r.charge(keys.size());
    if (std::none_of(keys.begin(), keys.end(), [&](const Value& k) { return values_equal(k, key); })) {
      keys.push_back(std::move(key));
      out.push_back(item);
    }
  }
  return r.make_list(std::move(out));
}

Value filter_indent(Renderer& r, const Value& v, const Args& a) {
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
  const std::string s = to_str(v);
  std::string out;
  size_t start = 0;
  bool line0 = true;
  while (true) {
    const size_t nl = s.find('\n', start);
    const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    const bool indent = line0 ? first : (blank || !strip_chars(line, nullptr, true, true).empty());
    if (indent && !(line0 && line.empty() && nl == std::string::npos && !first)) out += pad;
    out += line;
    if (nl == std::string::npos) break;
    out += '\n';
    start = nl + 1;
    line0 = false;
  }
  return r.make_string(std::move(out));
}

Value filter_attr(Renderer& r, const Value& v, const Args& a) {
  const Value* name = a.get(0, "name");
  if (!name) fail("attr filter needs a name");
  // jinja2's attr looks up attributes only, never items.
  const Value found = r.get_attr(v, to_str(*name));
  if (v.is_dict() && found.kind() != Value::Kind::kCallable) return Value::undefined("no such attribute");
  return found;
}

Value filter_wordcount(Renderer&, const Value& v, const Args&) {
  return Value::integer(static_cast<int64_t>(split_whitespace(to_str(v), -1, false).size()));
}

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

const Value& test_arg(const Args& a, std::string_view test) {
  const Value* v = a.get(0, "other");
  if (!v) fail(fmt::format("test '{}' needs an argument", test));
  return *v;
}

bool test_defined(Renderer&, const Value& v, const Args&) {
  return !v.is_undefined();
}
bool test_undefined(Renderer&, const Value& v, const Args&) {
  return v.is_undefined();
}
bool test_none(Renderer&, const Value& v, const Args&) {
  return v.is_none();
}
bool test_boolean(Renderer&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kBool;
}
bool test_true(Renderer&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kBool && v.as_bool();
}
bool test_false(Renderer&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kBool && !v.as_bool();
}
bool test_integer(Renderer&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kInt;
}
bool test_float(Renderer&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kFloat;
}
bool test_number(Renderer&, const Value& v, const Args&) {
  return v.is_number();
}
bool test_string(Renderer&, const Value& v, const Args&) {
  return v.is_string();
}
bool test_mapping(Renderer&, const Value& v, const Args&) {
  return v.is_dict();
}
// Undefined iterates as empty and has a length, so jinja2 calls it iterable and a sequence.
bool test_iterable(Renderer&, const Value& v, const Args&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool test_sequence(Renderer& r, const Value& v, const Args& a) {
  return test_iterable(r, v, a);
}
bool test_callable(Renderer&, const Value& v, const Args&) {
  return v.kind() == Value::Kind::kCallable;
}
bool test_sameas(Renderer&, const Value& v, const Args& a) {
  const Value& o = test_arg(a, "sameas");
  if (v.kind() != o.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kNone:
    case Value::Kind::kUndefined:
      return true;
    case Value::Kind::kBool:
      return v.as_bool() == o.as_bool();
    default:
      return values_equal(v, o);
  }
}
bool test_even(Renderer&, const Value& v, const Args&) {
  return require_int(v, "even test value") % 2 == 0;
}
bool test_odd(Renderer&, const Value& v, const Args&) {
  return require_int(v, "odd test value") % 2 != 0;
}
bool test_divisibleby(Renderer&, const Value& v, const Args& a) {
  return floor_mod(require_int(v, "divisibleby value"), require_int(test_arg(a, "divisibleby"), "divisor")) == 0;
}
bool test_eq(Renderer&, const Value& v, const Args& a) {
  return values_equal(v, test_arg(a, "eq"));
}
bool test_ne(Renderer&, const Value& v, const Args& a) {
  return !values_equal(v, test_arg(a, "ne"));
}
bool test_lt(Renderer&, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "lt")) < 0;
}
bool test_le(Renderer&, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "le")) <= 0;
}
bool test_gt(Renderer&, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "gt")) > 0;
}
bool test_ge(Renderer&, const Value& v, const Args& a) {
  return compare_values(require_defined(v), test_arg(a, "ge")) >= 0;
}
bool test_in(Renderer& r, const Value& v, const Args& a) {
  return r.contains(test_arg(a, "in"), v);
}
bool test_lower(Renderer&, const Value& v, const Args&) {
  const std::string s = to_str(v);
  return to_lower(s) == s;
}
bool test_upper(Renderer&, const Value& v, const Args&) {
  const std::string s = to_str(v);
  return to_upper(s) == s;
}
bool test_escaped(Renderer&, const Value&, const Args&) {
  return false;
}

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

std::string render_program(const Program& program, const ValueDict& variables, const RenderLimits& limits) {
  Renderer renderer(limits, variables);
  try {
    return renderer.run(program);
  } catch (const RuntimeError& e) {
    FP6_THROW(kInvalidArgument, "chat template error at {}:{}: {}", e.line(), e.col(), e.what());
  }
}

}  // namespace fp6serve::jinja
