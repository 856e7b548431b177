// tokenizer.json against the Hugging Face tokenizers library's own outputs (tests/data).
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fp6serve/error.h"
#include "tests/support/fixture.h"
#include "tokenizer/unicode.h"

namespace fp6serve {
namespace {

using testing::fixture_dir;

nlohmann::json reference(const std::string& name) {
  std::ifstream in(fixture_dir(name) + "/reference.json");
  return nlohmann::json::parse(in);
}

bool valid_utf8(const std::string& s) {
  return text::utf8_lossy(s) == s;
}

class TokenizerFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerFixture, IdsEqualTheReferenceWithAndWithoutSpecialTokens) {
  const Tokenizer tok = Tokenizer::load(fixture_dir(GetParam()));
  const auto ref = reference(GetParam());
  int checked = 0;
  for (const auto& t : ref["tokenization"]) {
    const std::string text = t["text"];
    EXPECT_EQ(tok.encode(text, true), t["ids_with_special"].get<std::vector<int32_t>>()) << t["name"];
    EXPECT_EQ(tok.encode(text, false), t["ids_no_special"].get<std::vector<int32_t>>()) << t["name"];
    ++checked;
  }
  EXPECT_GE(checked, 40);
  const auto& chat = ref["chat_template"];
  EXPECT_EQ(tok.encode(chat["text"].get<std::string>(), false), chat["ids"].get<std::vector<int32_t>>());
}

TEST_P(TokenizerFixture, DecodeEqualsTheReferenceTexts) {
  const Tokenizer tok = Tokenizer::load(fixture_dir(GetParam()));
  for (const auto& t : reference(GetParam())["tokenization"]) {
    const auto ids = t["ids_with_special"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids, false), t["decode_with_special"].get<std::string>()) << t["name"];
    EXPECT_EQ(tok.decode(ids, true), t["decode_skip_special"].get<std::string>()) << t["name"];
    EXPECT_EQ(tok.decode(t["ids_no_special"].get<std::vector<int32_t>>(), false),
              t["decode_no_special"].get<std::string>())
        << t["name"];
  }
}

TEST_P(TokenizerFixture, IncrementalDecodingEqualsDecodeAndIsAlwaysValidUtf8) {
  const Tokenizer tok = Tokenizer::load(fixture_dir(GetParam()));
  for (const auto& t : reference(GetParam())["tokenization"]) {
    const auto ids = t["ids_with_special"].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      IncrementalDecoder dec(tok, skip);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string piece = dec.push(id);
        EXPECT_TRUE(valid_utf8(piece)) << t["name"];
        streamed += piece;
      }
      streamed += dec.flush();
      EXPECT_EQ(streamed, tok.decode(ids, skip)) << t["name"] << " skip=" << skip;
    }
  }
}

TEST_P(TokenizerFixture, SpecialTokensAndVocabulary) {
  const Tokenizer tok = Tokenizer::load(fixture_dir(GetParam()));
  const auto ref = reference(GetParam());
  const auto& st = ref["special_tokens"];
  if (!st["bos"][0].is_null()) {
    EXPECT_EQ(tok.bos_token(), st["bos"][0].get<std::string>());
    EXPECT_EQ(tok.bos_id(), st["bos"][1].get<int32_t>());
    EXPECT_TRUE(tok.is_special(*tok.bos_id()));
  }
  EXPECT_EQ(tok.vocab_size(), ref["tokenizer_size"].get<int32_t>());
  EXPECT_FALSE(tok.chat_template().empty());
  EXPECT_THROW(tok.id_to_token(tok.vocab_size()), Error);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{-1, tok.vocab_size() + 5}), "");
}

INSTANTIATE_TEST_SUITE_P(Hf, TokenizerFixture, ::testing::Values("tiny-llama", "tiny-llama2-sp", "tiny-qwen2"));

TEST(Tokenizer, ByteFallbackHoldsBackIncompleteCharactersWhileStreaming) {
  const Tokenizer tok = Tokenizer::load(fixture_dir("tiny-llama2-sp"));
  const auto ids = tok.encode("€ ok", false);  // the euro sign is three <0x..> byte tokens here
  IncrementalDecoder dec(tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(dec.push(id));
  pieces.push_back(dec.flush());
  std::string all;
  for (const auto& p : pieces) {
    EXPECT_TRUE(valid_utf8(p));
    all += p;
  }
  EXPECT_EQ(all, "€ ok");
}

TEST(Tokenizer, MalformedFilesNameTheProblem) {
  const std::string good = [] {
    std::ifstream in(fixture_dir("tiny-llama") + "/tokenizer.json");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }();
  auto expect = [&](const std::string& json, ErrorKind kind, const char* what) {
    try {
      Tokenizer::parse(json, "", "tokenizer.json");
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect(good.substr(0, good.size() / 2), ErrorKind::kBadInput, "malformed JSON");
  auto edit = [&](const std::function<void(nlohmann::json&)>& f) {
    auto j = nlohmann::json::parse(good);
    f(j);
    return j.dump();
  };
  expect(edit([](auto& j) { j["model"]["type"] = "WordPiece"; }), ErrorKind::kUnsupported, "WordPiece");
  expect(edit([](auto& j) { j["normalizer"] = {{"type", "BertNormalizer"}}; }), ErrorKind::kUnsupported, "normalizer");
  expect(edit([](auto& j) {
           j["pre_tokenizer"] = {{"type", "Whitespace"}};
         }),
         ErrorKind::kUnsupported, "pre_tokenizer");
  expect(edit([](auto& j) { j["decoder"] = {{"type", "WordPiece"}}; }), ErrorKind::kUnsupported, "decoder");
  expect(edit([](auto& j) { j["model"].erase("vocab"); }), ErrorKind::kBadInput, "model.vocab");
  expect(edit([](auto& j) { j["model"]["merges"][0] = "nonexistent tokens"; }), ErrorKind::kBadInput, "merge 0");
  EXPECT_THROW(Tokenizer::load("/nonexistent-dir"), Error);
}

TEST(Tokenizer, LongTextsEncodeQuickly) {
  const Tokenizer tok = Tokenizer::load(fixture_dir("tiny-llama"));
  std::string text;
  while (text.size() < 20000) text += "The quick brown fox jumps over the lazy dog, 12345 times. ";
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(tok.decode(ids, true), text);
  std::printf("encoded %zu bytes into %zu tokens in %.1f ms\n", text.size(), ids.size(), ms);
  EXPECT_LT(ms, 500.0);
}

}  // namespace
}  // namespace fp6serve
