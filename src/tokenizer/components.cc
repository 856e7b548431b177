#include "tokenizer/components.h"

#include <algorithm>
#include <cctype>

#include "core/check.h"
#include "tokenizer/fields.h"
#include "tokenizer/unicode.h"

namespace fp6serve::tokenizer_parts {

using json = nlohmann::json;

namespace {

std::string type_of(const json& j, const std::string& source, const std::string& path) {
  FP6_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), kBadInput, "{}: {} has no 'type'", source,
            path);
  return j["type"].get<std::string>();
}

const json& list_field(const json& j, const char* key, const std::string& source, const std::string& path) {
  FP6_CHECK(j.contains(key) && j[key].is_array(), kBadInput, "{}: {}.{} must be a list", source, path, key);
  return j[key];
}

// A regex compiled while parsing, so that a pattern PCRE2 rejects is an error of the file
// (naming it and the component at `path`), never of a later encode or decode.
std::unique_ptr<text::Regex> compile(const std::string& pattern, bool literal, const std::string& source,
                                     const std::string& path) {
  try {
    return std::make_unique<text::Regex>(pattern, literal);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("{}: {}: {}", source, path, e.what()));
  }
}

// A {"String": s} or {"Regex": r} pattern.
std::unique_ptr<text::Regex> parse_pattern(const json& j, const std::string& source, const std::string& path) {
  FP6_CHECK(j.contains("pattern") && j["pattern"].is_object(), kBadInput, "{}: {}.pattern is missing", source, path);
  const json& p = j["pattern"];
  if (p.contains("String") && p["String"].is_string())
    return compile(p["String"].get<std::string>(), true, source, path + ".pattern.String");
  if (p.contains("Regex") && p["Regex"].is_string())
    return compile(p["Regex"].get<std::string>(), false, source, path + ".pattern.Regex");
  FP6_THROW(kBadInput, "{}: {}.pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}", source, path);
}

// Metaspace's replacement: one character, as the tokenizers library's `char`.
std::string parse_replacement(const json& j, const std::string& source, const std::string& path) {
  const std::string r = string_or(j, "replacement", "\xE2\x96\x81", source, path);
  FP6_CHECK(text::utf8_chars(r).size() == 1 && text::utf8_lossy(r) == r, kBadInput,
            "{}: {}.replacement must be one character, got '{}'", source, path, text::utf8_lossy(r));
  return r;
}

// Metaspace's prepend_scheme (or the older add_prefix_space): always, first or never.
std::string parse_prepend_scheme(const json& j, const std::string& source, const std::string& path) {
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    const std::string scheme = string_or(j, "prepend_scheme", "always", source, path);
    FP6_CHECK(scheme == "always" || scheme == "first" || scheme == "never", kUnsupported,
              "{}: {}.prepend_scheme '{}' is not supported (always, first, never)", source, path, scheme);
    return scheme;
  }
  return bool_or(j, "add_prefix_space", true, source, path) ? "always" : "never";
}

std::string replace_all(const text::Regex& re, const std::string& s, const std::string& content) {
  std::string out;
  size_t last = 0;
  for (auto [b, e] : re.find_all(s)) {
    out.append(s, last, b - last);
    out += content;
    last = e;
  }
  out.append(s, last);
  return out;
}

// ---- normalizers -----------------------------------------------------------------------

class NormalizerSequence : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  std::string apply(std::string t) const override {
    for (const auto& p : parts) t = p->apply(std::move(t));
    return t;
  }
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prefix(std::move(p)) {}
  std::string prefix;
  std::string apply(std::string t) const override { return t.empty() ? t : prefix + t; }
};

class ReplaceNormalizer : public Normalizer {
 public:
  std::unique_ptr<text::Regex> pattern;
  std::string content;
  std::string apply(std::string t) const override { return replace_all(*pattern, t, content); }
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(text::NormalForm f) : form(f) {}
  text::NormalForm form;
  std::string apply(std::string t) const override { return text::normalize(t, form); }
};

class Lowercase : public Normalizer {
 public:
  std::string apply(std::string t) const override { return text::lowercase(t); }
};

class StripNormalizer : public Normalizer {
 public:
  bool left = true, right = true;
  std::string apply(std::string t) const override {
    auto space = [](unsigned char c) { return std::isspace(c) != 0; };
    size_t b = 0, e = t.size();
    if (left)
      while (b < e && space(static_cast<unsigned char>(t[b]))) ++b;
    if (right)
      while (e > b && space(static_cast<unsigned char>(t[e - 1]))) --e;
    return t.substr(b, e - b);
  }
};

// ---- pre-tokenizers ----------------------------------------------------------------------

class PreTokenizerSequence : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(std::vector<std::string>& pieces, bool first) const override {
    for (const auto& p : parts) p->apply(pieces, first);
  }
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const json& j, const std::string& source, const std::string& path) {
  const std::string b = string_or(j, "behavior", "Isolated", source, path);
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  FP6_THROW(kUnsupported, "{}: {}.behavior '{}' is not supported", source, path, b);
}

// Splits one piece at the matches of `re` as tokenizers' SplitDelimiterBehavior does.
void split_piece(const text::Regex& re, Behavior behavior, bool invert, const std::string& s,
                 std::vector<std::string>& out) {
  // Alternating (is_match, begin, end) spans covering s.
  std::vector<std::tuple<bool, size_t, size_t>> spans;
  size_t last = 0;
  for (auto [b, e] : re.find_all(s)) {
    if (b > last) spans.emplace_back(invert, last, b);
    spans.emplace_back(!invert, b, e);
    last = e;
  }
  if (last < s.size()) spans.emplace_back(invert, last, s.size());
  std::vector<std::string> pieces;
  if (behavior == Behavior::kMergedWithNext) {
    // As tokenizers does it: walk backwards, a delimiter joins the piece after it unless that
    // piece is a delimiter too.
    bool next_is_match = false;
    for (size_t k = spans.size(); k-- > 0;) {
      const auto [match, b, e] = spans[k];
      if (match && !next_is_match && !pieces.empty())
        pieces.back() = s.substr(b, e - b) + pieces.back();
      else
        pieces.push_back(s.substr(b, e - b));
      next_is_match = match;
    }
    std::reverse(pieces.begin(), pieces.end());
  }
  for (size_t i = 0; i < spans.size() && behavior != Behavior::kMergedWithNext; ++i) {
    const auto [match, b, e] = spans[i];
    const std::string part = s.substr(b, e - b);
    switch (behavior) {
      case Behavior::kRemoved:
        if (!match) pieces.push_back(part);
        break;
      case Behavior::kIsolated:
        pieces.push_back(part);
        break;
      case Behavior::kMergedWithPrevious:
        if (match && !pieces.empty() && !std::get<0>(spans[i - 1]))
          pieces.back() += part;
        else
          pieces.push_back(part);
        break;
      case Behavior::kContiguous:
        if (match && i > 0 && std::get<0>(spans[i - 1]))
          pieces.back() += part;
        else
          pieces.push_back(part);
        break;
      case Behavior::kMergedWithNext:
        break;
    }
  }
  for (auto& p : pieces)
    if (!p.empty()) out.push_back(std::move(p));
}

class Split : public PreTokenizer {
 public:
  std::unique_ptr<text::Regex> pattern;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  void apply(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (const auto& p : pieces) split_piece(*pattern, behavior, invert, p, out);
    pieces.swap(out);
  }
};

constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  std::unique_ptr<text::Regex> regex;  // null: use_regex false
  void apply(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string p = pieces[i];
      if (add_prefix_space && !p.empty() && p[0] != ' ') p = " " + p;
      if (regex)
        split_piece(*regex, Behavior::kIsolated, false, p, out);
      else
        out.push_back(std::move(p));
    }
    for (auto& p : out) p = text::bytes_to_unicode(p);
    pieces.swap(out);
  }
};

class Metaspace : public PreTokenizer {
 public:
  std::string replacement = "\xE2\x96\x81";
  std::unique_ptr<text::Regex> replacement_re;  // the replacement, literally
  std::string prepend_scheme = "always";
  bool split = true;
  void apply(std::vector<std::string>& pieces, bool first) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string p;
      for (char c : pieces[i]) c == ' ' ? p += replacement : p += c;
      const bool prepend = prepend_scheme == "always" || (prepend_scheme == "first" && first && i == 0);
      if (prepend && p.compare(0, replacement.size(), replacement) != 0) p = replacement + p;
      if (split) {
        split_piece(*replacement_re, Behavior::kMergedWithNext, false, p, out);
      } else {
        out.push_back(std::move(p));
      }
    }
    pieces.swap(out);
  }
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : re(individual ? "\\p{N}" : "\\p{N}+", false) {}
  text::Regex re;
  void apply(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (const auto& p : pieces) split_piece(re, Behavior::kIsolated, false, p, out);
    pieces.swap(out);
  }
};

// ---- decoders ------------------------------------------------------------------------------

class DecoderSequence : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> parts;
  void apply(std::vector<std::string>& t, bool keep_bytes) const override {
    for (const auto& p : parts) p->apply(t, keep_bytes);
  }
};

class ByteLevelDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens, bool keep_bytes) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      // A token whose every character is a byte stand-in becomes those bytes; others (added
      // tokens) pass as they are.
      std::string mapped;
      bool all = true;
      for (std::string_view ch : text::utf8_chars(t)) {
        const int b = text::unicode_to_byte(ch);
        if (b < 0) {
          all = false;
          break;
        }
        mapped += static_cast<char>(b);
      }
      bytes += all ? mapped : t;
    }
    tokens = {keep_bytes ? bytes : text::utf8_lossy(bytes)};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  std::unique_ptr<text::Regex> pattern;
  std::string content;
  void apply(std::vector<std::string>& tokens, bool) const override {
    for (auto& t : tokens) t = replace_all(*pattern, t, content);
  }
};

class ByteFallbackDecoder : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens, bool keep_bytes) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t pending = 0;
    auto flush = [&] {
      if (pending == 0) return;
      const std::string valid = text::utf8_lossy(bytes);
      if (keep_bytes || valid == bytes) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < pending; ++i) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      pending = 0;
    };
    for (auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4]))) {
        bytes += static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16));
        ++pending;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class Fuse : public Decoder {
 public:
  void apply(std::vector<std::string>& tokens, bool) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens = {all};
  }
};

class StripDecoder : public Decoder {
 public:
  std::string content = " ";
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens, bool) const override {
    for (auto& t : tokens) {
      const auto chars = text::utf8_chars(t);
      size_t b = 0, e = chars.size();
      while (b < std::min(start, chars.size()) && chars[b] == content) ++b;
      size_t stripped = 0;
      while (e > b && stripped < stop && chars[e - 1] == content) --e, ++stripped;
      std::string s;
      for (size_t i = b; i < e; ++i) s += chars[i];
      t = s;
    }
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  std::unique_ptr<text::Regex> replacement_re;  // the replacement, literally
  bool strip_first = true;
  void apply(std::vector<std::string>& tokens, bool) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = replace_all(*replacement_re, tokens[i], " ");
      if (i == 0 && strip_first && !tokens[i].empty() && tokens[i][0] == ' ') tokens[i].erase(0, 1);
    }
  }
};

// ---- post-processors -------------------------------------------------------------------

class PostSequence : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> parts;
  void apply(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts) p->apply(ids);
  }
};

class Template : public PostProcessor {
 public:
  std::vector<std::vector<int32_t>> items;  // empty vector marks the sequence itself
  void apply(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    for (const auto& item : items) {
      if (item.empty())
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), item.begin(), item.end());
    }
    ids.swap(out);
  }
};

class NoOpPost : public PostProcessor {
 public:
  void apply(std::vector<int32_t>&) const override {}
};

// A "Sequence" component: its `key` list parsed part by part (null parts skipped).
template <class Seq, class Parse>
std::unique_ptr<Seq> parse_sequence(const json& j, const char* key, const std::string& source, const std::string& path,
                                    Parse parse) {
  auto seq = std::make_unique<Seq>();
  const json& list = list_field(j, key, source, path);
  for (size_t i = 0; i < list.size(); ++i)
    if (auto part = parse(list[i], source, path + "." + key + "[" + std::to_string(i) + "]"))
      seq->parts.push_back(std::move(part));
  return seq;
}

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& source, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, source, path);
  if (type == "Sequence") return parse_sequence<NormalizerSequence>(j, "normalizers", source, path, parse_normalizer);
  if (type == "Prepend") return std::make_unique<Prepend>(string_or(j, "prepend", "", source, path));
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceNormalizer>();
    r->pattern = parse_pattern(j, source, path);
    r->content = string_or(j, "content", "", source, path);
    return r;
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(text::NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(text::NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(text::NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(text::NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip") {
    auto s = std::make_unique<StripNormalizer>();
    s->left = bool_or(j, "strip_left", true, source, path);
    s->right = bool_or(j, "strip_right", true, source, path);
    return s;
  }
  FP6_THROW(kUnsupported,
            "{}: {} is a '{}' normalizer, which is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, "
            "NFKC, NFKD, Lowercase, Strip)",
            source, path, type);
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& source, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, source, path);
  if (type == "Sequence")
    return parse_sequence<PreTokenizerSequence>(j, "pretokenizers", source, path, parse_pre_tokenizer);
  if (type == "Split") {
    auto s = std::make_unique<Split>();
    s->pattern = parse_pattern(j, source, path);
    s->behavior = parse_behavior(j, source, path);
    s->invert = bool_or(j, "invert", false, source, path);
    return s;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevelPre>();
    b->add_prefix_space = bool_or(j, "add_prefix_space", false, source, path);
    if (bool_or(j, "use_regex", true, source, path)) b->regex = std::make_unique<text::Regex>(kGpt2Pattern, false);
    return b;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<Metaspace>();
    m->replacement = parse_replacement(j, source, path);
    m->replacement_re = compile(m->replacement, true, source, path + ".replacement");
    m->prepend_scheme = parse_prepend_scheme(j, source, path);
    m->split = bool_or(j, "split", true, source, path);
    return m;
  }
  if (type == "Digits") return std::make_unique<Digits>(bool_or(j, "individual_digits", false, source, path));
  FP6_THROW(kUnsupported,
            "{}: {} is a '{}' pre-tokenizer, which is not supported (supported: Sequence, Split, ByteLevel, "
            "Metaspace, Digits)",
            source, path, type);
}

std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& source, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, source, path);
  if (type == "Sequence") return parse_sequence<DecoderSequence>(j, "decoders", source, path, parse_decoder);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceDecoder>();
    r->pattern = parse_pattern(j, source, path);
    r->content = string_or(j, "content", "", source, path);
    return r;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    s->content = string_or(j, "content", " ", source, path);
    s->start = count_or(j, "start", 0, source, path);
    s->stop = count_or(j, "stop", 0, source, path);
    return s;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    m->replacement_re = compile(parse_replacement(j, source, path), true, source, path + ".replacement");
    m->strip_first = parse_prepend_scheme(j, source, path) != "never";
    return m;
  }
  FP6_THROW(kUnsupported,
            "{}: {} is a '{}' decoder, which is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, "
            "Fuse, Strip, Metaspace)",
            source, path, type);
}

std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& source, const std::string& path) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, source, path);
  if (type == "Sequence") return parse_sequence<PostSequence>(j, "processors", source, path, parse_post_processor);
  if (type == "ByteLevel") return std::make_unique<NoOpPost>();
  if (type == "TemplateProcessing") {
    auto t = std::make_unique<Template>();
    const json& special = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    FP6_CHECK(special.is_object(), kBadInput, "{}: {}.special_tokens must be an object", source, path);
    const json& single = list_field(j, "single", source, path);
    for (size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      const std::string where = fmt::format("{}.single[{}]", path, i);
      if (item.is_object() && item.contains("Sequence")) {
        t->items.emplace_back();
      } else if (item.is_object() && item.contains("SpecialToken")) {
        const std::string id = string_or(item["SpecialToken"], "id", "", source, where + ".SpecialToken");
        FP6_CHECK(special.contains(id) && special[id].is_object() && special[id].contains("ids") &&
                      special[id]["ids"].is_array() && !special[id]["ids"].empty(),
                  kBadInput, "{}: {}.special_tokens lacks the ids of '{}'", source, path, id);
        std::vector<int32_t> ids;
        for (const json& v : special[id]["ids"])
          ids.push_back(token_id(v, source, fmt::format("{}.special_tokens['{}'].ids", path, id)));
        t->items.push_back(std::move(ids));
      } else {
        FP6_THROW(kBadInput, "{}: {} is neither a Sequence nor a SpecialToken", source, where);
      }
    }
    return t;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    // "cls": ["[CLS]", 101], "sep": ["[SEP]", 102]
    auto t = std::make_unique<Template>();
    for (const char* key : {"cls", "sep"})
      FP6_CHECK(j.contains(key) && j[key].is_array() && j[key].size() == 2, kBadInput, "{}: {}.{} must be [token, id]",
                source, path, key);
    t->items = {
        {token_id(j["cls"][1], source, path + ".cls[1]")}, {}, {token_id(j["sep"][1], source, path + ".sep[1]")}};
    return t;
  }
  FP6_THROW(kUnsupported,
            "{}: {} is a '{}' post-processor, which is not supported (supported: TemplateProcessing, ByteLevel, "
            "Bert/RobertaProcessing, Sequence)",
            source, path, type);
}

}  // namespace fp6serve::tokenizer_parts
