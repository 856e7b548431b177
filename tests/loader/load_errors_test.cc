// Malformed checkpoints and configs: each gives a clear error naming what and where.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "fp6serve/error.h"
#include "tests/support/fixture.h"
#include "transformer/model.h"

namespace fp6serve::loader {
namespace {

namespace fs = std::filesystem;

class LoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fp6serve-load-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const auto& f : fs::directory_iterator(testing::fixture_dir("tiny-llama")))
      if (f.path().filename() != "reference.safetensors" && f.path().filename() != "reference.json")
        fs::copy_file(f.path(), dir_ / f.path().filename());
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    for (const auto& f : fs::directory_iterator(dir_))
      fs::permissions(f.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Loads and returns the error; fails the test when loading succeeds.
  Error load_error() {
    try {
      Model::load(dir_, testing::options(""));
    } catch (const Error& e) {
      return e;
    }
    ADD_FAILURE() << "loading succeeded";
    return Error(ErrorKind::kInternal, "");
  }

  // Rewrites model.safetensors through `edit`, which may change each tensor or drop it.
  void rewrite(const std::function<bool(std::string& name, StDType& dtype, std::vector<int64_t>& shape,
                                        std::vector<uint8_t>& data)>& edit) {
    std::vector<std::tuple<std::string, StDType, std::vector<int64_t>, std::vector<uint8_t>>> kept;
    {
      SafetensorsFile f(dir_ / "model.safetensors");
      for (const auto& [name, t] : f.tensors()) {
        std::string n = name;
        StDType d = t.dtype;
        std::vector<int64_t> s = t.shape;
        std::vector<uint8_t> data(t.data, t.data + t.bytes);
        if (edit(n, d, s, data)) kept.emplace_back(n, d, s, std::move(data));
      }
    }
    SafetensorsWriter w;
    for (auto& [n, d, s, data] : kept) w.add(n, d, s, data.data(), data.size());
    w.write(dir_ / "model.safetensors");
  }

  void write_text(const std::string& file, const std::string& text) { std::ofstream(dir_ / file) << text; }
  std::string read_text(const std::string& file) {
    std::ifstream in(dir_ / file);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  fs::path dir_;
};

void expect_mentions(const Error& e, ErrorKind kind, std::initializer_list<const char*> parts) {
  EXPECT_EQ(e.kind(), kind) << e.what();
  for (const char* p : parts)
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
}

TEST_F(LoadErrors, TheUntouchedCopyLoads) {
  EXPECT_NO_THROW(Model::load(dir_, testing::options("")));
}

TEST_F(LoadErrors, TruncatedFile) {
  const auto path = dir_ / "model.safetensors";
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_mentions(load_error(), ErrorKind::kBadInput, {"model.safetensors", "outside"});
}

TEST_F(LoadErrors, TruncatedHeader) {
  fs::resize_file(dir_ / "model.safetensors", 5);
  expect_mentions(load_error(), ErrorKind::kBadInput, {"model.safetensors", "truncated"});
}

TEST_F(LoadErrors, HeaderLengthBeyondTheFile) {
  std::fstream f(dir_ / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  const uint64_t huge = uint64_t{1} << 40;
  f.write(reinterpret_cast<const char*>(&huge), 8);
  f.close();
  expect_mentions(load_error(), ErrorKind::kBadInput, {"model.safetensors", "header length"});
}

TEST_F(LoadErrors, GarbageHeader) {
  std::fstream f(dir_ / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.write("{not json", 9);
  f.close();
  expect_mentions(load_error(), ErrorKind::kBadInput, {"model.safetensors", "JSON"});
}

TEST_F(LoadErrors, WrongDtype) {
  rewrite([](std::string& n, StDType& d, std::vector<int64_t>& s, std::vector<uint8_t>& data) {
    if (n == "model.layers.1.self_attn.k_proj.weight") d = StDType::kU8, s = {static_cast<int64_t>(data.size())};
    return true;
  });
  expect_mentions(load_error(), ErrorKind::kBadInput, {"model.layers.1.self_attn.k_proj.weight", "U8"});
}

TEST_F(LoadErrors, WrongShape) {
  rewrite([](std::string& n, StDType&, std::vector<int64_t>& s, std::vector<uint8_t>& data) {
    if (n == "model.layers.2.mlp.down_proj.weight") {
      s[1] -= 1;
      data.resize(static_cast<size_t>(s[0] * s[1] * 2));
    }
    return true;
  });
  expect_mentions(load_error(), ErrorKind::kBadInput,
                  {"model.layers.2.mlp.down_proj.weight", "[128, 351]", "[128, 352]"});
}

TEST_F(LoadErrors, MissingTensor) {
  rewrite([](std::string& n, StDType&, std::vector<int64_t>&, std::vector<uint8_t>&) {
    return n != "model.layers.3.post_attention_layernorm.weight";
  });
  expect_mentions(load_error(), ErrorKind::kNotFound, {"model.layers.3.post_attention_layernorm.weight", "missing"});
}

TEST_F(LoadErrors, MissingCheckpoint) {
  fs::remove(dir_ / "model.safetensors");
  expect_mentions(load_error(), ErrorKind::kNotFound, {"model.safetensors"});
}

TEST_F(LoadErrors, BadJsonConfig) {
  const std::string text = read_text("config.json");
  write_text("config.json", text.substr(0, text.size() / 2));
  expect_mentions(load_error(), ErrorKind::kBadInput, {"config.json", "malformed JSON"});
}

TEST_F(LoadErrors, UnknownModelType) {
  std::string text = read_text("config.json");
  text.replace(text.find("\"llama\""), 7, "\"gpt_neox\"");
  write_text("config.json", text);
  expect_mentions(load_error(), ErrorKind::kUnsupported, {"gpt_neox", "llama, mistral, qwen2"});
}

TEST_F(LoadErrors, BadConfigField) {
  std::string text = read_text("config.json");
  text.replace(text.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
  write_text("config.json", text);
  expect_mentions(load_error(), ErrorKind::kBadInput, {"config.json", "num_key_value_heads"});
  text.replace(text.find("\"num_key_value_heads\": 3"), 24, "\"num_key_value_heads\": 2");
  text.replace(text.find("\"hidden_size\": 128"), 18, "\"hidden_size\": \"x\"");
  write_text("config.json", text);
  expect_mentions(load_error(), ErrorKind::kBadInput, {"config.json", "hidden_size", "positive integer"});
}

TEST_F(LoadErrors, UnsupportedRope) {
  std::string text = read_text("config.json");
  text.replace(text.find("\"default\""), 9, "\"yarn\"");
  write_text("config.json", text);
  expect_mentions(load_error(), ErrorKind::kUnsupported, {"rope_type", "yarn"});
}

}  // namespace
}  // namespace fp6serve::loader
