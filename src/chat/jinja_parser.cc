// The parser of the chat-template Jinja subset: jinja_lexer.h's tokens in, jinja_parser.h's
// AST out. Recursive descent mirroring jinja2's parser.py function by function, so the
// grammar's corners match. Precedence, loosest first: `a if c else b`, or, and, not,
// comparisons (chained), + -, ~, * / // %, **, unary - +, then a primary with its postfix
// (.attr, [item], [a:b:c], call), filters `|f` and tests `is t`: filters bind tighter than
// arithmetic, so `'a' + x | trim` trims only x.
#include "chat/jinja_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <string_view>

#include "chat/jinja_lexer.h"
#include "core/check.h"

namespace fp6serve::jinja {
namespace {

// One parse of one template, reading the tokens through TokenCursor (jinja_lexer.h).
class Parser : TokenCursor {
 public:
  explicit Parser(std::vector<Token> tokens) : TokenCursor(std::move(tokens)) {}

  Program run() {
    Program program;
    program.body = parse_body({});
    return program;
  }

 private:
  // Bounds the parser's own recursion, which a deeply nested template would overflow
  // (parentheses nest the parser without deepening the AST). Statement bodies also count
  // toward the AST depth finish() checks.
  struct DepthGuard {
    DepthGuard(Parser& p, bool body) : parser(p), is_body(body) {
      if (++parser.depth_ > kMaxNestingDepth) too_deep(parser.cur().line, parser.cur().col);
      if (is_body) ++parser.body_depth_;
    }
    ~DepthGuard() {
      --parser.depth_;
      if (is_body) --parser.body_depth_;
    }
    Parser& parser;
    bool is_body;
  };

  [[noreturn]] static void too_deep(int line, int col) {
    syntax_error(line, col, fmt::format("nesting deeper than {} levels", kMaxNestingDepth));
  }

  // Sets the depth of a node whose operands are all parsed, and fails when the node (inside
  // the statements around it) nests past kMaxNestingDepth. Operator chains (`a + b + c`,
  // `x|f|g`) deepen the AST in a loop, without recursing the parser, so this is where they
  // stop; checking each node as it is made keeps parsing linear.
  ExprPtr finish(ExprPtr e) {
    int deepest = e->target ? e->target->depth : 0;
    for (const auto& a : e->args) {
      if (a) deepest = std::max(deepest, a->depth);
    }
    for (const auto& [k, a] : e->kwargs) deepest = std::max(deepest, a->depth);
    e->depth = deepest + 1;
    if (body_depth_ + e->depth > kMaxNestingDepth) too_deep(e->line, e->col);
    return e;
  }

  // A new Expr or Stmt positioned at `t`, for the line:column of runtime errors.
  template <typename T>
  std::unique_ptr<T> node_at(const Token& t) {
    auto n = std::make_unique<T>();
    n->line = t.line;
    n->col = t.col;
    return n;
  }

  // ---- statements ----

  // Parses statements until `{% name %}` for a name in `ends` (consumed up to the name, so the
  // caller reads the rest of that tag) or the end of the template.
  Body parse_body(std::initializer_list<std::string_view> ends) {
    DepthGuard guard(*this, true);
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

  // The statement after `{%`; `ends` (the enclosing block's closing tags) only serve errors.
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
        const std::string& which = previous().text;  // the name parse_body stopped at
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
      s->expr = parse_tuple(false, false, "recursive");  // no conditional: its `if` is the filter
      if (skip_name("if")) s->condition = parse_expression(true);
      if (is_name("recursive")) syntax_error(cur().line, cur().col, "recursive loops are not supported");
      expect_block_end();
      ++loop_depth_;
      s->body = parse_body({"endfor", "else"});
      --loop_depth_;
      if (previous().text == "else") {
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
      loop_depth_ = 0;  // a macro body is not inside the caller's loop: no break there
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

  // `x`, `a, b`, `(a, b)`, or with allow_namespace `ns.attr`.
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

  // ---- expressions ----

  // Where an unparenthesized tuple stops: the end of the tag, a ')', or `extra_end`.
  bool is_tuple_end(const char* extra_end) const {
    const Token& t = cur();
    if (t.kind == TokKind::kVarEnd || t.kind == TokKind::kBlockEnd || t.kind == TokKind::kEof) return true;
    if (t.kind == TokKind::kOp && t.text == ")") return true;
    return extra_end && t.kind == TokKind::kName && t.text == extra_end;
  }

  // One expression, or a tuple when commas follow (`{{ a, b }}`); `()` only with explicit_parens.
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
    return finish(std::move(e));
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  // `a if c else b`; without `else` the value is undefined when c is false, as in jinja2.
  ExprPtr parse_condexpr() {
    DepthGuard guard(*this, false);
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
      expr = finish(std::move(e));
    }
    return expr;
  }

  // A node with `left` as target and `right` as its one argument.
  ExprPtr binary(ExprKind kind, const Token& at, ExprPtr left, ExprPtr right) {
    auto e = node_at<Expr>(at);
    e->kind = kind;
    e->target = std::move(left);
    e->args.push_back(std::move(right));
    return finish(std::move(e));
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
    DepthGuard guard(*this, false);
    if (is_name("not")) {
      const Token at = cur();
      advance();
      auto e = node_at<Expr>(at);
      e->kind = ExprKind::kNot;
      e->target = parse_not();
      return finish(std::move(e));
    }
    return parse_compare();
  }

  // The comparison operator at the cursor, consumed; false when there is none. `not in` is
  // two names.
  bool skip_compare_op(CmpOp& op) {
    static constexpr std::pair<std::string_view, CmpOp> kOps[] = {{"==", CmpOp::kEq}, {"!=", CmpOp::kNe},
                                                                  {"<", CmpOp::kLt},  {"<=", CmpOp::kLe},
                                                                  {">", CmpOp::kGt},  {">=", CmpOp::kGe}};
    for (const auto& [text, o] : kOps) {
      if (skip_op(text)) {
        op = o;
        return true;
      }
    }
    op = CmpOp::kIn;
    if (is_name("not") && peek().kind == TokKind::kName && peek().text == "in") {
      op = CmpOp::kNotIn;
      advance();
    }
    return skip_name("in");
  }

  // `a < b <= c` is one kCompare node, evaluated as Python chains it: (a < b) and (b <= c).
  ExprPtr parse_compare() {
    const Token start = cur();
    ExprPtr first = parse_math1();
    CmpOp op;
    if (!skip_compare_op(op)) return first;
    auto e = node_at<Expr>(start);
    e->kind = ExprKind::kCompare;
    e->args.push_back(std::move(first));
    do {
      e->cmp_ops.push_back(op);
      e->args.push_back(parse_math1());
    } while (skip_compare_op(op));
    return finish(std::move(e));
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

  // The operand of `-x` is parsed without filters: `-x|abs` is (-x)|abs, as in jinja2.
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this, false);
    const Token at = cur();
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      advance();
      node = node_at<Expr>(at);
      node->kind = at.text == "-" ? ExprKind::kNeg : ExprKind::kPos;
      node->target = parse_unary(false);
      node = finish(std::move(node));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  // A name, constant, literal list/dict or parenthesized expression. Adjacent string literals
  // concatenate, as in Python.
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
      return finish(std::move(e));
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
      return finish(std::move(e));
    }
    fail_expected("an expression");
  }

  // `.name`, `.0` (an item, like jinja2), `[...]` and calls after a primary.
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
        node = finish(std::move(e));
      } else if (skip_op("[")) {
        node = parse_subscript(at, std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  // After `[`: an item `[i]` or a slice `[a:b:c]` with any part left out.
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
    return finish(std::move(e));
  }

  // `(a, b, k=v)` into e.args and e.kwargs; keyword arguments come last, as in Python.
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
    return finish(std::move(e));
  }

  // A filter or test name; jinja2 allows dots in them.
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
    return finish(std::move(e));
  }

  // After `is`: `[not] name`, then arguments in parentheses or one bare argument
  // (`x is divisibleby 3`, `x is sameas none`), which jinja2 reads as a primary with postfix.
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
    return finish(std::move(e));
  }

  // The filters, tests and calls after a unary expression: `x|f(1)|g is t`.
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

  int depth_ = 0;       // DepthGuard's count: the parser's recursion
  int body_depth_ = 0;  // statement bodies being parsed, the statements' share of the AST depth
  int loop_depth_ = 0;  // enclosing for-loops: break and continue are errors outside one
};

}  // namespace

Program parse_template(const std::string& source) {
  if (source.size() > kMaxTemplateBytes) {
    FP6_THROW(kBadInput, "chat template is {} bytes, more than the limit of {}", source.size(), kMaxTemplateBytes);
  }
  return Parser(tokenize(source)).run();
}

}  // namespace fp6serve::jinja
