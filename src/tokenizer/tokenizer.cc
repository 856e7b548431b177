#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/check.h"
#include "core/file.h"
#include "tokenizer/bpe.h"
#include "tokenizer/components.h"
#include "tokenizer/unicode.h"

namespace fp6serve {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tokenizer_parts;

namespace {

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
  bool lstrip;
  bool rstrip;
  bool single_word;
};

// tokenizer_config.json writes special tokens as strings or as {"content": ...} objects.
std::string token_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

bool is_word_char(unsigned char c) {
  return std::isalnum(c) || c == '_' || c >= 0x80;
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<unsigned char, std::vector<size_t>> added_by_first_byte;  // longest first
  std::vector<std::string> id_to_token;
  std::vector<bool> special;
  std::string bos_token, eos_token, chat_template;
  std::optional<int32_t> bos_id, eos_id;
  bool force_bos = false;  // tokenizer_config add_bos_token without a post-processor that adds it

  // The added token matching at `pos`, longest first; its span after lstrip/rstrip.
  const AddedToken* match_added(std::string_view text, size_t pos, size_t& begin, size_t& end) const {
    const auto it = added_by_first_byte.find(static_cast<unsigned char>(text[pos]));
    if (it == added_by_first_byte.end()) return nullptr;
    for (size_t k : it->second) {
      const AddedToken& a = added[k];
      if (text.compare(pos, a.content.size(), a.content) != 0) continue;
      if (a.single_word) {
        const bool left_ok = pos == 0 || !is_word_char(static_cast<unsigned char>(text[pos - 1]));
        const size_t after = pos + a.content.size();
        const bool right_ok = after >= text.size() || !is_word_char(static_cast<unsigned char>(text[after]));
        if (!left_ok || !right_ok) continue;
      }
      begin = pos;
      end = pos + a.content.size();
      if (a.lstrip)
        while (begin > 0 && std::isspace(static_cast<unsigned char>(text[begin - 1]))) --begin;
      if (a.rstrip)
        while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
      return &a;
    }
    return nullptr;
  }

  void encode_section(std::string_view section, bool first, std::vector<int32_t>& out) const {
    if (section.empty()) return;
    std::string normalized(section);
    if (normalizer) normalized = normalizer->apply(std::move(normalized));
    std::vector<std::string> pieces = {normalized};
    if (pre_tokenizer) pre_tokenizer->apply(pieces, first);
    for (const std::string& p : pieces) model->tokenize(p, out);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const fs::path& dir) {
  const fs::path tok = dir / "tokenizer.json";
  FP6_CHECK(fs::exists(tok), kNotFound, "{} has no tokenizer.json (only Hugging Face fast tokenizers are supported)",
            dir.string());
  const fs::path cfg = dir / "tokenizer_config.json";
  Tokenizer t = parse(read_file(tok), fs::exists(cfg) ? read_file(cfg) : "", tok.string());
  if (fs::exists(dir / "chat_template.jinja")) t.impl_->chat_template = read_file(dir / "chat_template.jinja");
  return t;
}

Tokenizer Tokenizer::parse(const std::string& tokenizer_json, const std::string& config_json,
                           const std::string& source) {
  auto impl = std::make_unique<Impl>();
  json j;
  try {
    j = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    FP6_THROW(kBadInput, "{}: malformed JSON: {}", source, e.what());
  }
  FP6_CHECK(j.is_object() && j.contains("model"), kBadInput, "{}: no 'model' object", source);
  impl->model = std::make_unique<BpeModel>(j["model"], source);
  impl->normalizer = parse_normalizer(j.value("normalizer", json()), source, "normalizer");
  impl->pre_tokenizer = parse_pre_tokenizer(j.value("pre_tokenizer", json()), source, "pre_tokenizer");
  impl->post_processor = parse_post_processor(j.value("post_processor", json()), source, "post_processor");
  impl->decoder = parse_decoder(j.value("decoder", json()), source, "decoder");

  int32_t max_id = -1;
  for (const auto& [token, id] : impl->model->vocab()) max_id = std::max(max_id, id);
  if (j.contains("added_tokens")) {
    FP6_CHECK(j["added_tokens"].is_array(), kBadInput, "{}: added_tokens must be a list", source);
    for (const json& a : j["added_tokens"]) {
      FP6_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
                    a["content"].is_string() && !a["content"].get<std::string>().empty(),
                kBadInput, "{}: an added_tokens entry lacks an id or content: {}", source, a.dump());
      impl->added.push_back({a["content"], a["id"].get<int32_t>(), a.value("special", false), a.value("lstrip", false),
                             a.value("rstrip", false), a.value("single_word", false)});
      max_id = std::max(max_id, impl->added.back().id);
    }
  }
  impl->id_to_token.assign(static_cast<size_t>(max_id + 1), "");
  impl->special.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : impl->model->vocab()) impl->id_to_token[id] = token;
  for (size_t k = 0; k < impl->added.size(); ++k) {
    const AddedToken& a = impl->added[k];
    impl->id_to_token[a.id] = a.content;
    impl->special[a.id] = a.special;
    impl->added_by_first_byte[static_cast<unsigned char>(a.content[0])].push_back(k);
  }
  for (auto& [byte, list] : impl->added_by_first_byte)
    std::stable_sort(list.begin(), list.end(),
                     [&](size_t a, size_t b) { return impl->added[a].content.size() > impl->added[b].content.size(); });

  if (!config_json.empty()) {
    json c;
    try {
      c = json::parse(config_json);
    } catch (const json::exception& e) {
      FP6_THROW(kBadInput, "tokenizer_config.json beside {}: malformed JSON: {}", source, e.what());
    }
    impl->bos_token = token_string(c.value("bos_token", json()));
    impl->eos_token = token_string(c.value("eos_token", json()));
    if (c.contains("chat_template")) {
      const json& ct = c["chat_template"];
      if (ct.is_string()) {
        impl->chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {
        // Several named templates: the "default" one serves chat.
        for (const json& t : ct)
          if (t.value("name", "") == "default") impl->chat_template = t.value("template", "");
      }
    }
    if (c.contains("add_bos_token") && c["add_bos_token"].is_boolean())
      impl->force_bos = c["add_bos_token"].get<bool>();
  }
  Tokenizer t(std::move(impl));
  Impl& m = *t.impl_;
  if (!m.bos_token.empty()) m.bos_id = t.token_to_id(m.bos_token);
  if (!m.eos_token.empty()) m.eos_id = t.token_to_id(m.eos_token);
  // add_bos_token matters only where the post-processor does not add BOS itself.
  if (m.force_bos && m.bos_id) {
    std::vector<int32_t> probe;
    if (m.post_processor) m.post_processor->apply(probe);
    m.force_bos = std::find(probe.begin(), probe.end(), *m.bos_id) == probe.end();
  } else {
    m.force_bos = false;
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  size_t section = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t begin, end;
    const AddedToken* a = m.match_added(text, pos, begin, end);
    if (!a || begin < section) {
      ++pos;
      continue;
    }
    m.encode_section(text.substr(section, begin - section), section == 0, ids);
    ids.push_back(a->id);
    section = pos = end;
  }
  m.encode_section(text.substr(section), section == 0, ids);
  if (add_special_tokens) {
    if (m.post_processor) m.post_processor->apply(ids);
    if (m.force_bos) ids.insert(ids.begin(), *m.bos_id);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    // Models often pad their embedding table past the tokenizer (Qwen2: 1024 vs 1022 here);
    // like the tokenizers library, ids without a token decode to nothing.
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && m.special[id]) continue;
    tokens.push_back(m.id_to_token[id]);
  }
  if (m.decoder)
    m.decoder->apply(tokens);
  else if (tokens.size() > 1) {
    // The tokenizers library joins with spaces when there is no decoder.
    std::string joined = tokens[0];
    for (size_t i = 1; i < tokens.size(); ++i) joined += " " + tokens[i];
    tokens = {joined};
  }
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->id_to_token.size());
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == token) return a.id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  FP6_CHECK(id >= 0 && id < vocab_size(), kInvalidArgument, "token id {} is outside the vocabulary [0, {})", id,
            vocab_size());
  return impl_->id_to_token[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}
std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos_id;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos_id;
}
const std::string& Tokenizer::bos_token() const {
  return impl_->bos_token;
}
const std::string& Tokenizer::eos_token() const {
  return impl_->eos_token;
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string IncrementalDecoder::window_text(size_t from, size_t to) const {
  return tokenizer_.decode(std::span<const int32_t>(ids_.data() + from, to - from), skip_special_);
}

std::string IncrementalDecoder::push(int32_t id) {
  ids_.push_back(id);
  // Decode from a context token on: decoders that treat the start of the text specially
  // (Llama-2's Strip of the first space) then see the same start in both windows.
  const std::string before = window_text(prefix_, read_);
  const std::string now = window_text(prefix_, ids_.size());
  if (now.size() <= before.size() || now.compare(0, before.size(), before) != 0) return {};
  std::string fresh = now.substr(before.size());
  // A trailing U+FFFD or a cut multi-byte sequence means a character is not complete yet.
  if (text::utf8_incomplete_tail(fresh) ||
      (fresh.size() >= 3 && fresh.compare(fresh.size() - 3, 3, "\xEF\xBF\xBD") == 0))
    return {};
  read_ = ids_.size();
  // The new context: the last token that decodes to something (skipped specials do not).
  prefix_ = read_ - 1;
  while (prefix_ > 0 && window_text(prefix_, prefix_ + 1).empty()) --prefix_;
  if (window_text(prefix_, prefix_ + 1).empty()) prefix_ = 0;
  return fresh;
}

std::string IncrementalDecoder::flush() {
  const std::string before = window_text(prefix_, read_);
  const std::string now = window_text(prefix_, ids_.size());
  read_ = ids_.size();
  if (now.size() <= before.size() || now.compare(0, before.size(), before) != 0) return {};
  return now.substr(before.size());
}

}  // namespace fp6serve
