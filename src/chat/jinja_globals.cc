// The global functions of chat templates (declared in jinja_globals.h).
#include "chat/jinja_globals.h"

#include <algorithm>
#include <ctime>
#include <memory>

#include "chat/jinja_render.h"
#include "core/check.h"

namespace fp6serve::jinja {
namespace {

// jinja2's sandbox refuses larger ranges (MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

}  // namespace

std::vector<std::pair<std::string, Value>> global_functions() {
  std::vector<std::pair<std::string, Value>> globals;
  for (const char* name : {"range", "dict", "namespace", "raise_exception", "strftime_now"}) {
    auto fn = std::make_shared<Callable>();
    fn->name = name;
    globals.emplace_back(name, Value::callable(std::move(fn)));
  }
  return globals;
}

Value call_global(Budget& budget, const std::string& name, const Args& args) {
  if (name == "raise_exception") {
    const Value* msg = args.get(0, "message");
    throw Error(ErrorKind::kInvalidArgument, msg ? budget.str(*msg) : std::string());
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
    // The length, exactly, in 128 bits (stop - start may not fit an int64), and each item as
    // start + k * step, which stays between start and stop: stepping `i += step` past the last
    // item could overflow (range(2**63 - 3, 2**63 - 1, 5)).
    const __int128 span = static_cast<__int128>(stop) - start;
    const __int128 stride = step > 0 ? static_cast<__int128>(step) : -static_cast<__int128>(step);
    const __int128 distance = step > 0 ? span : -span;
    const __int128 count = distance > 0 ? (distance + stride - 1) / stride : 0;
    if (count > kMaxRange) {
      fail(fmt::format("Range too big. The sandbox blocks ranges larger than MAX_RANGE ({}).", kMaxRange));
    }
    ValueList out;
    out.reserve(static_cast<size_t>(count));
    for (__int128 k = 0; k < count; ++k) out.push_back(Value::integer(static_cast<int64_t>(start + k * step)));
    return budget.make_list(std::move(out));
  }
  // dict(mapping, **kw) and namespace(mapping, **kw): the same arguments; a namespace is the
  // one mutable value (`set ns.attr = ...`), fresh at every call.
  if (name == "dict" || name == "namespace") {
    ValueDict d;
    if (!args.pos.empty()) {
      if (args.pos.size() > 1 || !args.pos[0].is_dict())
        fail(fmt::format("{}() takes a mapping or keyword arguments", name));
      d = args.pos[0].as_dict();
    }
    for (const auto& [k, v] : args.kw) {
      budget.charge(d.size() / 16);  // set() searches the keys
      d.set(k, v);
    }
    budget.charge(d.size());
    if (name == "dict") return Value::dict(std::move(d));
    return Value::ns(std::move(d));
  }
  // transformers' strftime_now: datetime.now().strftime(format), local time.
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

}  // namespace fp6serve::jinja
