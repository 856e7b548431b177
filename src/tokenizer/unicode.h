// Text utilities of the tokenizer: UTF-8 code points, GPT-2's byte <-> unicode mapping,
// Unicode normalization (utf8proc), and a PCRE2 regex with Unicode properties.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp6serve::text {

// Length in bytes of the UTF-8 sequence starting with byte c (1 for invalid lead bytes).
int utf8_length(unsigned char c);
// Splits into code points (each a valid or, for broken input, single-byte substring).
std::vector<std::string_view> utf8_chars(std::string_view s);
// True when s ends inside a multi-byte sequence (more bytes must come).
bool utf8_incomplete_tail(std::string_view s);
// Replaces invalid UTF-8 with U+FFFD, one per maximal invalid subpart, as Rust's from_utf8_lossy.
std::string utf8_lossy(std::string_view bytes);
std::string codepoint_to_utf8(uint32_t cp);

// GPT-2's reversible mapping of the 256 byte values to printable code points.
const std::string& byte_to_unicode(uint8_t b);
// The byte a mapped code point stands for, or -1.
int unicode_to_byte(std::string_view ch);
std::string bytes_to_unicode(std::string_view bytes);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
std::string normalize(std::string_view s, NormalForm form);
std::string lowercase(std::string_view s);

// A compiled PCRE2 pattern (UTF + UCP). Thread-safe to use concurrently.
class Regex {
 public:
  Regex(const std::string& pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // [begin, end) byte ranges of the successive non-overlapping matches.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view subject) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
};

}  // namespace fp6serve::text
