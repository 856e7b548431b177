#include "loader/prequantized.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file.h"
#include "core/json.h"
#include "loader/hf_weights.h"

namespace fp6serve::loader {

using model::HostLinear;
using model::ModelConfig;
using model::WeightId;
using model::WeightKind;

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

StDType st_dtype(DType d) {
  switch (d) {
    case DType::kF32:
      return StDType::kF32;
    case DType::kF16:
      return StDType::kF16;
    case DType::kBF16:
      return StDType::kBF16;
    default:
      FP6_THROW(kInternal, "no safetensors dtype for {}", dtype_name(d));
  }
}

// The "fp6serve" metadata, read field by field with its type checked: a wrong type is an
// error naming the file and the field, never a JSON accessor's exception. `where` is the
// file and the key, for messages.
struct Meta {
  json j;
  std::string where;

  const json& object(const json& o, const std::string& path) const {
    FP6_CHECK(o.is_object(), kBadInput, "{}: {} must be an object", where, path);
    return o;
  }
  int64_t integer(const json& o, const std::string& path, const char* key) const {
    FP6_CHECK(o.contains(key) && o[key].is_number_integer(), kBadInput, "{}: {}.{} must be an integer", where, path,
              key);
    return o[key].get<int64_t>();
  }
  bool boolean(const json& o, const std::string& path, const char* key) const {
    if (!o.contains(key)) return false;
    FP6_CHECK(o[key].is_boolean(), kBadInput, "{}: {}.{} must be true or false", where, path, key);
    return o[key].get<bool>();
  }
  std::string string(const json& o, const std::string& path, const char* key, const char* fallback) const {
    if (!o.contains(key)) return fallback;
    FP6_CHECK(o[key].is_string(), kBadInput, "{}: {}.{} must be a string", where, path, key);
    return o[key].get<std::string>();
  }
};

Meta read_meta(const Checkpoint& ckpt) {
  const auto it = ckpt.metadata().find(kPrequantizedKey);
  const std::string where = fmt::format("{}: metadata '{}'", ckpt.metadata_file().string(), kPrequantizedKey);
  FP6_CHECK(it != ckpt.metadata().end(), kBadInput, "{} is missing", where);
  Meta m{parse_json(it->second, where), where};
  m.object(m.j, "the metadata");
  return m;
}

// Writes tensors to a data file as they come, remembering their header entries; finish()
// prepends the header. Keeps one tensor in memory at a time.
class StreamingWriter : public WeightSink {
 public:
  explicit StreamingWriter(fs::path path) : path_(std::move(path)), data_path_(path_.string() + ".data.tmp") {
    data_.open(data_path_, std::ios::binary | std::ios::trunc);
    FP6_CHECK(data_.good(), kInvalidArgument, "cannot write {}", data_path_.string());
  }

  void tensor(WeightId id, Tensor host) override {
    put(model::weight_name(id), st_dtype(host.dtype()), host.shape(), host.data(), host.bytes());
  }

  void linear(HostLinear&& h) override {
    const std::string name = model::weight_name(h.id);
    json info = {{"rows", h.rows}, {"cols", h.cols}, {"quantized", h.packed != nullptr}, {"bias", !h.bias.empty()}};
    if (h.packed) {
      const fpx::PackedWeight& p = *h.packed;
      info["format"] = p.format().name();
      put(name + ".fpx_units", StDType::kU8, {p.row_tiles(), p.col_units(), p.plan.unit_bytes()}, p.data.data(),
          p.bytes());
      put(name + ".fpx_scales", StDType::kF32, {p.rows_padded()}, p.scales.data(), p.scales.size() * sizeof(float));
    } else {
      put(name + ".weight", st_dtype(h.dense.dtype()), h.dense.shape(), h.dense.data(), h.dense.bytes());
    }
    if (!h.bias.empty()) put(name + ".bias", StDType::kF32, {h.rows}, h.bias.data(), h.bias.size() * sizeof(float));
    linears_[name] = info;
  }

  void experts(std::vector<HostLinear>&& all) override {
    for (HostLinear& h : all) linear(std::move(h));
  }

  void finish(json meta) {
    data_.close();
    FP6_CHECK(!data_.fail(), kInvalidArgument, "writing {} failed (disk full?)", data_path_.string());
    meta["linears"] = linears_;
    header_["__metadata__"] = {{kPrequantizedKey, meta.dump()}};
    std::string text = header_.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const fs::path tmp = path_.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      uint8_t len[8];
      for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
      out.write(reinterpret_cast<const char*>(len), 8);
      out.write(text.data(), static_cast<std::streamsize>(text.size()));
      std::ifstream in(data_path_, std::ios::binary);
      out << in.rdbuf();
      FP6_CHECK(out.good(), kInvalidArgument, "writing {} failed (disk full?)", tmp.string());
    }
    fs::remove(data_path_);
    fs::rename(tmp, path_);
  }

 private:
  void put(const std::string& name, StDType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes) {
    header_[name] = {{"dtype", st_dtype_name(dtype)}, {"shape", shape}, {"data_offsets", {offset_, offset_ + bytes}}};
    data_.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    offset_ += bytes;
  }

  fs::path path_;
  fs::path data_path_;
  std::ofstream data_;
  json header_ = json::object();
  json linears_ = json::object();
  uint64_t offset_ = 0;
};

// The mode's format, or "e2m3|e3m2" when each layer takes one of those (its own is in
// linears[name].format).
std::string format_names(const model::QuantizationMode& mode) {
  std::string out;
  for (const fpx::Format f : mode.formats()) out += (out.empty() ? "" : "|") + f.name();
  return out;
}

}  // namespace

bool is_prequantized(const Checkpoint& ckpt) {
  return ckpt.metadata().count(kPrequantizedKey) > 0;
}

model::QuantizationMode prequantized_mode(const Checkpoint& ckpt) {
  return naming_file(ckpt.metadata_file().string(), [&] {
    const Meta meta = read_meta(ckpt);
    const int64_t version = meta.integer(meta.j, "the metadata", "version");
    FP6_CHECK(version == kPrequantizedVersion || version == 1, kUnsupported,
              "{}: prequantized format version {} is not supported (this fp6serve reads versions 1 and {})", meta.where,
              version, kPrequantizedVersion);
    const std::string mode = meta.string(meta.j, "the metadata", "mode", "");
    try {
      return model::QuantizationMode::parse(mode);
    } catch (const Error& e) {
      FP6_THROW(kBadInput, "{}: names a bad mode: {}", meta.where, e.what());
    }
  });
}

void read_prequantized(const Checkpoint& ckpt, const ModelConfig& config, DType pack_target, WeightSink& sink) {
  const model::QuantizationMode mode = prequantized_mode(ckpt);
  const Meta meta = naming_file(ckpt.metadata_file().string(), [&] { return read_meta(ckpt); });
  const std::string& where = meta.where;
  const std::string target = meta.string(meta.j, "the metadata", "target", "f16");
  const DType stored_target = naming_file(where + ": target", [&] { return parse_float_dtype(target); });
  // Version 1 has one format, the top-level "format" (wf6af16 meant e3m2 in every layer then);
  // version 2 names each quantized layer's.
  const bool v1 = meta.integer(meta.j, "the metadata", "version") == 1;
  const fpx::Format v1_format = naming_file(where + ": format", [&] {
    return v1 ? fpx::parse_format(meta.string(meta.j, "the metadata", "format", "e3m2")) : mode.format;
  });
  FP6_CHECK(meta.j.contains("linears"), kBadInput, "{}: lacks 'linears'", where);
  const json& linears = meta.object(meta.j["linears"], "linears");

  auto read_linear = [&](WeightId id, int64_t rows, int64_t cols) {
    const std::string name = model::weight_name(id);
    const std::string path = "linears['" + name + "']";
    FP6_CHECK(linears.contains(name), kBadInput, "{}: linear layer '{}' is missing", where, name);
    const json& info = meta.object(linears[name], path);
    const int64_t stored_rows = meta.integer(info, path, "rows"), stored_cols = meta.integer(info, path, "cols");
    FP6_CHECK(stored_rows == rows && stored_cols == cols, kBadInput,
              "{}: linear layer '{}' is [{}, {}] but the config implies [{}, {}]", where, name, stored_rows,
              stored_cols, rows, cols);
    HostLinear h;
    h.id = id;
    h.rows = rows;
    h.cols = cols;
    if (meta.boolean(info, path, "quantized")) {
      const std::string stored = v1 ? "" : meta.string(info, path, "format", "");
      FP6_CHECK(v1 || !stored.empty(), kBadInput, "{}: {}.format is missing", where, path);
      const fpx::Format format =
          v1 ? v1_format : naming_file(where + ": " + path + ".format", [&] { return fpx::parse_format(stored); });
      const std::span<const fpx::Format> allowed = mode.formats();
      FP6_CHECK(std::find(allowed.begin(), allowed.end(), format) != allowed.end(), kBadInput,
                "{}: linear layer '{}' is {}, which mode {} does not use", where, name, format.name(), mode.name);
      const fpx::PackPlan plan = naming_file(where, [&] { return fpx::pack_plan(format, stored_target); });
      auto p = std::make_unique<fpx::PackedWeight>();
      p->plan = plan;
      p->rows = rows;
      p->cols = cols;
      const TensorInfo& units = ckpt.get(name + ".fpx_units");
      const TensorInfo& scales = ckpt.get(name + ".fpx_scales");
      const std::vector<int64_t> want_units = {p->row_tiles(), p->col_units(), plan.unit_bytes()};
      FP6_CHECK(units.dtype == StDType::kU8 && units.shape == want_units, kBadInput,
                "{}: '{}' is {} {}, expected U8 [{}, {}, {}]", ckpt.file_of(units.name).string(), units.name,
                st_dtype_name(units.dtype), units.shape_string(), want_units[0], want_units[1], want_units[2]);
      FP6_CHECK(scales.dtype == StDType::kF32 && scales.shape == std::vector<int64_t>{p->rows_padded()}, kBadInput,
                "{}: '{}' is {} {}, expected F32 [{}]", ckpt.file_of(scales.name).string(), scales.name,
                st_dtype_name(scales.dtype), scales.shape_string(), p->rows_padded());
      p->data = HostBuffer(units.bytes);
      std::memcpy(p->data.data(), units.data, units.bytes);
      p->scales.resize(static_cast<size_t>(p->rows_padded()));
      std::memcpy(p->scales.data(), scales.data, scales.bytes);
      if (pack_target != stored_target) *p = fpx::pack(fpx::unpack(*p), pack_target);
      h.packed = std::move(p);
    } else {
      const TensorInfo& t = ckpt.get(name + ".weight");
      FP6_CHECK(t.shape == (std::vector<int64_t>{rows, cols}), kBadInput, "{}: '{}' has shape {}, expected [{}, {}]",
                ckpt.file_of(t.name).string(), t.name, t.shape_string(), rows, cols);
      h.dense = Tensor::empty(t.shape, ckpt.float_dtype(t));
      std::memcpy(h.dense.data(), t.data, t.bytes);
    }
    if (meta.boolean(info, path, "bias")) {
      const TensorInfo& b = ckpt.get(name + ".bias");
      FP6_CHECK(b.dtype == StDType::kF32 && b.shape == std::vector<int64_t>{rows}, kBadInput,
                "{}: '{}' is {} {}, expected F32 [{}]", ckpt.file_of(b.name).string(), b.name, st_dtype_name(b.dtype),
                b.shape_string(), rows);
      h.bias.assign(reinterpret_cast<const float*>(b.data), reinterpret_cast<const float*>(b.data) + rows);
    }
    return h;
  };
  auto read_tensor = [&](WeightId id, const std::vector<int64_t>& shape) {
    const std::string name = model::weight_name(id);
    const TensorInfo& t = ckpt.get(name);
    FP6_CHECK(t.shape == shape, kBadInput, "{}: '{}' has shape {}, expected {}", ckpt.file_of(name).string(), name,
              t.shape_string(), shape_string(shape));
    Tensor host = Tensor::empty(t.shape, ckpt.float_dtype(t));
    std::memcpy(host.data(), t.data, t.bytes);
    return host;
  };

  const int64_t hsz = config.hidden_size;
  sink.tensor({WeightKind::kEmbed}, read_tensor({WeightKind::kEmbed}, {config.vocab_size, hsz}));
  sink.tensor({WeightKind::kFinalNorm}, read_tensor({WeightKind::kFinalNorm}, {hsz}));
  for (int64_t i = 0; i < config.num_layers; ++i) {
    sink.tensor({WeightKind::kInputNorm, i}, read_tensor({WeightKind::kInputNorm, i}, {hsz}));
    sink.tensor({WeightKind::kPostNorm, i}, read_tensor({WeightKind::kPostNorm, i}, {hsz}));
    if (config.qk_norm) {
      sink.tensor({WeightKind::kQNorm, i}, read_tensor({WeightKind::kQNorm, i}, {config.head_dim}));
      sink.tensor({WeightKind::kKNorm, i}, read_tensor({WeightKind::kKNorm, i}, {config.head_dim}));
    }
    sink.linear(read_linear({WeightKind::kQkv, i}, config.q_size() + 2 * config.kv_size(), hsz));
    sink.linear(read_linear({WeightKind::kO, i}, hsz, config.q_size()));
    if (!config.moe_layer(i)) {
      sink.linear(read_linear({WeightKind::kGateUp, i}, 2 * config.intermediate_size, hsz));
      sink.linear(read_linear({WeightKind::kDown, i}, hsz, config.intermediate_size));
      continue;
    }
    const model::MoeConfig& moe = config.moe;
    const bool shared = moe.shared_intermediate_size > 0;
    sink.tensor({WeightKind::kRouter, i},
                read_tensor({WeightKind::kRouter, i}, {moe.num_experts + (shared ? 1 : 0), hsz}));
    for (const WeightKind kind : {WeightKind::kExpertGateUp, WeightKind::kExpertDown}) {
      std::vector<HostLinear> all;
      for (int64_t e = 0; e < moe.num_experts; ++e)
        all.push_back(kind == WeightKind::kExpertGateUp ? read_linear({kind, i, e}, 2 * moe.intermediate_size, hsz)
                                                        : read_linear({kind, i, e}, hsz, moe.intermediate_size));
      sink.experts(std::move(all));
    }
    if (shared) {
      sink.linear(read_linear({WeightKind::kSharedGateUp, i}, 2 * moe.shared_intermediate_size, hsz));
      sink.linear(read_linear({WeightKind::kSharedDown, i}, hsz, moe.shared_intermediate_size));
    }
  }
  sink.linear(read_linear({WeightKind::kLmHead}, config.vocab_size, hsz));
}

void write_prequantized(const fs::path& model_dir, const fs::path& out_dir, const LinearSpec& spec) {
  FP6_CHECK(spec.mode.quantized, kInvalidArgument, "quantize needs an FPx quantization mode, not {}", spec.mode.name);
  FP6_CHECK(fs::weakly_canonical(model_dir) != fs::weakly_canonical(out_dir), kInvalidArgument,
            "the output directory must differ from the model directory");
  const ModelConfig config = ModelConfig::load(model_dir);
  const Checkpoint ckpt(model_dir);
  FP6_CHECK(!is_prequantized(ckpt), kInvalidArgument, "{} is already prequantized", model_dir.string());
  fs::create_directories(out_dir);
  // Packed for FP16 tensor cores when the format allows; a BF16 consumer repacks on load.
  LinearSpec packed_for_fp16 = spec;
  packed_for_fp16.pack_target = fpx::default_target(spec.mode.format);
  const DType target = packed_for_fp16.pack_target;
  StreamingWriter writer(out_dir / "model.safetensors");
  read_hf_weights(ckpt, config, packed_for_fp16, writer);
  writer.finish({{"version", kPrequantizedVersion},
                 {"mode", spec.mode.name},
                 {"format", format_names(spec.mode)},
                 {"target", dtype_name(target)},
                 {"unit", "16x128"},
                 {"quantize_lm_head", spec.quantize_lm_head},
                 {"scale", fpx::scale_rule_name(spec.scale_rule)},
                 {"rounding", spec.calibration ? "gptq" : "nearest"}});

  // config.json with a quantization_config, and the tokenizer and generation files as they are.
  json cfg = parse_json(read_file(model_dir / "config.json"), (model_dir / "config.json").string());
  cfg["quantization_config"] = {
      {"quant_method", "fp6serve"}, {"quantization_mode", spec.mode.name}, {"fpx_format", format_names(spec.mode)}};
  std::ofstream(out_dir / "config.json") << cfg.dump(2) << "\n";
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja",
                        "special_tokens_map.json", "tokenizer.model"}) {
    if (fs::exists(model_dir / f)) fs::copy_file(model_dir / f, out_dir / f, fs::copy_options::overwrite_existing);
  }
}

}  // namespace fp6serve::loader
