// Internal to the chat engine (used by jinja_parser.cc only): the lexer of the Jinja subset,
// and the cursor the parser reads its tokens with.
//
// tokenize() cuts a template into text and tag tokens the way jinja2's lexer does with
// transformers' settings, so the parser never sees whitespace control: `{%-`/`-%}` strips,
// trim_blocks, lstrip_blocks, `{% raw %}` and comments are all resolved here, and the text
// tokens hold exactly the bytes the template will print.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fp6serve::jinja {

enum class TokKind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  TokKind kind = TokKind::kEof;
  std::string text;  // text, name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int col = 1;  // 1-based, in code points (jinja2 counts characters, not bytes)
};

// How a syntax error names a token: "end of print statement '}}'", "string literal", "'foo'".
std::string describe(const Token& t);

// Throws fp6serve::Error(kBadInput) "chat template syntax error at L:C: what".
[[noreturn]] void syntax_error(int line, int col, const std::string& what);

// Reads a token list in order, for the parser: the list ends with kEof, which the cursor
// never passes. The expect_*() calls throw as syntax_error() does, naming what was expected.
class TokenCursor {
 public:
  explicit TokenCursor(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t ahead = 1) const { return toks_[std::min(pos_ + ahead, toks_.size() - 1)]; }
  const Token& previous() const { return toks_[pos_ == 0 ? 0 : pos_ - 1]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(std::string_view op) const { return cur().kind == TokKind::kOp && cur().text == op; }
  bool is_name(std::string_view name) const { return cur().kind == TokKind::kName && cur().text == name; }
  bool skip_op(std::string_view op);
  bool skip_name(std::string_view name);
  [[noreturn]] void fail_expected(const std::string& expected) const;
  void expect_op(std::string_view op);
  std::string expect_name();
  void expect_block_end();

 private:
  std::vector<Token> toks_;
  size_t pos_ = 0;
};

// The tokens of a whole template, ending with one kEof token. Newlines are normalized to \n
// and one trailing newline dropped first (keep_trailing_newline=False). Throws as
// syntax_error() on an unterminated tag, comment, raw block or string, an unbalanced bracket,
// a bad escape or an integer literal that does not fit 64 bits.
std::vector<Token> tokenize(const std::string& source);

}  // namespace fp6serve::jinja
