// What the parts of the Jinja interpreter share (declared in jinja_runtime.h): raising Python
// errors, argument checks, Python iteration and len(), and the render budget.
#include "chat/jinja_runtime.h"

#include "chat/jinja_error.h"
#include "core/check.h"

namespace fp6serve::jinja {

void fail(const std::string& message) {
  throw RuntimeError(message);
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

Value Budget::make_list(ValueList items) {
  charge(items.size());
  return Value::list(std::move(items));
}

}  // namespace fp6serve::jinja
