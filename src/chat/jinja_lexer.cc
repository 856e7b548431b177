// The lexer of the chat-template Jinja subset (declared in jinja_lexer.h): template text in,
// tokens out, with jinja2's whitespace control applied byte for byte.
//
// jinja2 lexes with regular expressions; this is a hand-written equivalent of the rules that
// matter for chat templates with transformers' environment (trim_blocks, lstrip_blocks,
// keep_trailing_newline off):
// - text runs up to the next `{{`, `{%` or `{#`;
// - `-` after an opening tag strips the whitespace before it (Python's str.rstrip, so Unicode
//   whitespace too), `+` disables lstrip_blocks for that tag;
// - lstrip_blocks: whitespace from a line start to a `{%` or `{#` goes;
// - `-` before a closing tag strips the whitespace after it; trim_blocks drops the one newline
//   after a `%}` or `#}`;
// - inside a tag: names, numbers, strings (Python escapes), operators, with brackets balanced.
#include "chat/jinja_lexer.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "chat/jinja_value.h"
#include "core/check.h"

namespace fp6serve::jinja {
namespace {

// Whitespace between the tokens inside a tag.
bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Python's str.rstrip(): drops trailing Unicode whitespace.
void rstrip_unicode(std::string& s) {
  const auto cps = decode_utf8(s);
  size_t keep = cps.size();
  while (keep > 0 && is_space(cps[keep - 1])) --keep;
  if (keep == cps.size()) return;
  s = encode_utf8(std::u32string_view(cps.data(), keep));
}

// Whether `s` is non-empty and all Unicode whitespace (what lstrip_blocks may remove).
bool all_space(std::string_view s) {
  if (s.empty()) return false;
  for (char32_t cp : decode_utf8(s)) {
    if (!is_space(cp)) return false;
  }
  return true;
}

// Length in bytes of the Unicode whitespace run starting at `pos` (regex \s*).
size_t space_run(const std::string& s, size_t pos) {
  size_t i = pos;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (!is_space(c)) break;
      ++i;
      continue;
    }
    // Only a whole multi-byte sequence can be whitespace: a stray byte (decode_utf8 keeps it
    // as itself, and 0x85 or 0xa0 would look like NEL or NBSP) or a sequence cut off by the
    // end of the source is not, so the run never steps past the end.
    const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (c < 0xc0 || i + len > s.size()) break;
    const auto cps = decode_utf8(std::string_view(s).substr(i, len));
    if (cps.size() != 1 || !is_space(cps[0])) break;
    i += len;
  }
  return i - pos;
}

// Newlines normalized to \n and one trailing newline dropped, as jinja2's lexer does
// (keep_trailing_newline=False).
std::string normalize_source(const std::string& src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      out += src[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// The value of a hex digit, or -1.
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// One pass over the normalized source. Positions are tracked lazily: set_position() walks
// forward from the last token, counting lines and columns as it goes, so computing
// line:column costs one pass in all (counting each token's column from its line's start
// instead made a long one-line template quadratic: seconds for 100,000 tokens).
class Lexer {
 public:
  explicit Lexer(std::string source) : src_(normalize_source(source)) {}

  // Alternates between a text run and the tag that ends it.
  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t tag = find_tag(pos_);
      if (tag == std::string::npos) {
        emit_text(src_.substr(pos_), pos_);
        pos_ = src_.size();
        break;
      }
      const char type = src_[tag + 1];
      char sign = 0;
      if (tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')) sign = src_[tag + 2];
      std::string text = src_.substr(pos_, tag - pos_);
      if (sign == '-') {
        rstrip_unicode(text);
      } else if (sign != '+' && type != '{') {
        // lstrip_blocks: whitespace between a line start and a block or comment tag goes. The
        // text may hold no newline at all and still start a line: at the template's start, or
        // after a tag whose trailing newline was consumed (line_starting_).
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting_) && all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
      }
      emit_text(std::move(text), pos_);
      // {% raw %} is recognized here, before tag lexing, because its body is not lexed at all.
      if (type == '%' && try_raw(tag)) continue;
      pos_ = tag + 2 + (sign ? 1 : 0);
      if (type == '#') {
        lex_comment(tag);
      } else {
        lex_tag(type == '%', tag);
      }
    }
    Token eof;
    eof.kind = TokKind::kEof;
    set_position(eof, src_.size());
    tokens_.push_back(std::move(eof));
    return std::move(tokens_);
  }

 private:
  // Offset of the next `{{`, `{%` or `{#` at or after `from`, or npos.
  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  // Stamps `t` with the line and column of `offset`; offsets must not go backwards. Columns
  // count code points: UTF-8 continuation bytes do not advance them.
  void set_position(Token& t, size_t offset) {
    while (line_pos_ < offset) {
      const char c = src_[line_pos_];
      if (c == '\n') {
        ++line_;
        col_ = 1;
      } else if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) {
        ++col_;
      }
      ++line_pos_;
    }
    t.line = line_;
    t.col = col_;
  }

  [[noreturn]] void fail(size_t offset, const std::string& what) {
    Token t;
    set_position(t, offset);
    syntax_error(t.line, t.col, what);
  }

  void emit_text(std::string text, size_t offset) {
    if (text.empty()) return;
    Token t;
    t.kind = TokKind::kText;
    t.text = std::move(text);
    set_position(t, offset);
    tokens_.push_back(std::move(t));
  }

  void push(TokKind kind, std::string text, size_t offset) {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    set_position(t, offset);
    tokens_.push_back(std::move(t));
  }

  // Moves past a closing tag that ends at `end`: with `strip` (a '-' marker) past the whitespace
  // run after it, with `trim_newline` (trim_blocks) past one newline. Records whether what was
  // consumed ends in a newline: jinja2's line_starting, which lets the next lstrip apply.
  void after_end(size_t end, bool strip, bool trim_newline) {
    pos_ = end;
    const size_t start = pos_;
    if (strip) pos_ += space_run(src_, pos_);
    if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') ++pos_;
    line_starting_ = pos_ > start ? src_[pos_ - 1] == '\n' : false;
  }

  // {% raw %}...{% endraw %}: the body is text, with the usual whitespace control around it.
  // Returns false, consuming nothing, when the tag at `tag` is not `{% raw %}`.
  bool try_raw(size_t tag) {
    size_t p = tag + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
    p += space_run(src_, p);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    if (p < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) return false;
    p += space_run(src_, p);
    bool strip_after = false;
    if (src_.compare(p, 3, "-%}") == 0) {
      strip_after = true;
      p += 3;
    } else if (src_.compare(p, 2, "%}") == 0) {
      p += 2;
    } else {
      return false;
    }
    if (strip_after) p += space_run(src_, p);
    // The end: {%[-+]? endraw (+%}|-%}\s*|%}\n?)
    for (size_t e = src_.find("{%", p); e != std::string::npos; e = src_.find("{%", e + 2)) {
      size_t q = e + 2;
      char sign = 0;
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) sign = src_[q++];
      q += space_run(src_, q);
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      q += space_run(src_, q);
      std::string body = src_.substr(p, e - p);
      if (sign == '-') {
        rstrip_unicode(body);
      } else if (sign != '+') {
        const size_t nl = body.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 && all_space(std::string_view(body).substr(l_pos))) body.resize(l_pos);
      }
      emit_text(std::move(body), p);
      if (src_.compare(q, 3, "+%}") == 0) {
        after_end(q + 3, false, false);
      } else if (src_.compare(q, 3, "-%}") == 0) {
        after_end(q + 3, true, false);
      } else if (src_.compare(q, 2, "%}") == 0) {
        after_end(q + 2, false, true);
      } else {
        fail(q, "expected '%}' after 'endraw'");
      }
      return true;
    }
    fail(tag, "missing end of raw directive");
  }

  // {# ... #}: dropped; `-#}` strips what follows, `+#}` keeps the newline trim_blocks drops.
  void lex_comment(size_t tag) {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) fail(tag, "missing end of comment tag");
    if (end > pos_ && src_[end - 1] == '-') {
      after_end(end + 2, true, false);
    } else if (end > pos_ && src_[end - 1] == '+') {
      after_end(end + 2, false, false);
    } else {
      after_end(end + 2, false, true);
    }
  }

  // The inside of `{{ }}` or `{% %}`, from just after the opening marker through the closing
  // one. The closing marker only counts with every bracket closed, as in jinja2, so
  // `{{ {'a': {'b': 1}} }}` ends at the last `}}`.
  void lex_tag(bool block, size_t tag) {
    push(block ? TokKind::kBlockBegin : TokKind::kVarBegin, block ? "{%" : "{{", tag);
    std::vector<char> balance;  // the closing brackets expected, innermost last
    while (true) {
      while (pos_ < src_.size() && is_ascii_space(src_[pos_])) ++pos_;
      if (pos_ >= src_.size())
        fail(pos_, block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
      if (balance.empty()) {
        const char* close = block ? "%}" : "}}";
        if (src_[pos_] == '-' && src_.compare(pos_ + 1, 2, close) == 0) {
          push(block ? TokKind::kBlockEnd : TokKind::kVarEnd, close, pos_);
          after_end(pos_ + 3, true, false);
          return;
        }
        // `+%}` turns trim_blocks off for this tag; jinja2 has no `+}}`.
        if (block && src_.compare(pos_, 3, "+%}") == 0) {
          push(TokKind::kBlockEnd, close, pos_);
          after_end(pos_ + 3, false, false);
          return;
        }
        if (src_.compare(pos_, 2, close) == 0) {
          push(block ? TokKind::kBlockEnd : TokKind::kVarEnd, close, pos_);
          after_end(pos_ + 2, false, block);  // trim_blocks applies to block tags only
          return;
        }
      }
      lex_token(balance);
    }
  }

  // One token inside a tag: a number, a name, a string literal or an operator.
  void lex_token(std::vector<char>& balance) {
    const char c = src_[pos_];
    const size_t start = pos_;
    if (std::isdigit(static_cast<unsigned char>(c))) {
      lex_number();
      return;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
      push(TokKind::kName, src_.substr(start, pos_ - start), start);
      return;
    }
    if (c == '\'' || c == '"') {
      lex_string(c);
      return;
    }
    static constexpr std::string_view kTwoCharOps[] = {"//", "**", "==", "!=", ">=", "<="};
    for (std::string_view op : kTwoCharOps) {
      if (src_.compare(pos_, 2, op) == 0) {
        pos_ += 2;
        push(TokKind::kOp, std::string(op), start);
        return;
      }
    }
    static constexpr std::string_view kOneCharOps = "+-/*%~[](){}><=.:|,;";
    if (kOneCharOps.find(c) == std::string_view::npos) fail(pos_, fmt::format("unexpected char '{}'", c));
    if (c == '(' || c == '[' || c == '{') {
      balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) fail(pos_, fmt::format("unexpected '{}'", c));
      if (balance.back() != c) fail(pos_, fmt::format("unexpected '{}', expected '{}'", c, balance.back()));
      balance.pop_back();
    }
    ++pos_;
    push(TokKind::kOp, std::string(1, c), start);
  }

  // End of the digit run at `p`: \d+(_\d+)*, Python's digits with single underscores between.
  size_t digit_run(size_t p) const {
    const size_t start = p;
    while (p < src_.size()) {
      if (std::isdigit(static_cast<unsigned char>(src_[p]))) {
        ++p;
      } else if (src_[p] == '_' && p > start && p + 1 < src_.size() &&
                 std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
        ++p;
      } else {
        break;
      }
    }
    return p;
  }

  // Integer (decimal, 0b, 0o, 0x) or float literal. After a '.' only an integer is read, as
  // jinja2's float pattern has a (?<!\.) lookbehind: `x.0.1` is item 0, then item 1.
  void lex_number() {
    const size_t start = pos_;
    const bool after_dot = start > 0 && src_[start - 1] == '.';
    // Prefixed integers: 0b, 0o, 0x.
    if (src_[pos_] == '0' && pos_ + 1 < src_.size() && std::strchr("bBoOxX", src_[pos_ + 1])) {
      const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[pos_ + 1])));
      const int base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
      size_t q = pos_ + 2;
      std::string digits;
      while (q < src_.size()) {
        const char d = src_[q];
        if (d == '_') {
          ++q;
          continue;
        }
        const int v = hex_value(d);
        if (v < 0 || v >= base) break;
        digits += d;
        ++q;
      }
      if (!digits.empty()) {
        Token t;
        t.kind = TokKind::kInt;
        const auto res = std::from_chars(digits.data(), digits.data() + digits.size(), t.int_value, base);
        if (res.ec != std::errc()) fail(start, "integer literal too large");
        set_position(t, start);
        pos_ = q;
        tokens_.push_back(std::move(t));
        return;
      }
    }
    size_t p = digit_run(pos_);
    bool is_float = false;
    if (!after_dot && p + 1 < src_.size() && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
      p = digit_run(p + 1);
      is_float = true;
    }
    if (!after_dot && p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        p = digit_run(q);
        is_float = true;
      }
    }
    std::string digits;
    for (size_t i = start; i < p; ++i) {
      if (src_[i] != '_') digits += src_[i];
    }
    Token t;
    set_position(t, start);
    if (is_float) {
      t.kind = TokKind::kFloat;
      t.float_value = std::strtod(digits.c_str(), nullptr);
    } else {
      t.kind = TokKind::kInt;
      const auto res = std::from_chars(digits.data(), digits.data() + digits.size(), t.int_value);
      if (res.ec != std::errc()) fail(start, "integer literal too large");
    }
    pos_ = p;
    tokens_.push_back(std::move(t));
  }

  // Python's unicode-escape decoding of a string literal's body, as jinja2 applies it.
  void lex_string(char quote) {
    const size_t start = pos_;
    size_t p = pos_ + 1;
    std::string raw;
    while (true) {
      if (p >= src_.size()) fail(start, fmt::format("unexpected char '{}' (unterminated string)", quote));
      if (src_[p] == quote) break;
      if (src_[p] == '\\' && p + 1 < src_.size()) {
        raw += src_[p];
        raw += src_[p + 1];
        p += 2;
        continue;
      }
      raw += src_[p++];
    }
    pos_ = p + 1;
    Token t;
    t.kind = TokKind::kString;
    t.text = unescape(raw, start);
    set_position(t, start);
    tokens_.push_back(std::move(t));
  }

  // The escapes of Python's unicode-escape codec; an unknown escape keeps its backslash.
  std::string unescape(const std::string& raw, size_t offset) {
    std::string out;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\' || i + 1 >= raw.size()) {
        out += raw[i];
        continue;
      }
      const char e = raw[++i];
      switch (e) {
        case '\n':  // a backslash before a newline continues the line
          break;
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          char32_t cp = 0;
          for (size_t k = 0; k < n; ++k) {
            const int v = i + 1 + k < raw.size() ? hex_value(raw[i + 1 + k]) : -1;
            if (v < 0) fail(offset, fmt::format("truncated \\{} escape in string literal", e));
            cp = cp * 16 + static_cast<char32_t>(v);
          }
          if (cp > 0x10ffff) fail(offset, "illegal Unicode character in string literal");
          append_utf8(out, cp);
          i += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '7'; ++k) {
              cp = cp * 8 + static_cast<char32_t>(raw[++i] - '0');
            }
            append_utf8(out, cp);
          } else if (static_cast<unsigned char>(e) >= 0x80) {
            // jinja2 first turns non-ASCII into \x/\u escapes, so a backslash before one
            // stays a backslash followed by the escape's text.
            const auto cps = decode_utf8(std::string_view(raw).substr(i, 4));
            const char32_t cp = cps[0];
            out += '\\';
            out += cp < 0x100     ? fmt::format("x{:02x}", static_cast<uint32_t>(cp))
                   : cp < 0x10000 ? fmt::format("u{:04x}", static_cast<uint32_t>(cp))
                                  : fmt::format("U{:08x}", static_cast<uint32_t>(cp));
            std::string one;
            append_utf8(one, cp);
            i += one.size() - 1;
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    return out;
  }

  std::string src_;  // the normalized source
  size_t pos_ = 0;   // where lexing resumes
  bool line_starting_ = true;
  std::vector<Token> tokens_;
  // set_position()'s cursor: the offset it has reached, and that offset's line and column.
  int line_ = 1;
  int col_ = 1;
  size_t line_pos_ = 0;
};

}  // namespace

std::string describe(const Token& t) {
  switch (t.kind) {
    case TokKind::kText:
      return "template text";
    case TokKind::kVarBegin:
      return "'{{'";
    case TokKind::kVarEnd:
      return "end of print statement '}}'";
    case TokKind::kBlockBegin:
      return "'{%'";
    case TokKind::kBlockEnd:
      return "end of statement block '%}'";
    case TokKind::kString:
      return "string literal";
    case TokKind::kInt:
    case TokKind::kFloat:
      return "number";
    case TokKind::kEof:
      return "end of template";
    default:
      return "'" + t.text + "'";
  }
}

[[noreturn]] void syntax_error(int line, int col, const std::string& what) {
  FP6_THROW(kBadInput, "chat template syntax error at {}:{}: {}", line, col, what);
}

std::vector<Token> tokenize(const std::string& source) {
  return Lexer(source).run();
}

bool TokenCursor::skip_op(std::string_view op) {
  if (!is_op(op)) return false;
  advance();
  return true;
}

bool TokenCursor::skip_name(std::string_view name) {
  if (!is_name(name)) return false;
  advance();
  return true;
}

void TokenCursor::fail_expected(const std::string& expected) const {
  syntax_error(cur().line, cur().col, fmt::format("expected {}, got {}", expected, describe(cur())));
}

void TokenCursor::expect_op(std::string_view op) {
  if (!skip_op(op)) fail_expected(fmt::format("'{}'", op));
}

std::string TokenCursor::expect_name() {
  if (cur().kind != TokKind::kName) fail_expected("a name");
  std::string name = cur().text;
  advance();
  return name;
}

void TokenCursor::expect_block_end() {
  if (cur().kind != TokKind::kBlockEnd) fail_expected("end of statement block '%}'");
  advance();
}

}  // namespace fp6serve::jinja
