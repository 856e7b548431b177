// The op table (the idea of llama.cpp's test-backend-ops): every op of the Backend interface
// (backend/backend.h) on every backend this build and machine offer, against a plain
// double-precision reference written in this file.
//
// One row per case of one op (op_table() below lists them): its name and shape, the model
// config the backend is made for (heads, head dim, window, RoPE), a builder that draws fresh
// inputs from a seed, the op run through a Backend&, the reference (obviously right and slow)
// and a tolerance per activation dtype: f32 (the CPU backend), f16 and bf16 (the CUDA backend,
// made once for an F16 and once for a BF16 checkpoint). OpTable.Matches runs every (backend,
// row) pair, named after both: OpTable.Matches/cuda_bf16__attention_d128_h8kv2_mixed. A
// backend this build or machine lacks is skipped, saying why.
//
// A row's run: the backend is made for the row's config; the builder draws the inputs from
// fp6serve::testing::test_seed() (printed; FP6SERVE_TEST_SEED=<n> repeats a run); `run` adopts
// the weights, calls begin_forward with the row's batch, takes activations, uploads the
// inputs, fills every output with NaN through Backend::upload (so an element the op does not
// write fails), runs the op and reads its outputs back with to_host_f32. Inputs are drawn
// exactly representable in f32, f16 and bf16 alike (exact16), so that every backend computes
// on the same numbers and one reference serves them all: the tolerances cover only the
// kernels' arithmetic and the rounding of their outputs. The order inside `run` is the one
// the CUDA backend needs: weights adopted before begin_forward (which sizes the FPx workspace
// from the weights it holds), activations taken after it (it recycles their memory).
//
// sample's reference: greedy rows take the argmax (the lowest id among ties) after the
// penalties; seeded rows (temperature, top-k, top-p, min-p, penalties) follow
// backend/sampling.h in double on the CPU backend, allowing the neighbouring token where a
// nudge of 1e-5 to u, top_p or min_p changes the draw, and must equal cpu::sample_row bit for
// bit on any other backend.
//
// Comparison (compare): per output, NaN exactly where the reference has NaN (cache slots the
// op must not write), finite elsewhere, and both nmse = sum (got - ref)^2 / sum ref^2 and
// max |got - ref| / max |ref| within the row's limits for the backend's activation dtype (the
// second catches one wrong element in a large output). A failure prints the shape and the
// worst element; every run prints what it measured. Discrete outputs (sampled tokens) must
// equal the reference, or one of the alternatives it allows.
//
// Adding a row: add a shape to its op's list in op_table(), e.g. {"window8_decode", 8, 2, 64, 8,
// {{500, 1}, {9, 1}}} to the attention shapes. Adding an op: write its inputs
// struct, build/run/reference functions and a row maker (the rms_norm section is the
// simplest), list its rows in op_table() and its name in kOps.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/sampling.h"
#include "core/half.h"
#include "fpx/pack.h"
#include "fpx/quantize.h"
#include "tests/support/delegating_backend.h"
#include "tests/support/random.h"
#include "transformer/device.h"

namespace fp6serve {
namespace {

using model::ModelConfig;
using Rng = std::mt19937_64;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// Tolerances: bounds on nmse and on max |got - ref| / max |ref|, per activation dtype, each at
// least 4 times the worst seen over 40 seeds (the CPU; an H100 in f16 and bf16).

struct Limit {
  double nmse;
  double max_rel;
};

struct Tolerance {
  Limit f32, f16, bf16;
  const Limit& of(DType act) const { return act == DType::kF32 ? f32 : act == DType::kF16 ? f16 : bf16; }
};

// Copies (embed, gather): bit for bit.
constexpr Tolerance kExact = {{0, 0}, {0, 0}, {0, 0}};
// f32 arithmetic and one rounding to the output dtype (add, silu_mul, the norms, RoPE).
constexpr Tolerance kRounded = {{1e-13, 2e-6}, {5e-7, 2e-3}, {3e-5, 1.6e-2}};
// Long f32 accumulations, on the GPU of 16-bit operands (dequantized weights, attention
// probabilities): linear, attention.
constexpr Tolerance kAccumulated = {{2e-12, 1e-5}, {1e-6, 4e-3}, {4e-5, 2.5e-2}};
// The MoE MLP: two accumulations with the intermediate activations rounded to the activation
// dtype in between (gate_up, the SwiGLU product, each expert's down), then the weighted sum.
// The f16 and bf16 bounds are provisional (twice kAccumulated's per rounded stage, not yet
// measured over seeds on a GPU).
constexpr Tolerance kMoe = {{1e-11, 2e-5}, {4e-6, 1e-2}, {2e-4, 5e-2}};
// Log-probabilities of the same logits (f32/f64 on every backend).
constexpr Tolerance kLogprob = {{1e-12, 1e-6}, {1e-12, 2e-6}, {1e-12, 2e-6}};

// ---------------------------------------------------------------------------------------------
// Outputs and their comparison.

struct Out {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<double> v;
  bool discrete = false;                          // token ids: equal, or one of `allowed`
  std::vector<std::vector<double>> allowed = {};  // reference side: other values element i may take
};

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return "[" + s + "]";
}

// The element at a flat index, as [i, j, ...].
std::string where(const std::vector<int64_t>& shape, size_t flat) {
  std::vector<int64_t> idx(shape.size());
  auto f = static_cast<int64_t>(flat);
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? f % shape[d] : 0;
    f = shape[d] ? f / shape[d] : 0;
  }
  return join(idx);
}

struct Check {
  bool ok = true;
  double nmse = 0, max_rel = 0;
  std::string message;
};

Check compare(const Out& got, const Out& want, const Limit& limit) {
  Check c;
  const std::string head = want.name + " " + join(want.shape);
  if (got.shape != want.shape || got.v.size() != want.v.size()) {
    c.ok = false;
    c.message = fmt::format("{}: the op returned shape {} ({} elements)", head, join(got.shape), got.v.size());
    return c;
  }
  if (want.discrete) {
    size_t wrong = 0, first = 0;
    for (size_t i = 0; i < want.v.size(); ++i) {
      const auto& alt = i < want.allowed.size() ? want.allowed[i] : std::vector<double>{};
      if (got.v[i] == want.v[i] || std::find(alt.begin(), alt.end(), got.v[i]) != alt.end()) continue;
      if (wrong++ == 0) first = i;
    }
    if (wrong) {
      c.ok = false;
      c.nmse = c.max_rel = INFINITY;
      c.message = fmt::format("{}: {} of {} differ, first at {}: got {} want {}", head, wrong, want.v.size(),
                              where(want.shape, first), got.v[first], want.v[first]);
    }
    return c;
  }
  double num = 0, den = 0, max_err = -1, max_ref = 0;
  size_t worst = 0, nonfinite = 0, first_nonfinite = 0, stray = 0, first_stray = 0;
  for (size_t i = 0; i < want.v.size(); ++i) {
    const double w = want.v[i], g = got.v[i];
    if (std::isnan(w)) {  // must stay unwritten
      if (!std::isnan(g) && stray++ == 0) first_stray = i;
      continue;
    }
    if (!std::isfinite(g)) {
      if (nonfinite++ == 0) first_nonfinite = i;
      continue;
    }
    const double d = g - w;
    num += d * d;
    den += w * w;
    if (std::fabs(d) > max_err) max_err = std::fabs(d), worst = i;
    max_ref = std::max(max_ref, std::fabs(w));
  }
  max_err = std::max(max_err, 0.0);
  c.nmse = den > 0 ? num / den : (num > 0 ? INFINITY : 0.0);
  c.max_rel = max_ref > 0 ? max_err / max_ref : (max_err > 0 ? INFINITY : 0.0);
  c.ok = nonfinite == 0 && stray == 0 && c.nmse <= limit.nmse && c.max_rel <= limit.max_rel;
  if (!c.ok) {
    c.message = fmt::format(
        "{}: nmse {:.3g} (limit {:.3g}), max |err| / max |ref| {:.3g} (limit {:.3g}); worst "
        "element {}: got {:.9g} want {:.9g} (max |ref| {:.6g})",
        head, c.nmse, limit.nmse, c.max_rel, limit.max_rel, where(want.shape, worst), got.v[worst], want.v[worst],
        max_ref);
    if (nonfinite)
      c.message += fmt::format("; {} elements not finite (unwritten?), first at {}: {}", nonfinite,
                               where(want.shape, first_nonfinite), got.v[first_nonfinite]);
    if (stray)
      c.message += fmt::format("; {} elements written that must stay untouched, first at {}: {}", stray,
                               where(want.shape, first_stray), got.v[first_stray]);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Backends.

struct BackendSpec {
  const char* name;
  bool cuda;
  DType act;
};

constexpr BackendSpec kBackends[] = {
    {"cpu", false, DType::kF32}, {"cuda_f16", true, DType::kF16}, {"cuda_bf16", true, DType::kBF16}};

void PrintTo(const BackendSpec& b, std::ostream* os) {
  *os << b.name;
}

// Why the backend cannot run here, or "".
std::string unavailable(const BackendSpec& b) {
  if (!b.cuda) return "";
  if (!cuda_built())
    return "the CUDA backend is not built into this binary (configured with FP6SERVE_CUDA=OFF or without nvcc)";
  if (cuda_device_count() == 0) return "no CUDA GPU is visible: " + cuda_device_summary();
  return "";
}

std::unique_ptr<Backend> make(const BackendSpec& b, ModelConfig config) {
  Options o;
  o.device = b.cuda ? "cuda" : "cpu";
  o.progress = false;
  config.dtype = b.cuda ? b.act : DType::kF32;  // the CUDA backend computes in the checkpoint's 16-bit dtype
  return make_backend(config, model::QuantizationMode::parse(model::QuantizationMode::kDefault), o);
}

// ---------------------------------------------------------------------------------------------
// Inputs.

// x rounded to 8 significant bits (bf16), 0 below f16's smallest normal: a number f32, f16 and
// bf16 all hold exactly, so every backend sees the same input.
float exact16(float x) {
  const float b = bf16_bits_to_f32(f32_to_bf16_bits(x));
  return std::fabs(b) < 0x1p-14f ? 0.0f : b;
}

std::vector<float> randn(Rng& rng, size_t n, double stddev, double mean = 0.0) {
  std::normal_distribution<double> normal(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = exact16(static_cast<float>(normal(rng)));
  return v;
}

std::vector<float> uniform(Rng& rng, size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = exact16(static_cast<float>(u(rng)));
  return v;
}

ModelConfig make_config(int64_t heads = 2, int64_t kv_heads = 1, int64_t head_dim = 16, int64_t window = 0,
                        int64_t vocab = 1000, int64_t hidden = 64) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = 4 * hidden;
  c.num_layers = 2;  // ops on the cache use layer 1; layer 0 must stay as it was
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = 1 << 16;
  c.sliding_window = window;
  return c;
}

// Sequences of a batch: (position of the first new token, new tokens).
struct SeqSpec {
  int64_t start, count;
};

// The plan of a pass: each sequence gets distinct KV blocks covering its positions, drawn at
// random from a cache with a few spare blocks; random token ids.
struct Pass {
  Batch batch;
  int64_t num_blocks = 0;
  int64_t block_size = 16;

  int64_t slot(const BatchSeq& s, int64_t pos) const {
    return s.block_table[static_cast<size_t>(pos / block_size)] * block_size + pos % block_size;
  }
};

Pass make_pass(Rng& rng, const std::vector<SeqSpec>& seqs, int64_t vocab, int64_t block_size = 16) {
  Pass p;
  p.block_size = block_size;
  for (const SeqSpec& s : seqs) p.num_blocks += (s.start + s.count + block_size - 1) / block_size;
  p.num_blocks += 3;
  std::vector<int32_t> ids(static_cast<size_t>(p.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  size_t next = 0;
  for (const SeqSpec& s : seqs) {
    const auto blocks = static_cast<size_t>((s.start + s.count + block_size - 1) / block_size);
    std::vector<int32_t> table(ids.begin() + static_cast<std::ptrdiff_t>(next),
                               ids.begin() + static_cast<std::ptrdiff_t>(next + blocks));
    next += blocks;
    std::vector<int32_t> tokens(static_cast<size_t>(s.count));
    for (int32_t& t : tokens) t = token(rng);
    p.batch.add(tokens.data(), s.count, s.start, std::move(table), true);
  }
  return p;
}

std::string describe(const std::vector<SeqSpec>& seqs) {
  std::string s;
  for (const SeqSpec& q : seqs) s += fmt::format("{}{}+{}", s.empty() ? "" : ", ", q.start, q.count);
  return "seqs (start+tokens) {" + s + "}";
}

// ---------------------------------------------------------------------------------------------
// Talking to a backend.

Tensor host(const std::vector<float>& v, std::vector<int64_t> shape, DType dtype = DType::kF32) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  EXPECT_EQ(static_cast<size_t>(t.numel()), v.size());
  convert_from_f32(v.data(), t.data(), dtype, v.size());
  return t;
}

void fill(Backend& be, Tensor& t, const std::vector<float>& v) {
  be.upload(host(v, t.shape()), t);
}

void poison(Backend& be, Tensor& t) {
  fill(be, t, std::vector<float>(static_cast<size_t>(t.numel()), std::numeric_limits<float>::quiet_NaN()));
}

// A new activation tensor holding v.
Tensor input(Backend& be, const std::vector<float>& v, int64_t rows, int64_t cols) {
  Tensor t = be.activations(rows, cols);
  fill(be, t, v);
  return t;
}

// A new activation tensor full of NaN, for an op to overwrite.
Tensor output(Backend& be, int64_t rows, int64_t cols) {
  Tensor t = be.activations(rows, cols);
  poison(be, t);
  return t;
}

Out read(Backend& be, const Tensor& t, std::string name) {
  const Tensor h = be.to_host_f32(t);
  Out o{std::move(name), h.shape(), {}};
  o.v.assign(h.data_as<float>(), h.data_as<float>() + h.numel());
  return o;
}

KvCache begin_pass(Backend& be, const Pass& p) {
  KvCache cache = be.make_kv_cache(p.num_blocks, p.block_size);
  be.begin_forward(p.batch, cache);
  return cache;
}

// ---------------------------------------------------------------------------------------------
// The table.

// One row's drawn inputs, with the op and the reference bound to them.
struct OpCase {
  std::function<std::vector<Out>(Backend&)> run;
  std::function<std::vector<Out>(Device)> reference;  // some references depend on the device (sample)
};

struct OpRow {
  std::string op;     // the Backend method under test
  std::string name;   // unique, [A-Za-z0-9_]
  std::string shape;  // for messages
  ModelConfig config;
  Tolerance tol;
  std::function<OpCase(uint64_t seed)> draw;
};

template <typename In>
OpRow bind_row(std::string op, std::string tag, std::string shape, ModelConfig config, Tolerance tol,
               std::function<In(Rng&)> build, std::vector<Out> (*run)(Backend&, const In&),
               std::vector<Out> (*reference)(const In&, Device)) {
  OpRow r{op, op + "_" + tag, std::move(shape), std::move(config), tol, {}};
  r.draw = [build = std::move(build), run, reference](uint64_t seed) {
    Rng rng(seed);
    auto in = std::make_shared<const In>(build(rng));
    return OpCase{[in, run](Backend& be) { return run(be, *in); },
                  [in, reference](Device d) { return reference(*in, d); }};
  };
  return r;
}

// --- rms_norm, add_rms_norm ------------------------------------------------------------------

struct NormShape {
  int64_t rows, dim;
  double scale;  // of x and the residual
  double eps;
};

struct NormIn {
  NormShape s;
  Pass pass;
  std::vector<float> x, residual, w;
};

NormIn build_norm(const NormShape& s, Rng& rng) {
  return {s, make_pass(rng, {{0, s.rows}}, 1000), randn(rng, s.rows * s.dim, s.scale),
          randn(rng, s.rows * s.dim, s.scale), uniform(rng, s.dim, 0.5, 1.5)};
}

// out = w * x / sqrt(mean(x^2) + eps)
std::vector<double> norm_reference(const std::vector<double>& x, const std::vector<float>& w, int64_t rows, int64_t dim,
                                   double eps) {
  std::vector<double> out(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += x[i * dim + j] * x[i * dim + j];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t j = 0; j < dim; ++j) out[i * dim + j] = w[j] * x[i * dim + j] * inv;
  }
  return out;
}

std::vector<Out> run_rms_norm(Backend& be, const NormIn& in) {
  const Tensor w = be.adopt_tensor(host(in.w, {in.s.dim}));
  KvCache cache = begin_pass(be, in.pass);
  const Tensor x = input(be, in.x, in.s.rows, in.s.dim);
  Tensor out = output(be, in.s.rows, in.s.dim);
  be.rms_norm(x, w, in.s.eps, out);
  return {read(be, out, "out")};
}

std::vector<Out> ref_rms_norm(const NormIn& in, Device) {
  const std::vector<double> x(in.x.begin(), in.x.end());
  return {{"out", {in.s.rows, in.s.dim}, norm_reference(x, in.w, in.s.rows, in.s.dim, in.s.eps)}};
}

std::vector<Out> run_add_rms_norm(Backend& be, const NormIn& in) {
  const Tensor w = be.adopt_tensor(host(in.w, {in.s.dim}));
  KvCache cache = begin_pass(be, in.pass);
  Tensor residual = input(be, in.residual, in.s.rows, in.s.dim);
  const Tensor x = input(be, in.x, in.s.rows, in.s.dim);
  Tensor out = output(be, in.s.rows, in.s.dim);
  be.add_rms_norm(residual, x, w, in.s.eps, out);
  return {read(be, out, "out"), read(be, residual, "residual")};
}

std::vector<Out> ref_add_rms_norm(const NormIn& in, Device) {
  std::vector<double> sum(in.x.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = static_cast<double>(in.residual[i]) + in.x[i];
  return {{"out", {in.s.rows, in.s.dim}, norm_reference(sum, in.w, in.s.rows, in.s.dim, in.s.eps)},
          {"residual", {in.s.rows, in.s.dim}, sum}};
}

std::string norm_tag(const NormShape& s) {
  return fmt::format("{}x{}", s.rows, s.dim);
}
std::string norm_shape(const NormShape& s) {
  return fmt::format("x [{}, {}] of scale {}, eps {}", s.rows, s.dim, s.scale, s.eps);
}

OpRow rms_norm_row(const NormShape& s) {
  return bind_row<NormIn>(
      "rms_norm", norm_tag(s), norm_shape(s), make_config(), kRounded, [s](Rng& rng) { return build_norm(s, rng); },
      run_rms_norm, ref_rms_norm);
}

OpRow add_rms_norm_row(const NormShape& s) {
  return bind_row<NormIn>(
      "add_rms_norm", norm_tag(s), norm_shape(s), make_config(), kRounded, [s](Rng& rng) { return build_norm(s, rng); },
      run_add_rms_norm, ref_add_rms_norm);
}

// --- embed -----------------------------------------------------------------------------------

struct EmbedShape {
  int64_t vocab, dim;
  DType table_dtype;
  std::vector<SeqSpec> seqs;
};

struct EmbedIn {
  EmbedShape s;
  Pass pass;
  std::vector<float> table;
};

EmbedIn build_embed(const EmbedShape& s, Rng& rng) {
  EmbedIn in{s, make_pass(rng, s.seqs, s.vocab), randn(rng, s.vocab * s.dim, 1.0)};
  in.pass.batch.tokens.front() = static_cast<int32_t>(s.vocab - 1);  // both ends of the table
  in.pass.batch.tokens.back() = 0;
  return in;
}

std::vector<Out> run_embed(Backend& be, const EmbedIn& in) {
  const Tensor table = be.adopt_tensor(host(in.table, {in.s.vocab, in.s.dim}, in.s.table_dtype));
  KvCache cache = begin_pass(be, in.pass);
  Tensor out = output(be, in.pass.batch.num_tokens(), in.s.dim);
  be.embed(table, out);
  return {read(be, out, "out")};
}

std::vector<Out> ref_embed(const EmbedIn& in, Device) {
  Out o{"out", {in.pass.batch.num_tokens(), in.s.dim}, {}};
  for (int32_t t : in.pass.batch.tokens)
    o.v.insert(o.v.end(), in.table.begin() + t * in.s.dim, in.table.begin() + (t + 1) * in.s.dim);
  return {o};
}

OpRow embed_row(const EmbedShape& s) {
  return bind_row<EmbedIn>(
      "embed", fmt::format("v{}_d{}_{}_table", s.vocab, s.dim, dtype_name(s.table_dtype)),
      fmt::format("table [{}, {}] {}, {}", s.vocab, s.dim, dtype_name(s.table_dtype), describe(s.seqs)),
      make_config(2, 1, 16, 0, s.vocab, s.dim), kExact, [s](Rng& rng) { return build_embed(s, rng); }, run_embed,
      ref_embed);
}

// --- linear ----------------------------------------------------------------------------------

struct LinearShape {
  const char*
      weight;  // FPx "e3m2", "e2m2", "e2m1" (quantize_pack for the backend's target), or dense "f16", "bf16", "f32"
  int64_t n, rows, cols;
  bool bias;
  std::vector<int64_t> parts = {};  // row counts of parts stacked as the loader stacks q, k, v; empty: one
};

struct LinearIn {
  LinearShape s;
  Pass pass;
  std::vector<float> w, x, bias;
  std::vector<double> w_ref;  // the weight the op must apply: dequantized FPx, or the dense values
  bool quantized() const { return s.weight[0] == 'e'; }
};

// The value of an FPx code (fpx/format.h): sign, E exponent bits of bias 2^(E-1) - 1 (no Inf
// or NaN codes), M mantissa bits, subnormals.
double fpx_value(uint8_t code, fpx::Format f) {
  const int e_bits = f.exp_bits, m_bits = f.man_bits, bias = (1 << (e_bits - 1)) - 1;
  const int man = code & ((1 << m_bits) - 1), exp = (code >> m_bits) & ((1 << e_bits) - 1);
  const double mag =
      exp == 0 ? std::ldexp(man, 1 - bias - m_bits) : std::ldexp((1 << m_bits) + man, exp - bias - m_bits);
  return (code >> (e_bits + m_bits)) & 1 ? -mag : mag;
}

std::vector<int64_t> parts_of(const LinearShape& s) {
  return s.parts.empty() ? std::vector<int64_t>{s.rows} : s.parts;
}

LinearIn build_linear(const LinearShape& s, Rng& rng) {
  LinearIn in{s, make_pass(rng, {{0, s.n}}, 1000), {}, randn(rng, s.n * s.cols, 1.0), {}, {}};
  in.bias = s.bias ? randn(rng, s.rows, 0.5) : std::vector<float>{};
  int64_t r0 = 0;
  for (const int64_t part : parts_of(s)) {  // parts of different magnitudes, as q, k, v are
    const auto p = randn(rng, part * s.cols, 0.05 * (1.0 + static_cast<double>(r0) / s.rows));
    in.w.insert(in.w.end(), p.begin(), p.end());
    r0 += part;
  }
  if (!in.quantized()) {
    in.w_ref.assign(in.w.begin(), in.w.end());
    return in;
  }
  // The codes and row scales of the round-to-nearest quantization (fpx/quantize.h), part by part.
  const fpx::Format format = fpx::parse_format(s.weight);
  r0 = 0;
  for (const int64_t part : parts_of(s)) {
    const fpx::QuantizedMatrix q = fpx::quantize({in.w.data() + r0 * s.cols, DType::kF32, part, s.cols, "w"}, format);
    for (int64_t r = 0; r < part; ++r)
      for (int64_t c = 0; c < s.cols; ++c) in.w_ref.push_back(q.scales[r] * fpx_value(q.codes[r * s.cols + c], format));
    r0 += part;
  }
  return in;
}

std::vector<Out> run_linear(Backend& be, const LinearIn& in) {
  const LinearShape& s = in.s;
  HostLinear h;
  h.id = {model::WeightKind::kQkv, 0};
  h.rows = s.rows;
  h.cols = s.cols;
  if (in.quantized()) {
    const fpx::Format format = fpx::parse_format(s.weight);
    std::vector<fpx::MatrixView> views;
    int64_t r0 = 0;
    for (const int64_t part : parts_of(s)) {
      views.push_back({in.w.data() + r0 * s.cols, DType::kF32, part, s.cols, "w"});
      r0 += part;
    }
    h.packed = std::make_unique<fpx::PackedWeight>(
        fpx::quantize_pack(std::span<const fpx::MatrixView>(views), format, be.pack_target(format)));
  } else {
    h.dense = host(in.w, {s.rows, s.cols}, parse_float_dtype(s.weight));
  }
  h.bias = in.bias;
  const std::unique_ptr<LinearWeight> w = be.adopt_linear(std::move(h));  // before begin_forward sizes workspaces
  KvCache cache = begin_pass(be, in.pass);
  const Tensor x = input(be, in.x, s.n, s.cols);
  Tensor y = output(be, s.n, s.rows);
  be.linear(x, *w, y);
  return {read(be, y, "y")};
}

// y[t, r] = sum_c x[t, c] w[r, c] + bias[r]
std::vector<Out> ref_linear(const LinearIn& in, Device) {
  const LinearShape& s = in.s;
  Out y{"y", {s.n, s.rows}, std::vector<double>(static_cast<size_t>(s.n * s.rows))};
  for (int64_t t = 0; t < s.n; ++t)
    for (int64_t r = 0; r < s.rows; ++r) {
      double acc = s.bias ? in.bias[r] : 0.0;
      for (int64_t c = 0; c < s.cols; ++c) acc += static_cast<double>(in.x[t * s.cols + c]) * in.w_ref[r * s.cols + c];
      y.v[t * s.rows + r] = acc;
    }
  return {y};
}

OpRow linear_row(const LinearShape& s) {
  std::string tag = fmt::format("{}_n{}_{}x{}{}", s.weight, s.n, s.rows, s.cols, s.bias ? "_bias" : "");
  std::string shape = fmt::format("{} weight [{}, {}]{}, x [{}, {}]", s.weight, s.rows, s.cols,
                                  s.bias ? " with bias" : "", s.n, s.cols);
  if (!s.parts.empty()) {
    tag += "_stacked";
    shape += ", stacked from parts of rows " + join(s.parts);
  }
  return bind_row<LinearIn>(
      "linear", tag, shape, make_config(), kAccumulated, [s](Rng& rng) { return build_linear(s, rng); }, run_linear,
      ref_linear);
}

// --- rope_write_kv ---------------------------------------------------------------------------

struct RopeShape {
  int64_t heads, kv_heads, head_dim;
  std::vector<SeqSpec> seqs;
  int64_t block_size;
  double theta;
  std::string rope_type;  // default, linear (factor 4), llama3 (factor 8)
};

ModelConfig rope_config(const RopeShape& s) {
  ModelConfig c = make_config(s.heads, s.kv_heads, s.head_dim);
  c.rope.theta = s.theta;
  c.rope.type = s.rope_type;
  if (s.rope_type == "linear") c.rope.factor = 4.0;
  if (s.rope_type == "llama3") c.rope.factor = 8.0;
  return c;
}

struct RopeIn {
  RopeShape s;
  Pass pass;
  std::vector<float> qkv;
  std::vector<float> inv_freq;  // the config's (rope scaling is the config's business, not the op's)
};

RopeIn build_rope(const RopeShape& s, Rng& rng) {
  const int64_t width = (s.heads + 2 * s.kv_heads) * s.head_dim;
  RopeIn in{s, make_pass(rng, s.seqs, 1000, s.block_size), {}, rope_config(s).rope_inv_freq()};
  in.qkv = randn(rng, in.pass.batch.num_tokens() * width, 1.0);
  return in;
}

std::vector<Out> run_rope(Backend& be, const RopeIn& in) {
  const RopeShape& s = in.s;
  const int64_t n = in.pass.batch.num_tokens(), width = (s.heads + 2 * s.kv_heads) * s.head_dim;
  KvCache cache = be.make_kv_cache(in.pass.num_blocks, in.pass.block_size);
  for (size_t l = 0; l < cache.k.size(); ++l) poison(be, cache.k[l]), poison(be, cache.v[l]);
  be.begin_forward(in.pass.batch, cache);
  Tensor qkv = input(be, in.qkv, n, width);
  be.rope_write_kv(qkv, cache, 1);
  return {read(be, qkv, "qkv"), read(be, cache.k[1], "k_cache"), read(be, cache.v[1], "v_cache"),
          read(be, cache.k[0], "k_cache_layer0")};
}

// Each pair (j, j + d/2) of every q and k head turned by the angle position * inv_freq[j],
// that product taken in float as Hugging Face does (backend/cpu/ops.h); k and v written to
// the token's slot, every other slot untouched (NaN).
std::vector<Out> ref_rope(const RopeIn& in, Device) {
  const RopeShape& s = in.s;
  const int64_t d = s.head_dim, half = d / 2, n = in.pass.batch.num_tokens();
  const int64_t width = (s.heads + 2 * s.kv_heads) * d, kv_row = s.kv_heads * d;
  const std::vector<int64_t> cache_shape = {in.pass.num_blocks, in.pass.block_size, s.kv_heads, d};
  const auto cache_size = static_cast<size_t>(in.pass.num_blocks * in.pass.block_size * kv_row);
  Out qkv{"qkv", {n, width}, std::vector<double>(in.qkv.begin(), in.qkv.end())};
  Out k{"k_cache", cache_shape, std::vector<double>(cache_size, kNaN)};
  Out v{"v_cache", cache_shape, std::vector<double>(cache_size, kNaN)};
  Out k0{"k_cache_layer0", cache_shape, std::vector<double>(cache_size, kNaN)};
  for (const BatchSeq& seq : in.pass.batch.seqs)
    for (int64_t t = 0; t < seq.token_count; ++t) {
      const int64_t i = seq.token_begin + t, pos = seq.start_pos + t;
      double* row = qkv.v.data() + i * width;
      for (int64_t h = 0; h < s.heads + s.kv_heads; ++h)  // q heads, then k heads
        for (int64_t j = 0; j < half; ++j) {
          const double angle = static_cast<float>(pos) * in.inv_freq[j];
          const double a = row[h * d + j], b = row[h * d + j + half];
          row[h * d + j] = a * std::cos(angle) - b * std::sin(angle);
          row[h * d + j + half] = b * std::cos(angle) + a * std::sin(angle);
        }
      const int64_t slot = in.pass.slot(seq, pos);
      std::copy_n(row + s.heads * d, kv_row, k.v.begin() + slot * kv_row);
      std::copy_n(row + (s.heads + s.kv_heads) * d, kv_row, v.v.begin() + slot * kv_row);
    }
  return {qkv, k, v, k0};
}

OpRow rope_row(const RopeShape& s) {
  return bind_row<RopeIn>(
      "rope_write_kv", fmt::format("d{}_h{}kv{}_bs{}_{}", s.head_dim, s.heads, s.kv_heads, s.block_size, s.rope_type),
      fmt::format("heads {}/{} of {}, KV blocks of {}, rope {} theta {}, {}", s.heads, s.kv_heads, s.head_dim,
                  s.block_size, s.rope_type, s.theta, describe(s.seqs)),
      rope_config(s), kRounded, [s](Rng& rng) { return build_rope(s, rng); }, run_rope, ref_rope);
}

// --- attention -------------------------------------------------------------------------------

struct AttnShape {
  std::string tag;
  int64_t heads, kv_heads, head_dim, window;
  std::vector<SeqSpec> seqs;
  int64_t block_size = 16;
};

struct AttnIn {
  AttnShape s;
  Pass pass;
  std::vector<float> qkv, k, v;  // k, v: layer 1 of the cache, every slot (the new tokens' too)
};

AttnIn build_attention(const AttnShape& s, Rng& rng) {
  AttnIn in{s, make_pass(rng, s.seqs, 1000, s.block_size), {}, {}, {}};
  const int64_t width = (s.heads + 2 * s.kv_heads) * s.head_dim;
  const auto cache = static_cast<size_t>(in.pass.num_blocks * s.block_size * s.kv_heads * s.head_dim);
  in.qkv = randn(rng, in.pass.batch.num_tokens() * width, 1.5);
  in.k = randn(rng, cache, 1.0);
  in.v = randn(rng, cache, 1.0);
  return in;
}

// Attention alone: the cache holds keys and values for every position, those of the new tokens
// included, as rope_write_kv would have left them; layer 0 holds NaN, which must not be read.
std::vector<Out> run_attention(Backend& be, const AttnIn& in) {
  const AttnShape& s = in.s;
  const int64_t n = in.pass.batch.num_tokens(), width = (s.heads + 2 * s.kv_heads) * s.head_dim;
  KvCache cache = be.make_kv_cache(in.pass.num_blocks, in.pass.block_size);
  poison(be, cache.k[0]);
  poison(be, cache.v[0]);
  fill(be, cache.k[1], in.k);
  fill(be, cache.v[1], in.v);
  be.begin_forward(in.pass.batch, cache);
  const Tensor qkv = input(be, in.qkv, n, width);
  Tensor out = output(be, n, s.heads * s.head_dim);
  be.attention(qkv, cache, 1, out);
  return {read(be, out, "out")};
}

// Token at position p, head h: softmax over positions j in [max(0, p - window + 1), p] of
// q . k_j / sqrt(d), applied to v_j, with k and v of kv head h / (heads / kv_heads).
std::vector<Out> ref_attention(const AttnIn& in, Device) {
  const AttnShape& s = in.s;
  const int64_t d = s.head_dim, width = (s.heads + 2 * s.kv_heads) * d, group = s.heads / s.kv_heads;
  const int64_t n = in.pass.batch.num_tokens();
  Out out{"out", {n, s.heads * d}, std::vector<double>(static_cast<size_t>(n * s.heads * d))};
  std::vector<double> score;
  for (const BatchSeq& seq : in.pass.batch.seqs)
    for (int64_t t = 0; t < seq.token_count; ++t) {
      const int64_t i = seq.token_begin + t, p = seq.start_pos + t;
      const int64_t first = s.window > 0 ? std::max<int64_t>(0, p - s.window + 1) : 0;
      for (int64_t h = 0; h < s.heads; ++h) {
        const float* q = in.qkv.data() + i * width + h * d;
        const int64_t kvh = h / group;
        score.assign(static_cast<size_t>(p - first + 1), 0.0);
        double mx = -INFINITY;
        for (int64_t j = first; j <= p; ++j) {
          const float* kj = in.k.data() + (in.pass.slot(seq, j) * s.kv_heads + kvh) * d;
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(q[c]) * kj[c];
          score[j - first] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, score[j - first]);
        }
        double z = 0;
        for (double& x : score) z += (x = std::exp(x - mx));
        double* o = out.v.data() + i * s.heads * d + h * d;
        for (int64_t j = first; j <= p; ++j) {
          const float* vj = in.v.data() + (in.pass.slot(seq, j) * s.kv_heads + kvh) * d;
          for (int64_t c = 0; c < d; ++c) o[c] += score[j - first] / z * vj[c];
        }
      }
    }
  return {out};
}

OpRow attention_row(const AttnShape& s) {
  return bind_row<AttnIn>(
      "attention", fmt::format("d{}_h{}kv{}_{}", s.head_dim, s.heads, s.kv_heads, s.tag),
      fmt::format("heads {}/{} of {}, window {}, KV blocks of {}, {}", s.heads, s.kv_heads, s.head_dim, s.window,
                  s.block_size, describe(s.seqs)),
      make_config(s.heads, s.kv_heads, s.head_dim, s.window), kAccumulated,
      [s](Rng& rng) { return build_attention(s, rng); }, run_attention, ref_attention);
}

// --- silu_mul, add ---------------------------------------------------------------------------

struct EltShape {
  int64_t rows, cols;  // silu_mul: gate_up [rows, 2 cols] -> out [rows, cols]; add: [rows, cols]
  double scale;
};

struct EltIn {
  EltShape s;
  Pass pass;
  std::vector<float> a, b;
};

EltIn build_silu(const EltShape& s, Rng& rng) {
  return {s, make_pass(rng, {{0, s.rows}}, 1000), randn(rng, s.rows * 2 * s.cols, s.scale), {}};
}

std::vector<Out> run_silu_mul(Backend& be, const EltIn& in) {
  KvCache cache = begin_pass(be, in.pass);
  const Tensor gate_up = input(be, in.a, in.s.rows, 2 * in.s.cols);
  Tensor out = output(be, in.s.rows, in.s.cols);
  be.silu_mul(gate_up, out);
  return {read(be, out, "out")};
}

// out = silu(gate) * up = gate / (1 + e^-gate) * up
std::vector<Out> ref_silu_mul(const EltIn& in, Device) {
  const int64_t cols = in.s.cols;
  Out out{"out", {in.s.rows, cols}, {}};
  for (int64_t i = 0; i < in.s.rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double g = in.a[i * 2 * cols + j], u = in.a[i * 2 * cols + cols + j];
      out.v.push_back(g / (1.0 + std::exp(-g)) * u);
    }
  return {out};
}

OpRow silu_mul_row(const EltShape& s) {
  return bind_row<EltIn>(
      "silu_mul", fmt::format("{}x{}", s.rows, s.cols),
      fmt::format("gate_up [{}, {}] of scale {}", s.rows, 2 * s.cols, s.scale), make_config(), kRounded,
      [s](Rng& rng) { return build_silu(s, rng); }, run_silu_mul, ref_silu_mul);
}

EltIn build_add(const EltShape& s, Rng& rng) {
  return {s, make_pass(rng, {{0, s.rows}}, 1000), randn(rng, s.rows * s.cols, s.scale),
          randn(rng, s.rows * s.cols, s.scale)};
}

std::vector<Out> run_add(Backend& be, const EltIn& in) {
  KvCache cache = begin_pass(be, in.pass);
  Tensor acc = input(be, in.a, in.s.rows, in.s.cols);
  const Tensor x = input(be, in.b, in.s.rows, in.s.cols);
  be.add(acc, x);
  return {read(be, acc, "acc")};
}

std::vector<Out> ref_add(const EltIn& in, Device) {
  Out acc{"acc", {in.s.rows, in.s.cols}, {}};
  for (size_t i = 0; i < in.a.size(); ++i) acc.v.push_back(static_cast<double>(in.a[i]) + in.b[i]);
  return {acc};
}

OpRow add_row(const EltShape& s) {
  return bind_row<EltIn>(
      "add", fmt::format("{}x{}", s.rows, s.cols), fmt::format("acc, x [{}, {}] of scale {}", s.rows, s.cols, s.scale),
      make_config(), kRounded, [s](Rng& rng) { return build_add(s, rng); }, run_add, ref_add);
}

// --- qk_norm ---------------------------------------------------------------------------------

struct QkNormShape {
  int64_t n, heads, kv_heads, head_dim;
  double scale, eps;
};

struct QkNormIn {
  QkNormShape s;
  Pass pass;
  std::vector<float> qkv, q_w, k_w;
};

QkNormIn build_qk_norm(const QkNormShape& s, Rng& rng) {
  return {s, make_pass(rng, {{0, s.n}}, 1000), randn(rng, s.n * (s.heads + 2 * s.kv_heads) * s.head_dim, s.scale),
          uniform(rng, s.head_dim, 0.5, 1.5), uniform(rng, s.head_dim, 0.5, 1.5)};
}

std::vector<Out> run_qk_norm(Backend& be, const QkNormIn& in) {
  const QkNormShape& s = in.s;
  const Tensor q_w = be.adopt_tensor(host(in.q_w, {s.head_dim})), k_w = be.adopt_tensor(host(in.k_w, {s.head_dim}));
  KvCache cache = begin_pass(be, in.pass);
  Tensor qkv = input(be, in.qkv, s.n, (s.heads + 2 * s.kv_heads) * s.head_dim);
  be.qk_norm(qkv, q_w, k_w, s.eps);
  return {read(be, qkv, "qkv")};
}

// Each q head w_q * v / sqrt(mean(v^2) + eps), each k head the same with w_k; v heads as they were.
std::vector<Out> ref_qk_norm(const QkNormIn& in, Device) {
  const QkNormShape& s = in.s;
  const int64_t d = s.head_dim, width = (s.heads + 2 * s.kv_heads) * d;
  Out out{"qkv", {s.n, width}, std::vector<double>(in.qkv.begin(), in.qkv.end())};
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t h = 0; h < s.heads + s.kv_heads; ++h) {
      double* v = out.v.data() + i * width + h * d;
      const std::vector<double> head(v, v + d);
      const auto normed = norm_reference(head, h < s.heads ? in.q_w : in.k_w, 1, d, s.eps);
      std::copy(normed.begin(), normed.end(), v);
    }
  return {out};
}

OpRow qk_norm_row(const QkNormShape& s) {
  return bind_row<QkNormIn>(
      "qk_norm", fmt::format("n{}_h{}kv{}_d{}", s.n, s.heads, s.kv_heads, s.head_dim),
      fmt::format("qkv of {} tokens, heads {}/{} of {}, scale {}, eps {}", s.n, s.heads, s.kv_heads, s.head_dim,
                  s.scale, s.eps),
      make_config(s.heads, s.kv_heads, s.head_dim), kRounded, [s](Rng& rng) { return build_qk_norm(s, rng); },
      run_qk_norm, ref_qk_norm);
}

// --- moe -------------------------------------------------------------------------------------

struct MoeShape {
  std::string tag;
  const char* weight;  // the experts': FPx "e3m2", "e2m2", "e2m1", or dense "f16", "bf16", "f32"
  int64_t n, hidden, inter, experts, top_k;
  bool renormalize;
  int64_t shared = 0;           // the shared expert's intermediate size (0: none)
  std::string routing = "any";  // "any"; "one": every token's first choice is expert 1; "starve": expert 0 never chosen
};

ModelConfig moe_config(const MoeShape& s) {
  ModelConfig c = make_config(2, 1, 16, 0, 1000, s.hidden);
  c.model_type = "qwen2_moe";
  c.moe.num_experts = s.experts;
  c.moe.top_k = s.top_k;
  c.moe.intermediate_size = s.inter;
  c.moe.shared_intermediate_size = s.shared;
  c.moe.renormalize = s.renormalize;
  return c;
}

struct MoeIn {
  MoeShape s;
  Pass pass;
  std::vector<float> x, router;                     // router: [experts (+1), hidden]
  std::vector<std::vector<float>> gu, dn;           // per expert [2 inter, hidden], [hidden, inter]
  std::vector<std::vector<double>> gu_ref, dn_ref;  // the values the op must apply
  std::vector<float> sgu, sdn;                      // the shared expert's
  bool quantized() const { return s.weight[0] == 'e'; }
};

// The values a weight stands for: its quantized values (as build_linear), or itself.
std::vector<double> weight_values(const std::vector<float>& w, int64_t rows, int64_t cols, const char* weight) {
  if (weight[0] != 'e') return {w.begin(), w.end()};
  const fpx::Format format = fpx::parse_format(weight);
  const fpx::QuantizedMatrix q = fpx::quantize({w.data(), DType::kF32, rows, cols, "w"}, format);
  std::vector<double> v;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) v.push_back(q.scales[r] * fpx_value(q.codes[r * cols + c], format));
  return v;
}

// Token t's router logits, in double.
std::vector<double> router_logits(const MoeIn& in, int64_t t) {
  const MoeShape& s = in.s;
  std::vector<double> l(static_cast<size_t>(s.experts));
  for (int64_t e = 0; e < s.experts; ++e) {
    double acc = 0;
    for (int64_t j = 0; j < s.hidden; ++j)
      acc += static_cast<double>(in.x[t * s.hidden + j]) * in.router[e * s.hidden + j];
    l[e] = acc;
  }
  return l;
}

// Router logits in double, softmax, top-k (ties: the lower expert); returns ids and weights.
void moe_reference_route(const MoeIn& in, int64_t t, std::vector<int64_t>& ids, std::vector<double>& w) {
  const MoeShape& s = in.s;
  std::vector<double> p = router_logits(in, t);
  const double mx = *std::max_element(p.begin(), p.end());
  double sum = 0;
  for (double& v : p) sum += (v = std::exp(v - mx));
  for (double& v : p) v /= sum;
  std::vector<int64_t> order(static_cast<size_t>(s.experts));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  ids.assign(order.begin(), order.begin() + s.top_k);
  w.clear();
  double chosen = 0;
  for (int64_t e : ids) chosen += p[e];
  for (int64_t e : ids) w.push_back(s.renormalize ? p[e] / chosen : p[e]);
}

// The smallest gap between a token's k-th and (k+1)-th router logit (in double).
double routing_margin(const MoeIn& in, int64_t t) {
  const MoeShape& s = in.s;
  if (s.top_k == s.experts) return INFINITY;
  std::vector<double> l = router_logits(in, t);
  std::sort(l.begin(), l.end(), std::greater<>());
  return l[s.top_k - 1] - l[s.top_k];
}

MoeIn build_moe(const MoeShape& s, Rng& rng) {
  MoeIn in{s, make_pass(rng, {{0, s.n}}, 1000), {}, {}, {}, {}, {}, {}, {}, {}};
  const bool shared = s.shared > 0;
  in.router = randn(rng, (s.experts + (shared ? 1 : 0)) * s.hidden, 0.1);
  if (s.routing == "one" || s.routing == "starve") {
    // x > 0, and one router row of large positive (one) or negative (starve) weights.
    in.x = uniform(rng, s.n * s.hidden, 0.25, 1.0);
    const int64_t e = s.routing == "one" ? 1 : 0;
    const float v = s.routing == "one" ? 0.5f : -0.5f;
    std::fill_n(in.router.begin() + e * s.hidden, s.hidden, v);
  } else {
    in.x = randn(rng, s.n * s.hidden, 1.0);
  }
  // Every token's k-th and (k+1)-th logits at least 1e-2 apart: the backends compute them in
  // f32 from the same exact inputs, so they pick the reference's experts.
  for (int64_t t = 0; t < s.n; ++t)
    for (int tries = 0; routing_margin(in, t) < 1e-2; ++tries) {
      if (tries == 1000) throw std::runtime_error("moe row " + s.tag + ": no token with a clear routing margin");
      const auto row = s.routing == "any" ? randn(rng, s.hidden, 1.0) : uniform(rng, s.hidden, 0.25, 1.0);
      std::copy(row.begin(), row.end(), in.x.begin() + t * s.hidden);
    }
  for (int64_t e = 0; e < s.experts; ++e) {
    in.gu.push_back(randn(rng, 2 * s.inter * s.hidden, 0.05));
    in.dn.push_back(randn(rng, s.hidden * s.inter, 0.05));
    in.gu_ref.push_back(weight_values(in.gu.back(), 2 * s.inter, s.hidden, s.weight));
    in.dn_ref.push_back(weight_values(in.dn.back(), s.hidden, s.inter, s.weight));
  }
  if (shared) {
    in.sgu = randn(rng, 2 * s.shared * s.hidden, 0.05);
    in.sdn = randn(rng, s.hidden * s.shared, 0.05);
  }
  return in;
}

HostLinear moe_host_linear(Backend& be, const std::vector<float>& w, int64_t rows, int64_t cols, const char* weight,
                           model::WeightId id) {
  HostLinear h;
  h.id = id;
  h.rows = rows;
  h.cols = cols;
  if (weight[0] == 'e') {
    const fpx::Format format = fpx::parse_format(weight);
    h.packed = std::make_unique<fpx::PackedWeight>(
        fpx::quantize_pack(fpx::MatrixView{w.data(), DType::kF32, rows, cols, "w"}, format, be.pack_target(format)));
  } else {
    h.dense = host(w, {rows, cols}, parse_float_dtype(weight));
  }
  return h;
}

std::vector<Out> run_moe(Backend& be, const MoeIn& in) {
  const MoeShape& s = in.s;
  MoeWeights w;
  w.router = be.adopt_tensor(host(in.router, {s.experts + (s.shared ? 1 : 0), s.hidden}));
  std::vector<HostLinear> gu, dn;
  for (int64_t e = 0; e < s.experts; ++e) {
    gu.push_back(
        moe_host_linear(be, in.gu[e], 2 * s.inter, s.hidden, s.weight, {model::WeightKind::kExpertGateUp, 0, e}));
    dn.push_back(moe_host_linear(be, in.dn[e], s.hidden, s.inter, s.weight, {model::WeightKind::kExpertDown, 0, e}));
  }
  w.gate_up = be.adopt_experts(std::move(gu));
  w.down = be.adopt_experts(std::move(dn));
  if (s.shared) {  // the shared expert in f32 (dense): its own linears are the linear rows' business
    w.shared_gate_up = be.adopt_linear(
        moe_host_linear(be, in.sgu, 2 * s.shared, s.hidden, "f32", {model::WeightKind::kSharedGateUp, 0}));
    w.shared_down =
        be.adopt_linear(moe_host_linear(be, in.sdn, s.hidden, s.shared, "f32", {model::WeightKind::kSharedDown, 0}));
  }
  KvCache cache = begin_pass(be, in.pass);
  const Tensor x = input(be, in.x, s.n, s.hidden);
  Tensor out = output(be, s.n, s.hidden);
  be.moe(x, w, out);
  return {read(be, out, "out")};
}

// y = down(silu(gate x) * up x) of weights given as [2 inter, hidden] (gate rows, then up) and
// [hidden, inter], in double.
template <typename W>
std::vector<double> swiglu_reference(const float* x, const W& gu, const W& dn, int64_t hidden, int64_t inter) {
  std::vector<double> act(static_cast<size_t>(inter)), y(static_cast<size_t>(hidden));
  for (int64_t i = 0; i < inter; ++i) {
    double g = 0, u = 0;
    for (int64_t j = 0; j < hidden; ++j) {
      g += static_cast<double>(x[j]) * gu[i * hidden + j];
      u += static_cast<double>(x[j]) * gu[(inter + i) * hidden + j];
    }
    act[i] = g / (1.0 + std::exp(-g)) * u;
  }
  for (int64_t r = 0; r < hidden; ++r) {
    double acc = 0;
    for (int64_t i = 0; i < inter; ++i) acc += act[i] * dn[r * inter + i];
    y[r] = acc;
  }
  return y;
}

// out[t] = sum over t's top-k experts of weight x expert(x[t]) (+ sigmoid(gate . x[t]) x
// shared(x[t])), everything in double.
std::vector<Out> ref_moe(const MoeIn& in, Device) {
  const MoeShape& s = in.s;
  Out out{"out", {s.n, s.hidden}, std::vector<double>(static_cast<size_t>(s.n * s.hidden), 0.0)};
  std::vector<int64_t> ids;
  std::vector<double> w;
  for (int64_t t = 0; t < s.n; ++t) {
    const float* xt = in.x.data() + t * s.hidden;
    moe_reference_route(in, t, ids, w);
    for (size_t k = 0; k < ids.size(); ++k) {
      const auto y = swiglu_reference(xt, in.gu_ref[ids[k]], in.dn_ref[ids[k]], s.hidden, s.inter);
      for (int64_t j = 0; j < s.hidden; ++j) out.v[t * s.hidden + j] += w[k] * y[j];
    }
    if (s.shared) {
      double g = 0;
      for (int64_t j = 0; j < s.hidden; ++j) g += static_cast<double>(xt[j]) * in.router[s.experts * s.hidden + j];
      const auto y = swiglu_reference(xt, in.sgu, in.sdn, s.hidden, s.shared);
      for (int64_t j = 0; j < s.hidden; ++j) out.v[t * s.hidden + j] += y[j] / (1.0 + std::exp(-g));
    }
  }
  return {out};
}

OpRow moe_row(const MoeShape& s) {
  return bind_row<MoeIn>(
      "moe", s.tag,
      fmt::format("{} experts of {} [{}, {}], top-{}{}, {} tokens{}, routing {}", s.experts, s.weight, s.inter,
                  s.hidden, s.top_k, s.renormalize ? " renormalized" : "", s.n,
                  s.shared ? fmt::format(", shared expert of {}", s.shared) : "", s.routing),
      moe_config(s), kMoe, [s](Rng& rng) { return build_moe(s, rng); }, run_moe, ref_moe);
}

// --- gather_logit_rows -----------------------------------------------------------------------

struct GatherShape {
  std::string tag;
  std::vector<SeqSpec> seqs;
  int64_t cols;
  std::vector<int64_t> rows;  // empty: each sequence's last token (Batch::add with want_logits)
  bool all = false;           // every token (all_logits)
};

struct GatherIn {
  GatherShape s;
  Pass pass;
  std::vector<float> x;
};

GatherIn build_gather(const GatherShape& s, Rng& rng) {
  GatherIn in{s, make_pass(rng, s.seqs, 1000), {}};
  in.x = randn(rng, in.pass.batch.num_tokens() * s.cols, 1.0);
  if (!s.rows.empty()) in.pass.batch.logit_rows = s.rows;
  if (s.all) {
    in.pass.batch.logit_rows.resize(static_cast<size_t>(in.pass.batch.num_tokens()));
    std::iota(in.pass.batch.logit_rows.begin(), in.pass.batch.logit_rows.end(), int64_t{0});
  }
  return in;
}

std::vector<Out> run_gather(Backend& be, const GatherIn& in) {
  KvCache cache = begin_pass(be, in.pass);
  const Tensor x = input(be, in.x, in.pass.batch.num_tokens(), in.s.cols);
  Tensor out = output(be, static_cast<int64_t>(in.pass.batch.logit_rows.size()), in.s.cols);
  be.gather_logit_rows(x, out);
  return {read(be, out, "out")};
}

std::vector<Out> ref_gather(const GatherIn& in, Device) {
  Out out{"out", {static_cast<int64_t>(in.pass.batch.logit_rows.size()), in.s.cols}, {}};
  for (int64_t r : in.pass.batch.logit_rows)
    out.v.insert(out.v.end(), in.x.begin() + r * in.s.cols, in.x.begin() + (r + 1) * in.s.cols);
  return {out};
}

OpRow gather_row(const GatherShape& s) {
  return bind_row<GatherIn>(
      "gather_logit_rows", fmt::format("{}_c{}", s.tag, s.cols),
      fmt::format("x of {} columns, {}, rows {}", s.cols, describe(s.seqs),
                  s.all            ? "all"
                  : s.rows.empty() ? "last of each"
                                   : join(s.rows)),
      make_config(), kExact, [s](Rng& rng) { return build_gather(s, rng); }, run_gather, ref_gather);
}

// --- sample ----------------------------------------------------------------------------------

struct SampleShape {
  std::string kind;  // greedy, penalties (greedy with penalties), seeded (temperature, top-k, top-p, min-p)
  int64_t vocab;
  int rows;
};

struct SampleIn {
  SampleShape s;
  Pass pass;
  std::vector<float> logits;  // [rows, vocab]
  std::vector<SampleRow> rows;
};

// Logits of a model's spread (N(0, 3), clamped to +-10), rounded to exact16.
std::vector<float> spread_logits(Rng& rng, int64_t n) {
  std::vector<float> v = randn(rng, static_cast<size_t>(n), 3.0);
  for (float& x : v) x = std::clamp(x, -10.0f, 10.0f);
  return v;
}

SampleIn build_sample(const SampleShape& s, Rng& rng) {
  SampleIn in{s, make_pass(rng, {{0, s.rows}}, 1000), {}, std::vector<SampleRow>(static_cast<size_t>(s.rows))};
  const int64_t vocab = s.vocab;
  std::uniform_int_distribution<int64_t> token(0, vocab - 1);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  for (int r = 0; r < s.rows; ++r) {
    std::vector<float> l = spread_logits(rng, vocab);
    SampleRow& row = in.rows[r];
    // Three tokens a < b < c tied at the top (11 is above every other logit).
    std::set<int64_t> picks;
    while (picks.size() < 3) picks.insert(token(rng));
    const int64_t a = *picks.begin(), b = *std::next(picks.begin()), c = *picks.rbegin();
    if (s.kind == "greedy") {
      const int kind = r % 6;
      if (kind == 0)
        for (int64_t i = r % 97; i < vocab; i += 97) l[i] = 11.0f;  // many ties
      if (kind == 1) std::fill(l.begin(), l.end(), 0.5f);           // all equal: token 0
      if (kind == 2) l[a] = 11.0f;                                  // one maximum
      if (kind == 3) l[vocab - 1] = 11.0f;                          // at the end
      if (kind == 4) l[c] = l[a] = 11.0f;                           // two, far apart
      if (kind == 5)
        for (float& x : l) x = exact16(x - 20.0f);  // all negative
      const int top[] = {5, -1, 20, 0, 3, 1};
      row.top_logprobs = top[kind];
    } else if (s.kind == "penalties") {
      // Repetition penalty 2 and subtractions of a few 1/4s: exact in float, so the winner is
      // clear. Plus penalties on random other tokens.
      const bool negative = r % 4 == 3;
      if (negative)
        for (float& x : l) x = exact16(std::min(x, 0.0f) - 5.0f);
      const float top = negative ? -3.0f : 11.0f;
      l[a] = l[b] = l[c] = top;
      row.repetition_penalty = 2.0;
      std::set<int64_t> seen = {a, b, c};
      std::vector<PenaltyEntry> e;
      if (r % 4 == 0) e = {{int32_t(a), 0.0f, 1}};                                                  // b wins
      if (r % 4 == 1) e = {{int32_t(a), 0.0f, 1}, {int32_t(b), 0.0f, 1}};                           // c wins
      if (r % 4 == 2) e = {{int32_t(a), 0.25f, 0}, {int32_t(b), 0.5f, 0}, {int32_t(c), 0.75f, 0}};  // a wins
      if (r % 4 == 3) e = {{int32_t(a), 0.0f, 1}, {int32_t(c), 0.25f, 0}};  // b wins (-3 x 2 for a)
      for (int k = 0; k < 50; ++k) {
        const int64_t t = token(rng);
        if (seen.insert(t).second) e.push_back({int32_t(t), exact16(static_cast<float>(uni(rng))), k % 2});
      }
      std::sort(e.begin(), e.end(), [](const auto& x, const auto& y) { return x.token < y.token; });
      row.penalties = e;
      row.top_logprobs = r % 2 ? 4 : -1;
    } else {                                                     // seeded
      for (int64_t i = r % 89; i < vocab; i += 89) l[i] = 4.0f;  // ties inside the distribution
      const int kind = r % 8;  // plain, top-k, top-p, min-p, all, penalties, top-k 1, top-k > vocab
      row.inv_temperature = static_cast<float>(1.0 / (0.3 + 1.5 * uni(rng)));
      if (kind == 1 || kind == 4) row.top_k = 1 + static_cast<int32_t>(rng() % 100);
      if (kind == 2 || kind == 4) row.top_p = 0.05 + 0.9 * uni(rng);
      if (kind == 3 || kind == 4) row.min_p = static_cast<float>(0.2 * uni(rng));
      if (kind == 5) {
        row.repetition_penalty = 1.5;
        for (int k = 0; k < 40; ++k) row.penalties.push_back({int32_t(token(rng)), exact16(float(uni(rng))), k % 2});
        std::sort(row.penalties.begin(), row.penalties.end(), [](auto& x, auto& y) { return x.token < y.token; });
        row.penalties.erase(std::unique(row.penalties.begin(), row.penalties.end(),
                                        [](auto& x, auto& y) { return x.token == y.token; }),
                            row.penalties.end());
      }
      if (kind == 6) row.top_k = 1;
      if (kind == 7) row.top_k = static_cast<int32_t>(vocab + 5);
      row.u = r == 0 ? 0.0 : r == 1 ? 0.9999999 : uni(rng);  // the ends of the draw, then anywhere
    }
    in.logits.insert(in.logits.end(), l.begin(), l.end());
  }
  return in;
}

std::vector<Out> run_sample(Backend& be, const SampleIn& in) {
  KvCache cache = begin_pass(be, in.pass);
  const Tensor logits = input(be, in.logits, in.s.rows, in.s.vocab);
  const std::vector<Sample> got = be.sample(logits, in.rows);
  Out token{"token", {in.s.rows}, {}, true}, logprob{"logprob", {0}, {}}, top_token{"top_token", {0}, {}, true},
      top_logprob{"top_logprob", {0}, {}};
  for (size_t r = 0; r < got.size() && r < in.rows.size(); ++r) {
    token.v.push_back(got[r].token);
    if (in.rows[r].top_logprobs < 0) continue;
    logprob.v.push_back(got[r].logprob);
    for (const TokenLogprob& t : got[r].top) top_token.v.push_back(t.token), top_logprob.v.push_back(t.logprob);
  }
  token.shape = {static_cast<int64_t>(got.size())};
  logprob.shape = {static_cast<int64_t>(logprob.v.size())};
  top_token.shape = top_logprob.shape = {static_cast<int64_t>(top_token.v.size())};
  return {token, logprob, top_token, top_logprob};
}

// backend/sampling.h in double: penalties, then argmax (the first maximum) at temperature 0,
// else weights e^((z - max) / T), top-k (ties with the k-th kept), min-p (weights below it go),
// top-p (the most likely tokens until their mass reaches p, ties at the edge kept), and the
// draw: the first token in vocabulary order whose cumulative weight exceeds u x total. du, dp,
// dm nudge u, top_p and min_p, to find what rounding could make of a draw near a boundary.
int32_t sample_in_double(const float* logits, int64_t vocab, const SampleRow& row, double du = 0, double dp = 0,
                         double dm = 0) {
  std::vector<double> z(logits, logits + vocab);
  for (const PenaltyEntry& e : row.penalties) {
    double& l = z[e.token];
    if (e.repeat) l = l > 0 ? l / row.repetition_penalty : l * row.repetition_penalty;
    l -= e.subtract;
  }
  const auto best = static_cast<int32_t>(std::max_element(z.begin(), z.end()) - z.begin());
  if (row.inv_temperature == 0.0f) return best;
  std::vector<double> w(z.size());
  for (size_t i = 0; i < z.size(); ++i) w[i] = std::exp((z[i] - z[best]) * row.inv_temperature);
  if (row.top_k > 0 && row.top_k < vocab) {
    std::vector<double> sorted = w;
    std::nth_element(sorted.begin(), sorted.begin() + (row.top_k - 1), sorted.end(), std::greater<>());
    for (double& x : w) x = x < sorted[row.top_k - 1] ? 0.0 : x;
  }
  for (double& x : w) x = x < row.min_p * (1 + dm) ? 0.0 : x;
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  if (row.top_p < 1.0) {
    std::vector<double> kept;
    for (double x : w)
      if (x > 0) kept.push_back(x);
    std::sort(kept.begin(), kept.end(), std::greater<>());
    const double target = std::min(1.0, row.top_p + dp) * total;
    double cum = 0, floor = kept.back();
    for (double x : kept)
      if ((cum += x) >= target) {
        floor = x;
        break;
      }
    for (double& x : w) x = x < floor ? 0.0 : x;
    total = std::accumulate(w.begin(), w.end(), 0.0);
  }
  const double r = std::clamp(row.u + du, 0.0, 1.0) * total;
  double cum = 0;
  int32_t last = best;
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[i] <= 0) continue;
    last = static_cast<int32_t>(i);
    if ((cum += w[i]) > r) return last;
  }
  return last;
}

std::vector<Out> ref_sample(const SampleIn& in, Device device) {
  const int64_t vocab = in.s.vocab;
  Out token{"token", {in.s.rows}, {}, true}, logprob{"logprob", {0}, {}}, top_token{"top_token", {0}, {}, true},
      top_logprob{"top_logprob", {0}, {}};
  cpu::SampleScratch scratch;
  for (int r = 0; r < in.s.rows; ++r) {
    const float* l = in.logits.data() + r * vocab;
    const SampleRow& row = in.rows[r];
    if (row.inv_temperature == 0.0f || device == Device::kCpu) {
      // The semantics in double; near a boundary of the draw, what a nudge gives is allowed too.
      const int32_t t = sample_in_double(l, vocab, row);
      std::vector<double> alt;
      if (row.inv_temperature != 0.0f) {
        constexpr double e = 1e-5;
        const double nudges[][3] = {{e, 0, 0}, {-e, 0, 0}, {0, e, 0}, {0, -e, 0}, {0, 0, e}, {0, 0, -e}};
        for (const auto& n : nudges)
          if (const int32_t a = sample_in_double(l, vocab, row, n[0], n[1], n[2]); a != t) alt.push_back(a);
      }
      token.v.push_back(t);
      token.allowed.push_back(alt);
    } else {  // the CPU sampler: another backend must pick its token bit for bit
      token.v.push_back(cpu::sample_row(l, vocab, row, scratch).token);
      token.allowed.emplace_back();
    }
    if (row.top_logprobs < 0) continue;
    // Log-probabilities of the raw logits: logit - log sum e^logit; the top ones by (logit
    // descending, id ascending).
    const double mx = *std::max_element(l, l + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(l[i] - mx);
    const double lse = mx + std::log(sum);
    logprob.v.push_back(l[static_cast<int64_t>(token.v.back())] - lse);
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
    for (int64_t k = 0; k < std::min<int64_t>(row.top_logprobs, vocab); ++k) {
      top_token.v.push_back(order[k]);
      top_logprob.v.push_back(l[order[k]] - lse);
    }
  }
  logprob.shape = {static_cast<int64_t>(logprob.v.size())};
  top_token.shape = top_logprob.shape = {static_cast<int64_t>(top_token.v.size())};
  return {token, logprob, top_token, top_logprob};
}

OpRow sample_row(const SampleShape& s) {
  return bind_row<SampleIn>(
      "sample", fmt::format("{}_v{}_r{}", s.kind, s.vocab, s.rows),
      fmt::format("{} rows of logits [{}, {}]", s.kind, s.rows, s.vocab), make_config(), kLogprob,
      [s](Rng& rng) { return build_sample(s, rng); }, run_sample, ref_sample);
}

// ---------------------------------------------------------------------------------------------
// The rows.

const char* const kOps[] = {"embed",    "rms_norm", "add_rms_norm",      "linear", "rope_write_kv", "attention",
                            "silu_mul", "add",      "gather_logit_rows", "sample", "qk_norm",       "moe"};

const std::vector<OpRow>& op_table() {
  static const std::vector<OpRow> table = [] {
    std::vector<OpRow> t;
    for (const EmbedShape& s : std::vector<EmbedShape>{{1000, 64, DType::kBF16, {{0, 1}}},
                                                       {257, 4096, DType::kF16, {{0, 37}, {100, 1}}},
                                                       {50, 130, DType::kF32, {{0, 300}}}})
      t.push_back(embed_row(s));

    const std::vector<NormShape> norms = {
        {1, 64, 1.0, 1e-6}, {7, 4096, 3.0, 1e-5}, {33, 130, 1e-3, 1e-5}, {3, 5120, 20.0, 1e-6}};
    for (const NormShape& s : norms) t.push_back(rms_norm_row(s));
    for (const NormShape& s : norms) t.push_back(add_rms_norm_row(s));

    for (const LinearShape& s : std::vector<LinearShape>{
             {"e3m2", 1, 100, 4097, true},  // decode, odd columns
             {"e3m2", 33, 200, 384, false},
             {"e3m2", 70, 96, 1000, true},              // more tokens than the GPU's fused-kernel crossover (64)
             {"e3m2", 7, 96, 256, true, {64, 16, 16}},  // q, k, v stacked
             {"e2m2", 5, 48, 130, true},
             {"e2m2", 65, 33, 257, false},
             {"e2m1", 1, 17, 64, false},
             {"e2m1", 9, 160, 512, true},
             {"f16", 1, 100, 130, false},
             {"bf16", 17, 64, 256, true},
             {"f32", 70, 33, 100, true},
             {"f16", 3, 5, 3, true}})
      t.push_back(linear_row(s));

    const std::vector<SeqSpec> mixed = {{300, 40}, {1000, 1}, {0, 33}, {64, 70}, {90, 5}};
    for (const RopeShape& s :
         std::vector<RopeShape>{{8, 2, 128, mixed, 16, 500000.0, "default"},
                                {4, 4, 64, {{5, 1}, {77, 1}, {1500, 1}, {0, 1}}, 16, 10000.0, "default"},
                                {2, 1, 16, {{0, 40}, {3000, 2}}, 7, 10000.0, "linear"},
                                {6, 2, 96, {{100, 17}}, 16, 500000.0, "llama3"}})
      t.push_back(rope_row(s));

    std::vector<SeqSpec> decode;
    for (int i = 0; i < 24; ++i) decode.push_back({50 + 31 * i, 1});
    const std::vector<SeqSpec> long_decode = {{1999, 1}, {1200, 1}, {40, 1}};
    for (const AttnShape& s :
         std::vector<AttnShape>{{"mixed", 8, 2, 128, 0, mixed},
                                {"mha_mixed", 4, 4, 64, 0, mixed},
                                {"window100_mixed", 8, 2, 128, 100, mixed},
                                {"window37_bs5", 8, 1, 64, 37, {{0, 100}, {700, 1}, {200, 64}}, 5},
                                {"decode24", 2, 1, 16, 0, decode},
                                {"long_decode", 8, 2, 128, 0, long_decode},
                                {"mha_window700_long_decode_bs32", 4, 4, 128, 700, long_decode, 32},
                                {"mixed", 4, 2, 36, 0, {{0, 20}, {300, 1}, {50, 9}}},
                                {"window16", 6, 2, 80, 16, {{10, 30}, {500, 2}}}})
      t.push_back(attention_row(s));

    for (const QkNormShape& s :
         std::vector<QkNormShape>{{1, 32, 4, 128, 3.0, 1e-6}, {37, 4, 2, 64, 0.01, 1e-6}, {5, 6, 6, 36, 1.0, 1e-5}})
      t.push_back(qk_norm_row(s));

    for (const MoeShape& s : std::vector<MoeShape>{{"mixtral_e3m2", "e3m2", 7, 256, 192, 8, 2, true},
                                                   {"decode1_e3m2", "e3m2", 1, 512, 384, 8, 2, true},
                                                   {"qwen2_shared_e3m2", "e3m2", 33, 128, 64, 16, 4, false, 96},
                                                   {"qwen3_e2m1", "e2m1", 70, 256, 128, 32, 8, true},
                                                   {"many_per_expert_e3m2", "e3m2", 200, 128, 64, 4, 2, true},
                                                   {"one_expert_top1_e2m2", "e2m2", 40, 128, 64, 4, 1, true, 0, "one"},
                                                   {"starved_odd_e3m2", "e3m2", 20, 130, 100, 6, 2, true, 0, "starve"},
                                                   {"dense_f32", "f32", 9, 64, 48, 4, 2, true, 32},
                                                   {"dense_bf16", "bf16", 12, 128, 64, 8, 3, false}})
      t.push_back(moe_row(s));

    for (const EltShape& s : std::vector<EltShape>{{1, 11, 2.0}, {19, 1000, 2.0}, {64, 4096, 4.0}})
      t.push_back(silu_mul_row(s));
    for (const EltShape& s : std::vector<EltShape>{{1, 7, 1.0}, {13, 4096, 1.0}, {300, 130, 10.0}})
      t.push_back(add_row(s));

    for (const GatherShape& s : std::vector<GatherShape>{{"listed", {{0, 19}}, 256, {5, 0, 18}},
                                                         {"last_of_each", {{0, 40}, {300, 1}, {7, 9}}, 4096, {}},
                                                         {"all", {{0, 33}}, 130, {}, true},
                                                         {"repeated", {{0, 10}}, 7, {3, 3, 9, 0}}})
      t.push_back(gather_row(s));

    for (const SampleShape& s : std::vector<SampleShape>{{"greedy", 1000, 6},
                                                         {"greedy", 128256, 2},
                                                         {"penalties", 32000, 4},
                                                         {"seeded", 1000, 16},
                                                         {"seeded", 32000, 8}})
      t.push_back(sample_row(s));
    return t;
  }();
  return table;
}

// ---------------------------------------------------------------------------------------------
// The test: every row on every backend.

class OpTable : public ::testing::TestWithParam<std::tuple<BackendSpec, size_t>> {};

TEST_P(OpTable, Matches) {
  const BackendSpec& spec = std::get<0>(GetParam());
  const OpRow& row = op_table()[std::get<1>(GetParam())];
  if (const std::string why = unavailable(spec); !why.empty()) GTEST_SKIP() << spec.name << ": " << why;
  const std::unique_ptr<Backend> be = make(spec, row.config);
  ASSERT_EQ(be->act_dtype(), spec.act) << be->describe();
  const OpCase c = row.draw(testing::test_seed());
  const std::vector<Out> got = c.run(*be);
  const std::vector<Out> want = c.reference(be->device());
  ASSERT_EQ(got.size(), want.size());
  const Limit& limit = row.tol.of(be->act_dtype());
  for (size_t i = 0; i < want.size(); ++i) {
    const Check check = compare(got[i], want[i], limit);
    if (!want[i].discrete && !want[i].v.empty())
      std::printf("[ measured ] %s %s: nmse %.3g (limit %.3g), max rel %.3g (limit %.3g)\n", row.name.c_str(),
                  want[i].name.c_str(), check.nmse, limit.nmse, check.max_rel, limit.max_rel);
    EXPECT_TRUE(check.ok) << row.op << " (" << row.shape << ") on " << be->describe() << ":\n  " << check.message;
  }
}

INSTANTIATE_TEST_SUITE_P(
    , OpTable, ::testing::Combine(::testing::ValuesIn(kBackends), ::testing::Range<size_t>(0, op_table().size())),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "__" + op_table()[std::get<1>(info.param)].name;
    });

// ---------------------------------------------------------------------------------------------
// The table itself.

TEST(OpTableHarness, EveryOpHasRowsWithUniqueNames) {
  std::set<std::string> names;
  for (const OpRow& row : op_table()) {
    EXPECT_TRUE(names.insert(row.name).second) << "two rows named " << row.name;
    EXPECT_TRUE(std::all_of(row.name.begin(), row.name.end(), [](char ch) { return std::isalnum(ch) || ch == '_'; }))
        << row.name;
    EXPECT_TRUE(std::find(std::begin(kOps), std::end(kOps), row.op) != std::end(kOps)) << row.op << " not in kOps";
  }
  for (const char* op : kOps)
    EXPECT_GE(std::count_if(op_table().begin(), op_table().end(), [&](const OpRow& r) { return r.op == op; }), 2)
        << op << " needs rows";
}

// The CPU backend with two bugs the table must catch: silu_mul writes nothing (the NaN
// poison stays) and add gets one element wrong (invisible in the nmse of a large output).
class BuggyBackend : public testing::DelegatingBackend {
 public:
  explicit BuggyBackend(const model::ModelConfig& config)
      : DelegatingBackend(cpu::make_cpu_backend(config, Options{})) {}
  void silu_mul(const Tensor&, Tensor&) override {}
  void add(Tensor& a, const Tensor& x) override {
    DelegatingBackend::add(a, x);
    a.data_as<float>()[a.numel() / 2] += 1.0f;
  }
};

TEST(OpTableHarness, CatchesUnwrittenAndWrongElements) {
  int checked = 0;
  for (const OpRow& row : op_table()) {
    if (row.op != "silu_mul" && row.op != "add") continue;
    BuggyBackend be(row.config);
    const OpCase c = row.draw(testing::test_seed());
    const Check check = compare(c.run(be)[0], c.reference(Device::kCpu)[0], row.tol.f32);
    EXPECT_FALSE(check.ok) << row.name;
    EXPECT_THAT(check.message, ::testing::HasSubstr(row.op == "add" ? "worst element" : "not finite")) << row.name;
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

}  // namespace
}  // namespace fp6serve
