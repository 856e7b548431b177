// Python's str operations for the Jinja interpreter (declared in python_strings.h): case
// mapping, title, strip, split, replace, splitlines, html escaping and str.format, matching
// CPython's results on the strings chat templates see.
#include "chat/python_strings.h"

#include <algorithm>
#include <charconv>
#include <string_view>
#include <utility>
#include <vector>

namespace fp6serve::jinja {
namespace {

// Simple case mapping of Latin-1, Latin Extended-A, Greek and Cyrillic, which covers the
// languages chat content is mostly in; other scripts keep their case (Python would map them).
// Latin Extended-A pairs differ in the low bit (capitals even in U+0100..0137 and
// U+014A..0177, odd in U+0139..0148 and U+0179..017E); µ, ı, ſ, ÿ and final ς map to Μ, I, S,
// Ÿ and Σ as in Python.
char32_t cp_upper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0xb5) return c;
  if (c == 0xb5) return 0x39c;
  if ((c >= 0xe0 && c <= 0xfe && c != 0xf7)) return c - 32;
  if (c == 0xff) return 0x178;
  if (c == 0x131) return 'I';
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c & ~char32_t{1};
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c : c - 1;
  if (c == 0x17f) return 'S';
  if (c == 0x3c2) return 0x3a3;
  if (c >= 0x3b1 && c <= 0x3cb) return c - 32;
  if (c >= 0x430 && c <= 0x44f) return c - 32;
  if (c >= 0x450 && c <= 0x45f) return c - 80;
  return c;
}

// The inverse; İ (U+0130), which Python lowers to two code points, keeps its case here.
char32_t cp_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0xc0) return c;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
  if (c == 0x178) return 0xff;
  if (c == 0x130 || c == 0x131) return c;
  if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c | 1;
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3ab && c != 0x3a2) return c + 32;
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  if (c >= 0x400 && c <= 0x40f) return c + 80;
  return c;
}

// Python's "cased" for str.title(): has a case mapping, or is ß (lowercase, no capital form).
bool is_cased(char32_t c) {
  return cp_upper(c) != c || cp_lower(c) != c || c == 0xdf;
}

// Decodes `s`, lets `map` append each code point's replacement to the output.
template <typename Map>
std::string map_case(const std::string& s, Map map) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : decode_utf8(s)) map(out, cp);
  return out;
}

// Python's upper() uses full case mapping: ß becomes "SS", two characters.
void put_upper(std::string& out, char32_t cp) {
  if (cp == 0xdf) {
    out += "SS";
  } else {
    append_utf8(out, cp_upper(cp));
  }
}
void put_lower(std::string& out, char32_t cp) {
  append_utf8(out, cp_lower(cp));
}

}  // namespace

std::string to_upper(const std::string& s) {
  return map_case(s, put_upper);
}
std::string to_lower(const std::string& s) {
  return map_case(s, put_lower);
}
std::string capitalize(const std::string& s) {
  bool first = true;
  return map_case(s, [&](std::string& out, char32_t cp) {
    if (first) {
      put_upper(out, cp);
    } else {
      put_lower(out, cp);
    }
    first = false;
  });
}
std::string py_title(const std::string& s) {
  bool prev_cased = false;
  return map_case(s, [&](std::string& out, char32_t cp) {
    if (prev_cased) {
      put_lower(out, cp);
    } else {
      put_upper(out, cp);
    }
    prev_cased = is_cased(cp);
  });
}
std::string jinja_title(const std::string& s) {
  bool word_start = true;
  return map_case(s, [&](std::string& out, char32_t cp) {
    const bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_space(cp);
    if (sep) {
      append_utf8(out, cp);
    } else if (word_start) {
      put_upper(out, cp);
    } else {
      put_lower(out, cp);
    }
    word_start = sep;
  });
}

std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  const auto cps = decode_utf8(s);
  std::vector<char32_t> set;
  const bool whitespace = !chars || chars->is_none();
  if (!whitespace) {
    // Sorted for binary search: a long `chars` against a long string would otherwise cost
    // their product.
    set = decode_utf8(require_string(*chars, "strip argument"));
    std::sort(set.begin(), set.end());
  }
  const auto drop = [&](char32_t cp) {
    return whitespace ? is_space(cp) : std::binary_search(set.begin(), set.end(), cp);
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && drop(cps[b])) ++b;
  }
  if (right) {
    while (e > b && drop(cps[e - 1])) --e;
  }
  if (b == 0 && e == cps.size()) return s;
  return encode_utf8(std::u32string_view(cps.data() + b, e - b));
}

ValueList split_whitespace(const std::string& s, int64_t maxsplit, bool from_right) {
  const auto cps = decode_utf8(s);
  std::vector<std::pair<size_t, size_t>> words;
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && is_space(cps[i])) ++i;
    if (i == cps.size()) break;
    size_t j = i;
    while (j < cps.size() && !is_space(cps[j])) ++j;
    words.emplace_back(i, j);
    i = j;
  }
  ValueList out;
  const auto piece = [&](size_t b, size_t e) {
    return Value::string(encode_utf8(std::u32string_view(cps.data() + b, e - b)));
  };
  if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= words.size()) {
    for (auto [b, e] : words) out.push_back(piece(b, e));
    return out;
  }
  const size_t keep = static_cast<size_t>(maxsplit);
  if (!from_right) {
    for (size_t w = 0; w < keep; ++w) out.push_back(piece(words[w].first, words[w].second));
    // The rest keeps its whitespace, trailing included.
    out.push_back(piece(words[keep].first, cps.size()));
  } else {
    const size_t first = words.size() - keep;
    out.push_back(piece(0, words[first - 1].second));
    for (size_t w = first; w < words.size(); ++w) out.push_back(piece(words[w].first, words[w].second));
  }
  return out;
}

size_t find_text(Budget& budget, std::string_view hay, std::string_view needle, size_t from) {
  if (from > hay.size() || needle.size() > hay.size() - from) return std::string_view::npos;
  if (needle.empty()) return from;
  const size_t last = hay.size() - needle.size();  // the last offset where a match could start
  for (size_t i = from; i <= last;) {
    const size_t at = hay.substr(0, last + 1).find(needle[0], i);
    if (at == std::string_view::npos) {
      budget.charge((last + 1 - i) / 16);
      return at;
    }
    budget.charge((at - i) / 16 + needle.size() / 16 + 1);
    if (hay.compare(at, needle.size(), needle) == 0) return at;
    i = at + 1;
  }
  return std::string_view::npos;
}

size_t rfind_text(Budget& budget, std::string_view hay, std::string_view needle, size_t from) {
  if (needle.size() > hay.size()) return std::string_view::npos;
  size_t i = std::min(from, hay.size() - needle.size());
  if (needle.empty()) return i;
  while (true) {
    const size_t at = hay.rfind(needle[0], i);
    if (at == std::string_view::npos) {
      budget.charge(i / 16);
      return at;
    }
    budget.charge((i - at) / 16 + needle.size() / 16 + 1);
    if (hay.compare(at, needle.size(), needle) == 0) return at;
    if (at == 0) return std::string_view::npos;
    i = at - 1;
  }
}

ValueList split_on(Budget& budget, const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right) {
  if (sep.empty()) fail("empty separator");
  std::vector<size_t> cuts;
  if (!from_right) {
    for (size_t p = find_text(budget, s, sep, 0); p != std::string::npos;
         p = find_text(budget, s, sep, p + sep.size())) {
      if (maxsplit >= 0 && cuts.size() >= static_cast<size_t>(maxsplit)) break;
      cuts.push_back(p);
    }
  } else {
    size_t end = s.size();
    while (end >= sep.size()) {
      const size_t p = rfind_text(budget, s, sep, end - sep.size());
      if (p == std::string::npos) break;
      if (maxsplit >= 0 && cuts.size() >= static_cast<size_t>(maxsplit)) break;
      cuts.push_back(p);
      if (p < sep.size()) {
        end = 0;
        if (p == 0) break;
        continue;
      }
      end = p;
    }
    std::reverse(cuts.begin(), cuts.end());
  }
  ValueList out;
  size_t start = 0;
  for (size_t p : cuts) {
    out.push_back(Value::string(s.substr(start, p - start)));
    start = p + sep.size();
  }
  out.push_back(Value::string(s.substr(start)));
  return out;
}

// \r\n is one line break; a trailing break adds no empty line.
ValueList split_lines(const std::string& s) {
  ValueList out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(Value::string(s.substr(start, i - start)));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) out.push_back(Value::string(s.substr(start)));
  return out;
}

std::string replace_all(Budget& budget, const std::string& s, const std::string& old, const std::string& repl,
                        int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    // Python inserts the replacement around every character.
    const auto cps = decode_utf8(s);
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
        budget.check_size(out.size());
      }
      if (i < cps.size()) append_utf8(out, cps[i]);
    }
    return out;
  }
  size_t start = 0;
  for (size_t p = find_text(budget, s, old, 0); p != std::string::npos && (count < 0 || done < count);
       p = find_text(budget, s, old, start)) {
    out.append(s, start, p - start);
    out += repl;
    budget.check_size(out.size());
    start = p + old.size();
    ++done;
  }
  out.append(s, start);
  return out;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string python_format(Budget& budget, const std::string& s, const Args& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (s[i] == '}' && i + 1 < s.size() && s[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (s[i] == '{') {
      const size_t end = s.find('}', i);
      if (end == std::string::npos) fail("Single '{' encountered in format string");
      const std::string field = s.substr(i + 1, end - i - 1);
      if (field.find_first_of(":!.[") != std::string::npos) fail("format specs are not supported in str.format");
      const Value* v = nullptr;
      if (field.empty()) {
        v = args.get(auto_index++, "");
      } else if (std::all_of(field.begin(), field.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        // An index too large for size_t names no argument (std::stoul would throw).
        size_t index = SIZE_MAX;
        std::from_chars(field.data(), field.data() + field.size(), index);
        v = args.get(index, "");
      } else {
        for (const auto& [k, val] : args.kw) {
          if (k == field) v = &val;
        }
      }
      if (!v) fail(fmt::format("format field '{}' has no argument", field));
      out += budget.str(*v);
      budget.check_size(out.size());
      i = end;
    } else if (s[i] == '}') {
      fail("Single '}' encountered in format string");
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace fp6serve::jinja
