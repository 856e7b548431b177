#include "transformer/tensor_parallel.h"

#include <cstring>
#include <numeric>
#include <string>

#include "core/check.h"
#include "fpx/pack.h"

namespace fp6serve {

using model::HostLinear;
using model::ModelConfig;
using model::WeightKind;

model::ModelConfig rank_config(const ModelConfig& config, int ranks) {
  FP6_CHECK(ranks >= 1, kInvalidArgument, "tensor_parallel_size must be at least 1, got {}", ranks);
  // What each rank gets a share of: whole KV heads (and their query heads), and columns of
  // every MLP's intermediate size.
  std::vector<std::pair<const char*, int64_t>> splits = {{"num_attention_heads", config.num_heads},
                                                         {"num_key_value_heads", config.num_kv_heads}};
  if (config.has_dense_mlp()) splits.emplace_back("intermediate_size", config.intermediate_size);
  if (config.is_moe()) splits.emplace_back("moe_intermediate_size", config.moe.intermediate_size);
  if (config.moe.shared_intermediate_size > 0)
    splits.emplace_back("shared_expert_intermediate_size", config.moe.shared_intermediate_size);
  for (const auto& [name, value] : splits) {
    if (value % ranks == 0) continue;
    int64_t common = 0;  // the gcd of every split: the sizes that work divide it
    for (const auto& s : splits) common = std::gcd(common, s.second);
    std::string fits;
    for (int64_t n = 1; n <= common; ++n)
      if (common % n == 0) fits += (fits.empty() ? "" : ", ") + std::to_string(n);
    FP6_THROW(kInvalidArgument,
              "tensor_parallel_size {}: the model's {} ({}) is not a multiple of {} (each rank takes an equal share "
              "of the heads and of the MLP's intermediate size); this model splits over {} ranks",
              ranks, name, value, ranks, fits);
  }
  ModelConfig c = config;
  c.num_heads /= ranks;
  c.num_kv_heads /= ranks;
  c.intermediate_size /= c.has_dense_mlp() ? ranks : 1;
  c.moe.intermediate_size /= ranks;
  c.moe.shared_intermediate_size /= ranks;
  return c;
}

namespace {

// Rows [begin, begin + count) of a matrix.
struct RowRange {
  int64_t begin = 0;
  int64_t count = 0;
};

// The rows `rows` and columns [col0, col0 + cols) of a row-major matrix of `src_cols` columns
// of `elem`-byte elements, into dst (row-major, contiguous).
void gather(const uint8_t* src, int64_t src_cols, size_t elem, const std::vector<RowRange>& rows, int64_t col0,
            int64_t cols, uint8_t* dst) {
  const size_t row_bytes = static_cast<size_t>(cols) * elem;
  for (const RowRange& range : rows)
    for (int64_t r = range.begin; r < range.begin + range.count; ++r, dst += row_bytes)
      std::memcpy(dst, src + (static_cast<size_t>(r * src_cols + col0)) * elem, row_bytes);
}

// The shard of one rank: rows and columns of the whole weight, and its bias (or none).
HostLinear slice(const HostLinear& full, const fpx::QuantizedMatrix* codes, const std::vector<RowRange>& rows,
                 int64_t col0, int64_t cols, bool bias) {
  HostLinear out;
  out.id = full.id;
  for (const RowRange& r : rows) out.rows += r.count;
  out.cols = cols;
  if (codes) {
    std::vector<uint8_t> c(static_cast<size_t>(out.rows * cols));
    std::vector<float> scales(static_cast<size_t>(out.rows));
    gather(codes->codes.data(), full.cols, 1, rows, col0, cols, c.data());
    gather(reinterpret_cast<const uint8_t*>(codes->scales.data()), 1, sizeof(float), rows, 0, 1,
           reinterpret_cast<uint8_t*>(scales.data()));
    out.packed = std::make_unique<fpx::PackedWeight>(
        fpx::pack(c.data(), scales.data(), out.rows, cols, full.packed->format(), full.packed->plan.target));
  } else {
    out.dense = Tensor::empty({out.rows, cols}, full.dense.dtype());
    gather(static_cast<const uint8_t*>(full.dense.data()), full.cols, dtype_size(full.dense.dtype()), rows, col0, cols,
           static_cast<uint8_t*>(out.dense.data()));
  }
  if (bias && !full.bias.empty()) {
    out.bias.resize(static_cast<size_t>(out.rows));
    gather(reinterpret_cast<const uint8_t*>(full.bias.data()), 1, sizeof(float), rows, 0, 1,
           reinterpret_cast<uint8_t*>(out.bias.data()));
  }
  return out;
}

}  // namespace

std::vector<HostLinear> shard_linear(const HostLinear& full, const ModelConfig& c, int ranks) {
  // Column-parallel layers: the sizes of their stacked parts; row-parallel ones: none.
  std::vector<int64_t> parts;
  switch (full.id.kind) {
    case WeightKind::kQkv:
      parts = {c.q_size(), c.kv_size(), c.kv_size()};
      break;
    case WeightKind::kGateUp:
      parts = {c.intermediate_size, c.intermediate_size};
      break;
    case WeightKind::kExpertGateUp:
      parts = {c.moe.intermediate_size, c.moe.intermediate_size};
      break;
    case WeightKind::kSharedGateUp:
      parts = {c.moe.shared_intermediate_size, c.moe.shared_intermediate_size};
      break;
    case WeightKind::kO:
    case WeightKind::kDown:
    case WeightKind::kExpertDown:
    case WeightKind::kSharedDown:
      break;
    default:
      FP6_THROW(kInternal, "{} is not split across tensor-parallel ranks", model::weight_name(full.id));
  }
  FP6_ASSERT(ranks >= 1 && (full.packed != nullptr) != (full.dense.data() != nullptr));
  const int64_t stacked = std::accumulate(parts.begin(), parts.end(), int64_t{0});
  FP6_CHECK(parts.empty() ? full.cols % ranks == 0 : stacked == full.rows && stacked % ranks == 0, kInternal,
            "{} [{}, {}] does not split over {} ranks", model::weight_name(full.id), full.rows, full.cols, ranks);
  // The codes and scales of a quantized weight, unpacked once for every rank (unpack is the
  // exact inverse of pack: the shards repack the very codes and scales).
  std::unique_ptr<fpx::QuantizedMatrix> codes;
  if (full.packed) codes = std::make_unique<fpx::QuantizedMatrix>(fpx::unpack(*full.packed));
  std::vector<HostLinear> out;
  for (int r = 0; r < ranks; ++r) {
    if (parts.empty()) {
      const int64_t cols = full.cols / ranks;
      out.push_back(slice(full, codes.get(), {{0, full.rows}}, r * cols, cols, r == 0));
      continue;
    }
    std::vector<RowRange> rows;
    int64_t offset = 0;
    for (const int64_t part : parts) {
      rows.push_back({offset + r * (part / ranks), part / ranks});
      offset += part;
    }
    out.push_back(slice(full, codes.get(), rows, 0, full.cols, true));
  }
  return out;
}

RankThreads::RankThreads(int ranks) {
  FP6_CHECK(ranks >= 1, kInvalidArgument, "tensor_parallel_size must be at least 1, got {}", ranks);
  for (int r = 1; r < ranks; ++r) {
    workers_.push_back(std::make_unique<Worker>());
    Worker& w = *workers_.back();
    w.thread = std::thread([this, &w, r] { loop(w, r); });
  }
}

RankThreads::~RankThreads() {
  for (auto& w : workers_) {
    {
      std::lock_guard lock(w->mutex);
      w->stop = true;
    }
    w->wake.notify_one();
    w->thread.join();
  }
}

void RankThreads::loop(Worker& w, int rank) {
  std::unique_lock lock(w.mutex);
  for (;;) {
    w.wake.wait(lock, [&] { return w.task != nullptr || w.stop; });
    if (w.task == nullptr) return;
    const std::function<void(int)>& task = *w.task;
    lock.unlock();
    std::exception_ptr error;
    try {
      task(rank);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    w.error = error;
    w.task = nullptr;
    {
      std::lock_guard done(done_mutex_);
      --pending_;
    }
    done_.notify_all();
  }
}

void RankThreads::run(const std::function<void(int)>& fn) {
  if (workers_.empty()) return fn(0);
  {
    std::lock_guard done(done_mutex_);
    pending_ = static_cast<int>(workers_.size());
  }
  for (auto& w : workers_) {
    {
      std::lock_guard lock(w->mutex);
      w->task = &fn;
      w->error = nullptr;
    }
    w->wake.notify_one();
  }
  std::exception_ptr first;
  try {
    fn(0);
  } catch (...) {
    first = std::current_exception();
  }
  {
    std::unique_lock done(done_mutex_);
    done_.wait(done, [&] { return pending_ == 0; });
  }
  for (auto& w : workers_) {
    std::lock_guard lock(w->mutex);
    if (!first && w->error) first = w->error;
    w->error = nullptr;
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace fp6serve
