#include "server/openai.h"

#include <fmt/format.h>

#include <chrono>

#include "tokenizer/unicode.h"

namespace fp6serve::server {

using json = nlohmann::ordered_json;

json error_body(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ErrorReply error_reply(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const ApiError& e) {
    return {e.status, error_body(e.what(), e.type, e.param, e.code)};
  } catch (const Error& e) {
    switch (e.kind()) {
      case ErrorKind::kInvalidArgument:
      case ErrorKind::kBadInput:
      case ErrorKind::kUnsupported:
        return {400, error_body(e.what(), "invalid_request_error", "", "")};
      case ErrorKind::kNotFound:
        return {404, error_body(e.what(), "invalid_request_error", "", "not_found")};
      case ErrorKind::kOutOfMemory:
        return {503, error_body(e.what(), "server_error", "", "out_of_memory")};
      case ErrorKind::kUnavailable:
        return {503, error_body(e.what(), "server_error", "", "")};
      case ErrorKind::kCuda:
      case ErrorKind::kInternal:
        break;
    }
    return {500, error_body(e.what(), "server_error", "", "")};
  } catch (const std::bad_alloc&) {
    return {503, error_body("the server ran out of memory for this request", "server_error", "", "out_of_memory")};
  } catch (const std::exception& e) {
    return {500, error_body(std::string("internal error: ") + e.what(), "server_error", "", "")};
  } catch (...) {
    return {500, error_body("internal error", "server_error", "", "")};
  }
}

const char* openai_finish_reason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return nullptr;
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param);
}

// Typed field readers: absent or null gives nullopt, a wrong type is a 400 naming the field.
std::optional<double> number(const json& b, const char* key, double lo, double hi) {
  if (!b.contains(key) || b[key].is_null()) return std::nullopt;
  if (!b[key].is_number()) bad(key, fmt::format("'{}' must be a number", key));
  const double v = b[key].get<double>();
  if (!(v >= lo && v <= hi)) bad(key, fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v));
  return v;
}

std::optional<int64_t> integer(const json& b, const char* key, int64_t lo, int64_t hi) {
  if (!b.contains(key) || b[key].is_null()) return std::nullopt;
  if (!b[key].is_number_integer()) bad(key, fmt::format("'{}' must be an integer", key));
  const int64_t v = b[key].get<int64_t>();
  if (v < lo || v > hi) bad(key, fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, v));
  return v;
}

std::optional<bool> boolean(const json& b, const char* key) {
  if (!b.contains(key) || b[key].is_null()) return std::nullopt;
  if (!b[key].is_boolean()) bad(key, fmt::format("'{}' must be true or false", key));
  return b[key].get<bool>();
}

std::vector<int32_t> token_list(const json& a, const char* param, int64_t vocab) {
  std::vector<int32_t> ids;
  for (const json& t : a) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab)
      bad(param, fmt::format("'{}' token ids must be integers in [0, {})", param, vocab));
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

std::vector<std::vector<int32_t>> completion_prompts(const json& b, const Tokenizer& tok, int64_t vocab) {
  if (!b.contains("prompt")) bad("prompt", "'prompt' is required");
  const json& p = b["prompt"];
  std::vector<std::vector<int32_t>> out;
  if (p.is_string()) {
    out.push_back(tok.encode(p.get<std::string>(), true));
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    out.push_back(token_list(p, "prompt", vocab));
  } else if (p.is_array() && !p.empty()) {
    for (const json& item : p) {
      if (item.is_string())
        out.push_back(tok.encode(item.get<std::string>(), true));
      else if (item.is_array())
        out.push_back(token_list(item, "prompt", vocab));
      else
        bad("prompt", "'prompt' must be a string, a list of strings, or token ids");
    }
  } else {
    bad("prompt", "'prompt' must be a non-empty string, a list of strings, or token ids");
  }
  for (const auto& ids : out)
    if (ids.empty()) bad("prompt", "the prompt is empty");
  if (out.size() > 64) bad("prompt", "at most 64 prompts per request");
  return out;
}

std::string message_text(const json& m, size_t i) {
  const std::string where = fmt::format("messages[{}].content", i);
  if (!m.contains("content") || m["content"].is_null()) return "";
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {
    std::string text;
    for (const json& part : c) {
      const bool text_part = part.is_object() && part.contains("type") && part["type"] == "text" &&
                             part.contains("text") && part["text"].is_string();
      if (!text_part)
        bad(where,
            fmt::format("'{}' parts must be {{\"type\": \"text\", \"text\": ...}} (only text is supported)", where));
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad(where, fmt::format("'{}' must be a string or a list of text parts", where));
}

std::vector<int32_t> chat_prompt(const json& b, const ApiContext& ctx) {
  if (!b.contains("messages") || !b["messages"].is_array() || b["messages"].empty())
    bad("messages", "'messages' must be a non-empty list");
  if (!ctx.chat_template)
    throw ApiError(400, "this model has no chat template (tokenizer_config.json chat_template); use /v1/completions",
                   "messages");
  json messages = json::array();
  for (size_t i = 0; i < b["messages"].size(); ++i) {
    const json& m = b["messages"][i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad(fmt::format("messages[{}].role", i), fmt::format("messages[{}] needs a string 'role'", i));
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" && role != "developer")
      bad(fmt::format("messages[{}].role", i), fmt::format("messages[{}].role '{}' is not one of system, user, "
                                                           "assistant, tool, developer",
                                                           i, role));
    json msg = m;
    msg["content"] = message_text(m, i);
    messages.push_back(std::move(msg));
  }
  const Tokenizer& tok = ctx.service.tokenizer();
  std::string text;
  try {
    text = ctx.chat_template->render_json(messages, true,
                                          {{"bos_token", tok.bos_token()}, {"eos_token", tok.eos_token()}});
  } catch (const Error& e) {
    throw ApiError(400, std::string("the chat template rejected the conversation: ") + e.what(), "messages");
  }
  // The template writes BOS itself when the model wants one.
  return tok.encode(text, false);
}

std::vector<std::string> stop_strings(const json& b) {
  std::vector<std::string> out;
  if (!b.contains("stop") || b["stop"].is_null()) return out;
  const json& s = b["stop"];
  if (s.is_string())
    out.push_back(s.get<std::string>());
  else if (s.is_array())
    for (const json& x : s) {
      if (!x.is_string()) bad("stop", "'stop' must be a string or a list of strings");
      out.push_back(x.get<std::string>());
    }
  else
    bad("stop", "'stop' must be a string or a list of strings");
  if (out.size() > 16) bad("stop", "at most 16 stop strings");
  for (const auto& x : out)
    if (x.empty()) bad("stop", "stop strings must not be empty");
  return out;
}

// Fields of the OpenAI API this server does not implement: a request that uses one gets a 400
// naming it rather than an answer that silently ignores it. Values that ask for nothing (an
// empty logit_bias, response_format text, tool_choice none, best_of equal to n, an empty
// suffix) are accepted.
void refuse_unsupported(const json& b, int64_t n) {
  auto present = [&](const char* key) { return b.contains(key) && !b[key].is_null(); };
  if (present("response_format")) {
    const json& f = b["response_format"];
    if (!f.is_object() || f.value("type", "") != "text")
      bad("response_format",
          "'response_format' other than {\"type\": \"text\"} (JSON mode, JSON schema) is not "
          "supported by this server");
  }
  if (present("tools") && !(b["tools"].is_array() && b["tools"].empty()))
    bad("tools", "'tools' (function calling) is not supported by this server");
  if (present("functions")) bad("functions", "'functions' (function calling) is not supported by this server");
  if (present("tool_choice") && b["tool_choice"] != "none")
    bad("tool_choice", "'tool_choice' (function calling) is not supported by this server");
  if (present("function_call") && b["function_call"] != "none")
    bad("function_call", "'function_call' (function calling) is not supported by this server");
  if (present("logit_bias") && !(b["logit_bias"].is_object() && b["logit_bias"].empty()))
    bad("logit_bias", "'logit_bias' is not supported by this server");
  if (present("best_of") && b["best_of"] != n) bad("best_of", "'best_of' other than n is not supported by this server");
  if (present("suffix") && b["suffix"] != "") bad("suffix", "'suffix' (insertion) is not supported by this server");
}

}  // namespace

ParsedRequest parse_request(const json& b, bool chat, const ApiContext& ctx) {
  if (!b.is_object()) bad("", "the request body must be a JSON object");
  if (b.contains("model") && !b["model"].is_null()) {
    if (!b["model"].is_string()) bad("model", "'model' must be a string");
    if (b["model"].get<std::string>() != ctx.model_name)
      throw ApiError(404,
                     fmt::format("The model `{}` does not exist. This server serves `{}`.",
                                 b["model"].get<std::string>(), ctx.model_name),
                     "model", "model_not_found");
  }
  const Service& svc = ctx.service;
  ParsedRequest r;
  r.chat = chat;
  const int64_t vocab = svc.config().vocab_size;
  r.prompts =
      chat ? std::vector<std::vector<int32_t>>{chat_prompt(b, ctx)} : completion_prompts(b, svc.tokenizer(), vocab);

  GenerateOptions& g = r.options;
  g.temperature = number(b, "temperature", 0, 2);
  g.top_p = number(b, "top_p", 0, 1);
  if (g.top_p && *g.top_p <= 0) bad("top_p", "'top_p' must be greater than 0");
  if (auto k = integer(b, "top_k", -1, 1 << 20)) g.top_k = std::max<int64_t>(*k, 0);
  g.min_p = number(b, "min_p", 0, 0.999999);
  g.repetition_penalty = number(b, "repetition_penalty", 1e-3, 10);
  if (auto pp = number(b, "presence_penalty", -2, 2)) g.presence_penalty = *pp;
  if (auto fp = number(b, "frequency_penalty", -2, 2)) g.frequency_penalty = *fp;
  if (auto s = integer(b, "seed", INT64_MIN, INT64_MAX)) g.seed = static_cast<uint64_t>(*s);
  g.stop = stop_strings(b);
  g.ignore_eos = boolean(b, "ignore_eos").value_or(false);

  // max_completion_tokens when sent, else the legacy max_tokens; each is checked whenever it is
  // sent (a bad max_tokens is a 400 beside a good max_completion_tokens). OpenAI's defaults:
  // 16 for completions, the rest of the context for chat.
  const std::optional<int64_t> newer = integer(b, "max_completion_tokens", 1, 1 << 24);
  const std::optional<int64_t> legacy = integer(b, "max_tokens", 1, 1 << 24);
  const char* max_key = newer ? "max_completion_tokens" : "max_tokens";
  const std::optional<int64_t> max_tokens = newer ? newer : legacy;
  int64_t longest = 0;
  for (const auto& p : r.prompts) longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  // A chat request without a limit may use what is left of the context, or of the KV cache
  // when that holds less than one full context.
  const int64_t room = std::min(svc.engine().max_model_len(), svc.engine().kv_blocks() * svc.engine().kv_block_size());
  g.max_new_tokens = max_tokens.value_or(chat ? std::max<int64_t>(1, room - longest) : 16);
  r.length_param = max_tokens ? max_key : (chat ? "messages" : "prompt");

  r.n = integer(b, "n", 1, 16).value_or(1);
  r.stream = boolean(b, "stream").value_or(false);
  if (b.contains("stream_options") && !b["stream_options"].is_null()) {
    if (!b["stream_options"].is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    r.include_usage = boolean(b["stream_options"], "include_usage").value_or(false);
  }
  if (chat) {
    r.logprobs = boolean(b, "logprobs").value_or(false);
    const auto top = integer(b, "top_logprobs", 0, 20);
    if (top && !r.logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (r.logprobs) g.top_logprobs = static_cast<int>(top.value_or(0));
  } else if (auto lp = integer(b, "logprobs", 0, 5)) {
    r.logprobs = true;
    g.top_logprobs = static_cast<int>(*lp);
  }
  if (b.contains("echo") && boolean(b, "echo").value_or(false)) bad("echo", "'echo' is not supported");
  if (b.contains("stop_token_ids") && !b["stop_token_ids"].is_null()) {
    if (!b["stop_token_ids"].is_array() || b["stop_token_ids"].size() > 64)
      bad("stop_token_ids", "'stop_token_ids' must be a list of at most 64 token ids");
    g.stop_token_ids = token_list(b["stop_token_ids"], "stop_token_ids", vocab);
  }
  refuse_unsupported(b, r.n);
  return r;
}

json model_card(const ApiContext& ctx, bool random_weights) {
  return {
      {"id", ctx.model_name},
      {"object", "model"},
      {"created",
       std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count()},
      {"owned_by", "fp6serve"},
      {"max_model_len", ctx.service.engine().max_model_len()},
      {"random_weights", random_weights}};
}

json tokenize_response(const json& b, const ApiContext& ctx) {
  if (!b.is_object()) bad("", "the request body must be a JSON object");
  std::vector<int32_t> ids;
  if (b.contains("messages")) {
    ids = chat_prompt(b, ctx);
  } else {
    if (!b.contains("prompt") || !b["prompt"].is_string())
      bad("prompt", "'prompt' must be a string (or send 'messages')");
    ids =
        ctx.service.tokenizer().encode(b["prompt"].get<std::string>(), boolean(b, "add_special_tokens").value_or(true));
  }
  return {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ctx.service.engine().max_model_len()}};
}

json detokenize_response(const json& b, const ApiContext& ctx) {
  if (!b.is_object() || !b.contains("tokens") || !b["tokens"].is_array())
    bad("tokens", "'tokens' must be a list of token ids");
  const std::vector<int32_t> ids = token_list(b["tokens"], "tokens", ctx.service.config().vocab_size);
  return {{"prompt", ctx.service.tokenizer().decode(ids, false)}};
}

namespace {

// One token as logprobs show it: `bytes` its own bytes (Tokenizer::token_bytes); `text` those
// bytes when they are UTF-8, else, for a token of part of a character, the bytes written
// \xNN (printable ASCII as it is), OpenAI's spelling ("\xe2\x80"), never U+FFFD.
struct TokenPiece {
  std::string text;
  std::string bytes;
  bool partial = false;  // its bytes are not UTF-8 on their own
};

TokenPiece token_piece(const Tokenizer& tok, int32_t id) {
  TokenPiece p;
  p.bytes = tok.token_bytes(id);
  p.partial = text::utf8_lossy(p.bytes) != p.bytes;
  if (!p.partial) {
    p.text = p.bytes;
    return p;
  }
  for (unsigned char c : p.bytes)
    p.text += c >= 0x20 && c < 0x7f && c != '\\' ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02x}", c);
  return p;
}

json bytes_of(const std::string& s) {
  json a = json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

// The legacy completions spell a token of part of a character "bytes:\xe2\x80", as OpenAI's.
std::string completion_token(const TokenPiece& p) {
  return p.partial ? "bytes:" + p.text : p.text;
}

// Legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset (byte offsets
// into the text: each token moves it by its own bytes, so a character split over several
// tokens moves it by its size once). top_logprobs is an object keyed by token text: when two
// alternatives have the same text (two ids that decode alike), the more likely keeps the text
// and the other is keyed "token_id:N" (vLLM's spelling of a bare id) instead of overwriting it.
json completion_logprobs(const std::vector<int32_t>& tokens, const std::vector<Sample>& samples, const Tokenizer& tok,
                         size_t text_offset) {
  json j = {{"tokens", json::array()},
            {"token_logprobs", json::array()},
            {"top_logprobs", json::array()},
            {"text_offset", json::array()}};
  for (size_t i = 0; i < samples.size() && i < tokens.size(); ++i) {
    const TokenPiece t = token_piece(tok, tokens[i]);
    j["tokens"].push_back(completion_token(t));
    j["token_logprobs"].push_back(samples[i].logprob);
    json top = json::object();
    for (const auto& alt : samples[i].top) {
      std::string key = completion_token(token_piece(tok, alt.token));
      if (top.contains(key)) key = fmt::format("token_id:{}", alt.token);
      top[key] = alt.logprob;
    }
    j["top_logprobs"].push_back(top);
    j["text_offset"].push_back(text_offset);
    text_offset += t.bytes.size();
  }
  return j;
}

json chat_logprobs(const std::vector<int32_t>& tokens, const std::vector<Sample>& samples, const Tokenizer& tok) {
  json content = json::array();
  for (size_t i = 0; i < samples.size() && i < tokens.size(); ++i) {
    const TokenPiece t = token_piece(tok, tokens[i]);
    json top = json::array();
    for (const auto& alt : samples[i].top) {
      const TokenPiece a = token_piece(tok, alt.token);
      top.push_back({{"token", a.text}, {"logprob", alt.logprob}, {"bytes", bytes_of(a.bytes)}});
    }
    content.push_back(
        {{"token", t.text}, {"logprob", samples[i].logprob}, {"bytes", bytes_of(t.bytes)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json dump_safe_string(const std::string& s) {
  // Generated text is valid UTF-8 by construction; keep the JSON dump from throwing anyway.
  return json::parse(dump_json(json(s)));
}

}  // namespace

json completion_response(const std::string& id, int64_t created, const std::string& model, bool chat,
                         const std::vector<Choice>& choices, int64_t prompt_tokens, bool logprobs,
                         const Tokenizer& tok) {
  json out = {{"id", id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array()}};
  int64_t completion = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", openai_finish_reason(c.finish)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", dump_safe_string(c.text)}};
      choice["logprobs"] = logprobs ? chat_logprobs(c.tokens, c.samples, tok) : json(nullptr);
    } else {
      choice["text"] = dump_safe_string(c.text);
      choice["logprobs"] = logprobs ? completion_logprobs(c.tokens, c.samples, tok, 0) : json(nullptr);
    }
    out["choices"].push_back(choice);
    completion += c.generated_tokens;
  }
  out["usage"] = {{"prompt_tokens", prompt_tokens},
                  {"completion_tokens", completion},
                  {"total_tokens", prompt_tokens + completion}};
  return out;
}

json stream_chunk(const std::string& id, int64_t created, const std::string& model, bool chat, int64_t index,
                  const StreamChunk& c, bool first, bool logprobs, const Tokenizer& tok, size_t text_offset) {
  json choice = {
      {"index", index},
      {"finish_reason", c.finish == FinishReason::kNone ? json(nullptr) : json(openai_finish_reason(c.finish))}};
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!c.text.empty() || first) delta["content"] = dump_safe_string(c.text);
    choice["delta"] = delta;
    choice["logprobs"] = logprobs ? chat_logprobs(c.token_ids, c.samples, tok) : json(nullptr);
  } else {
    choice["text"] = dump_safe_string(c.text);
    choice["logprobs"] = logprobs ? completion_logprobs(c.token_ids, c.samples, tok, text_offset) : json(nullptr);
  }
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

json usage_chunk(const std::string& id, int64_t created, const std::string& model, bool chat, int64_t prompt_tokens,
                 int64_t completion_tokens) {
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage",
           {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}}}};
}

}  // namespace fp6serve::server
