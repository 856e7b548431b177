#include "tokenizer/unicode.h"

#include <pcre2.h>
#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <unordered_map>

#include "core/check.h"

namespace fp6serve::text {

int utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;
}

std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = static_cast<size_t>(utf8_length(static_cast<unsigned char>(s[i])));
    if (i + n > s.size()) n = 1;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool utf8_incomplete_tail(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    return c >= 0xC0 && static_cast<size_t>(utf8_length(c)) > back;
  }
  return false;
}

std::string codepoint_to_utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

std::string utf8_lossy(std::string_view bytes) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const utf8proc_uint8_t*>(bytes.data());
  size_t i = 0;
  while (i < bytes.size()) {
    utf8proc_int32_t cp;
    const auto n = utf8proc_iterate(s + i, static_cast<utf8proc_ssize_t>(bytes.size() - i), &cp);
    if (n > 0) {
      out.append(bytes.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
      continue;
    }
    // A maximal invalid subpart: a lead byte and the continuation bytes that fit it.
    const auto lead = static_cast<unsigned char>(bytes[i]);
    size_t len = 1;
    const size_t want = static_cast<size_t>(utf8_length(lead));
    while (want > 1 && len < want && i + len < bytes.size() &&
           (static_cast<unsigned char>(bytes[i + len]) & 0xC0) == 0x80)
      ++len;
    out += kReplacement;
    i += len;
  }
  return out;
}

namespace {

struct ByteTable {
  std::array<std::string, 256> to_unicode;
  std::unordered_map<std::string, int> to_byte;
  ByteTable() {
    // Printable Latin-1 bytes map to themselves; the others to U+0100 upwards, in order.
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_unicode[b] = codepoint_to_utf8(printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++));
      to_byte[to_unicode[b]] = b;
    }
  }
};

const ByteTable& table() {
  static const ByteTable t;
  return t;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) {
  return table().to_unicode[b];
}

int unicode_to_byte(std::string_view ch) {
  const auto& m = table().to_byte;
  const auto it = m.find(std::string(ch));
  return it == m.end() ? -1 : it->second;
}

std::string bytes_to_unicode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += byte_to_unicode(b);
  return out;
}

std::string normalize(std::string_view s, NormalForm form) {
  if (s.empty()) return {};
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNfc:
      options |= UTF8PROC_COMPOSE;
      break;
    case NormalForm::kNfd:
      options |= UTF8PROC_DECOMPOSE;
      break;
    case NormalForm::kNfkc:
      options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
      break;
    case NormalForm::kNfkd:
      options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
      break;
  }
  utf8proc_uint8_t* out = nullptr;
  const std::string valid = utf8_lossy(s);
  const auto n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid.data()), static_cast<utf8proc_ssize_t>(valid.size()),
                   &out, static_cast<utf8proc_option_t>(options));
  if (n < 0) return valid;
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

std::string lowercase(std::string_view s) {
  std::string out;
  for (std::string_view ch : utf8_chars(s)) {
    utf8proc_int32_t cp;
    if (utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(ch.data()), static_cast<utf8proc_ssize_t>(ch.size()),
                         &cp) > 0)
      out += codepoint_to_utf8(static_cast<uint32_t>(utf8proc_tolower(cp)));
    else
      out += ch;
  }
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() {
    if (code) pcre2_code_free(code);
  }
};

Regex::Regex(const std::string& pattern, bool literal) : code_(std::make_unique<Code>()) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL admits no UCP (nothing in a literal needs Unicode properties anyway).
  const uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  code_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err, &offset, nullptr);
  if (!code_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(err, message, sizeof(message));
    FP6_THROW(kUnsupported, "regex '{}' does not compile at offset {}: {}", pattern, offset,
              reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is the fallback
}

Regex::~Regex() = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  size_t start = 0;
  while (start <= subject.size()) {
    const int rc =
        pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start, 0, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {
      // An empty match: step over one character.
      if (ov[0] >= subject.size()) break;
      start = ov[0] + static_cast<size_t>(utf8_length(static_cast<unsigned char>(subject[ov[0]])));
      continue;
    }
    out.emplace_back(ov[0], ov[1]);
    start = ov[1];
  }
  pcre2_match_data_free(md);
  return out;
}

}  // namespace fp6serve::text
