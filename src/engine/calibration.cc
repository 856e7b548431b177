#include "engine/calibration.h"

#include <algorithm>
#include <functional>

#include "backend/cpu/cpu_backend.h"
#include "backend/delegating_backend.h"
#include "core/check.h"
#include "core/thread_pool.h"
#include "engine/perplexity.h"
#include "loader/safetensors.h"
#include "transformer/model.h"

namespace fp6serve {

using model::WeightId;
using model::WeightKind;

// The CPU backend, adding x^T x of the inputs of the linear layers it is told to measure.
class CapturingBackend : public DelegatingBackend {
 public:
  explicit CapturingBackend(std::unique_ptr<Backend> inner) : DelegatingBackend(std::move(inner)) {}

  // Measure the layers `want` accepts from now on (their statistics start from zero).
  void measure(const std::function<bool(WeightId)>& want) {
    stats_.clear();
    for (const auto& [w, id] : ids_)
      if (want(id)) {
        fpx::Hessian& h = stats_[model::weight_name(id)];
        h.cols = w->cols;
        h.xtx.assign(static_cast<size_t>(w->cols * w->cols), 0.0);
      }
  }
  // The statistics, their lower triangles filled in; measuring stops.
  std::map<std::string, fpx::Hessian> take() {
    for (auto& [name, h] : stats_)
      for (int64_t a = 0; a < h.cols; ++a)
        for (int64_t b = 0; b < a; ++b) h.xtx[a * h.cols + b] = h.xtx[b * h.cols + a];
    return std::move(stats_);
  }

  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& h) override {
    const WeightId id = h.id;
    auto w = inner().adopt_linear(std::move(h));
    ids_[w.get()] = id;
    return w;
  }
  void linear(const Tensor& x, const LinearWeight& w, Tensor& y) override {
    inner().linear(x, w, y);
    const auto id = ids_.find(&w);
    if (id == ids_.end()) return;
    const auto it = stats_.find(model::weight_name(id->second));
    if (it == stats_.end()) return;
    accumulate(x, it->second);
  }

  std::string describe() const override { return "calibrating " + inner().describe(); }

 private:
  // h.xtx's upper triangle += x^T x, x [tokens, cols] f32 (the CPU backend's activations).
  static void accumulate(const Tensor& x, fpx::Hessian& h) {
    FP6_CHECK(x.dtype() == DType::kF32 && x.dim(1) == h.cols, kInternal, "calibration: input {} for {} columns",
              x.shape_string(), h.cols);
    const int64_t tokens = x.dim(0), n = h.cols;
    const float* xs = x.data_as<float>();
    ThreadPool::global()->parallel_for(n, [&](int64_t begin, int64_t end) {
      for (int64_t t = 0; t < tokens; ++t) {
        const float* xt = xs + t * n;
        for (int64_t a = begin; a < end; ++a) {
          const double xa = xt[a];
          if (xa == 0.0) continue;
          double* row = h.xtx.data() + a * n;
          for (int64_t b = a; b < n; ++b) row[b] += xa * static_cast<double>(xt[b]);
        }
      }
    });
    h.samples += tokens;
  }

  std::map<const LinearWeight*, WeightId> ids_;
  std::map<std::string, fpx::Hessian> stats_;
};

std::vector<std::vector<int32_t>> token_windows(const std::string& text, const Tokenizer& tok, int64_t ctx,
                                                int64_t max_windows, const std::string& what) {
  FP6_CHECK(ctx >= 2, kInvalidArgument, "{}: windows of {} tokens (at least 2)", what, ctx);
  const std::vector<int32_t> ids = tok.encode(text, false);
  std::vector<std::vector<int32_t>> windows;
  for (size_t i = 0; i + 1 < ids.size(); i += static_cast<size_t>(ctx)) {
    if (max_windows > 0 && static_cast<int64_t>(windows.size()) == max_windows) break;
    windows.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(i),
                         ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + static_cast<size_t>(ctx))));
  }
  if (!windows.empty() && windows.back().size() < 2) windows.pop_back();
  FP6_CHECK(!windows.empty(), kBadInput, "{}: fewer than 2 tokens of text", what);
  return windows;
}

namespace {

// The unquantized mode that holds the checkpoint's weights exactly.
std::string dense_mode(const std::filesystem::path& dir) {
  const loader::Checkpoint ckpt(dir);
  switch (ckpt.float_dtype(ckpt.get("model.embed_tokens.weight"))) {
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "fp16";
    default:
      return "fp32";
  }
}

}  // namespace

LayerCalibration::LayerCalibration(const std::filesystem::path& model_dir, std::vector<std::vector<int32_t>> windows,
                                   const Options& options, bool lm_head, size_t max_bytes)
    : windows_(std::move(windows)), lm_head_(lm_head), max_bytes_(max_bytes) {
  FP6_CHECK(!windows_.empty(), kInvalidArgument, "calibration: no token windows");
  const model::ModelConfig config = model::ModelConfig::load(model_dir);
  Options o = options;
  o.device = "cpu";
  o.quantization_mode = dense_mode(model_dir);
  o.progress = false;
  auto backend = std::make_unique<CapturingBackend>(cpu::make_cpu_backend(config, o));
  capture_ = backend.get();
  model_ = Model::load(model_dir, o, std::move(backend));
  for (const auto& w : windows_)
    FP6_CHECK(static_cast<int64_t>(w.size()) <= config.max_position_embeddings, kInvalidArgument,
              "calibration: a window of {} tokens is longer than the model's context ({})", w.size(),
              config.max_position_embeddings);
}

LayerCalibration::~LayerCalibration() = default;

int64_t LayerCalibration::tokens() const {
  int64_t n = 0;
  for (const auto& w : windows_) n += static_cast<int64_t>(w.size());
  return n;
}

const fpx::Hessian* LayerCalibration::hessian(WeightId id) {
  static const WeightKind kDense[] = {WeightKind::kQkv, WeightKind::kO, WeightKind::kGateUp, WeightKind::kDown};
  const model::ModelConfig& c = model_->config();
  const bool head = id.kind == WeightKind::kLmHead;
  if (head ? !lm_head_ : std::find(std::begin(kDense), std::end(kDense), id.kind) == std::end(kDense)) return nullptr;
  const int64_t layer = head ? c.num_layers - 1 : id.layer;  // lm_head is measured with the last layer
  if (layer < first_ || layer >= last_) measure(layer);
  const auto it = stats_.find(model::weight_name(id));
  return it == stats_.end() ? nullptr : &it->second;
}

void LayerCalibration::measure(int64_t first_layer) {
  const model::ModelConfig& c = model_->config();
  // As many layers from first_layer as fit in max_bytes_ (always one), lm_head with the last.
  auto bytes = [&](int64_t layer) {
    int64_t cols2 = c.hidden_size * c.hidden_size + c.q_size() * c.q_size();  // qkv, o
    if (!c.moe_layer(layer)) cols2 += c.hidden_size * c.hidden_size + c.intermediate_size * c.intermediate_size;
    return static_cast<size_t>(cols2) * sizeof(double);
  };
  int64_t last = first_layer;
  size_t total = 0;
  while (last < c.num_layers && (last == first_layer || total + bytes(last) <= max_bytes_)) total += bytes(last++);
  stats_.clear();
  capture_->measure([&](WeightId id) {
    if (id.kind == WeightKind::kLmHead) return lm_head_ && last == c.num_layers;
    return id.layer >= first_layer && id.layer < last;
  });
  int64_t longest = 0;
  for (const auto& w : windows_) longest = std::max<int64_t>(longest, static_cast<int64_t>(w.size()));
  PerplexityScorer scorer(*model_, nullptr, longest);
  for (const auto& w : windows_) scorer.score(w);
  stats_ = capture_->take();
  first_ = first_layer;
  last_ = last;
  ++passes_;
}

}  // namespace fp6serve
