// What the parts of the Jinja interpreter share (declared in jinja_runtime.h): raising Python
// errors, argument checks, Python iteration and len(), and the render budget.
#include "chat/jinja_runtime.h"

#include "chat/jinja_error.h"
#include "core/check.h"

namespace fp6serve::jinja {

void fail(const std::string& message) {
  throw RuntimeError(message);
}

std::string short_repr(const Value& v) {
  constexpr size_t kMax = 100;
  std::string s = to_repr(v, kMax);
  if (s.size() > kMax) {
    s.resize(kMax);
    // Not in the middle of a UTF-8 sequence.
    while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xc0) == 0x80) s.pop_back();
    if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xc0) s.pop_back();
    s += "...";
  }
  return s;
}

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

Iteration::Iteration(Budget& budget, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      list_ = Value::list({});
      return;
    case Value::Kind::kList:
      list_ = v;
      return;
    case Value::Kind::kString: {
      budget.charge(v.as_string().size());  // one item per byte at most
      ValueList out;
      for (char32_t cp : decode_utf8(v.as_string())) {
        std::string s;
        append_utf8(s, cp);
        out.push_back(Value::string(std::move(s)));
      }
      list_ = Value::list(std::move(out));
      return;
    }
    case Value::Kind::kDict: {
      budget.charge(v.as_dict().size());
      ValueList out;
      out.reserve(v.as_dict().size());
      for (const auto& [k, e] : v.as_dict().items()) out.push_back(Value::string(k));
      list_ = Value::list(std::move(out));
      return;
    }
    default:
      fail(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

const Value* find_key(Budget& budget, const ValueDict& d, std::string_view key) {
  budget.charge(d.size() / 16);
  return d.find(key);
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

void Budget::charge(uint64_t units) {
  work_ += units;
  if (work_ > limits_.max_work) {
    FP6_THROW(kInvalidArgument, "chat template rendering exceeded its work limit ({} units): a runaway loop?",
              limits_.max_work);
  }
}

void Budget::check_size(size_t bytes) const {
  if (bytes > limits_.max_output_bytes) {
    FP6_THROW(kInvalidArgument, "chat template rendering exceeded the output limit of {} bytes",
              limits_.max_output_bytes);
  }
}

Value Budget::make_string(std::string s) {
  charge(s.size() / 16);
  check_size(s.size());
  return Value::string(std::move(s));
}

Value Budget::make_list(ValueList items, bool tuple) {
  charge(items.size());
  return Value::list(std::move(items), tuple);
}

std::string Budget::str(const Value& v) {
  std::string s = to_str(v, limits_.max_output_bytes);
  charge(s.size() / 16);
  check_size(s.size());
  return s;
}

std::string Budget::json(const Value& v, const JsonOptions& options) {
  std::string s = to_json_text(v, options, limits_.max_output_bytes);
  charge(s.size() / 16);
  check_size(s.size());
  return s;
}

}  // namespace fp6serve::jinja
