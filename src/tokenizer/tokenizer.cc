#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/check.h"
#include "core/file.h"
#include "core/json.h"
#include "tokenizer/bpe.h"
#include "tokenizer/components.h"
#include "tokenizer/fields.h"
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

// tokenizer_config.json writes special tokens as strings or as {"content": ...} objects
// (AddedToken), or null.
std::string token_string(const json& c, const char* key, const std::string& source) {
  if (!c.contains(key) || c[key].is_null()) return "";
  const json& v = c[key];
  if (v.is_string()) return v.get<std::string>();
  FP6_CHECK(v.is_object() && v.contains("content") && v["content"].is_string(), kBadInput,
            "{}: {} must be a string or {{\"content\": string}}, got {}", source, key, brief(v));
  return v["content"].get<std::string>();
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
  // Every token's text and whether it is special, in the order added (an added token after
  // a vocabulary entry of the same id replaces it), and id -> index into them.
  struct Entry {
    std::string text;
    bool special;
  };
  std::vector<Entry> entries;
  // Real vocabularies are dense (ids 0..n-1 and a few added tokens past them): a table by id.
  // A file whose ids leave large holes (one token at id 2^24 - 1) gets a hash map, so memory
  // follows the size of the file, not its largest id.
  std::vector<int32_t> dense;  // id -> index, -1 for an id without a token
  std::unordered_map<int32_t, int32_t> sparse;
  int32_t size = 0;  // largest id + 1

  const Entry* entry(int32_t id) const {
    if (id < 0 || id >= size) return nullptr;
    int32_t k = -1;
    if (!dense.empty()) {
      k = dense[static_cast<size_t>(id)];
    } else if (const auto it = sparse.find(id); it != sparse.end()) {
      k = it->second;
    }
    return k < 0 ? nullptr : &entries[static_cast<size_t>(k)];
  }
  const std::string& text_of(int32_t id) const {
    static const std::string kNone;
    const Entry* e = entry(id);
    return e ? e->text : kNone;
  }
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
  naming_file(source, [&] {
    const json j = parse_json(tokenizer_json, source);
    FP6_CHECK(j.is_object() && j.contains("model"), kBadInput, "{}: no 'model' object", source);
    impl->model = std::make_unique<BpeModel>(j["model"], source);
    const auto component = [&](const char* key) { return j.contains(key) ? j[key] : json(); };
    impl->normalizer = parse_normalizer(component("normalizer"), source, "normalizer");
    impl->pre_tokenizer = parse_pre_tokenizer(component("pre_tokenizer"), source, "pre_tokenizer");
    impl->post_processor = parse_post_processor(component("post_processor"), source, "post_processor");
    impl->decoder = parse_decoder(component("decoder"), source, "decoder");

    int32_t max_id = -1;  // ids are below kMaxTokenId (bpe.cc, token_id below): no overflow
    for (const auto& [token, id] : impl->model->vocab()) max_id = std::max(max_id, id);
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      FP6_CHECK(j["added_tokens"].is_array(), kBadInput, "{}: added_tokens must be a list", source);
      const json& list = j["added_tokens"];
      for (size_t i = 0; i < list.size(); ++i) {
        const json& a = list[i];
        const std::string path = fmt::format("added_tokens[{}]", i);
        FP6_CHECK(a.is_object() && a.contains("id") && a.contains("content") && a["content"].is_string() &&
                      !a["content"].get_ref<const std::string&>().empty(),
                  kBadInput, "{}: {} lacks an id or content: {}", source, path, brief(a));
        const std::string& content = a["content"].get_ref<const std::string&>();
        const int32_t id = token_id(a["id"], source, fmt::format("{}.id (token '{}')", path, content));
        impl->added.push_back({content, id, bool_or(a, "special", false, source, path),
                               bool_or(a, "lstrip", false, source, path), bool_or(a, "rstrip", false, source, path),
                               bool_or(a, "single_word", false, source, path)});
        max_id = std::max(max_id, id);
      }
    }
    impl->size = max_id + 1;
    const size_t count = impl->model->vocab().size() + impl->added.size();
    if (static_cast<size_t>(impl->size) <= 2 * count + 1024) impl->dense.assign(static_cast<size_t>(impl->size), -1);
    impl->entries.reserve(count);
    auto set = [&](int32_t id, const std::string& text, bool special) {
      const auto k = static_cast<int32_t>(impl->entries.size());
      impl->entries.push_back({text, special});
      if (!impl->dense.empty())
        impl->dense[static_cast<size_t>(id)] = k;
      else
        impl->sparse[id] = k;
    };
    for (const auto& [token, id] : impl->model->vocab()) set(id, token, false);
    for (size_t k = 0; k < impl->added.size(); ++k) {
      const AddedToken& a = impl->added[k];
      set(a.id, a.content, a.special);
      impl->added_by_first_byte[static_cast<unsigned char>(a.content[0])].push_back(k);
    }
    for (auto& [byte, list] : impl->added_by_first_byte)
      std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
        return impl->added[a].content.size() > impl->added[b].content.size();
      });
  });

  if (!config_json.empty()) {
    const std::string config_source = (fs::path(source).parent_path() / "tokenizer_config.json").string();
    naming_file(config_source, [&] {
      const json c = parse_json(config_json, config_source);
      FP6_CHECK(c.is_object(), kBadInput, "{}: expected a JSON object", config_source);
      impl->bos_token = token_string(c, "bos_token", config_source);
      impl->eos_token = token_string(c, "eos_token", config_source);
      if (c.contains("chat_template") && !c["chat_template"].is_null()) {
        const json& ct = c["chat_template"];
        if (ct.is_string()) {
          impl->chat_template = ct.get<std::string>();
        } else {
          // Several named templates: the "default" one serves chat.
          FP6_CHECK(ct.is_array(), kBadInput, "{}: chat_template must be a string or a list of templates",
                    config_source);
          for (size_t i = 0; i < ct.size(); ++i) {
            const std::string path = fmt::format("chat_template[{}]", i);
            FP6_CHECK(ct[i].is_object(), kBadInput, "{}: {} must be {{\"name\": ..., \"template\": ...}}",
                      config_source, path);
            if (string_or(ct[i], "name", "", config_source, path) == "default")
              impl->chat_template = string_or(ct[i], "template", "", config_source, path);
          }
        }
      }
      impl->force_bos = bool_or(c, "add_bos_token", false, config_source, "tokenizer_config");
    });
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
  return decode_tokens(ids, skip_special_tokens, false);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  return decode_tokens(std::span<const int32_t>(&id, 1), false, true);
}

std::string Tokenizer::decode_tokens(std::span<const int32_t> ids, bool skip_special_tokens, bool keep_bytes) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    // Models often pad their embedding table past the tokenizer (Qwen2: 1024 vs 1022 here);
    // like the tokenizers library, ids without a token decode to nothing.
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && is_special(id)) continue;
    tokens.push_back(m.text_of(id));
  }
  if (m.decoder)
    m.decoder->apply(tokens, keep_bytes);
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
  return impl_->size;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == token) return a.id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  FP6_CHECK(id >= 0 && id < vocab_size(), kInvalidArgument, "token id {} is outside the vocabulary [0, {})", id,
            vocab_size());
  return impl_->text_of(id);
}

bool Tokenizer::is_special(int32_t id) const {
  const Impl::Entry* e = impl_->entry(id);
  return e && e->special;
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
  // Held back too long: no character is coming; let the tokens go as they decode.
  const bool give_up = ids_.size() - read_ >= kMaxHeldBack;
  const bool extends = now.size() > before.size() && now.compare(0, before.size(), before) == 0;
  if (!extends && !give_up) return {};
  std::string fresh = now.size() > before.size() ? now.substr(before.size()) : std::string();
  // A trailing U+FFFD or a cut multi-byte sequence means a character is not complete yet.
  if (!give_up && (text::utf8_incomplete_tail(fresh) ||
                   (fresh.size() >= 3 && fresh.compare(fresh.size() - 3, 3, "\xEF\xBF\xBD") == 0)))
    return {};
  if (give_up) fresh = text::utf8_lossy(fresh);  // never broken UTF-8, even when giving up
  // The new context: the tokens just emitted. They start where a complete character ended, so
  // the window never starts inside one: the last token alone could be a lone UTF-8
  // continuation byte (<0x87> of "ć"), and ByteFallback turns a run of bytes that is not
  // valid UTF-8 into one U+FFFD per byte, the character after it included.
  prefix_ = read_;
  read_ = ids_.size();
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
