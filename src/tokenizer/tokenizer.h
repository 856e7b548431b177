// Hugging Face tokenizer.json in C++: added and special tokens, normalizers, pre-tokenizers,
// the BPE model (byte-level as in Llama-3/Qwen2/GPT-2, or byte-fallback as in
// Llama-2/Mistral), post-processors and decoders, reproducing the tokenizers library's ids and
// texts. Immutable after load; safe to use from many threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fp6serve {

class Tokenizer {
 public:
  // Reads model_dir/tokenizer.json and, when present, tokenizer_config.json (bos_token,
  // eos_token, chat_template, add_bos_token) and chat_template.jinja. Errors name the file
  // and the component or field: kNotFound, kBadInput, kUnsupported.
  static Tokenizer load(const std::filesystem::path& model_dir);
  // From the texts of tokenizer.json and tokenizer_config.json ("" when absent).
  static Tokenizer parse(const std::string& tokenizer_json, const std::string& config_json, const std::string& source);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Ids the tokenizer has no token for (padding of the model's vocabulary) decode to "".
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  // The bytes of one token decoded alone, before invalid UTF-8 becomes U+FFFD: a token of part
  // of a character (byte-level, or byte-fallback <0xNN>) gives its raw bytes (logprobs'
  // "bytes"); any other token gives decode({id}).
  std::string token_bytes(int32_t id) const;

  int32_t vocab_size() const;  // largest id + 1, added tokens included
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // throws kInvalidArgument when out of range
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  const std::string& chat_template() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::string decode_tokens(std::span<const int32_t> ids, bool skip_special_tokens, bool keep_bytes) const;
  std::unique_ptr<Impl> impl_;
};

// Streaming detokenization: push() returns the text that became final with this token and
// never returns broken UTF-8 (an incomplete character is held back until its last byte).
// The concatenation of all pushes and flush() equals decode() of all ids, except that tokens
// held back kMaxHeldBack times without completing a character (bytes that never form valid
// UTF-8, or a decoder that keeps rewriting the text) are let go as they decode (with U+FFFD):
// every push then costs a bounded window, never the whole tail again.
inline constexpr size_t kMaxHeldBack = 8;
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  std::string push(int32_t id);
  std::string flush();  // whatever was held back (an incomplete character becomes U+FFFD)

 private:
  std::string window_text(size_t from, size_t to) const;
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // decoding restarts here: the tokens emitted last, context for the unread ones
  size_t read_ = 0;    // tokens before this are emitted
};

}  // namespace fp6serve
