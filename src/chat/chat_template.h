// Chat templates: the Jinja template a model ships (tokenizer_config.json's `chat_template`
// or chat_template.jinja) rendered the way transformers' apply_chat_template renders it, so
// /v1/chat/completions builds byte-for-byte the prompt the model was trained on.
//
// The language is a Jinja2 subset implemented here (docs/chat_templates.md lists it); the
// environment matches transformers': trim_blocks, lstrip_blocks, loop controls, the tojson
// filter of json.dumps, and the globals raise_exception and strftime_now. Variables
// `tools` and `documents` default to none, as transformers passes them.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fp6serve {

namespace jinja {
struct Program;
}

struct ChatMessage {
  std::string role;
  std::string content;  // already flattened to text
};

class ChatTemplate {
 public:
  // Parses once; a syntax error throws Error(kBadInput) naming line:column and what was
  // expected.
  explicit ChatTemplate(std::string source);

  // Renders with `messages` (a list of {role, content} dicts), add_generation_prompt, and
  // extra variables (bos_token, eos_token, tools, date_string, ...). raise_exception("...")
  // in the template throws Error(kInvalidArgument) with the template's message; any other
  // failure while rendering (a type error, an exceeded limit) throws Error(kInvalidArgument).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const nlohmann::json& extra = nlohmann::json::object()) const;

  // Same, for messages as full JSON objects (role, content, name, tool_calls, ...). Parse
  // the request with nlohmann::ordered_json to keep the member order a template's tojson
  // prints (Python keeps it); nlohmann::json sorts members.
  std::string render_json(const nlohmann::json& messages, bool add_generation_prompt,
                          const nlohmann::json& extra = nlohmann::json::object()) const;
  std::string render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                          const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  // Immutable after construction: render() runs on many threads at once.
  std::shared_ptr<const jinja::Program> program_;
};

}  // namespace fp6serve
