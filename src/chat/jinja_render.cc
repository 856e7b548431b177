// The evaluator of chat templates (declared in jinja_render.h): runs the AST of
// jinja_parser.h against the template's variables and returns the text it prints.
//
// Where the interpreter lives: this file holds statements, expressions, scopes, calls and
// macros. What operators do to values is in jinja_operators.cc, Python's str/dict/list
// methods in jinja_methods.cc (their string algorithms in python_strings.cc), the global
// functions in jinja_globals.cc, filters and tests in jinja_filters.cc, and what all of them
// share (call arguments, Python errors, the work and output budget) in jinja_runtime.cc.
//
// Errors: a Python-level error is a RuntimeError (jinja_error.h); eval() stamps the innermost
// expression's line:column on it and exec() turns it into fp6serve::Error(kInvalidArgument)
// naming that position. Exceeded limits and raise_exception() throw fp6serve::Error directly.
//
// Resources: work and output are charged to the Budget, the memory of built values to its
// MemoryMeter (installed on the thread for the render), and the evaluator's recursion is
// bounded by RenderLimits::max_nesting. Namespaces are the one mutable value, so the one way
// to make a reference cycle (`set ns.me = ns`): the renderer keeps each namespace it creates
// and empties them all when it ends, which frees every cycle.
#include "chat/jinja_render.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

#include "chat/jinja_error.h"
#include "chat/jinja_filters.h"
#include "chat/jinja_globals.h"
#include "chat/jinja_methods.h"
#include "chat/jinja_operators.h"
#include "chat/jinja_runtime.h"
#include "core/check.h"

namespace fp6serve::jinja {
namespace {

// An iteration builds its scope and loop object: several times a node's cost.
constexpr uint64_t kIterationCost = 16;

// One render of one program. Not thread-safe, and need not be: each render_program() call
// has its own Renderer, and the Program it reads is immutable.
class Renderer {
 public:
  Renderer(const RenderLimits& limits, const ValueDict& variables, std::shared_ptr<MemoryMeter> meter)
      : limits_(limits), budget_(limits, meter), meter_scope_(std::move(meter)) {
    frames_.push_back(global_functions());
    frames_.emplace_back(variables.items());
  }

  // Empties every namespace, on success or failure alike, so none outlives the render through a
  // reference cycle. Since namespaces_ still holds each one while they are emptied, no chain of
  // namespaces (`set ns.next = namespace(next=ns.next)` in a long loop) is freed recursively.
  ~Renderer() {
    for (const auto& ns : namespaces_) ns->attrs.clear();
  }
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // The whole output; throws as render_program() says.
  std::string run(const Program& program) {
    exec_body(program.body);
    return std::move(out_);
  }

 private:
  // How a statement ended: break and continue travel up through if/with bodies to their loop.
  enum class Flow { kNormal, kBreak, kContinue };
  // One scope: names and values, searched from the end. frames_ holds them innermost last:
  // [0] the globals, [1] the template's variables, then one per for-loop iteration, `with`
  // block and macro call. `if` opens none, so a `set` inside an `if` stays visible after
  // it, while one inside a loop body is gone with its iteration, as in jinja2.
  using Frame = std::vector<std::pair<std::string, Value>>;

  // ---- scopes ----

  // A name that no scope holds is Undefined, failing only when used.
  Value lookup(const std::string& name) const {
    for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
      for (auto it = f->rbegin(); it != f->rend(); ++it) {
        if (it->first == name) return it->second;
      }
    }
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }

  // `set` binds in the innermost scope.
  void assign(const std::string& name, Value value) {
    Frame& frame = frames_.back();
    for (auto& [k, v] : frame) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    frame.emplace_back(name, std::move(value));
  }

  // Python's tuple unpacking (`set a, b = pair`, `for k, v in d.items()`): the items of
  // `value`, one per name of `target`.
  Iteration unpack(const AssignTarget& target, const Value& value) {
    Iteration items = iterate(budget_, value);
    if (items.size() != target.names.size()) {
      fail(fmt::format("{} values to unpack (expected {}, got {})",
                       items.size() > target.names.size() ? "too many" : "not enough", target.names.size(),
                       items.size()));
    }
    return items;
  }

  void assign_target(const AssignTarget& target, const Value& value) {
    if (target.names.size() == 1) {
      assign(target.names[0], value);
      return;
    }
    const Iteration items = unpack(target, value);
    for (size_t i = 0; i < items.size(); ++i) assign(target.names[i], items[i]);
  }

  // Binds a loop target in the iteration's new scope.
  void bind(Frame& frame, const AssignTarget& target, const Value& item) {
    if (target.names.size() == 1) {
      frame.emplace_back(target.names[0], item);
      return;
    }
    const Iteration parts = unpack(target, item);
    for (size_t i = 0; i < parts.size(); ++i) frame.emplace_back(target.names[i], parts[i]);
  }

  // ---- statements ----

  void emit(const std::string& s) {
    budget_.charge(s.size() / 16 + 1);
    budget_.check_size(out_.size() + s.size());
    out_ += s;
  }

  Flow exec_body(const Body& body) {
    for (const auto& stmt : body) {
      const Flow flow = exec(*stmt);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  // A Python-level error becomes fp6serve::Error at the innermost statement, naming the
  // innermost expression's position (or the statement's, when no expression stamped one).
  Flow exec(const Stmt& s) {
    budget_.charge(1);
    const NestingGuard nesting(*this, s.line, s.col);
    try {
      return exec_inner(s);
    } catch (RuntimeError& e) {
      const int line = e.has_position() ? e.line() : s.line;
      const int col = e.has_position() ? e.col() : s.col;
      FP6_THROW(kInvalidArgument, "chat template error at {}:{}: {}", line, col, e.what());
    }
  }

  // Runs `body` into a buffer of its own and returns what it printed (set and filter blocks,
  // macro bodies). The outer buffer waits meanwhile, charged to the memory meter: captures
  // nest (macro calls, set blocks), and each buffer may hold up to the output limit.
  std::string capture(const Body& body) {
    struct Restore {
      ~Restore() {
        meter.release(held);
        r.out_ = std::move(saved);
      }
      Renderer& r;
      MemoryMeter& meter;
      std::string saved;
      size_t held = 0;
    } restore{*this, *budget_.meter(), std::move(out_)};
    out_ = std::string();
    budget_.meter()->add(restore.saved.capacity());
    restore.held = restore.saved.capacity();
    exec_body(body);
    return std::exchange(out_, std::string());
  }

  Value apply_filters(const std::vector<ExprPtr>& filters, Value v) {
    for (const auto& f : filters) v = apply_filter(budget_, f->name, v, eval_args(*f));
    return v;
  }

  Flow exec_inner(const Stmt& s) {
    switch (s.kind) {
      case StmtKind::kText:
        emit(s.text);
        return Flow::kNormal;
      case StmtKind::kOutput: {
        const Value v = eval(*s.expr);
        if (v.is_string()) {
          emit(v.as_string());
        } else {
          emit(budget_.str(v));
        }
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (const auto& [cond, body] : s.branches) {
          if (eval(*cond).truthy()) return exec_body(body);
        }
        return exec_body(s.else_body);
      case StmtKind::kFor:
        return exec_for(s);
      case StmtKind::kSet: {
        const Value v = eval(*s.expr);
        // `set ns.attr = v` changes the namespace object itself, so the change outlives the
        // scope it was made in: how templates carry state out of loops.
        if (!s.target.attr.empty()) {
          const Value ns = lookup(s.target.names[0]);
          if (ns.kind() != Value::Kind::kNamespace) fail("cannot assign attribute on non-namespace object");
          ValueDict& attrs = ns.as_namespace()->attrs;
          budget_.charge(attrs.size() / 16);  // set() searches the attributes
          attrs.set(s.target.attr, v);
        } else {
          assign_target(s.target, v);
        }
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock:
        assign(s.target.names[0], apply_filters(s.filters, Value::string(capture(s.body))));
        return Flow::kNormal;
      case StmtKind::kMacro: {  // defining a macro binds a callable, like `set`
        auto fn = std::make_shared<Callable>();
        fn->kind = Callable::Kind::kMacro;
        fn->name = s.text;
        fn->macro = &s;
        assign(s.text, Value::callable(std::move(fn)));
        return Flow::kNormal;
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kWith: {
        Frame frame;
        for (const auto& [name, expr] : s.params) frame.emplace_back(name, eval(*expr));
        frames_.push_back(std::move(frame));
        const Flow flow = exec_body(s.body);
        frames_.pop_back();
        return flow;
      }
      case StmtKind::kFilterBlock:
        emit(budget_.str(apply_filters(s.filters, Value::string(capture(s.body)))));
        return Flow::kNormal;
      case StmtKind::kBlock:
        return exec_body(s.body);
    }
    return Flow::kNormal;
  }

  // jinja2's for loop. `for x in xs if cond` filters before looping, so loop.index, length
  // and last count the kept items only; `else` runs when none is left.
  Flow exec_for(const Stmt& s) {
    Iteration iteration = iterate(budget_, eval(*s.expr));
    budget_.charge(iteration.size());
    if (s.condition) {
      ValueList kept;
      for (const Value& item : iteration) {
        Frame frame;
        bind(frame, s.target, item);
        frames_.push_back(std::move(frame));
        const bool keep = eval(*s.condition).truthy();
        frames_.pop_back();
        if (keep) kept.push_back(item);
      }
      iteration = iterate(budget_, Value::list(std::move(kept)));
    }
    const ValueList& items = iteration.items();
    if (items.empty()) return exec_body(s.else_body);
    const int64_t n = static_cast<int64_t>(items.size());
    auto cycle = std::make_shared<Callable>();
    cycle->kind = Callable::Kind::kMethod;
    cycle->name = "loop.cycle";
    for (int64_t i = 0; i < n; ++i) {
      budget_.charge(kIterationCost);
      ValueDict loop;
      loop.set("index", Value::integer(i + 1));
      loop.set("index0", Value::integer(i));
      loop.set("revindex", Value::integer(n - i));
      loop.set("revindex0", Value::integer(n - i - 1));
      loop.set("first", Value::boolean(i == 0));
      loop.set("last", Value::boolean(i == n - 1));
      loop.set("length", Value::integer(n));
      loop.set("depth", Value::integer(1));
      loop.set("depth0", Value::integer(0));
      if (i > 0) loop.set("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.set("nextitem", items[static_cast<size_t>(i + 1)]);
      auto bound_cycle = std::make_shared<Callable>(*cycle);
      bound_cycle->receiver = Value::integer(i);
      loop.set("cycle", Value::callable(std::move(bound_cycle)));
      Frame frame;
      bind(frame, s.target, items[static_cast<size_t>(i)]);
      frame.emplace_back("loop", Value::dict(std::move(loop)));
      frames_.push_back(std::move(frame));
      const Flow flow = exec_body(s.body);
      frames_.pop_back();
      if (flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  // ---- expressions ----

  Args eval_args(const Expr& e) {
    Args args;
    args.pos.reserve(e.args.size());
    for (const auto& a : e.args) args.pos.push_back(eval(*a));
    for (const auto& [k, a] : e.kwargs) args.kw.emplace_back(k, eval(*a));
    return args;
  }

  // Every evaluated node costs one unit of work. A RuntimeError takes the position of the
  // innermost expression it passes, the one that failed.
  Value eval(const Expr& e) {
    budget_.charge(1);
    const NestingGuard nesting(*this, e.line, e.col);
    try {
      return eval_inner(e);
    } catch (RuntimeError& err) {
      if (!err.has_position()) err.set_position(e.line, e.col);
      throw;
    }
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kConst:
        return e.value;
      case ExprKind::kName:
        return lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        ValueList items;
        items.reserve(e.args.size());
        for (const auto& a : e.args) items.push_back(eval(*a));
        return Value::list(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {  // duplicate keys: the last value, in the first key's position
        ValueDict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          const Value key = eval(*e.args[i]);
          if (!key.is_string()) fail(fmt::format("dict keys must be strings here, not '{}'", key.type_name()));
          budget_.charge(d.size() / 16);  // set() searches the keys so far
          d.set(key.as_string(), eval(*e.args[i + 1]));
        }
        return Value::dict(std::move(d));
      }
      case ExprKind::kAttr:
        return get_attr(budget_, eval(*e.target), e.name);
      case ExprKind::kItem: {
        Value target = eval(*e.target);  // before the index, as Python
        return get_item(budget_, target, eval(*e.args[0]));
      }
      case ExprKind::kSlice:
        return eval_slice(e);
      case ExprKind::kCall:
        return call(eval(*e.target), eval_args(e));
      case ExprKind::kFilter:
        return apply_filter(budget_, e.name, eval(*e.target), eval_args(e));
      case ExprKind::kTest: {
        const bool result = apply_test(budget_, e.name, eval(*e.target), eval_args(e));
        return Value::boolean(result != e.negated);
      }
      case ExprKind::kNeg:
      case ExprKind::kPos:
        return unary_op(e.kind, eval(*e.target));
      case ExprKind::kNot:
        return Value::boolean(!eval(*e.target).truthy());
      // and/or return an operand, not a bool, and short-circuit, as in Python.
      case ExprKind::kAnd: {
        Value left = eval(*e.target);
        return left.truthy() ? eval(*e.args[0]) : left;
      }
      case ExprKind::kOr: {
        Value left = eval(*e.target);
        return left.truthy() ? left : eval(*e.args[0]);
      }
      case ExprKind::kCond:
        if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined("the conditional expression's else is undefined");
      case ExprKind::kBinary: {  // left before right, as Python (a call's arguments have no order)
        Value left = eval(*e.target);
        return binary_op(budget_, e.bin_op, std::move(left), eval(*e.args[0]));
      }
      case ExprKind::kCompare: {  // a < b < c: each operand evaluated once, stopping at false
        Value left = eval(*e.args[0]);
        for (size_t i = 0; i < e.cmp_ops.size(); ++i) {
          Value right = eval(*e.args[i + 1]);
          if (!compare_op(budget_, e.cmp_ops[i], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
    }
    return Value();
  }

  Value eval_slice(const Expr& e) {
    const Value obj = require_defined(eval(*e.target));
    Value bounds[3];
    for (int i = 0; i < 3; ++i) {
      if (e.args[static_cast<size_t>(i)]) bounds[i] = eval(*e.args[static_cast<size_t>(i)]);
    }
    const auto ptr = [&](int i) { return e.args[static_cast<size_t>(i)] ? &bounds[i] : nullptr; };
    return slice_value(budget_, obj, ptr(0), ptr(1), ptr(2));
  }

  // ---- calls ----

  // `callee(args)`: a global (jinja_globals.cc), a bound method (jinja_methods.cc) or a macro.
  Value call(const Value& callee, const Args& args) {
    if (callee.is_undefined()) fail(undefined_message(callee));
    if (callee.kind() != Value::Kind::kCallable) fail(fmt::format("'{}' object is not callable", callee.type_name()));
    const Callable& fn = *callee.as_callable();
    switch (fn.kind) {
      case Callable::Kind::kBuiltin: {
        Value result = call_global(budget_, fn.name, args);
        if (result.kind() == Value::Kind::kNamespace) namespaces_.push_back(result.as_namespace());
        return result;
      }
      case Callable::Kind::kMethod:
        return call_method(budget_, fn.receiver, fn.name, args);
      case Callable::Kind::kMacro:
        return call_macro(*fn.macro, args);
    }
    return Value();
  }

  // A macro call returns its body's output as a string. Missing arguments take their
  // defaults, evaluated at call time in the macro's scope; without one they are Undefined.
  Value call_macro(const Stmt& macro, const Args& args) {
    if (call_depth_ >= limits_.max_call_depth) {
      FP6_THROW(kInvalidArgument, "chat template macro calls nested deeper than {}", limits_.max_call_depth);
    }
    if (args.pos.size() > macro.params.size()) {
      fail(fmt::format("macro '{}' takes not more than {} argument(s)", macro.text, macro.params.size()));
    }
    // The body sees the template's globals and its own parameters, not the caller's loops.
    std::vector<Frame> saved(std::make_move_iterator(frames_.begin() + 2), std::make_move_iterator(frames_.end()));
    frames_.resize(2);
    frames_.emplace_back();
    ++call_depth_;
    std::string result;
    try {
      for (size_t i = 0; i < macro.params.size(); ++i) {
        const auto& [param, def] = macro.params[i];
        const Value* given = i < args.pos.size() ? &args.pos[i] : nullptr;
        for (const auto& [k, v] : args.kw) {
          if (k == param) given = &v;
        }
        assign(param, given ? *given : def ? eval(*def) : Value::undefined(fmt::format("'{}' is undefined", param)));
      }
      for (const auto& kw : args.kw) {
        const std::string& k = kw.first;  // clang before 16 cannot capture a structured binding
        const bool known =
            std::any_of(macro.params.begin(), macro.params.end(), [&](const auto& p) { return p.first == k; });
        if (!known) fail(fmt::format("macro '{}' has no argument named '{}'", macro.text, k));
      }
      result = capture(macro.body);
    } catch (...) {
      --call_depth_;
      frames_.resize(2);
      for (auto& f : saved) frames_.push_back(std::move(f));
      throw;
    }
    --call_depth_;
    frames_.resize(2);
    for (auto& f : saved) frames_.push_back(std::move(f));
    return Value::string(std::move(result));
  }

  // Counts the statements and expressions being evaluated, macro bodies included, and fails
  // past max_nesting: each level is a few recursive calls of the evaluator.
  struct NestingGuard {
    NestingGuard(Renderer& r, int line, int col) : renderer(r) {
      if (++renderer.nesting_ > renderer.limits_.max_nesting) {
        --renderer.nesting_;
        FP6_THROW(kInvalidArgument, "chat template error at {}:{}: rendering nested deeper than {} levels", line, col,
                  renderer.limits_.max_nesting);
      }
    }
    ~NestingGuard() { --renderer.nesting_; }
    NestingGuard(const NestingGuard&) = delete;
    NestingGuard& operator=(const NestingGuard&) = delete;
    Renderer& renderer;
  };

  const RenderLimits& limits_;
  Budget budget_;  // work and output size, charged by everything below this class too
  // Installs budget_'s memory meter on this thread for the render; declared before everything
  // holding values, so they are all gone (and released) before it is uninstalled.
  MeterScope meter_scope_;
  std::vector<std::shared_ptr<Namespace>> namespaces_;  // every namespace() this render made
  std::vector<Frame> frames_;
  std::string out_;     // the output so far (of the innermost capture())
  int call_depth_ = 0;  // macro calls in progress
  int nesting_ = 0;     // NestingGuard's count
};

}  // namespace

std::string render_program(const Program& program, const ValueDict& variables, const RenderLimits& limits,
                           RenderStats* stats) {
  const auto meter = std::make_shared<MemoryMeter>(limits.max_memory_bytes);
  // Reads the meter once the renderer, and with it every value of the render, is gone.
  struct Report {
    ~Report() {
      if (stats) *stats = RenderStats{meter.peak(), meter.live()};
    }
    const MemoryMeter& meter;
    RenderStats* stats;
  } report{*meter, stats};
  Renderer renderer(limits, variables, meter);
  try {
    return renderer.run(program);
  } catch (const RuntimeError& e) {
    FP6_THROW(kInvalidArgument, "chat template error at {}:{}: {}", e.line(), e.col(), e.what());
  }
}

}  // namespace fp6serve::jinja
