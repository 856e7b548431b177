// The pipeline stages of tokenizer.json other than the model: normalizers, pre-tokenizers,
// decoders and post-processors, for the components Llama-2/Mistral (Prepend/Replace,
// Metaspace, ByteFallback), Llama-3/Qwen2/GPT-2 (Split regex, ByteLevel, NFC) and BERT-style
// checkpoints use. An unknown component is Error(kUnsupported) naming its type and JSON path.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fp6serve::tokenizer_parts {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string text) const = 0;
};

// Splits a section of text (between added tokens) into pre-tokens.
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // first_section: the section starts the input (Metaspace's prepend_scheme "first").
  virtual void apply(std::vector<std::string>& pieces, bool first_section) const = 0;
};

// Turns the token strings of a decode into text, in place (HF decoders work on the list).
// keep_bytes: bytes that form no UTF-8 (a token of part of a character) stay as they are
// instead of becoming U+FFFD (Tokenizer::token_bytes).
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens, bool keep_bytes) const = 0;
};

// Adds the special tokens of the template around the ids (when add_special_tokens).
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids) const = 0;
};

// `source` names the file and `path` the JSON path, for error messages. A null json gives null.
std::unique_ptr<Normalizer> parse_normalizer(const nlohmann::json& j, const std::string& source,
                                             const std::string& path);
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const nlohmann::json& j, const std::string& source,
                                                  const std::string& path);
std::unique_ptr<Decoder> parse_decoder(const nlohmann::json& j, const std::string& source, const std::string& path);
std::unique_ptr<PostProcessor> parse_post_processor(const nlohmann::json& j, const std::string& source,
                                                    const std::string& path);

}  // namespace fp6serve::tokenizer_parts
