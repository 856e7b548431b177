// Python's str, dict and list methods for templates (declared in jinja_methods.h). The
// string algorithms themselves are in python_strings.cc; this file maps method names and
// arguments onto them, with Python's argument names (`sep`, `maxsplit`, `chars`...) so
// keyword calls work too.
#include "chat/jinja_methods.h"

#include <algorithm>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "chat/jinja_render.h"
#include "chat/python_strings.h"

namespace fp6serve::jinja {
namespace {

bool ascii_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// The str methods, `s` being the receiver. Most read all of `s` (Python indexes code points,
// so even find() and the is*() tests decode it), so each call costs work for its length.
Value call_string_method(Budget& budget, const std::string& s, const std::string& name, const Args& args) {
  budget.charge(s.size() / 16);
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    args.check_max(1, name);
    const Value* chars = args.get(0, "chars");
    return budget.make_string(strip_chars(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    args.check_max(2, name);
    const Value* sep = args.get(0, "sep");
    const Value* max = args.get(1, "maxsplit");
    const int64_t maxsplit = max ? require_int(*max, "maxsplit") : -1;
    ValueList parts = !sep || sep->is_none()
                          ? split_whitespace(s, maxsplit, name == "rsplit")
                          : split_on(budget, s, require_string(*sep, "separator"), maxsplit, name == "rsplit");
    return budget.make_list(std::move(parts));
  }
  if (name == "startswith" || name == "endswith") {  // a tuple argument: any of its strings
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
  if (name == "upper") return budget.make_string(to_upper(s));
  if (name == "lower") return budget.make_string(to_lower(s));
  if (name == "title") return budget.make_string(py_title(s));
  if (name == "capitalize") return budget.make_string(capitalize(s));
  if (name == "replace") {
    const Value* old = args.get(0, "old");
    const Value* repl = args.get(1, "new");
    if (!old || !repl) fail("replace expected at least 2 arguments");
    const Value* count = args.get(2, "count");
    return budget.make_string(replace_all(budget, s, require_string(*old, "replace argument"),
                                          require_string(*repl, "replace argument"),
                                          count ? require_int(*count, "count") : -1));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    const Value* sub_v = args.get(0, "sub");
    if (!sub_v) fail(fmt::format("{}() takes at least 1 argument (0 given)", name));
    const std::string& sub = require_string(*sub_v, name + " argument");
    // Python counts and indexes by code point: find() is a character index, and an empty
    // substring occurs len(s) + 1 times.
    if (name == "count") {
      if (sub.empty()) return Value::integer(static_cast<int64_t>(count_code_points(s)) + 1);
      int64_t n = 0;
      for (size_t p = find_text(budget, s, sub, 0); p != std::string::npos;
           p = find_text(budget, s, sub, p + sub.size()))
        ++n;
      return Value::integer(n);
    }
    const size_t p = name == "find" ? find_text(budget, s, sub, 0) : rfind_text(budget, s, sub, std::string::npos);
    if (p == std::string::npos) return Value::integer(-1);
    return Value::integer(static_cast<int64_t>(count_code_points(std::string_view(s).substr(0, p))));
  }
  if (name == "join") {
    const Value* seq = args.get(0, "iterable");
    if (!seq) fail("join() takes exactly one argument (0 given)");
    std::string out;
    bool first = true;
    for (const Value& v : iterate(budget, *seq)) {
      if (!first) out += s;
      first = false;
      out += require_string(v, "sequence item");
      budget.check_size(out.size());
    }
    return budget.make_string(std::move(out));
  }
  if (name == "format") return budget.make_string(python_format(budget, s, args));
  if (name == "splitlines") return budget.make_list(split_lines(s));
  // The is*() predicates, on ASCII classes (isspace on Unicode whitespace); like Python, all
  // are false on an empty string.
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

}  // namespace

// The method names of each type: those implemented by call_method, and for dict and list the
// mutating ones too, which the immutable sandbox finds but refuses to call.
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
  return Value::callable(std::move(fn), obj.depth() + 1);  // it holds obj: one level more
}

Value call_method(Budget& budget, const Value& self, const std::string& name, const Args& args) {
  // loop.cycle(a, b, ...) is bound to the iteration index: it returns the index-th argument,
  // cycling.
  if (name == "loop.cycle") {
    if (args.pos.empty()) fail("no items for cycling given");
    return args.pos[static_cast<size_t>(self.as_int()) % args.pos.size()];
  }
  if (self.is_string()) return call_string_method(budget, self.as_string(), name, args);
  if (self.is_dict()) {
    const ValueDict& d = self.as_dict();
    if (name == "get") {
      const Value* key = args.get(0, "key");
      if (!key) fail("get expected at least 1 argument, got 0");
      if (key->is_string()) {
        if (const Value* v = find_key(budget, d, key->as_string())) return *v;
      }
      const Value* def = args.get(1, "default");
      return def ? *def : Value::none();
    }
    // Lists, not views; items are (key, value) tuples so they unpack and print as in Python.
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
      return budget.make_list(std::move(out));
    }
    if (name == "copy") return self;  // values are immutable: sharing is copying
  }
  if (self.is_list()) {
    const ValueList& items = self.as_list();
    if (name == "index" || name == "count") {
      const Value* x = args.get(0, "value");
      if (!x) fail(fmt::format("{}() takes exactly one argument", name));
      int64_t n = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        if (values_equal(items[i], *x, &budget)) {
          if (name == "index") return Value::integer(static_cast<int64_t>(i));
          ++n;
        }
      }
      if (name == "index") fail(fmt::format("{} is not in list", short_repr(*x)));
      return Value::integer(n);
    }
    if (name == "copy") return self;
  }
  // The sandbox jinja2 renders chat templates with keeps values immutable.
  fail(fmt::format("access to attribute '{}' of '{}' object is unsafe", name, self.type_name()));
}

}  // namespace fp6serve::jinja
