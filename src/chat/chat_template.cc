#include "chat/chat_template.h"

#include "chat/jinja_error.h"
#include "chat/jinja_parser.h"
#include "chat/jinja_render.h"
#include "core/check.h"

namespace fp6serve {
namespace {

// Limits that grow with the conversation: a real template's output is its input plus a
// bounded amount of markup per message, so generous multiples of the input never bind on a
// real template and still stop a runaway one quickly.
constexpr size_t kOutputBaseBytes = size_t{1} << 20;
constexpr size_t kOutputPerInputByte = 8;
constexpr uint64_t kWorkBase = uint64_t{8} << 20;
constexpr uint64_t kWorkPerInputByte = 64;
// Live memory of the values a render builds (strings, lists, dicts, capture buffers). A real
// template holds a few copies of its output at most (a few MB); 64 MiB stops a template that
// doubles a list or string in a loop long before it hurts the server.
constexpr size_t kMemoryBase = size_t{64} << 20;
constexpr size_t kMemoryPerInputByte = 16;
constexpr int kMaxCallDepth = 64;

size_t input_bytes(const jinja::Value& v) {
  switch (v.kind()) {
    case jinja::Value::Kind::kString:
      return v.as_string().size();
    case jinja::Value::Kind::kList: {
      size_t n = 1;
      for (const auto& e : v.as_list()) n += input_bytes(e);
      return n;
    }
    case jinja::Value::Kind::kDict: {
      size_t n = 1;
      for (const auto& [k, e] : v.as_dict().items()) n += k.size() + input_bytes(e);
      return n;
    }
    default:
      return 1;
  }
}

// The request's JSON as a template value; JSON nested deeper than values may be is the
// caller's error, reported as fp6serve::Error like every other.
template <typename Json>
jinja::Value value_of(const Json& j, const std::string& what) {
  try {
    return jinja::Value::from_json(j);
  } catch (const jinja::RuntimeError& e) {
    FP6_THROW(kInvalidArgument, "{}: {}", what, e.what());
  }
}

template <typename Json>
std::string render_with(const jinja::Program& program, jinja::Value messages, bool add_generation_prompt,
                        const Json& extra) {
  FP6_CHECK(extra.is_object(), kInvalidArgument, "chat template variables must be a JSON object, got {}",
            extra.type_name());
  jinja::ValueDict vars;
  vars.set("messages", std::move(messages));
  vars.set("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  vars.set("tools", jinja::Value::none());
  vars.set("documents", jinja::Value::none());
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    FP6_CHECK(it.key() != "messages" && it.key() != "add_generation_prompt", kInvalidArgument,
              "chat template variable '{}' is set by the renderer, not by the caller", it.key());
    vars.set(it.key(), value_of(it.value(), fmt::format("chat template variable '{}'", it.key())));
  }
  size_t in = 0;
  for (const auto& [k, v] : vars.items()) in += k.size() + input_bytes(v);
  jinja::RenderLimits limits;
  limits.max_output_bytes = kOutputBaseBytes + kOutputPerInputByte * in;
  limits.max_work = kWorkBase + kWorkPerInputByte * in;
  limits.max_memory_bytes = kMemoryBase + kMemoryPerInputByte * in;
  limits.max_call_depth = kMaxCallDepth;
  return jinja::render_program(program, vars, limits);
}

template <typename Json>
jinja::Value messages_from_json(const Json& messages) {
  FP6_CHECK(messages.is_array(), kInvalidArgument, "chat messages must be a JSON array, got {}", messages.type_name());
  return value_of(messages, "chat messages");
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source)
    : source_(std::move(source)), program_(std::make_shared<const jinja::Program>(jinja::parse_template(source_))) {}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const nlohmann::json& extra) const {
  jinja::ValueList list;
  list.reserve(messages.size());
  for (const auto& m : messages) {
    jinja::ValueDict d;
    d.set("role", jinja::Value::string(m.role));
    d.set("content", jinja::Value::string(m.content));
    list.push_back(jinja::Value::dict(std::move(d)));
  }
  return render_with(*program_, jinja::Value::list(std::move(list)), add_generation_prompt, extra);
}

std::string ChatTemplate::render_json(const nlohmann::json& messages, bool add_generation_prompt,
                                      const nlohmann::json& extra) const {
  return render_with(*program_, messages_from_json(messages), add_generation_prompt, extra);
}

std::string ChatTemplate::render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                      const nlohmann::ordered_json& extra) const {
  return render_with(*program_, messages_from_json(messages), add_generation_prompt, extra);
}

}  // namespace fp6serve
