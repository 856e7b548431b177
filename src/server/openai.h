// The OpenAI API surface of the server, without any HTTP: parsing and validating request
// bodies of /v1/completions and /v1/chat/completions into engine requests, and building the
// response and stream-chunk JSON. Every invalid request is an ApiError carrying the HTTP
// status and OpenAI's error shape (message, type, param, code).
#pragma once

#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "engine/engine.h"
#include "engine/service.h"

namespace fp6serve::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "",
           std::string type = "invalid_request_error")
      : std::runtime_error(message),
        status(status),
        param(std::move(param)),
        code(std::move(code)),
        type(std::move(type)) {}
  int status;
  std::string param;
  std::string code;
  std::string type;
};

// {"error": {"message", "type", "param", "code"}}
nlohmann::ordered_json error_body(const std::string& message, const std::string& type, const std::string& param,
                                  const std::string& code);

// The one place any failure becomes an OpenAI error answer: ApiError as it says; an
// fp6serve::Error by its kind (invalid argument or bad input 400, not found 404, unsupported
// 400, out of memory or unavailable 503, CUDA or internal 500); std::bad_alloc 503; anything
// else 500.
struct ErrorReply {
  int status;
  nlohmann::ordered_json body;
};
ErrorReply error_reply(std::exception_ptr error);

// JSON text for the wire: invalid UTF-8 in a string (a client's bytes quoted in an error)
// becomes U+FFFD instead of an exception.
std::string dump_json(const nlohmann::ordered_json& j);

// A valid request: the engine's options for each of its choices, and what only HTTP has.
struct ParsedRequest {
  bool chat = false;
  std::vector<std::vector<int32_t>> prompts;  // one per prompt (completions may send several)
  GenerateOptions options;
  int64_t n = 1;  // choices per prompt; choice k samples with seed + k
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;     // chat: per-token logprobs; completions: logprobs >= 0
  std::string length_param;  // the field to name when the request exceeds the context
};

struct ApiContext {
  const Service& service;
  const std::string& model_name;
  const ChatTemplate* chat_template;  // null when the model ships none
};

// Throws ApiError for anything invalid (a prompt too long for the context is found by the
// engine when the request is submitted: ContextLengthError).
ParsedRequest parse_request(const nlohmann::ordered_json& body, bool chat, const ApiContext& ctx);

// The answers of the small routes (docs/server.md): the model card of /v1/models and
// /v1/models/{id}; POST /tokenize ({"prompt": text or "messages": chat, add_special_tokens})
// -> {"tokens", "count", "max_model_len"}; POST /detokenize ({"tokens": ids}) -> {"prompt"}.
// Bad bodies throw ApiError.
nlohmann::ordered_json model_card(const ApiContext& ctx, bool random_weights);
nlohmann::ordered_json tokenize_response(const nlohmann::ordered_json& body, const ApiContext& ctx);
nlohmann::ordered_json detokenize_response(const nlohmann::ordered_json& body, const ApiContext& ctx);

// Accumulates one choice's stream for the final (non-streaming) response.
struct Choice {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<Sample> samples;
  FinishReason finish = FinishReason::kNone;
  int64_t generated_tokens = 0;
};

// prompt_tokens: summed over distinct prompts (the n choices of one prompt share it).
nlohmann::ordered_json completion_response(const std::string& id, int64_t created, const std::string& model, bool chat,
                                           const std::vector<Choice>& choices, int64_t prompt_tokens, bool logprobs,
                                           const Tokenizer& tokenizer);
nlohmann::ordered_json stream_chunk(const std::string& id, int64_t created, const std::string& model, bool chat,
                                    int64_t index, const StreamChunk& chunk, bool first, bool logprobs,
                                    const Tokenizer& tokenizer, size_t text_offset = 0);
nlohmann::ordered_json usage_chunk(const std::string& id, int64_t created, const std::string& model, bool chat,
                                   int64_t prompt_tokens, int64_t completion_tokens);
// OpenAI's finish reasons: "stop", "length"; a cancelled request reports "abort".
const char* openai_finish_reason(FinishReason reason);

}  // namespace fp6serve::server
