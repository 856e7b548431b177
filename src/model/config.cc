#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"
#include "core/file.h"
#include "core/json.h"

namespace fp6serve::model {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* family_name(Family family) {
  switch (family) {
    case Family::kLlama:
      return "llama";
    case Family::kMistral:
      return "mistral";
    case Family::kQwen2:
      return "qwen2";
    case Family::kMixtral:
      return "mixtral";
    case Family::kQwen2Moe:
      return "qwen2_moe";
    case Family::kQwen3Moe:
      return "qwen3_moe";
  }
  return "?";
}

bool ModelConfig::moe_layer(int64_t l) const {
  return is_moe() && std::find(moe.dense_layers.begin(), moe.dense_layers.end(), l) == moe.dense_layers.end();
}

bool ModelConfig::has_dense_mlp() const {
  return !is_moe() || !moe.dense_layers.empty();
}

namespace {

// Upper bounds of the size fields, each far above the largest real model (in brackets) and
// low enough that a config naming absurd sizes is rejected before anything is allocated for
// them (num_hidden_layers 1e7 sized 11 GB of weight slots), and that no product the loader or
// a backend forms overflows int64.
constexpr int64_t kMaxLayers = 4096;               // [Llama-3.1 405B: 126]
constexpr int64_t kMaxHiddenSize = 1 << 16;        // [Llama-3.1 405B: 16384]
constexpr int64_t kMaxIntermediateSize = 1 << 18;  // [Llama-3.1 405B: 53248]
constexpr int64_t kMaxHeads = 4096;                // [Llama-3.1 405B: 128]
constexpr int64_t kMaxHeadDim = 1024;              // [Gemma: 256]
constexpr int64_t kMaxVocabSize = 1 << 24;         // [Gemma: 256k] the tokenizer's bound too
constexpr int64_t kMaxPositions = 1 << 24;         // [Llama-4 Scout: 10M]
constexpr int64_t kMaxExperts = 1 << 12;           // [DeepSeek-V3: 256, Qwen3-235B: 128]
// Every weight (embeddings, qkv, gate_up, ...) has at most 2^40 elements, so the whole model
// in 8-byte elements stays far below 2^63 bytes.
constexpr int64_t kMaxWeightElements = int64_t{1} << 40;
static_assert(kMaxVocabSize * kMaxHiddenSize <= kMaxWeightElements);
static_assert(3 * kMaxHeads * kMaxHeadDim * kMaxHiddenSize <= kMaxWeightElements);
static_assert(2 * kMaxIntermediateSize * kMaxHiddenSize <= kMaxWeightElements);
static_assert(kMaxLayers * 8 * kMaxWeightElements * 8 < (int64_t{1} << 62));

json parse_object(const std::string& text, const std::string& source) {
  json j = parse_json(text, source);
  FP6_CHECK(j.is_object(), kBadInput, "{}: expected a JSON object", source);
  return j;
}

// A value for an error message, cut short: a field may hold a megabyte of JSON.
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 64 ? s.substr(0, 61) + "..." : s;
}

// Field readers that name the file and the field in every error.
struct Fields {
  const json& j;
  const std::string& source;

  bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }

  // An integer in [1, max].
  int64_t positive_int(const char* key, int64_t max) const {
    FP6_CHECK(has(key), kBadInput, "{}: required field '{}' is missing", source, key);
    const json& v = j[key];
    FP6_CHECK(v.is_number_integer() && v.get<int64_t>() > 0, kBadInput,
              "{}: field '{}' must be a positive integer, got {}", source, key, brief(v));
    FP6_CHECK(v.get<int64_t>() <= max, kBadInput, "{}: field '{}' is {}, more than the {} any real model has", source,
              key, v.get<int64_t>(), max);
    return v.get<int64_t>();
  }
  int64_t positive_int_or(const char* key, int64_t max, int64_t fallback) const {
    return has(key) ? positive_int(key, max) : fallback;
  }

  double positive_number(const json& v, const std::string& key) const {
    FP6_CHECK(v.is_number() && v.get<double>() > 0 && std::isfinite(v.get<double>()), kBadInput,
              "{}: field '{}' must be a positive number, got {}", source, key, brief(v));
    return v.get<double>();
  }
  double positive_number_or(const char* key, double fallback) const {
    return has(key) ? positive_number(j[key], key) : fallback;
  }

  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    FP6_CHECK(j[key].is_boolean(), kBadInput, "{}: field '{}' must be true or false, got {}", source, key,
              brief(j[key]));
    return j[key].get<bool>();
  }

  // Token ids below vocab_size: the engine compares them with sampled ids and may index
  // logits with them.
  std::vector<int32_t> token_ids(const char* key, int64_t vocab_size) const {
    std::vector<int32_t> out;
    if (!has(key)) return out;
    const json& v = j[key];
    auto one = [&](const json& x) {
      FP6_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < vocab_size, kBadInput,
                "{}: field '{}' must hold token ids in [0, vocab_size {}), got {}", source, key, vocab_size, brief(x));
      out.push_back(static_cast<int32_t>(x.get<int64_t>()));
    };
    if (v.is_array())
      for (const json& x : v) one(x);
    else
      one(v);
    return out;
  }
};

void parse_rope(const Fields& f, ModelConfig& c) {
  // transformers 5: rope_parameters {rope_theta, rope_type, ...}; 4.x: rope_theta + rope_scaling.
  const json* params = nullptr;
  std::string params_key;
  if (f.has("rope_parameters"))
    params = &f.j["rope_parameters"], params_key = "rope_parameters";
  else if (f.has("rope_scaling"))
    params = &f.j["rope_scaling"], params_key = "rope_scaling";
  c.rope.theta = f.positive_number_or("rope_theta", c.family == Family::kMixtral ? 1e6 : 10000.0);
  if (!params) return;
  FP6_CHECK(params->is_object(), kBadInput, "{}: field '{}' must be an object", f.source, params_key);
  const json& p = *params;
  if (p.contains("rope_theta")) c.rope.theta = f.positive_number(p["rope_theta"], params_key + ".rope_theta");
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (p.contains(key) && !p[key].is_null()) {
      FP6_CHECK(p[key].is_string(), kBadInput, "{}: field '{}.{}' must be a string", f.source, params_key, key);
      type = p[key].get<std::string>();
      break;
    }
  }
  c.rope.type = type;
  auto number = [&](const char* key, double fallback) {
    return p.contains(key) && !p[key].is_null() ? f.positive_number(p[key], params_key + "." + key) : fallback;
  };
  if (type == "default") return;
  if (type == "linear") {
    c.rope.factor = number("factor", 1.0);
    return;
  }
  if (type == "llama3") {
    c.rope.factor = number("factor", 8.0);
    c.rope.low_freq_factor = number("low_freq_factor", 1.0);
    c.rope.high_freq_factor = number("high_freq_factor", 4.0);
    const double original = number("original_max_position_embeddings", 8192);
    // Checked before the cast: a double beyond int64 does not convert (undefined behaviour).
    FP6_CHECK(original <= static_cast<double>(kMaxPositions), kBadInput,
              "{}: {}.original_max_position_embeddings is {}, more than the {} any real model has", f.source,
              params_key, original, kMaxPositions);
    c.rope.original_max_position = static_cast<int64_t>(original);
    FP6_CHECK(c.rope.high_freq_factor > c.rope.low_freq_factor, kBadInput,
              "{}: {}.high_freq_factor must exceed low_freq_factor", f.source, params_key);
    return;
  }
  FP6_THROW(kUnsupported, "{}: {}.rope_type '{}' is not supported (supported: default, linear, llama3)", f.source,
            params_key, type);
}

// The mixture of experts (MoeConfig), with transformers' defaults for absent fields.
void parse_moe(const Fields& f, ModelConfig& c) {
  const bool mixtral = c.family == Family::kMixtral, qwen2 = c.family == Family::kQwen2Moe;
  MoeConfig& m = c.moe;
  // Mixtral names the count num_local_experts, the Qwens num_experts; either is read.
  const char* experts_key = f.has("num_local_experts") ? "num_local_experts" : "num_experts";
  m.num_experts = f.positive_int_or(experts_key, kMaxExperts, mixtral ? 8 : qwen2 ? 60 : 128);
  if (f.has("num_local_experts") && f.has("num_experts"))
    FP6_CHECK(f.positive_int("num_experts", kMaxExperts) == m.num_experts, kBadInput,
              "{}: num_local_experts ({}) and num_experts ({}) disagree", f.source, m.num_experts,
              f.j["num_experts"].get<int64_t>());
  m.top_k = f.positive_int_or("num_experts_per_tok", kMaxExperts, mixtral ? 2 : qwen2 ? 4 : 8);
  FP6_CHECK(m.top_k <= m.num_experts, kBadInput, "{}: num_experts_per_tok ({}) exceeds the {} experts ({})", f.source,
            m.top_k, m.num_experts, experts_key);
  m.intermediate_size = mixtral ? c.intermediate_size
                                : f.positive_int_or("moe_intermediate_size", kMaxIntermediateSize, qwen2 ? 1408 : 768);
  // Every expert's weights of one kind are held together: bounded like one weight.
  FP6_CHECK(m.num_experts * 2 * m.intermediate_size * c.hidden_size <= kMaxWeightElements, kBadInput,
            "{}: {} experts of {} x {} hold more weights than any real model", f.source, m.num_experts,
            m.intermediate_size, c.hidden_size);
  if (qwen2)
    m.shared_intermediate_size = f.positive_int_or("shared_expert_intermediate_size", kMaxIntermediateSize, 5632);
  m.renormalize = mixtral || f.boolean_or("norm_topk_prob", false);
  if (mixtral) return;
  // Qwen: layer l is sparse unless listed in mlp_only_layers or (l + 1) % decoder_sparse_step != 0.
  const int64_t step = f.positive_int_or("decoder_sparse_step", kMaxLayers, 1);
  std::vector<int64_t> only;
  if (f.has("mlp_only_layers")) {
    const json& v = f.j["mlp_only_layers"];
    FP6_CHECK(v.is_array(), kBadInput, "{}: field 'mlp_only_layers' must be a list of layer indices, got {}", f.source,
              brief(v));
    for (const json& x : v) {
      FP6_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < c.num_layers, kBadInput,
                "{}: field 'mlp_only_layers' must hold layer indices in [0, {}), got {}", f.source, c.num_layers,
                brief(x));
      only.push_back(x.get<int64_t>());
    }
  }
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (std::find(only.begin(), only.end(), l) != only.end() || (l + 1) % step != 0) m.dense_layers.push_back(l);
}

}  // namespace

ModelConfig ModelConfig::load(const fs::path& dir) {
  const fs::path path = dir / "config.json";
  FP6_CHECK(fs::exists(dir), kNotFound, "model directory {} does not exist", dir.string());
  FP6_CHECK(fs::is_directory(dir), kInvalidArgument, "{} is not a directory: give the model's directory", dir.string());
  FP6_CHECK(fs::exists(path), kNotFound, "{} has no config.json: not a Hugging Face model directory", dir.string());
  return parse(read_file(path), path.string());
}

namespace {

// The config.json fields of the real models (in FP16, as every preset: the benchmarks compare
// FP6 with the FP16 mode).
struct Preset {
  const char* name;
  json fields;
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> table = [] {
    auto llama = [](int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv_heads,
                    int64_t max_pos, double theta) {
      return json{{"model_type", "llama"},
                  {"vocab_size", vocab},
                  {"hidden_size", hidden},
                  {"intermediate_size", inter},
                  {"num_hidden_layers", layers},
                  {"num_attention_heads", heads},
                  {"num_key_value_heads", kv_heads},
                  {"max_position_embeddings", max_pos},
                  {"rms_norm_eps", 1e-5},
                  {"rope_theta", theta},
                  {"torch_dtype", "float16"}};
    };
    std::vector<Preset> t = {{"llama2-7b", llama(32000, 4096, 11008, 32, 32, 32, 4096, 10000)},
                             {"llama2-13b", llama(32000, 5120, 13824, 40, 40, 40, 4096, 10000)},
                             {"llama2-70b", llama(32000, 8192, 28672, 80, 64, 8, 4096, 10000)},
                             {"llama3-8b", llama(128256, 4096, 14336, 32, 32, 8, 8192, 500000)}};
    // mistralai/Mixtral-8x7B-v0.1: 8 experts of Mistral-7B's MLP, top-2.
    json mixtral = llama(32000, 4096, 14336, 32, 32, 8, 32768, 1e6);
    mixtral["model_type"] = "mixtral";
    mixtral["num_local_experts"] = 8;
    mixtral["num_experts_per_tok"] = 2;
    t.push_back({"mixtral-8x7b", mixtral});
    // Qwen/Qwen1.5-MoE-A2.7B: 60 experts of 1408, top-4 (not renormalized), a shared expert of 5632.
    json qwen15 = llama(151936, 2048, 5632, 24, 16, 16, 8192, 1e6);
    qwen15["model_type"] = "qwen2_moe";
    qwen15["rms_norm_eps"] = 1e-6;
    qwen15["moe_intermediate_size"] = 1408;
    qwen15["shared_expert_intermediate_size"] = 5632;
    qwen15["num_experts"] = 60;
    qwen15["num_experts_per_tok"] = 4;
    qwen15["norm_topk_prob"] = false;
    qwen15["tie_word_embeddings"] = false;
    t.push_back({"qwen1.5-moe-a2.7b", qwen15});
    // Qwen/Qwen3-30B-A3B: 128 experts of 768, top-8 (renormalized), q/k norms, head_dim 128.
    json qwen3 = llama(151936, 2048, 6144, 48, 32, 4, 40960, 1e6);
    qwen3["model_type"] = "qwen3_moe";
    qwen3["rms_norm_eps"] = 1e-6;
    qwen3["head_dim"] = 128;
    qwen3["moe_intermediate_size"] = 768;
    qwen3["num_experts"] = 128;
    qwen3["num_experts_per_tok"] = 8;
    qwen3["norm_topk_prob"] = true;
    qwen3["tie_word_embeddings"] = false;
    t.push_back({"qwen3-30b-a3b", qwen3});
    return t;
  }();
  return table;
}

}  // namespace

const std::vector<std::string>& ModelConfig::shape_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const Preset& p : presets()) n.push_back(p.name);
    return n;
  }();
  return names;
}

ModelConfig ModelConfig::shape(const std::string& name) {
  for (const Preset& p : presets())
    if (name == p.name) return parse(p.fields.dump(), name);
  if (fs::is_directory(name)) return load(name);
  std::string list;
  for (const std::string& n : shape_names()) list += (list.empty() ? "" : ", ") + n;
  FP6_CHECK(fs::is_regular_file(name), kInvalidArgument, "'{}' is neither a model shape ({}) nor a config.json", name,
            list);
  return parse(read_file(name), name);
}

namespace {

ModelConfig parse_fields(const std::string& text, const std::string& source) {
  const json j = parse_object(text, source);
  const Fields f{j, source};
  ModelConfig c;
  FP6_CHECK(f.has("model_type") && j["model_type"].is_string(), kBadInput, "{}: field 'model_type' is missing", source);
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type == "llama")
    c.family = Family::kLlama;
  else if (c.model_type == "mistral")
    c.family = Family::kMistral;
  else if (c.model_type == "qwen2")
    c.family = Family::kQwen2;
  else if (c.model_type == "mixtral")
    c.family = Family::kMixtral;
  else if (c.model_type == "qwen2_moe")
    c.family = Family::kQwen2Moe;
  else if (c.model_type == "qwen3_moe")
    c.family = Family::kQwen3Moe;
  else
    FP6_THROW(kUnsupported,
              "{}: model_type '{}' is not supported (supported: llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe)",
              source, c.model_type);

  c.vocab_size = f.positive_int("vocab_size", kMaxVocabSize);
  c.hidden_size = f.positive_int("hidden_size", kMaxHiddenSize);
  c.intermediate_size = f.positive_int("intermediate_size", kMaxIntermediateSize);
  c.num_layers = f.positive_int("num_hidden_layers", kMaxLayers);
  c.num_heads = f.positive_int("num_attention_heads", kMaxHeads);
  c.num_kv_heads = f.positive_int_or("num_key_value_heads", kMaxHeads, c.num_heads);
  FP6_CHECK(c.num_heads % c.num_kv_heads == 0, kBadInput,
            "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source, c.num_heads,
            c.num_kv_heads);
  if (f.has("head_dim")) {
    c.head_dim = f.positive_int("head_dim", kMaxHeadDim);
  } else {
    FP6_CHECK(c.hidden_size % c.num_heads == 0, kBadInput,
              "{}: hidden_size ({}) is not a multiple of num_attention_heads ({}) and head_dim is absent", source,
              c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
    FP6_CHECK(c.head_dim <= kMaxHeadDim, kBadInput,
              "{}: hidden_size / num_attention_heads is {}, a head_dim above the {} any real model has", source,
              c.head_dim, kMaxHeadDim);
  }
  FP6_CHECK(c.head_dim % 2 == 0, kBadInput, "{}: head_dim ({}) must be even for rotary embeddings", source, c.head_dim);
  // transformers' defaults when the field is absent: Mixtral 4096 * 32, the Qwen MoEs 32768.
  const int64_t default_positions = c.family == Family::kMixtral                                     ? 131072
                                    : c.family == Family::kQwen2Moe || c.family == Family::kQwen3Moe ? 32768
                                                                                                     : 4096;
  c.max_position_embeddings = f.positive_int_or("max_position_embeddings", kMaxPositions, default_positions);
  c.rms_norm_eps = f.positive_number_or("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = f.boolean_or("tie_word_embeddings", c.family == Family::kQwen2);
  if (f.has("hidden_act")) {
    FP6_CHECK(j["hidden_act"] == "silu", kUnsupported, "{}: hidden_act {} is not supported (only silu)", source,
              brief(j["hidden_act"]));
  }
  switch (c.family) {
    case Family::kLlama: {
      const bool attention_bias = f.boolean_or("attention_bias", false);
      c.qkv_bias = c.o_bias = attention_bias;
      c.mlp_bias = f.boolean_or("mlp_bias", false);
      break;
    }
    case Family::kMistral:
    case Family::kMixtral:
      break;
    case Family::kQwen2:
      c.qkv_bias = true;
      break;
    case Family::kQwen2Moe:
      c.qkv_bias = f.boolean_or("qkv_bias", true);
      break;
    case Family::kQwen3Moe: {
      const bool attention_bias = f.boolean_or("attention_bias", false);
      c.qkv_bias = c.o_bias = attention_bias;
      c.qk_norm = true;
      break;
    }
  }
  // Mistral v0.1 ships sliding_window 4096; the Qwens ship one but disable it (use_sliding_window).
  bool sliding = true;
  if (c.family == Family::kQwen2 || c.family == Family::kQwen3Moe) sliding = f.boolean_or("use_sliding_window", false);
  if (c.family == Family::kQwen2Moe) {
    // Its window applies to some layers only (layer_types, max_window_layers).
    FP6_CHECK(!f.boolean_or("use_sliding_window", false), kUnsupported,
              "{}: use_sliding_window: qwen2_moe's sliding window covers only some layers, which fp6serve does not "
              "support (only full attention in every layer)",
              source);
    sliding = false;
    if (f.has("layer_types")) {
      FP6_CHECK(j["layer_types"].is_array(), kBadInput, "{}: field 'layer_types' must be a list", source);
      for (const json& t : j["layer_types"])
        FP6_CHECK(t == "full_attention", kUnsupported,
                  "{}: layer_types holds {}: fp6serve supports only full_attention layers for qwen2_moe", source,
                  brief(t));
    }
  }
  if (sliding && f.has("sliding_window")) c.sliding_window = f.positive_int("sliding_window", kMaxPositions);
  if (c.family == Family::kMixtral || c.family == Family::kQwen2Moe || c.family == Family::kQwen3Moe) parse_moe(f, c);
  parse_rope(f, c);
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (f.has(key)) {
      FP6_CHECK(j[key].is_string(), kBadInput, "{}: field '{}' must be a string", source, key);
      const std::string d = j[key].get<std::string>();
      c.dtype = d == "float16" ? DType::kF16 : d == "bfloat16" ? DType::kBF16 : d == "float32" ? DType::kF32 : c.dtype;
      break;
    }
  }
  const auto bos = f.token_ids("bos_token_id", c.vocab_size);
  if (!bos.empty()) c.bos_token_id = bos.front();
  c.eos_token_ids = f.token_ids("eos_token_id", c.vocab_size);
  return c;
}

}  // namespace

ModelConfig ModelConfig::parse(const std::string& text, const std::string& source) {
  return naming_file(source, [&] { return parse_fields(text, source); });
}

std::vector<float> ModelConfig::rope_inv_freq() const {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // As torch: base ** (arange(0, dim, 2).float() / dim) in float32, then its reciprocal.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
  }
  if (rope.type == "linear") {
    for (float& f : inv) f = static_cast<float>(f / rope.factor);
  } else if (rope.type == "llama3") {
    const double pi = 3.14159265358979323846;
    const double low_wavelen = rope.original_max_position / rope.low_freq_factor;
    const double high_wavelen = rope.original_max_position / rope.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2 * pi / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rope.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (rope.original_max_position / wavelen - rope.low_freq_factor) /
                              (rope.high_freq_factor - rope.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / rope.factor + smooth * f);
      }
    }
  }
  return inv;
}

GenerationDefaults GenerationDefaults::load(const fs::path& dir, const ModelConfig& config) {
  GenerationDefaults g;
  const fs::path path = dir / "generation_config.json";
  if (fs::exists(path)) {
    const std::string source = path.string();
    naming_file(source, [&] {
      const json j = parse_object(read_file(path), source);
      const Fields f{j, source};
      g.eos_token_ids = f.token_ids("eos_token_id", config.vocab_size);
      g.do_sample = f.boolean_or("do_sample", false);
      if (f.has("temperature")) {
        FP6_CHECK(j["temperature"].is_number() && j["temperature"].get<double>() >= 0 &&
                      std::isfinite(j["temperature"].get<double>()),
                  kBadInput, "{}: field 'temperature' must be a non-negative number, got {}", source,
                  brief(j["temperature"]));
        g.temperature = j["temperature"].get<double>();
      }
      g.top_p = f.positive_number_or("top_p", 1.0);
      if (f.has("top_k")) {
        FP6_CHECK(j["top_k"].is_number_integer() && j["top_k"].get<int64_t>() >= 0, kBadInput,
                  "{}: field 'top_k' must be a non-negative integer, got {}", source, brief(j["top_k"]));
        g.top_k = j["top_k"].get<int64_t>();
      }
      g.repetition_penalty = f.positive_number_or("repetition_penalty", 1.0);
    });
  }
  for (int32_t id : config.eos_token_ids)
    if (std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), id) == g.eos_token_ids.end())
      g.eos_token_ids.push_back(id);
  return g;
}

}  // namespace fp6serve::model
