// fp6serve quantize's output loads without quantizing again and computes the same logits.
#include "loader/prequantized.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>

#include "fp6serve/error.h"
#include "tests/support/fixture.h"
#include "transformer/model.h"

namespace fp6serve::loader {
namespace {

namespace fs = std::filesystem;

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& ids) {
  KvCache cache = m.make_kv_cache(16, 16);
  std::vector<int32_t> table(16);
  std::iota(table.begin(), table.end(), 0);
  Batch b;
  b.add(ids.data(), static_cast<int64_t>(ids.size()), 0, table, true, true);
  const Tensor l = m.forward(b, cache);
  return {l.data_as<float>(), l.data_as<float>() + l.numel()};
}

// Rewrites a prequantized model.safetensors with the metadata JSON `original` edited by `edit`.
void rewrite_metadata(const fs::path& file, const std::string& original,
                      const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json meta = nlohmann::json::parse(original);
  edit(meta);
  std::vector<std::tuple<std::string, StDType, std::vector<int64_t>, std::vector<uint8_t>>> kept;
  {
    SafetensorsFile f(file);
    for (const auto& [name, t] : f.tensors())
      kept.emplace_back(name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.bytes));
  }
  SafetensorsWriter w;
  for (auto& [n, d, shape, data] : kept) w.add(n, d, shape, data.data(), data.size());
  w.set_metadata(kPrequantizedKey, meta.dump());
  w.write(file);
}

std::string metadata_of(const fs::path& file) {
  SafetensorsFile f(file);
  return f.metadata().at(kPrequantizedKey);
}

TEST(Prequantized, RoundTripGivesIdenticalLogits) {
  for (const char* name : testing::kFixtures) {
    for (bool quantize_head : {false, true}) {
      const fs::path out = fs::temp_directory_path() / ("fp6serve-preq-" + std::to_string(::getpid()) + name);
      fs::remove_all(out);
      Options o = testing::options("wf6af16");
      o.quantize_lm_head = quantize_head;
      write_prequantized(testing::fixture_dir(name), out,
                         {model::QuantizationMode::parse("wf6af16"), quantize_head, DType::kF16, false});
      for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
        EXPECT_TRUE(fs::exists(out / f)) << f;
      // Smaller than the FP16 original (much smaller once the model is not dominated by the
      // embedding table).
      EXPECT_LT(fs::file_size(out / "model.safetensors"),
                fs::file_size(fs::path(testing::fixture_dir(name)) / "model.safetensors"));

      auto direct = Model::load(testing::fixture_dir(name), o);
      auto loaded = Model::load(out, o);
      const auto ids = testing::Reference(name).ids("input_ids_2");
      EXPECT_EQ(logits_of(*direct, ids), logits_of(*loaded, ids)) << name;
      EXPECT_EQ(loaded->weights().lm_head->quantized, quantize_head);

      // Naming no mode loads the stored one; asking for another is an error.
      Options unnamed = o;
      unnamed.quantization_mode.clear();
      EXPECT_EQ(Model::load(out, unnamed)->quantization().name, "wf6af16");
      Options other = o;
      other.quantization_mode = "wf4af16";
      try {
        Model::load(out, other);
        ADD_FAILURE() << "loaded a wf6af16 checkpoint as wf4af16";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("prequantized as wf6af16"), std::string::npos) << e.what();
      }
      fs::remove_all(out);
    }
  }
}

TEST(Prequantized, RefusesToOverwriteItsInputOrQuantizeUnquantizedModes) {
  LinearSpec spec{model::QuantizationMode::parse("wf6af16"), false, DType::kF16, false};
  EXPECT_THROW(write_prequantized(testing::fixture_dir("tiny-llama"), testing::fixture_dir("tiny-llama"), spec), Error);
  spec.mode = model::QuantizationMode::parse("fp16");
  EXPECT_THROW(write_prequantized(testing::fixture_dir("tiny-llama"), "/tmp/x-never", spec), Error);
}

// The "fp6serve" metadata read with nlohmann's value(), so a field of the wrong type escaped
// as "[json.exception.type_error.302] type must be boolean" naming nothing.
TEST(Prequantized, MetadataOfTheWrongTypeNamesTheFileAndTheField) {
  const fs::path out = fs::temp_directory_path() / ("fp6serve-preq-meta-" + std::to_string(::getpid()));
  fs::remove_all(out);
  write_prequantized(testing::fixture_dir("tiny-qwen2"), out,
                     {model::QuantizationMode::parse("wf6af16"), false, DType::kF16, false});
  const fs::path file = out / "model.safetensors";
  const std::string original = [&] {
    SafetensorsFile f(file);
    return f.metadata().at(kPrequantizedKey);
  }();
  auto rewrite = [&](const std::function<void(nlohmann::json&)>& edit) { rewrite_metadata(file, original, edit); };
  const std::string qkv = "model.layers.0.self_attn.qkv_proj";
  const std::pair<std::function<void(nlohmann::json&)>, std::string> cases[] = {
      {[](auto& m) { m["version"] = "1"; }, "version"},
      {[](auto& m) { m["mode"] = 6; }, "mode"},
      {[](auto& m) { m["mode"] = "int3"; }, "int3"},
      {[](auto& m) { m["target"] = true; }, "target"},
      {[](auto& m) { m["target"] = "f8"; }, "f8"},
      {[](auto& m) { m["linears"] = "all"; }, "linears"},
      {[&](auto& m) { m["linears"][qkv] = 5; }, qkv},
      {[&](auto& m) { m["linears"][qkv]["quantized"] = "yes"; }, qkv + "'].quantized"},
      {[&](auto& m) { m["linears"][qkv]["bias"] = 1; }, qkv + "'].bias"},
      {[&](auto& m) { m["linears"][qkv]["rows"] = "16"; }, qkv + "'].rows"},
      {[&](auto& m) { m["linears"][qkv]["format"] = 6; }, qkv + "'].format"},
      {[&](auto& m) { m["linears"][qkv].erase("format"); }, qkv + "'].format"},
      {[&](auto& m) { m["linears"][qkv]["format"] = "e9m9"; }, "e9m9"},
      {[&](auto& m) { m["linears"][qkv]["format"] = "e2m2"; }, qkv + "' is e2m2"},  // not an FP6 format
  };
  for (const auto& [edit, field] : cases) {
    rewrite(edit);
    try {
      Model::load(out, testing::options(""));
      ADD_FAILURE() << field << ": loaded";
    } catch (const Error& e) {
      EXPECT_TRUE(e.kind() == ErrorKind::kBadInput || e.kind() == ErrorKind::kUnsupported) << e.what();
      for (const std::string& part : {file.string(), field})
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "'" << part << "' not in: " << e.what();
    }
  }
  rewrite([](auto&) {});
  EXPECT_NO_THROW(Model::load(out, testing::options("")));
  fs::remove_all(out);
}

// wf6af16 quantizes each linear layer in e2m3 or e3m2, whichever has the least squared error
// (fpx::best_format). A copy of tiny-llama (random Gaussian weights: e2m3 everywhere) whose
// layer 1 o_proj has a 50-sigma outlier in every row: that layer alone is e3m2. The formats
// are stored per layer, the file loads to the same logits as the direct load, and the mixed
// model differs from both one-format models.
TEST(Prequantized, Fp6FormatIsChosenPerLayerAndStoredPerLayer) {
  const fs::path dir = fs::temp_directory_path() / ("fp6serve-mixed-" + std::to_string(::getpid()));
  const fs::path out = dir.string() + "-fp6";
  fs::remove_all(dir);
  fs::remove_all(out);
  fs::create_directories(dir);
  const fs::path src = testing::fixture_dir("tiny-llama");
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    if (fs::exists(src / f)) fs::copy_file(src / f, dir / f);
  const std::string outlier_layer = "model.layers.1.self_attn.o_proj";
  {
    SafetensorsFile whole(src / "model.safetensors");
    std::vector<std::vector<uint8_t>> keep;
    SafetensorsWriter w;
    for (const auto& [name, t] : whole.tensors()) {
      keep.emplace_back(t.data, t.data + t.bytes);
      if (name == outlier_layer + ".weight") {
        ASSERT_EQ(t.dtype, StDType::kF16);
        const int64_t rows = t.shape[0], cols = t.shape[1];
        for (int64_t r = 0; r < rows; ++r) {
          const uint16_t big = f32_to_f16_bits(r % 2 ? 1.0f : -1.0f);
          std::memcpy(keep.back().data() + 2 * (r * cols + (r * 5) % cols), &big, 2);
        }
      }
      w.add(name, t.dtype, t.shape, keep.back().data(), keep.back().size());
    }
    w.write(dir / "model.safetensors");
  }
  write_prequantized(dir, out, {model::QuantizationMode::parse("wf6af16"), false, DType::kF16, false});
  const nlohmann::json meta = nlohmann::json::parse(metadata_of(out / "model.safetensors"));
  EXPECT_EQ(meta["version"], kPrequantizedVersion);
  EXPECT_EQ(meta["format"], "e2m3|e3m2");
  int layers = 0;
  for (const auto& [name, info] : meta["linears"].items()) {
    if (!info["quantized"].get<bool>()) continue;
    ++layers;
    EXPECT_EQ(info["format"], name == outlier_layer ? "e3m2" : "e2m3") << name;
  }
  EXPECT_GE(layers, 8);
  const auto ids = testing::Reference("tiny-llama").ids("input_ids_2");
  const auto direct = logits_of(*Model::load(dir, testing::options("wf6af16")), ids);
  EXPECT_EQ(logits_of(*Model::load(out, testing::options("")), ids), direct);
  EXPECT_NE(logits_of(*Model::load(dir, testing::options("e2m3")), ids), direct);
  EXPECT_NE(logits_of(*Model::load(dir, testing::options("e3m2")), ids), direct);
  fs::remove_all(dir);
  fs::remove_all(out);
}

// Version 1 files (before per-layer formats) have one format, the metadata's "format"; their
// wf6af16 meant e3m2 in every layer, and still loads so.
TEST(Prequantized, Version1FilesLoadInTheirOneFormat) {
  const fs::path out = fs::temp_directory_path() / ("fp6serve-preq-v1-" + std::to_string(::getpid()));
  fs::remove_all(out);
  write_prequantized(testing::fixture_dir("tiny-qwen2"), out,
                     {model::QuantizationMode::parse("e3m2"), false, DType::kF16, false});
  const fs::path file = out / "model.safetensors";
  rewrite_metadata(file, metadata_of(file), [](nlohmann::json& m) {
    m["version"] = 1;
    m["mode"] = "wf6af16";
    m["format"] = "e3m2";
    for (auto& [name, info] : m["linears"].items()) info.erase("format");
  });
  auto loaded = Model::load(out, testing::options(""));
  EXPECT_EQ(loaded->quantization().name, "wf6af16");
  const auto ids = testing::Reference("tiny-qwen2").ids("input_ids_2");
  EXPECT_EQ(logits_of(*loaded, ids),
            logits_of(*Model::load(testing::fixture_dir("tiny-qwen2"), testing::options("e3m2")), ids));
  fs::remove_all(out);
}

}  // namespace
}  // namespace fp6serve::loader

namespace fp6serve::loader {
namespace {

// A checkpoint split over two shards with model.safetensors.index.json loads like the single file.
TEST(Checkpoint, ShardedFilesLoadLikeOne) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("fp6serve-sharded-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string src = testing::fixture_dir("tiny-qwen2");
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    fs::copy_file(fs::path(src) / f, dir / f);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  {
    SafetensorsFile whole(fs::path(src) / "model.safetensors");
    SafetensorsWriter a, b;
    int i = 0;
    for (const auto& [name, t] : whole.tensors()) {
      const bool first = i++ % 2 == 0;
      (first ? a : b).add(name, t.dtype, t.shape, t.data, t.bytes);
      index["weight_map"][name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    a.write(dir / "model-00001-of-00002.safetensors");
    b.write(dir / "model-00002-of-00002.safetensors");
  }
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  const Options o = testing::options("");
  const auto ids = testing::Reference("tiny-qwen2").ids("input_ids_2");
  auto whole = Model::load(src, o);
  auto sharded = Model::load(dir, o);
  EXPECT_EQ(logits_of(*whole, ids), logits_of(*sharded, ids));
  // An index naming a shard that does not hold the tensor is an error naming both.
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  index["weight_map"]["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  try {
    Model::load(dir, o);
    ADD_FAILURE() << "a wrong weight_map was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not hold it"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fp6serve::loader
