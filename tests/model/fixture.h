// Access to the golden fixtures in tests/data (made by Hugging Face transformers): the model
// directories and the arrays of reference.safetensors.
#pragma once

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/half.h"
#include "model/safetensors.h"

namespace fp6serve::testing {

inline const char* kFixtures[] = {"tiny-llama", "tiny-llama2-sp", "tiny-qwen2"};

inline std::string fixture_dir(const std::string& name) { return std::string(FP6SERVE_TEST_DATA) + "/" + name; }

class Reference {
 public:
  explicit Reference(const std::string& name)
      : file_(fixture_dir(name) + "/reference.safetensors") {
    std::ifstream in(fixture_dir(name) + "/reference.json");
    json = nlohmann::json::parse(in);
  }
  bool has(const std::string& key) const { return file_.find(key) != nullptr; }
  std::vector<int64_t> shape(const std::string& key) const { return info(key).shape; }
  std::vector<int32_t> ids(const std::string& key) const {
    const auto& t = info(key);
    std::vector<int32_t> out(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t v;
      std::memcpy(&v, t.data + 8 * i, 8);
      out[i] = static_cast<int32_t>(v);
    }
    return out;
  }
  std::vector<float> floats(const std::string& key) const {
    const auto& t = info(key);
    std::vector<float> out(static_cast<size_t>(t.numel()));
    if (t.dtype == model::StDType::kF32) {
      std::memcpy(out.data(), t.data, t.bytes);
    } else {
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == model::StDType::kF16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
      }
    }
    return out;
  }
  nlohmann::json json;

 private:
  const model::TensorInfo& info(const std::string& key) const {
    const auto* t = file_.find(key);
    if (!t) throw std::runtime_error("reference has no array " + key);
    return *t;
  }
  model::SafetensorsFile file_;
};

}  // namespace fp6serve::testing
