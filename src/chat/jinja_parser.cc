#include "chat/jinja_parser.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string_view>

#include "core/check.h"

namespace fp6serve::jinja {
namespace {

// Deeper nesting than this in one expression or statement is an attack on the stack.
constexpr int kMaxParseDepth = 128;

enum class TokKind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  TokKind kind = TokKind::kEof;
  std::string text;  // text, name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int col = 1;
};

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
    const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
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

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(normalize_source(source)) {}

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
        // lstrip_blocks: whitespace between a line start and a block or comment tag goes.
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting_) && all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
      }
      emit_text(std::move(text), pos_);
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
  size_t find_tag(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  void set_position(Token& t, size_t offset) {
    while (line_pos_ < offset) {
      if (src_[line_pos_] == '\n') {
        ++line_;
        line_start_ = line_pos_ + 1;
      }
      ++line_pos_;
    }
    t.line = line_;
    t.col = static_cast<int>(count_code_points(std::string_view(src_).substr(line_start_, offset - line_start_))) + 1;
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

  // Skips the whitespace run after a '-' end marker; returns whether what was consumed ends
  // in a newline (jinja2's line_starting for the next lstrip).
  void after_end(size_t end, bool strip, bool trim_newline) {
    pos_ = end;
    const size_t start = pos_;
    if (strip) pos_ += space_run(src_, pos_);
    if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') ++pos_;
    line_starting_ = pos_ > start ? src_[pos_ - 1] == '\n' : false;
  }

  // {% raw %}...{% endraw %}: the body is text, with the usual whitespace control around it.
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

  void lex_tag(bool block, size_t tag) {
    push(block ? TokKind::kBlockBegin : TokKind::kVarBegin, block ? "{%" : "{{", tag);
    std::vector<char> balance;
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
        if (block && src_.compare(pos_, 3, "+%}") == 0) {
          push(TokKind::kBlockEnd, close, pos_);
          after_end(pos_ + 3, false, false);
          return;
        }
        if (src_.compare(pos_, 2, close) == 0) {
          push(block ? TokKind::kBlockEnd : TokKind::kVarEnd, close, pos_);
          after_end(pos_ + 2, false, block);
          return;
        }
      }
      lex_token(balance);
    }
  }

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

  size_t digit_run(size_t p) const {
    // \d+(_\d+)*
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

  std::string unescape(const std::string& raw, size_t offset) {
    std::string out;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '\\' || i + 1 >= raw.size()) {
        out += raw[i];
        continue;
      }
      const char e = raw[++i];
      switch (e) {
        case '\n':
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

  std::string src_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t line_start_ = 0;
  size_t line_pos_ = 0;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  Program run() {
    Program program;
    program.body = parse_body({});
    return program;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > kMaxParseDepth) {
        const Token& t = parser.cur();
        syntax_error(t.line, t.col, fmt::format("nesting deeper than {} levels", kMaxParseDepth));
      }
    }
    ~DepthGuard() { --parser.depth_; }
    Parser& parser;
  };

  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t ahead = 1) const { return toks_[std::min(pos_ + ahead, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(std::string_view op) const { return cur().kind == TokKind::kOp && cur().text == op; }
  bool is_name(std::string_view name) const { return cur().kind == TokKind::kName && cur().text == name; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  [[noreturn]] void fail_expected(const std::string& expected) const {
    syntax_error(cur().line, cur().col, fmt::format("expected {}, got {}", expected, describe(cur())));
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail_expected(fmt::format("'{}'", op));
  }
  std::string expect_name() {
    if (cur().kind != TokKind::kName) fail_expected("a name");
    std::string name = cur().text;
    advance();
    return name;
  }
  void expect_block_end() {
    if (cur().kind != TokKind::kBlockEnd) fail_expected("end of statement block '%}'");
    advance();
  }

  template <typename T>
  std::unique_ptr<T> node_at(const Token& t) {
    auto n = std::make_unique<T>();
    n->line = t.line;
    n->col = t.col;
    return n;
  }

  // Parses statements until `{% name %}` for a name in `ends` (left unconsumed after the
  // name) or the end of the template.
  Body parse_body(std::initializer_list<std::string_view> ends) {
    DepthGuard guard(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      switch (t.kind) {
        case TokKind::kText: {
          auto s = node_at<Stmt>(t);
          s->kind = StmtKind::kText;
          s->text = t.text;
          body.push_back(std::move(s));
          advance();
          break;
        }
        case TokKind::kVarBegin: {
          auto s = node_at<Stmt>(t);
          s->kind = StmtKind::kOutput;
          advance();
          s->expr = parse_tuple(true, false);
          if (cur().kind != TokKind::kVarEnd) fail_expected("end of print statement '}}'");
          advance();
          body.push_back(std::move(s));
          break;
        }
        case TokKind::kBlockBegin: {
          const Token& name = peek();
          if (name.kind != TokKind::kName) {
            syntax_error(name.line, name.col, fmt::format("expected a statement name, got {}", describe(name)));
          }
          for (std::string_view end : ends) {
            if (name.text == end) {
              advance();
              advance();
              return body;
            }
          }
          advance();
          body.push_back(parse_statement(ends));
          break;
        }
        case TokKind::kEof:
          if (ends.size() != 0) {
            std::string wanted;
            for (std::string_view end : ends) wanted += (wanted.empty() ? "'" : " or '") + std::string(end) + "'";
            syntax_error(t.line, t.col, fmt::format("unexpected end of template, expected {}", wanted));
          }
          return body;
        default:
          syntax_error(t.line, t.col, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  StmtPtr parse_statement(std::initializer_list<std::string_view> ends) {
    const Token start = cur();
    const std::string keyword = start.text;
    advance();
    auto s = node_at<Stmt>(start);
    if (keyword == "if") {
      s->kind = StmtKind::kIf;
      ExprPtr cond = parse_tuple(false, false);
      expect_block_end();
      while (true) {
        Body branch = parse_body({"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(branch));
        const std::string& which = toks_[pos_ - 1].text;
        if (which == "elif") {
          cond = parse_tuple(false, false);
          expect_block_end();
          continue;
        }
        if (which == "else") {
          expect_block_end();
          s->else_body = parse_body({"endif"});
        }
        expect_block_end();
        break;
      }
    } else if (keyword == "for") {
      s->kind = StmtKind::kFor;
      s->target = parse_assign_target(false);
      if (!skip_name("in")) fail_expected("'in'");
      s->expr = parse_tuple(false, false, "recursive");
      if (skip_name("if")) s->condition = parse_expression(true);
      if (is_name("recursive")) syntax_error(cur().line, cur().col, "recursive loops are not supported");
      expect_block_end();
      ++loop_depth_;
      s->body = parse_body({"endfor", "else"});
      --loop_depth_;
      if (toks_[pos_ - 1].text == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"});
      }
      expect_block_end();
    } else if (keyword == "set") {
      s->target = parse_assign_target(true);
      if (skip_op("=")) {
        s->kind = StmtKind::kSet;
        s->expr = parse_tuple(true, false);
        expect_block_end();
      } else {
        if (!s->target.attr.empty() || s->target.names.size() != 1) fail_expected("'='");
        s->kind = StmtKind::kSetBlock;
        while (skip_op("|")) s->filters.push_back(parse_filter(nullptr));
        expect_block_end();
        s->body = parse_body({"endset"});
        expect_block_end();
      }
    } else if (keyword == "macro") {
      s->kind = StmtKind::kMacro;
      s->text = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        if (!s->params.empty()) expect_op(",");
        if (is_op(")")) break;
        std::string param = expect_name();
        ExprPtr def = skip_op("=") ? parse_expression(true) : nullptr;
        s->params.emplace_back(std::move(param), std::move(def));
      }
      advance();
      expect_block_end();
      const int saved_loops = loop_depth_;
      loop_depth_ = 0;
      s->body = parse_body({"endmacro"});
      loop_depth_ = saved_loops;
      expect_block_end();
    } else if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) syntax_error(start.line, start.col, fmt::format("'{}' outside of a loop", keyword));
      s->kind = keyword == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      expect_block_end();
    } else if (keyword == "with") {
      s->kind = StmtKind::kWith;
      while (cur().kind != TokKind::kBlockEnd) {
        if (!s->params.empty()) expect_op(",");
        std::string name = expect_name();
        expect_op("=");
        s->params.emplace_back(std::move(name), parse_expression(true));
      }
      expect_block_end();
      s->body = parse_body({"endwith"});
      expect_block_end();
    } else if (keyword == "filter") {
      s->kind = StmtKind::kFilterBlock;
      s->filters.push_back(parse_filter(nullptr));
      while (skip_op("|")) s->filters.push_back(parse_filter(nullptr));
      expect_block_end();
      s->body = parse_body({"endfilter"});
      expect_block_end();
    } else if (keyword == "generation") {
      // transformers' AssistantTracker tag: renders its body unchanged.
      s->kind = StmtKind::kBlock;
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      expect_block_end();
    } else {
      std::string hint;
      for (std::string_view end : ends) hint += (hint.empty() ? " (expected '" : " or '") + std::string(end) + "'";
      if (!hint.empty()) hint += ")";
      syntax_error(start.line, start.col, fmt::format("unknown tag '{}'{}", keyword, hint));
    }
    return s;
  }

  AssignTarget parse_assign_target(bool allow_namespace) {
    AssignTarget target;
    const bool parens = skip_op("(");
    target.names.push_back(expect_name());
    if (allow_namespace && !parens && skip_op(".")) {
      target.attr = expect_name();
      return target;
    }
    while (skip_op(",")) {
      if (cur().kind != TokKind::kName || is_name("in")) break;
      target.names.push_back(expect_name());
    }
    if (parens) expect_op(")");
    return target;
  }

  bool is_tuple_end(const char* extra_end) const {
    const Token& t = cur();
    if (t.kind == TokKind::kVarEnd || t.kind == TokKind::kBlockEnd || t.kind == TokKind::kEof) return true;
    if (t.kind == TokKind::kOp && t.text == ")") return true;
    return extra_end && t.kind == TokKind::kName && t.text == extra_end;
  }

  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens, const char* extra_end = nullptr) {
    const Token start = cur();
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail_expected("an expression");
    }
    auto e = node_at<Expr>(start);
    e->kind = ExprKind::kTuple;
    e->args = std::move(items);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    DepthGuard guard(*this);
    const Token start = cur();
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      auto e = node_at<Expr>(start);
      e->kind = ExprKind::kCond;
      ExprPtr cond = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(expr));
      e->args.push_back(std::move(otherwise));
      expr = std::move(e);
    }
    return expr;
  }

  ExprPtr binary(ExprKind kind, const Token& at, ExprPtr left, ExprPtr right) {
    auto e = node_at<Expr>(at);
    e->kind = kind;
    e->target = std::move(left);
    e->args.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const Token at = cur();
      advance();
      left = binary(ExprKind::kOr, at, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const Token at = cur();
      advance();
      left = binary(ExprKind::kAnd, at, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    DepthGuard guard(*this);
    if (is_name("not")) {
      const Token at = cur();
      advance();
      auto e = node_at<Expr>(at);
      e->kind = ExprKind::kNot;
      e->target = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Token start = cur();
    ExprPtr first = parse_math1();
    std::vector<CmpOp> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      CmpOp op;
      if (cur().kind == TokKind::kOp && cur().text == "==") {
        op = CmpOp::kEq;
      } else if (is_op("!=")) {
        op = CmpOp::kNe;
      } else if (is_op("<")) {
        op = CmpOp::kLt;
      } else if (is_op("<=")) {
        op = CmpOp::kLe;
      } else if (is_op(">")) {
        op = CmpOp::kGt;
      } else if (is_op(">=")) {
        op = CmpOp::kGe;
      } else if (is_name("in")) {
        op = CmpOp::kIn;
      } else if (is_name("not") && peek().kind == TokKind::kName && peek().text == "in") {
        advance();
        op = CmpOp::kNotIn;
      } else {
        break;
      }
      advance();
      ops.push_back(op);
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = node_at<Expr>(start);
    e->kind = ExprKind::kCompare;
    e->cmp_ops = std::move(ops);
    e->args.push_back(std::move(first));
    for (auto& o : operands) e->args.push_back(std::move(o));
    return e;
  }

  ExprPtr arith(const Token& at, BinOp op, ExprPtr left, ExprPtr right) {
    auto e = binary(ExprKind::kBinary, at, std::move(left), std::move(right));
    e->bin_op = op;
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token at = cur();
      advance();
      left = arith(at, at.text == "+" ? BinOp::kAdd : BinOp::kSub, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      const Token at = cur();
      advance();
      left = arith(at, BinOp::kConcat, std::move(left), parse_math2());
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token at = cur();
      advance();
      const BinOp op = at.text == "*"    ? BinOp::kMul
                       : at.text == "/"  ? BinOp::kDiv
                       : at.text == "//" ? BinOp::kFloorDiv
                                         : BinOp::kMod;
      left = arith(at, op, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Token at = cur();
      advance();
      left = arith(at, BinOp::kPow, std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    const Token at = cur();
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      advance();
      node = node_at<Expr>(at);
      node->kind = at.text == "-" ? ExprKind::kNeg : ExprKind::kPos;
      node->target = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token t = cur();
    auto e = node_at<Expr>(t);
    switch (t.kind) {
      case TokKind::kName:
        advance();
        if (t.text == "true" || t.text == "True") {
          e->value = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::none();
        } else {
          e->kind = ExprKind::kName;
          e->name = t.text;
        }
        return e;
      case TokKind::kString: {
        std::string s;
        while (cur().kind == TokKind::kString) {
          s += cur().text;
          advance();
        }
        e->value = Value::string(std::move(s));
        return e;
      }
      case TokKind::kInt:
        advance();
        e->value = Value::integer(t.int_value);
        return e;
      case TokKind::kFloat:
        advance();
        e->value = Value::floating(t.float_value);
        return e;
      default:
        break;
    }
    if (skip_op("(")) {
      ExprPtr inner = parse_tuple(true, true);
      expect_op(")");
      return inner;
    }
    if (skip_op("[")) {
      e->kind = ExprKind::kList;
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      advance();
      return e;
    }
    if (skip_op("{")) {
      e->kind = ExprKind::kDict;
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      advance();
      return e;
    }
    fail_expected("an expression");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const Token at = cur();
      if (skip_op(".")) {
        auto e = node_at<Expr>(at);
        e->target = std::move(node);
        if (cur().kind == TokKind::kName) {
          e->kind = ExprKind::kAttr;
          e->name = cur().text;
        } else if (cur().kind == TokKind::kInt) {
          e->kind = ExprKind::kItem;
          auto index = node_at<Expr>(cur());
          index->value = Value::integer(cur().int_value);
          e->args.push_back(std::move(index));
        } else {
          fail_expected("an attribute name");
        }
        advance();
        node = std::move(e);
      } else if (skip_op("[")) {
        node = parse_subscript(at, std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(const Token& at, ExprPtr target) {
    auto e = node_at<Expr>(at);
    e->target = std::move(target);
    ExprPtr first;
    if (!is_op(":")) first = parse_expression(true);
    if (skip_op(":")) {
      e->kind = ExprKind::kSlice;
      e->args.push_back(std::move(first));
      e->args.push_back(is_op("]") || is_op(":") ? nullptr : parse_expression(true));
      e->args.push_back(skip_op(":") && !is_op("]") ? parse_expression(true) : nullptr);
    } else {
      e->kind = ExprKind::kItem;
      e->args.push_back(std::move(first));
    }
    if (is_op(",")) syntax_error(cur().line, cur().col, "tuple subscripts are not supported");
    expect_op("]");
    return e;
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) syntax_error(cur().line, cur().col, "*args and **kwargs are not supported");
      if (cur().kind == TokKind::kName && peek().kind == TokKind::kOp && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) syntax_error(cur().line, cur().col, "positional argument after keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
    advance();
  }

  ExprPtr parse_call(ExprPtr target) {
    auto e = node_at<Expr>(cur());
    e->kind = ExprKind::kCall;
    e->target = std::move(target);
    parse_call_args(*e);
    return e;
  }

  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek().kind == TokKind::kName) {
      advance();
      name += "." + cur().text;
      advance();
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr target) {
    auto e = node_at<Expr>(cur());
    e->kind = ExprKind::kFilter;
    e->target = std::move(target);
    e->name = parse_dotted_name();
    if (is_op("(")) parse_call_args(*e);
    return e;
  }

  ExprPtr parse_test(ExprPtr target) {
    auto e = node_at<Expr>(cur());
    e->kind = ExprKind::kTest;
    e->target = std::move(target);
    e->negated = skip_name("not");
    e->name = parse_dotted_name();
    if (is_op("(")) {
      parse_call_args(*e);
    } else {
      const Token& t = cur();
      const bool starts_arg = t.kind == TokKind::kName || t.kind == TokKind::kString || t.kind == TokKind::kInt ||
                              t.kind == TokKind::kFloat || is_op("[") || is_op("{");
      if (starts_arg && !is_name("else") && !is_name("or") && !is_name("and")) {
        if (is_name("is")) syntax_error(t.line, t.col, "you cannot chain multiple tests with is");
        e->args.push_back(parse_postfix(parse_primary()));
      }
    }
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (skip_op("|")) {
        node = parse_filter(std::move(node));
      } else if (skip_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Program parse_template(const std::string& source) {
  return Parser(Lexer(source).run()).run();
}

}  // namespace fp6serve::jinja
