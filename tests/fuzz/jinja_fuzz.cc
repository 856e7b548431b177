// Fuzzes chat templates: the input is a template source, optionally followed by a NUL byte and
// a JSON list of messages (else a fixed conversation with a system prompt, a tool call and its
// result is used). The template is parsed with ChatTemplate and rendered with
// add_generation_prompt false (with a tool list) and true (without one). Parsing and rendering
// may fail with fp6serve::Error only; anything else escaping, a crash, a sanitizer report, a
// timeout or a huge allocation is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/chat_template.h"
#include "fp6serve/error.h"

namespace {

using nlohmann::ordered_json;

const ordered_json& default_messages() {
  static const ordered_json messages = ordered_json::parse(R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris? Ünïcödé, \"quotes\" and\nnewlines."},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
    {"role": "assistant", "content": "It is 21 degrees."},
    {"role": "user", "content": "Thanks!"}
  ])");
  return messages;
}

const ordered_json& extra_with_tools() {
  static const ordered_json extra = ordered_json::parse(R"({
    "bos_token": "<s>", "eos_token": "</s>", "date_string": "26 Jul 2024",
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
  })");
  return extra;
}

const ordered_json& extra_plain() {
  static const ordered_json extra = ordered_json::parse(R"({"bos_token": "<s>", "eos_token": "</s>"})");
  return extra;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  ordered_json messages = default_messages();
  if (split != std::string::npos) {
    // The messages part is the request, not the target: unparsable JSON falls back to the
    // fixed conversation (a JSON value that is not a list is the renderer's to refuse).
    ordered_json parsed = ordered_json::parse(input.substr(split + 1), nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) messages = std::move(parsed);
  }
  try {
    const fp6serve::ChatTemplate chat_template(input.substr(0, split));
    for (const bool add_generation_prompt : {false, true}) {
      try {
        (void)chat_template.render_json(messages, add_generation_prompt,
                                        add_generation_prompt ? extra_plain() : extra_with_tools());
      } catch (const fp6serve::Error&) {
      }
    }
  } catch (const fp6serve::Error&) {
  }
  return 0;
}
