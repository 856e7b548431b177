#include "tokenizer/bpe.h"

#include <fmt/format.h>

#include <queue>

#include "core/check.h"
#include "tokenizer/fields.h"
#include "tokenizer/unicode.h"

namespace fp6serve {

using json = nlohmann::json;

BpeModel::BpeModel(const json& m, const std::string& source) {
  using namespace tokenizer_parts;
  FP6_CHECK(m.is_object(), kBadInput, "{}: 'model' must be an object", source);
  const std::string type = string_or(m, "type", "BPE", source, "model");
  FP6_CHECK(type == "BPE", kUnsupported, "{}: model.type '{}' is not supported (only BPE)", source, type);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    FP6_CHECK(!m.contains(key) || m[key].is_null() || m[key] == "", kUnsupported, "{}: model.{} is not supported",
              source, key);
  FP6_CHECK(!m.contains("dropout") || m["dropout"].is_null() || m["dropout"] == 0.0, kUnsupported,
            "{}: model.dropout (BPE dropout) is not supported", source);
  FP6_CHECK(m.contains("vocab") && m["vocab"].is_object() && !m["vocab"].empty(), kBadInput,
            "{}: model.vocab is missing or empty", source);
  for (const auto& [token, id] : m["vocab"].items())
    vocab_.emplace(token, token_id(id, source, "model.vocab['" + token + "']"));
  byte_fallback_ = bool_or(m, "byte_fallback", false, source, "model");
  fuse_unk_ = bool_or(m, "fuse_unk", false, source, "model");
  ignore_merges_ = bool_or(m, "ignore_merges", false, source, "model");
  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    const std::string unk = string_or(m, "unk_token", "", source, "model");
    const auto it = vocab_.find(unk);
    FP6_CHECK(it != vocab_.end(), kBadInput, "{}: model.unk_token '{}' is not in the vocabulary", source, unk);
    unk_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  FP6_CHECK(m.contains("merges") && m["merges"].is_array(), kBadInput, "{}: model.merges is missing", source);
  int32_t rank = 0;
  for (const json& merge : m["merges"]) {
    // "a b" (tokenizers < 0.20) or ["a", "b"].
    std::string a, b;
    if (merge.is_string()) {
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ', 1);
      FP6_CHECK(space != std::string::npos, kBadInput, "{}: merge '{}' is not two tokens", source, s);
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else {
      FP6_CHECK(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(), kBadInput,
                "{}: model.merges[{}] is not a pair of strings", source, rank);
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    }
    const auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
    FP6_CHECK(ia != vocab_.end() && ib != vocab_.end() && iab != vocab_.end(), kBadInput,
              "{}: merge {} ('{}' '{}') uses tokens missing from the vocabulary", source, rank, a, b);
    merges_.emplace(key(ia->second, ib->second), Merge{rank, iab->second});
    ++rank;
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols: one per character, or per byte of a character missing from the vocabulary
  // (byte fallback); -1 marks an unknown character.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> syms;
  for (std::string_view ch : text::utf8_chars(word)) {
    const auto it = vocab_.find(std::string(ch));
    if (it != vocab_.end()) {
      syms.push_back({it->second, 0, 0, true});
      continue;
    }
    bool all_bytes = byte_fallback_;
    for (unsigned char c : ch) all_bytes = all_bytes && byte_ids_[c] >= 0;
    if (all_bytes) {
      for (unsigned char c : ch) syms.push_back({byte_ids_[c], 0, 0, true});
    } else {
      syms.push_back({-1, 0, 0, true});
    }
  }
  const auto n = static_cast<int32_t>(syms.size());
  for (int32_t i = 0; i < n; ++i) syms[i].prev = i - 1, syms[i].next = i + 1 < n ? i + 1 : -1;

  // Lowest rank first, leftmost on ties; stale entries are skipped when popped.
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t right;  // the right symbol at push time
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int32_t i) {
    if (i < 0) return;
    const int32_t j = syms[i].next;
    if (j < 0 || syms[i].id < 0 || syms[j].id < 0) return;
    const auto it = merges_.find(key(syms[i].id, syms[j].id));
    if (it != merges_.end()) heap.push({it->second.rank, i, j});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = syms[c.pos];
    if (!l.alive || l.next != c.right || l.id < 0) continue;
    Symbol& r = syms[c.right];
    const auto it = merges_.find(key(l.id, r.id));
    if (it == merges_.end() || it->second.rank != c.rank) continue;
    l.id = it->second.id;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.pos;
    push(l.prev);
    push(c.pos);
  }
  bool last_unk = false;
  for (int32_t i = 0; i < n && i >= 0; i = syms[i].next) {
    if (syms[i].id >= 0) {
      out.push_back(syms[i].id);
      last_unk = false;
      continue;
    }
    FP6_CHECK(unk_.has_value(), kInvalidArgument,
              "the text has a character that the vocabulary cannot represent and the tokenizer has no unk_token");
    if (!(fuse_unk_ && last_unk)) out.push_back(*unk_);
    last_unk = true;
  }
}

}  // namespace fp6serve
