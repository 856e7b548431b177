// Lexer and parser of the Jinja subset used by chat templates, with the settings transformers
// renders them with: trim_blocks and lstrip_blocks on, a single trailing newline dropped,
// loop controls (break/continue) and the {% generation %} tag. The lexer (jinja_lexer.cc)
// follows jinja2's rules for whitespace control byte for byte; the grammar (jinja_parser.cc)
// follows jinja2's precedence (filters and tests bind tighter than arithmetic, `not` looser
// than comparisons). This header is the AST both the parser and the evaluator use.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"

namespace fp6serve::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class ExprKind {
  kConst,
  kName,
  kList,
  kTuple,
  kDict,
  kAttr,
  kItem,
  kSlice,
  kCall,
  kFilter,
  kTest,
  kNeg,
  kPos,
  kNot,
  kBinary,
  kCompare,
  kAnd,
  kOr,
  kCond,
};
// How deeply one template may nest: statements inside statements plus expression levels (an
// operand inside its operator, a filter's input inside the filter), counted as the AST's
// depth. The evaluator, the AST's destructor and the parser itself recurse once per level, so
// an unbounded depth (`{{ x|f|f|f... }}`, `1+1+1...` 200,000 times) would overflow the stack.
// Real chat templates stay far below it (the published ones in tests/data/chat_templates/
// reach 12), so 256 never binds on one.
constexpr int kMaxNestingDepth = 256;

// The largest template source parsed. Tokens and AST nodes take up to ~170 bytes per source
// byte (`[1,1,1,...]`), so this bounds parsing to well under 200 MB; published chat templates
// are 0.3 to 20 KB.
constexpr size_t kMaxTemplateBytes = size_t{1} << 20;

enum class BinOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat };
enum class CmpOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Expr {
  ExprKind kind = ExprKind::kConst;
  int line = 0;
  int col = 0;
  int depth = 1;     // levels of this expression: 1 for a leaf, 1 + the deepest operand otherwise
  Value value;       // kConst (a scalar or string: safe to share between threads)
  std::string name;  // kName; kAttr's attribute; kFilter/kTest's name
  BinOp bin_op = BinOp::kAdd;
  std::vector<CmpOp> cmp_ops;  // kCompare: args[i] op cmp_ops[i] args[i+1]
  bool negated = false;        // kTest: `is not`
  ExprPtr target;              // object of kAttr/kItem/kSlice/kCall/kFilter/kTest, operand, left side
  // kList/kTuple items; kDict keys and values alternating; call/filter/test arguments;
  // kBinary/kAnd/kOr right side; kCompare operands; kCond {condition, then, else or null};
  // kSlice {start, stop, step}, each possibly null.
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

enum class StmtKind {
  kText,
  kOutput,
  kIf,
  kFor,
  kSet,
  kSetBlock,
  kMacro,
  kBreak,
  kContinue,
  kWith,
  kFilterBlock,
  kBlock
};

// Left side of set/for: names (a tuple when several), or one namespace attribute (ns.attr).
struct AssignTarget {
  std::vector<std::string> names;
  std::string attr;  // non-empty: `names[0].attr`
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  int col = 0;
  std::string text;                                // kText; kMacro's name
  ExprPtr expr;                                    // output, set value, for iterable
  AssignTarget target;                             // set, for
  std::vector<std::pair<ExprPtr, Body>> branches;  // if/elif
  Body body;
  Body else_body;                                       // if's else, for's else
  ExprPtr condition;                                    // for ... if condition
  std::vector<ExprPtr> filters;                         // set-block and filter-block filters (kFilter, no target)
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters (default or null); with's assignments
};

struct Program {
  Body body;
};

// Parses a whole template. Throws fp6serve::Error(kBadInput) naming line:column and what was
// expected, or where the nesting passed kMaxNestingDepth, or when the source is larger than
// kMaxTemplateBytes.
Program parse_template(const std::string& source);

}  // namespace fp6serve::jinja
