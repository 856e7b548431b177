// Seeded random mutations of the fixture checkpoints' files (model.safetensors' header,
// config.json, generation_config.json, tokenizer.json, tokenizer_config.json): whatever a
// mutation does, loading either succeeds or fails with an fp6serve::Error whose message names
// the file, never another exception type or a message that says nothing of where.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "fp6serve/error.h"
#include "loader/hf_weights.h"
#include "loader/safetensors.h"
#include "model/config.h"
#include "tests/support/fixture.h"
#include "tokenizer/tokenizer.h"
#include "transformer/model.h"

namespace fp6serve::loader {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A safetensors file split into its header JSON and its data.
struct StFile {
  std::string header;
  std::string data;

  explicit StFile(const std::string& bytes) {
    uint64_t len = 0;
    for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
    header = bytes.substr(8, len);
    data = bytes.substr(8 + len);
  }
  // The file with `h` as its header, padded to 8 bytes as writers do.
  std::string with_header(std::string h) const {
    h.append((8 - h.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i)
      out[static_cast<size_t>(i)] = static_cast<char>(static_cast<uint64_t>(h.size()) >> (8 * i));
    return out + h + data;
  }
};

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  // One mutation somewhere in `root`: a value replaced by one of another type or an extreme
  // one, a member removed or added, an element dropped or duplicated.
  void mutate(json& root) {
    json* parent = nullptr;
    json* node = &root;
    std::string key;
    // Walk down, stopping at each level with probability 1/4: top-level fields and the
    // entries below them both get their share, not only the thousand vocabulary entries.
    while ((node->is_object() || node->is_array()) && !node->empty() && below(4) != 0) {
      parent = node;
      const size_t k = below(node->size());
      if (node->is_object()) {
        auto it = node->begin();
        std::advance(it, static_cast<std::ptrdiff_t>(k));
        key = it.key();
        node = &it.value();
      } else {
        key.clear();
        node = &(*node)[k];
      }
    }
    switch (below(6)) {
      case 0:
        if (parent && parent->is_object()) {
          parent->erase(key);
          return;
        }
        [[fallthrough]];
      case 1:
        if (node->is_array() && !node->empty()) {
          if (below(2))
            node->erase(below(node->size()));
          else
            node->push_back((*node)[below(node->size())]);
          return;
        }
        [[fallthrough]];
      case 2:
        if (node->is_object()) {
          (*node)[pick(kKeys)] = random_value();
          return;
        }
        [[fallthrough]];
      default:
        *node = random_value();
    }
  }

  // Byte-level damage to a text: truncation, a byte replaced, a byte inserted.
  void damage(std::string& text) {
    if (text.empty()) return;
    const size_t at = below(text.size());
    switch (below(3)) {
      case 0:
        text.resize(at);
        break;
      case 1:
        text[at] = static_cast<char>(below(256));
        break;
      default:
        text.insert(at, 1, "{}[]\",:0\\"[below(9)]);
    }
  }

 private:
  static constexpr const char* kKeys[] = {"type",           "vocab",          "merges",
                                          "dtype",          "shape",          "data_offsets",
                                          "__metadata__",   "pattern",        "behavior",
                                          "replacement",    "prepend_scheme", "special_tokens",
                                          "single",         "content",        "id",
                                          "rope_type",      "factor",         "head_dim",
                                          "sliding_window", "rope_scaling",   "num_key_value_heads",
                                          "start",          "stop",           "chat_template",
                                          "decoders",       "pretokenizers",  "normalizers",
                                          "processors",     "byte_fallback",  "unk_token"};

  template <size_t N>
  std::string pick(const char* const (&list)[N]) {
    return list[below(N)];
  }

  json random_value() {
    static constexpr int64_t kInts[] = {
        0,         1,        -1,         2,          3,          7,        255,       1023,
        1024,      1 << 24,  2147483647, 2147483648, 4294967296, 10000000, 200000000, int64_t{1} << 53,
        INT64_MAX, INT64_MIN};
    static constexpr double kFloats[] = {0.5, -1.5, 3.0, 1e300, -1e300, 1e-300};
    static constexpr const char* kStrings[] = {"",
                                               "x",
                                               "(",
                                               "[z-a]",
                                               "\\p{L}+",
                                               "F16",
                                               "BF16",
                                               "F32",
                                               "U8",
                                               "I64",
                                               "BOOL",
                                               "F8_E4M3",
                                               "llama",
                                               "qwen2",
                                               "mistral",
                                               "gpt2",
                                               "silu",
                                               "gelu",
                                               "float16",
                                               "bfloat16",
                                               "default",
                                               "linear",
                                               "llama3",
                                               "yarn",
                                               "BPE",
                                               "Split",
                                               "Metaspace",
                                               "ByteLevel",
                                               "Sequence",
                                               "Replace",
                                               "Strip",
                                               "NFC",
                                               "Prepend",
                                               "Digits",
                                               "Fuse",
                                               "ByteFallback",
                                               "TemplateProcessing",
                                               "BertProcessing",
                                               "Isolated",
                                               "Removed",
                                               "MergedWithNext",
                                               "Contiguous",
                                               "first",
                                               "never",
                                               "always",
                                               "<s>",
                                               "\xE2\x96\x81",
                                               "ab"};
    switch (below(8)) {
      case 0:
        return nullptr;
      case 1:
        return below(2) == 1;
      case 2:
        return kInts[below(std::size(kInts))];
      case 3:
        return below(2) ? json(UINT64_MAX) : json(kFloats[below(std::size(kFloats))]);
      case 4:
      case 5:
        return kStrings[below(std::size(kStrings))];
      case 6:
        return below(2) ? json::array() : json::array({kInts[below(4)], kStrings[below(6)]});
      default:
        return below(2) ? json::object() : json{{pick(kKeys), kInts[below(4)]}};
    }
  }

  std::mt19937_64 rng_;
};

// Loads everything a model directory holds as the server does, short of the backend:
// config, generation defaults, checkpoint (validated against the config), tokenizer; then
// uses the tokenizer.
void load_everything(const fs::path& dir) {
  const model::ModelConfig config = model::ModelConfig::load(dir);
  model::GenerationDefaults::load(dir, config);
  const Checkpoint ckpt(dir);
  validate_checkpoint(ckpt, config);
  const Tokenizer tok = Tokenizer::load(dir);
  try {
    const auto ids = tok.encode("Hello, world! 12345 \xE2\x82\xAC \xff\xfe <s>", true);
    tok.decode(ids, false);
    tok.decode(std::vector<int32_t>{0, 1, 5, 1019, 1020, -1, 1 << 30}, true);
  } catch (const Error&) {
    // A mutated vocabulary may be unable to encode the text (no unk token): an Error is fine.
  }
}

struct Outcome {
  int loaded = 0, rejected = 0;
};

// `mutations` mutations of `file` in a copy of fixture `name`; every failure must be an Error
// naming `file` (or, for config.json, the file it no longer matches).
Outcome mutate_file(const std::string& name, const std::string& file, int mutations, uint64_t seed) {
  const fs::path dir = fs::temp_directory_path() /
                       ("fp6serve-mutate-" + std::to_string(::getpid()) + "-" + name + "-" + std::to_string(seed));
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f :
       {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(fs::path(testing::fixture_dir(name)) / f, dir / f);
  const std::string original = read_text(dir / file);
  const bool safetensors = file == "model.safetensors";
  const std::optional<StFile> st = safetensors ? std::optional<StFile>(StFile(original)) : std::nullopt;
  Mutator m(seed);
  Outcome out;
  for (int i = 0; i < mutations; ++i) {
    std::string text;
    if (m.below(8) == 0) {  // raw damage to the JSON text (or the safetensors header)
      text = safetensors ? st->header : original;
      m.damage(text);
      if (safetensors) text = st->with_header(text);
    } else {
      json j = json::parse(safetensors ? st->header : original);
      m.mutate(j);
      text = safetensors ? st->with_header(j.dump()) : j.dump(2);
    }
    write_text(dir / file, text);
    const std::string what = file + " mutation " + std::to_string(i) + " (seed " + std::to_string(seed) +
                             "): " + text.substr(safetensors ? 8 : 0, 300);
    try {
      load_everything(dir);
      // What validation let through is read too: the weights at their (mutated) offsets.
      if (safetensors || file == "config.json") Model::load(dir, testing::options("fp32"));
      ++out.loaded;
    } catch (const Error& e) {
      ++out.rejected;
      const std::string message = e.what();
      // A config.json that no longer matches the checkpoint or generation_config.json's token
      // ids is found out in those files.
      auto names = [&](const char* f) { return message.find((dir / f).string()) != std::string::npos; };
      const bool names_file = names(file.c_str()) || (file == "config.json" &&
                                                      (names("model.safetensors") || names("generation_config.json")));
      EXPECT_TRUE(names_file) << "the error does not name " << file << ": " << message << "\n  " << what;
      EXPECT_TRUE(e.kind() == ErrorKind::kBadInput || e.kind() == ErrorKind::kUnsupported ||
                  e.kind() == ErrorKind::kNotFound)
          << error_kind_name(e.kind()) << ": " << message << "\n  " << what;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an fp6serve::Error: " << e.what() << "\n  " << what;
    }
  }
  fs::remove_all(dir);
  return out;
}

TEST(Mutation, EveryFailureIsAnErrorNamingTheFile) {
  const auto start = std::chrono::steady_clock::now();
  const std::pair<const char*, int> files[] = {{"model.safetensors", 80},
                                               {"config.json", 80},
                                               {"generation_config.json", 30},
                                               {"tokenizer.json", 60},
                                               {"tokenizer_config.json", 30}};
  uint64_t seed = 1;
  for (const char* name : testing::kFixtures) {
    for (const auto& [file, n] : files) {
      const Outcome o = mutate_file(name, file, n, seed++);
      std::printf("%-15s %-23s %3d rejected, %3d loaded\n", name, file, o.rejected, o.loaded);
      // Most mutations break something; a run where none does mutated nothing.
      EXPECT_GT(o.rejected, 0) << name << " " << file;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.2f s\n", s);
}

}  // namespace
}  // namespace fp6serve::loader
