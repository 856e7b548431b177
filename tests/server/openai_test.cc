// The OpenAI API surface without HTTP (src/server/openai.h): request parsing and validation, and the response JSON.
#include "server/openai.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "engine/service.h"
#include "tests/support/fixture.h"
#include "tests/support/random.h"
#include "tokenizer/unicode.h"

namespace fp6serve::server {
namespace {

using json = nlohmann::ordered_json;
using ::testing::HasSubstr;
using Ids = std::vector<std::vector<int32_t>>;

const std::string kModel = "tiny";
constexpr int64_t kMaxModelLen = 512;  // less than the fixture's 2048, so the chat default must come from the engine

// One Service (the tiny fixture on the CPU in FP32) and its chat template for the whole program.
class ServiceEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    Options o = testing::options("fp32");
    o.max_model_len = kMaxModelLen;
    o.kv_cache_blocks = 64;
    service = std::make_unique<Service>(testing::fixture_dir("tiny-llama"), o);
    chat_template = std::make_unique<ChatTemplate>(service->tokenizer().chat_template());
  }
  void TearDown() override {
    chat_template.reset();
    service.reset();
  }
  static inline std::unique_ptr<Service> service;
  static inline std::unique_ptr<ChatTemplate> chat_template;
};
[[maybe_unused]] const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new ServiceEnvironment);

const Service& service() {
  return *ServiceEnvironment::service;
}
const Tokenizer& tok() {
  return service().tokenizer();
}
const ChatTemplate& chat_template() {
  return *ServiceEnvironment::chat_template;
}
ApiContext context(const ChatTemplate* t = ServiceEnvironment::chat_template.get()) {
  return {service(), kModel, t};
}

ParsedRequest parse(const json& body, bool chat) {
  return parse_request(body, chat, context());
}

// The error parse_request throws for `body`: status 0 when it accepted the body, -1 when it threw
// something that is not an ApiError (the server would answer 500).
ApiError error_of(const json& body, bool chat, const ApiContext& ctx) {
  try {
    parse_request(body, chat, ctx);
  } catch (const ApiError& e) {
    return e;
  } catch (const std::exception& e) {
    return ApiError(-1, std::string("not an ApiError: ") + e.what());
  }
  return ApiError(0, "accepted");
}
ApiError error_of(const json& body, bool chat) {
  return error_of(body, chat, context());
}

json completion(json extra = json::object()) {
  json b = {{"model", kModel}, {"prompt", "Hello world"}};
  b.update(extra);
  return b;
}
json chat_body(json extra = json::object()) {
  json b = {{"model", kModel}, {"messages", {{{"role", "user"}, {"content", "Hello world"}}}}};
  b.update(extra);
  return b;
}
json body_for(bool chat, json extra = json::object()) {
  return chat ? chat_body(extra) : completion(extra);
}

#define EXPECT_400(body, chat, field)                                 \
  do {                                                                \
    const json b_ = (body);                                           \
    const ApiError e_ = error_of(b_, (chat));                         \
    EXPECT_EQ(e_.status, 400) << b_.dump() << " -> " << e_.what();    \
    EXPECT_EQ(e_.param, (field)) << b_.dump() << " -> " << e_.what(); \
    EXPECT_EQ(e_.type, "invalid_request_error") << b_.dump();         \
    EXPECT_EQ(e_.code, "") << b_.dump();                              \
  } while (0)

#define EXPECT_ACCEPTED(body, chat)                              \
  do {                                                           \
    const json b_ = (body);                                      \
    const ApiError e_ = error_of(b_, (chat));                    \
    EXPECT_EQ(e_.status, 0) << b_.dump() << " -> " << e_.what(); \
  } while (0)

std::string token_text(int32_t id) {
  return tok().decode(std::vector<int32_t>{id}, false);
}

// ---------------------------------------------------------------------------------------------
// Requests: the typed fields

TEST(OpenAiRequest, CompletionDefaults) {
  for (const json& body : {completion(), completion({{"model", nullptr}}),
                           json{{"prompt", "Hello world"}}}) {  // the model may be left out
    const ParsedRequest r = parse(body, false);
    EXPECT_FALSE(r.chat);
    ASSERT_EQ(r.prompts, Ids{tok().encode("Hello world", true)});
    EXPECT_EQ(r.n, 1);
    EXPECT_FALSE(r.stream);
    EXPECT_FALSE(r.include_usage);
    EXPECT_FALSE(r.logprobs);
    EXPECT_EQ(r.length_param, "prompt");
    const GenerateOptions& g = r.options;
    EXPECT_EQ(g.max_new_tokens, 16);  // OpenAI's default for completions
    EXPECT_FALSE(g.temperature);
    EXPECT_FALSE(g.top_p);
    EXPECT_FALSE(g.top_k);
    EXPECT_FALSE(g.min_p);
    EXPECT_FALSE(g.repetition_penalty);
    EXPECT_EQ(g.presence_penalty, 0.0);
    EXPECT_EQ(g.frequency_penalty, 0.0);
    EXPECT_FALSE(g.seed);
    EXPECT_TRUE(g.stop.empty());
    EXPECT_FALSE(g.ignore_eos);
    EXPECT_EQ(g.top_logprobs, -1);
  }
}

TEST(OpenAiRequest, ChatDefaultsToTheRestOfTheContext) {
  ASSERT_EQ(service().engine().max_model_len(), kMaxModelLen);
  const ParsedRequest r = parse(chat_body(), true);
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.options.max_new_tokens, kMaxModelLen - static_cast<int64_t>(r.prompts[0].size()));
  EXPECT_EQ(r.length_param, "messages");
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, -1);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);

  // A conversation longer than the context still asks for one token: the engine then reports
  // the context error, naming "messages".
  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += " word";
  const ParsedRequest big = parse(chat_body({{"messages", {{{"role", "user"}, {"content", long_text}}}}}), true);
  ASSERT_GT(static_cast<int64_t>(big.prompts[0].size()), kMaxModelLen);
  EXPECT_EQ(big.options.max_new_tokens, 1);
  EXPECT_EQ(big.length_param, "messages");
}

TEST(OpenAiRequest, EveryTypedFieldReachesTheOptions) {
  for (bool chat : {false, true}) {
    SCOPED_TRACE(chat ? "chat" : "completions");
    json extra = {{"temperature", 0.7},
                  {"top_p", 0.9},
                  {"top_k", 40},
                  {"min_p", 0.05},
                  {"repetition_penalty", 1.1},
                  {"presence_penalty", -0.5},
                  {"frequency_penalty", 1.5},
                  {"seed", 1234},
                  {"stop", {"\n", "END"}},
                  {"ignore_eos", true},
                  {"n", 3},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}},
                  {"echo", false},
                  {"user", "someone"}};  // unknown fields are ignored
    if (chat) {
      extra["max_completion_tokens"] = 7;
      extra["logprobs"] = true;
      extra["top_logprobs"] = 4;
    } else {
      extra["max_tokens"] = 7;
      extra["logprobs"] = 3;
    }
    const ParsedRequest r = parse(body_for(chat, extra), chat);
    const GenerateOptions& g = r.options;
    EXPECT_EQ(r.chat, chat);
    EXPECT_EQ(g.temperature, 0.7);
    EXPECT_EQ(g.top_p, 0.9);
    EXPECT_EQ(g.top_k, 40);
    EXPECT_EQ(g.min_p, 0.05);
    EXPECT_EQ(g.repetition_penalty, 1.1);
    EXPECT_EQ(g.presence_penalty, -0.5);
    EXPECT_EQ(g.frequency_penalty, 1.5);
    EXPECT_EQ(g.seed, 1234u);
    EXPECT_EQ(g.stop, (std::vector<std::string>{"\n", "END"}));
    EXPECT_TRUE(g.ignore_eos);
    EXPECT_EQ(g.max_new_tokens, 7);
    EXPECT_EQ(r.length_param, chat ? "max_completion_tokens" : "max_tokens");
    EXPECT_EQ(r.n, 3);
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.include_usage);
    EXPECT_TRUE(r.logprobs);
    EXPECT_EQ(g.top_logprobs, chat ? 4 : 3);
    EXPECT_NO_THROW(g.validate());  // what the parser lets through, the engine accepts
  }
}

TEST(OpenAiRequest, BoundariesAreAccepted) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {{"temperature", 0},
                        {"temperature", 2},
                        {"top_p", 1},
                        {"top_p", 1e-9},
                        {"top_k", -1},
                        {"top_k", 0},
                        {"top_k", 1 << 20},
                        {"min_p", 0},
                        {"min_p", 0.999999},
                        {"repetition_penalty", 1e-3},
                        {"repetition_penalty", 10},
                        {"presence_penalty", -2},
                        {"presence_penalty", 2},
                        {"frequency_penalty", -2},
                        {"frequency_penalty", 2},
                        {"n", 1},
                        {"n", 16},
                        {"max_tokens", 1},
                        {"max_tokens", 1 << 24},
                        {"seed", std::numeric_limits<int64_t>::min()},
                        {"seed", std::numeric_limits<int64_t>::max()}};
  for (bool chat : {false, true})
    for (const Case& c : cases) EXPECT_ACCEPTED(body_for(chat, {{c.field, c.value}}), chat);
  EXPECT_ACCEPTED(chat_body({{"max_completion_tokens", 1 << 24}}), true);
}

TEST(OpenAiRequest, TopKMinusOneMeansOff) {
  EXPECT_EQ(parse(completion({{"top_k", -1}}), false).options.top_k, 0);
  EXPECT_EQ(parse(completion({{"top_k", 0}}), false).options.top_k, 0);
  EXPECT_EQ(parse(completion({{"top_k", 1}}), false).options.top_k, 1);
}

TEST(OpenAiRequest, SeedTakesAnyInt64) {
  EXPECT_EQ(parse(completion({{"seed", 0}}), false).options.seed, 0u);
  EXPECT_EQ(parse(completion({{"seed", -1}}), false).options.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(parse(completion({{"seed", std::numeric_limits<int64_t>::min()}}), false).options.seed, uint64_t{1} << 63);
  EXPECT_FALSE(parse(completion({{"seed", nullptr}}), false).options.seed);
}

TEST(OpenAiRequest, StopIsAStringOrAListOfStrings) {
  EXPECT_EQ(parse(completion({{"stop", "x"}}), false).options.stop, std::vector<std::string>{"x"});
  EXPECT_TRUE(parse(completion({{"stop", json::array()}}), false).options.stop.empty());
  EXPECT_TRUE(parse(completion({{"stop", nullptr}}), false).options.stop.empty());
  json sixteen = json::array(), seventeen;
  for (int i = 0; i < 16; ++i) sixteen.push_back("s" + std::to_string(i));
  seventeen = sixteen;
  seventeen.push_back("s16");
  EXPECT_EQ(parse(completion({{"stop", sixteen}}), false).options.stop.size(), 16u);
  for (bool chat : {false, true}) {
    EXPECT_400(body_for(chat, {{"stop", seventeen}}), chat, "stop");
    EXPECT_400(body_for(chat, {{"stop", ""}}), chat, "stop");
    EXPECT_400(body_for(chat, {{"stop", {"a", ""}}}), chat, "stop");
    EXPECT_400(body_for(chat, {{"stop", {"a", 1}}}), chat, "stop");
    EXPECT_400(body_for(chat, {{"stop", 5}}), chat, "stop");
    EXPECT_400(body_for(chat, {{"stop", {{"a", "b"}}}}), chat, "stop");
  }
}

TEST(OpenAiRequest, MaxTokensAndMaxCompletionTokens) {
  // Completions: max_tokens (default 16); max_completion_tokens, chat's newer name, is taken
  // the same way as in chat rather than ignored.
  EXPECT_EQ(parse(completion({{"max_tokens", 1}}), false).options.max_new_tokens, 1);
  EXPECT_EQ(parse(completion({{"max_tokens", nullptr}}), false).options.max_new_tokens, 16);
  const ParsedRequest newer = parse(completion({{"max_completion_tokens", 5}}), false);
  EXPECT_EQ(newer.options.max_new_tokens, 5);
  EXPECT_EQ(newer.length_param, "max_completion_tokens");
  EXPECT_EQ(parse(completion({{"max_completion_tokens", 5}, {"max_tokens", 9}}), false).options.max_new_tokens, 5);
  EXPECT_EQ(parse(completion(), false).length_param, "prompt");

  // Chat: max_completion_tokens, else the legacy max_tokens.
  ParsedRequest r = parse(chat_body({{"max_tokens", 5}}), true);
  EXPECT_EQ(r.options.max_new_tokens, 5);
  EXPECT_EQ(r.length_param, "max_tokens");
  r = parse(chat_body({{"max_completion_tokens", 9}}), true);
  EXPECT_EQ(r.options.max_new_tokens, 9);
  EXPECT_EQ(r.length_param, "max_completion_tokens");
  r = parse(chat_body({{"max_completion_tokens", 9}, {"max_tokens", 5}}), true);
  EXPECT_EQ(r.options.max_new_tokens, 9);
  EXPECT_EQ(r.length_param, "max_completion_tokens");
  r = parse(chat_body({{"max_completion_tokens", nullptr}, {"max_tokens", 5}}), true);
  EXPECT_EQ(r.options.max_new_tokens, 5);
  EXPECT_EQ(r.length_param, "max_tokens");

  EXPECT_400(completion({{"max_tokens", 0}}), false, "max_tokens");
  EXPECT_400(completion({{"max_tokens", (1 << 24) + 1}}), false, "max_tokens");
  EXPECT_400(completion({{"max_tokens", "three"}}), false, "max_tokens");
  EXPECT_400(chat_body({{"max_tokens", 0}}), true, "max_tokens");
  EXPECT_400(chat_body({{"max_completion_tokens", 0}}), true, "max_completion_tokens");
  EXPECT_400(chat_body({{"max_completion_tokens", "9"}}), true, "max_completion_tokens");
  EXPECT_400(chat_body({{"max_completion_tokens", -3}, {"max_tokens", 5}}), true, "max_completion_tokens");
  // Both sent: each is checked, whichever wins (a bad max_tokens was let through beside a good
  // max_completion_tokens).
  for (bool chat : {false, true}) {
    for (const json& bad : {json("five"), json(0), json(-1), json(2.5), json((1 << 24) + 1), json::array(), json(true)})
      EXPECT_400(body_for(chat, {{"max_completion_tokens", 9}, {"max_tokens", bad}}), chat, "max_tokens");
    for (const json& bad : {json("five"), json(0), json(2.5)})
      EXPECT_400(body_for(chat, {{"max_completion_tokens", bad}, {"max_tokens", 9}}), chat, "max_completion_tokens");
  }
}

TEST(OpenAiRequest, CompletionLogprobsIsAnIntegerFrom0To5) {
  ParsedRequest r = parse(completion({{"logprobs", 0}}), false);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, 0);
  r = parse(completion({{"logprobs", 5}}), false);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, 5);
  r = parse(completion({{"logprobs", nullptr}}), false);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, -1);
  EXPECT_400(completion({{"logprobs", 6}}), false, "logprobs");
  EXPECT_400(completion({{"logprobs", -1}}), false, "logprobs");
  EXPECT_400(completion({{"logprobs", true}}), false, "logprobs");
  EXPECT_400(completion({{"logprobs", 1.5}}), false, "logprobs");
  EXPECT_400(completion({{"logprobs", "2"}}), false, "logprobs");
}

TEST(OpenAiRequest, ChatLogprobsIsABoolWithTopLogprobsFrom0To20) {
  ParsedRequest r = parse(chat_body({{"logprobs", true}}), true);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, 0);
  r = parse(chat_body({{"logprobs", true}, {"top_logprobs", 20}}), true);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, 20);
  r = parse(chat_body({{"logprobs", false}}), true);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, -1);
  r = parse(chat_body({{"top_logprobs", nullptr}}), true);
  EXPECT_FALSE(r.logprobs);
  EXPECT_EQ(r.options.top_logprobs, -1);

  EXPECT_400(chat_body({{"logprobs", true}, {"top_logprobs", 21}}), true, "top_logprobs");
  EXPECT_400(chat_body({{"logprobs", true}, {"top_logprobs", -1}}), true, "top_logprobs");
  EXPECT_400(chat_body({{"logprobs", true}, {"top_logprobs", 2.5}}), true, "top_logprobs");
  EXPECT_400(chat_body({{"top_logprobs", 3}}), true, "top_logprobs");  // without logprobs
  EXPECT_400(chat_body({{"logprobs", false}, {"top_logprobs", 0}}), true, "top_logprobs");
  EXPECT_400(chat_body({{"logprobs", 1}}), true, "logprobs");  // chat's is a bool
  EXPECT_400(chat_body({{"logprobs", "true"}}), true, "logprobs");
}

TEST(OpenAiRequest, StreamAndStreamOptions) {
  ParsedRequest r = parse(completion({{"stream", true}}), false);
  EXPECT_TRUE(r.stream);
  EXPECT_FALSE(r.include_usage);
  r = parse(chat_body({{"stream", true}, {"stream_options", {{"include_usage", true}}}}), true);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  r = parse(chat_body({{"stream", true}, {"stream_options", {{"include_usage", false}}}}), true);
  EXPECT_FALSE(r.include_usage);
  r = parse(chat_body({{"stream", true}, {"stream_options", json::object()}}), true);
  EXPECT_FALSE(r.include_usage);
  r = parse(chat_body({{"stream", false}, {"stream_options", nullptr}}), true);
  EXPECT_FALSE(r.stream);
  for (bool chat : {false, true}) {
    EXPECT_400(body_for(chat, {{"stream", "true"}}), chat, "stream");
    EXPECT_400(body_for(chat, {{"stream", true}, {"stream_options", "usage"}}), chat, "stream_options");
    EXPECT_400(body_for(chat, {{"stream_options", {{"include_usage", true}}}}), chat, "stream_options");  // no stream
    EXPECT_400(body_for(chat, {{"stream", true}, {"stream_options", {true}}}), chat, "stream_options");
    const ApiError e =
        error_of(body_for(chat, {{"stream", true}, {"stream_options", {{"include_usage", "yes"}}}}), chat);
    EXPECT_EQ(e.status, 400) << e.what();
    EXPECT_THAT(e.param, HasSubstr("include_usage"));  // today "include_usage", not "stream_options.include_usage"
  }
}

TEST(OpenAiRequest, WrongTypesNameTheField) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {
      {"temperature", "0.5"},
      {"temperature", true},
      {"top_p", true},
      {"top_p", {0.5}},
      {"top_k", 1.5},
      {"top_k", "5"},
      {"top_k", 5.0},
      {"min_p", json::array()},
      {"min_p", "0.1"},
      {"repetition_penalty", json::object()},
      {"presence_penalty", "0"},
      {"frequency_penalty", false},
      {"seed", 1.5},
      {"seed", "1"},
      {"ignore_eos", 1},
      {"ignore_eos", "true"},
      {"n", 2.0},
      {"n", "2"},
      {"stream", 1},
      {"max_tokens", "three"},
      {"max_tokens", 3.0},
      {"echo", "yes"},
      {"echo", 1},
      {"model", 5},
      {"model", {"tiny"}},
      {"stop", true},
  };
  for (bool chat : {false, true})
    for (const Case& c : cases) EXPECT_400(body_for(chat, {{c.field, c.value}}), chat, c.field);
}

TEST(OpenAiRequest, OutOfRangeValuesNameTheField) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {
      {"temperature", -0.1},
      {"temperature", 2.01},
      {"temperature", 1e300},
      {"top_p", 0},
      {"top_p", 0.0},
      {"top_p", -0.5},
      {"top_p", 1.01},
      {"top_k", -2},
      {"top_k", (1 << 20) + 1},
      {"min_p", 1.0},
      {"min_p", -0.01},
      {"repetition_penalty", 0},
      {"repetition_penalty", 1e-4},
      {"repetition_penalty", 10.5},
      {"presence_penalty", -2.1},
      {"presence_penalty", 2.1},
      {"frequency_penalty", -2.5},
      {"frequency_penalty", 3},
      {"n", 0},
      {"n", 17},
      {"n", -1},
      {"max_tokens", 0},
      {"max_tokens", -5},
      {"max_tokens", (1 << 24) + 1},
      {"max_tokens", std::numeric_limits<uint64_t>::max()},  // wraps to -1 when read as int64: still refused
      {"n", uint64_t{1} << 63},
  };
  for (bool chat : {false, true})
    for (const Case& c : cases) EXPECT_400(body_for(chat, {{c.field, c.value}}), chat, c.field);
}

TEST(OpenAiRequest, RandomValuesInsideTheRangesAreKeptOutsideAreRefused) {
  std::mt19937_64 rng(testing::test_seed());
  struct Range {
    const char* field;
    double lo, hi;
    std::optional<double> GenerateOptions::*opt;
    double GenerateOptions::*plain;
  };
  const Range ranges[] = {{"temperature", 0, 2, &GenerateOptions::temperature, nullptr},
                          {"top_p", 1e-6, 1, &GenerateOptions::top_p, nullptr},
                          {"min_p", 0, 0.999999, &GenerateOptions::min_p, nullptr},
                          {"repetition_penalty", 1e-3, 10, &GenerateOptions::repetition_penalty, nullptr},
                          {"presence_penalty", -2, 2, nullptr, &GenerateOptions::presence_penalty},
                          {"frequency_penalty", -2, 2, nullptr, &GenerateOptions::frequency_penalty}};
  for (int trial = 0; trial < 50; ++trial) {
    const bool chat = trial % 2 == 1;
    for (const Range& r : ranges) {
      const double in = std::uniform_real_distribution<double>(r.lo, r.hi)(rng);
      const ParsedRequest p = parse(body_for(chat, {{r.field, in}}), chat);
      const double got = r.opt ? (p.options.*r.opt).value_or(-1000) : p.options.*r.plain;
      EXPECT_EQ(got, in) << r.field;
      const double span = r.hi - r.lo;
      const double out = std::uniform_int_distribution<int>(0, 1)(rng)
                             ? r.hi + std::uniform_real_distribution<double>(1e-6, 10)(rng) * span
                             : r.lo - std::uniform_real_distribution<double>(1e-6, 10)(rng) * span;
      EXPECT_400(body_for(chat, {{r.field, out}}), chat, r.field);
    }
    // Integers: top_k in [-1, 2^20], n in [1, 16], max_tokens in [1, 2^24].
    const int64_t k = std::uniform_int_distribution<int64_t>(-1, 1 << 20)(rng);
    EXPECT_EQ(parse(body_for(chat, {{"top_k", k}}), chat).options.top_k, std::max<int64_t>(k, 0));
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 16)(rng);
    EXPECT_EQ(parse(body_for(chat, {{"n", n}}), chat).n, n);
    const int64_t m = std::uniform_int_distribution<int64_t>(1, 1 << 24)(rng);
    EXPECT_EQ(parse(body_for(chat, {{"max_tokens", m}}), chat).options.max_new_tokens, m);
    EXPECT_400(body_for(chat, {{"n", std::uniform_int_distribution<int64_t>(17, 1 << 30)(rng)}}), chat, "n");
    EXPECT_400(body_for(chat, {{"top_k", std::uniform_int_distribution<int64_t>(INT64_MIN, -2)(rng)}}), chat, "top_k");
  }
}

TEST(OpenAiRequest, UnknownModelIs404ModelNotFound) {
  for (bool chat : {false, true}) {
    const ApiError e = error_of(body_for(chat, {{"model", "gpt-9"}}), chat);
    EXPECT_EQ(e.status, 404) << e.what();
    EXPECT_EQ(e.code, "model_not_found");
    EXPECT_EQ(e.param, "model");
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_THAT(e.what(), HasSubstr("gpt-9"));
    EXPECT_THAT(e.what(), HasSubstr(kModel));
  }
  EXPECT_EQ(error_of(completion({{"model", "Tiny"}}), false).status, 404);  // names are exact
}

TEST(OpenAiRequest, EchoIsRefused) {
  EXPECT_400(completion({{"echo", true}}), false, "echo");
  EXPECT_ACCEPTED(completion({{"echo", false}}), false);
  EXPECT_ACCEPTED(completion({{"echo", nullptr}}), false);
}

TEST(OpenAiRequest, TheBodyMustBeAnObject) {
  for (bool chat : {false, true})
    for (const json& body : {json::array({1, 2}), json("prompt"), json(nullptr), json(3)}) EXPECT_400(body, chat, "");
}

// ---------------------------------------------------------------------------------------------
// Completion prompts

TEST(OpenAiPrompt, AStringIsEncodedWithSpecialTokens) {
  const ParsedRequest r = parse(completion({{"prompt", "The capital of France is"}}), false);
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0], tok().encode("The capital of France is", true));
  EXPECT_EQ(r.prompts[0].front(), 1019);  // BOS from the tokenizer's post-processor
}

TEST(OpenAiPrompt, AListOfStringsIsOnePromptEach) {
  const ParsedRequest r = parse(completion({{"prompt", {"Hello", "Seattle is", "x"}}}), false);
  EXPECT_EQ(r.prompts, (Ids{tok().encode("Hello", true), tok().encode("Seattle is", true), tok().encode("x", true)}));
}

TEST(OpenAiPrompt, TokenIdsAreTakenAsTheyAre) {
  EXPECT_EQ(parse(completion({{"prompt", {5, 6, 7}}}), false).prompts, (Ids{{5, 6, 7}}));  // no BOS added
  EXPECT_EQ(parse(completion({{"prompt", {0, 1023}}}), false).prompts, (Ids{{0, 1023}}));  // vocab_size 1024
  EXPECT_EQ(parse(completion({{"prompt", {{1, 2}, {3}}}}), false).prompts, (Ids{{1, 2}, {3}}));
  EXPECT_EQ(parse(completion({{"prompt", {json{9, 8}, json("Hello")}}}), false).prompts,
            (Ids{{9, 8}, tok().encode("Hello", true)}));
}

TEST(OpenAiPrompt, MaxTokensAppliesToEveryPrompt) {
  const ParsedRequest r = parse(completion({{"prompt", {{1, 2, 3, 4, 5}, {6}}}, {"max_tokens", 4}}), false);
  EXPECT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.options.max_new_tokens, 4);
}

TEST(OpenAiPrompt, EmptyAndMalformedPromptsAreErrors) {
  const json bad[] = {json::array(),                                      // no prompt at all
                      json::array({json::array()}),                       // an empty token list
                      json{json{1}, json::array()},                       // the second one empty
                      json(nullptr), json(5), json::object(), json{1.5},  // not integers
                      json{true}, json{"a", 5}, json{json{1, "a"}},
                      // json{json{...}} is a copy for some compilers: nest explicitly.
                      json::array({json::array({json::array({1})})}), json::array({nullptr})};
  for (const json& p : bad) EXPECT_400(completion({{"prompt", p}}), false, "prompt");
  EXPECT_400((json{{"model", kModel}}), false, "prompt");  // missing
  // The empty string is not an empty prompt: it is BOS alone, as the tokenizer encodes it.
  EXPECT_EQ(parse(completion({{"prompt", ""}}), false).prompts, (Ids{tok().encode("", true)}));
  EXPECT_EQ(tok().encode("", true), std::vector<int32_t>{1019});
}

TEST(OpenAiPrompt, TokenIdsOutsideTheVocabularyAreErrors) {
  ASSERT_EQ(service().config().vocab_size, 1024);
  const json bad[] = {json{-1},
                      json{1024},
                      json{1, 2, 1 << 30},
                      json{json{0}, json{1024}},
                      json{int64_t{1} << 40},  // would wrap to 0 as int32
                      json{std::numeric_limits<uint64_t>::max()}};
  for (const json& p : bad) EXPECT_400(completion({{"prompt", p}}), false, "prompt");
}

TEST(OpenAiPrompt, AtMost64Prompts) {
  json strings = json::array(), lists = json::array();
  for (int i = 0; i < 64; ++i) strings.push_back("p" + std::to_string(i)), lists.push_back({i + 1, i + 2});
  EXPECT_EQ(parse(completion({{"prompt", strings}}), false).prompts.size(), 64u);
  const ParsedRequest r = parse(completion({{"prompt", lists}}), false);
  ASSERT_EQ(r.prompts.size(), 64u);
  EXPECT_EQ(r.prompts[63], (std::vector<int32_t>{64, 65}));
  strings.push_back("one more");
  lists.push_back({1});
  EXPECT_400(completion({{"prompt", strings}}), false, "prompt");
  EXPECT_400(completion({{"prompt", lists}}), false, "prompt");
  // A flat list of token ids is one prompt, however long.
  json ids = json::array();
  for (int i = 0; i < 100; ++i) ids.push_back(i);
  EXPECT_EQ(parse(completion({{"prompt", ids}}), false).prompts.size(), 1u);
}

TEST(OpenAiPrompt, RandomTokenListsRoundTrip) {
  std::mt19937_64 rng(testing::test_seed());
  std::uniform_int_distribution<int32_t> id(0, 1023);
  for (int trial = 0; trial < 20; ++trial) {
    Ids want(std::uniform_int_distribution<size_t>(1, 64)(rng));
    json prompt = json::array();
    for (auto& p : want) {
      p.resize(std::uniform_int_distribution<size_t>(1, 40)(rng));
      for (auto& t : p) t = id(rng);
      prompt.push_back(p);
    }
    EXPECT_EQ(parse(completion({{"prompt", prompt}}), false).prompts, want);
    // One id out of the vocabulary anywhere makes it an error.
    const size_t i = std::uniform_int_distribution<size_t>(0, want.size() - 1)(rng);
    const size_t j = std::uniform_int_distribution<size_t>(0, want[i].size() - 1)(rng);
    prompt[i][j] = std::uniform_int_distribution<int>(0, 1)(rng) ? 1024 + id(rng) : -1 - id(rng);
    EXPECT_400(completion({{"prompt", prompt}}), false, "prompt");
  }
}

// ---------------------------------------------------------------------------------------------
// Chat messages

std::vector<int32_t> rendered(const std::vector<ChatMessage>& messages) {
  const std::string text =
      chat_template().render(messages, true, {{"bos_token", tok().bos_token()}, {"eos_token", tok().eos_token()}});
  return tok().encode(text, false);
}

TEST(OpenAiChat, ThePromptIsTheRenderedTemplateEncodedWithoutSpecialTokens) {
  const json messages = {{{"role", "system"}, {"content", "You are terse."}},
                         {{"role", "user"}, {"content", "What is the capital of France?"}},
                         {{"role", "assistant"}, {"content", "Paris."}},
                         {{"role", "user"}, {"content", "And of Spain?"}}};
  const ParsedRequest r = parse(chat_body({{"messages", messages}}), true);
  ASSERT_EQ(r.prompts.size(), 1u);
  const auto want = rendered({{"system", "You are terse."},
                              {"user", "What is the capital of France?"},
                              {"assistant", "Paris."},
                              {"user", "And of Spain?"}});
  EXPECT_EQ(r.prompts[0], want);
  // The template writes BOS: exactly one, in front.
  ASSERT_GE(r.prompts[0].size(), 2u);
  EXPECT_EQ(r.prompts[0][0], 1019);
  EXPECT_NE(r.prompts[0][1], 1019);
  // Ends with the generation prompt.
  const std::string text = tok().decode(r.prompts[0], false);
  EXPECT_THAT(text, ::testing::EndsWith("<|start_header_id|>assistant<|end_header_id|>\n\n"));
}

TEST(OpenAiChat, ContentMayBeAListOfTextParts) {
  const json parts = {{{"type", "text"}, {"text", "What is "}}, {{"type", "text"}, {"text", "the capital?"}}};
  const ParsedRequest r = parse(chat_body({{"messages", {{{"role", "user"}, {"content", parts}}}}}), true);
  EXPECT_EQ(r.prompts[0], rendered({{"user", "What is the capital?"}}));
  const ParsedRequest none = parse(chat_body({{"messages", {{{"role", "user"}, {"content", json::array()}}}}}), true);
  EXPECT_EQ(none.prompts[0], rendered({{"user", ""}}));
}

TEST(OpenAiChat, NullOrMissingContentIsEmpty) {
  const auto want = rendered({{"user", "Hi"}, {"assistant", ""}});
  const json with_null = {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", nullptr}}};
  const json without = {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}}};
  EXPECT_EQ(parse(chat_body({{"messages", with_null}}), true).prompts[0], want);
  EXPECT_EQ(parse(chat_body({{"messages", without}}), true).prompts[0], want);
}

TEST(OpenAiChat, NonTextPartsAreRefused) {
  const json bad_contents[] = {
      json{{{"type", "image_url"}, {"image_url", {{"url", "http://x/y.png"}}}}},
      json{{{"type", "text"}, {"text", "ok"}}, {{"type", "input_audio"}, {"input_audio", json::object()}}},
      json{"just a string"},
      json{{{"type", "text"}}},               // no text
      json{{{"type", "text"}, {"text", 5}}},  // text not a string
      json{{{"text", "no type"}}},
      json{nullptr},
      json(5),
      json(true),
      json::object(),
  };
  for (const json& c : bad_contents) {
    const json messages = {{{"role", "system"}, {"content", "sys"}}, {{"role", "user"}, {"content", c}}};
    EXPECT_400(chat_body({{"messages", messages}}), true, "messages[1].content");
  }
}

// A part "type" that is not a string once escaped as nlohmann's type_error (a 500).
TEST(OpenAiChat, ANonStringPartTypeIsA400NamingTheContent) {
  for (const json& type : {json(5), json(nullptr), json::array({"text"}), json{{"t", "text"}}}) {
    const json messages = {{{"role", "user"}, {"content", {{{"type", type}, {"text", "hi"}}}}}};
    EXPECT_400(chat_body({{"messages", messages}}), true, "messages[0].content");
  }
}

TEST(OpenAiChat, RolesAreChecked) {
  for (const char* role : {"system", "user", "assistant", "tool", "developer"})
    EXPECT_ACCEPTED(chat_body({{"messages", {{{"role", role}, {"content", "x"}}}}}), true);
  EXPECT_400(chat_body({{"messages", {{{"role", "robot"}, {"content", "x"}}}}}), true, "messages[0].role");
  EXPECT_400(chat_body({{"messages", {{{"role", "User"}, {"content", "x"}}}}}), true, "messages[0].role");
  EXPECT_400(chat_body({{"messages", {{{"role", "user"}, {"content", "x"}}, {{"content", "no role"}}}}}), true,
             "messages[1].role");
  EXPECT_400(chat_body({{"messages", {{{"role", "user"}, {"content", "x"}}, {{"role", 3}, {"content", "y"}}}}}), true,
             "messages[1].role");
  EXPECT_400(chat_body({{"messages", {json{{"role", "user"}, {"content", "x"}}, json("hello")}}}), true,
             "messages[1].role");
}

TEST(OpenAiChat, MessagesMustBeANonEmptyList) {
  EXPECT_400((json{{"model", kModel}}), true, "messages");
  for (const json& m : {json::array(), json("hi"), json::object(), json(nullptr), json(1)})
    EXPECT_400(chat_body({{"messages", m}}), true, "messages");
  // A completions prompt is not a conversation.
  EXPECT_400((json{{"model", kModel}, {"prompt", "hi"}}), true, "messages");
}

TEST(OpenAiChat, AModelWithoutATemplateIsA400) {
  const ApiError e = error_of(chat_body(), true, context(nullptr));
  EXPECT_EQ(e.status, 400) << e.what();
  EXPECT_EQ(e.param, "messages");
  EXPECT_THAT(e.what(), HasSubstr("/v1/completions"));
  // Completions do not need one.
  EXPECT_EQ(error_of(completion(), false, context(nullptr)).status, 0);
}

TEST(OpenAiChat, TemplateErrorsAreA400NamingMessages) {
  const ChatTemplate strict(
      "{% if messages[0]['role'] != 'user' %}{{ raise_exception('conversations must start with the user') }}"
      "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}");
  const ApiError e =
      error_of(chat_body({{"messages", {{{"role", "assistant"}, {"content", "x"}}}}}), true, context(&strict));
  EXPECT_EQ(e.status, 400) << e.what();
  EXPECT_EQ(e.param, "messages");
  EXPECT_THAT(e.what(), HasSubstr("conversations must start with the user"));
  EXPECT_EQ(error_of(chat_body(), true, context(&strict)).status, 0);
}

TEST(OpenAiChat, OtherMessageFieldsReachTheTemplate) {
  const ChatTemplate named(
      "{% for m in messages %}[{{ m['role'] }}:{{ m['name'] }}:{{ m['content'] }}]{% endfor %}"
      "{% if add_generation_prompt %}>{% endif %}");
  const json messages = {{{"role", "user"}, {"name", "alice"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}}};
  const json body = chat_body({{"messages", messages}});
  const ParsedRequest r = parse_request(body, true, context(&named));
  EXPECT_EQ(r.prompts[0], tok().encode("[user:alice:hi]>", false));
}

// ---------------------------------------------------------------------------------------------
// Responses

TEST(OpenAiResponse, FinishReasons) {
  EXPECT_STREQ(openai_finish_reason(FinishReason::kStop), "stop");
  EXPECT_STREQ(openai_finish_reason(FinishReason::kLength), "length");
  EXPECT_STREQ(openai_finish_reason(FinishReason::kCancelled), "abort");
  EXPECT_EQ(openai_finish_reason(FinishReason::kNone), nullptr);
}

std::vector<int32_t> some_tokens() {
  return tok().encode("Hello world, the capital", false);
}

// A sample per token: logprob -(i+1)/4 and `top` alternatives (the token itself first).
std::vector<Sample> samples_for(const std::vector<int32_t>& tokens, int top) {
  std::vector<Sample> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    Sample s{tokens[i], -0.25f * static_cast<float>(i + 1), {}};
    for (int k = 0; k < top; ++k)
      s.top.push_back({k == 0 ? tokens[i] : static_cast<int32_t>(500 + 7 * i + k), s.logprob - static_cast<float>(k)});
    out.push_back(s);
  }
  return out;
}

TEST(OpenAiResponse, CompletionShapeAndUsage) {
  std::vector<Choice> choices(2);
  choices[0].text = "Paris.";
  choices[0].finish = FinishReason::kStop;
  choices[0].generated_tokens = 3;
  choices[1].text = "Lyon is";
  choices[1].finish = FinishReason::kLength;
  choices[1].generated_tokens = 5;
  const json j = completion_response("cmpl-1", 1700000000, kModel, false, choices, 7, false, tok());
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "object", "created", "model", "choices", "usage"}));
  EXPECT_EQ(j["id"], "cmpl-1");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], kModel);
  ASSERT_EQ(j["choices"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["text"], choices[i].text);
    EXPECT_TRUE(c["logprobs"].is_null());
    EXPECT_FALSE(c.contains("message"));
  }
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 7}, {"completion_tokens", 8}, {"total_tokens", 15}}));
}

TEST(OpenAiResponse, ChatCompletionShape) {
  std::vector<Choice> choices(1);
  choices[0].text = "Bonjour";
  choices[0].finish = FinishReason::kCancelled;
  choices[0].generated_tokens = 2;
  const json j = completion_response("chatcmpl-9", 5, kModel, true, choices, 11, false, tok());
  EXPECT_EQ(j["object"], "chat.completion");
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["message"], (json{{"role", "assistant"}, {"content", "Bonjour"}}));
  EXPECT_EQ(c["finish_reason"], "abort");
  EXPECT_TRUE(c.contains("logprobs"));
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_FALSE(c.contains("text"));
  EXPECT_EQ(j["usage"], (json{{"prompt_tokens", 11}, {"completion_tokens", 2}, {"total_tokens", 13}}));
  // No choices: usage is the prompt's alone.
  const json empty = completion_response("chatcmpl-0", 5, kModel, true, {}, 4, false, tok());
  EXPECT_TRUE(empty["choices"].empty());
  EXPECT_EQ(empty["usage"]["total_tokens"], 4);
}

TEST(OpenAiResponse, InvalidUtf8TextStillMakesValidJson) {
  std::vector<Choice> choices(1);
  choices[0].text = "ok\xff\xfe";
  choices[0].finish = FinishReason::kStop;
  for (bool chat : {false, true}) {
    const json j = completion_response("id", 1, kModel, chat, choices, 1, false, tok());
    std::string dumped;
    ASSERT_NO_THROW(dumped = j.dump());
    const std::string text = chat ? j["choices"][0]["message"]["content"] : j["choices"][0]["text"];
    EXPECT_EQ(text.rfind("ok", 0), 0u);
    EXPECT_THAT(text, HasSubstr("\xEF\xBF\xBD"));  // U+FFFD
    StreamChunk c;
    c.text = "\xc3";
    EXPECT_NO_THROW(stream_chunk("id", 1, kModel, chat, 0, c, true, false, tok()).dump());
  }
}

TEST(OpenAiResponse, CompletionLogprobsLayout) {
  const auto tokens = some_tokens();
  ASSERT_GE(tokens.size(), 3u);
  std::vector<Choice> choices(1);
  choices[0].tokens = tokens;
  choices[0].samples = samples_for(tokens, 2);
  choices[0].text = tok().decode(tokens, false);
  choices[0].finish = FinishReason::kLength;
  choices[0].generated_tokens = static_cast<int64_t>(tokens.size());
  const json j = completion_response("id", 1, kModel, false, choices, 3, true, tok());
  const json& lp = j["choices"][0]["logprobs"];
  std::vector<std::string> keys;
  for (const auto& [k, v] : lp.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"tokens", "token_logprobs", "top_logprobs", "text_offset"}));
  ASSERT_EQ(lp["tokens"].size(), tokens.size());
  ASSERT_EQ(lp["token_logprobs"].size(), tokens.size());
  ASSERT_EQ(lp["top_logprobs"].size(), tokens.size());
  ASSERT_EQ(lp["text_offset"].size(), tokens.size());
  size_t offset = 0;
  std::string joined;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string t = token_text(tokens[i]);
    EXPECT_EQ(lp["tokens"][i], t);
    EXPECT_FLOAT_EQ(lp["token_logprobs"][i].get<float>(), choices[0].samples[i].logprob);
    const json& top = lp["top_logprobs"][i];
    ASSERT_TRUE(top.is_object());
    EXPECT_EQ(top.size(), 2u);
    for (const auto& alt : choices[0].samples[i].top) {
      // Its text (these alternatives are whole characters with distinct texts).
      ASSERT_EQ(text::utf8_lossy(tok().token_bytes(alt.token)), tok().token_bytes(alt.token));
      ASSERT_TRUE(top.contains(token_text(alt.token))) << token_text(alt.token);
      EXPECT_FLOAT_EQ(top[token_text(alt.token)].get<float>(), alt.logprob);
    }
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += t.size();
    joined += t;
  }
  EXPECT_EQ(joined, choices[0].text);  // the offsets index the text
  // logprobs 0: the chosen token's only, top_logprobs entries empty objects.
  choices[0].samples = samples_for(tokens, 0);
  const json z = completion_response("id", 1, kModel, false, choices, 3, true, tok());
  for (const json& top : z["choices"][0]["logprobs"]["top_logprobs"]) EXPECT_EQ(top, json::object());
}

TEST(OpenAiResponse, ChatLogprobsLayout) {
  // "é" is two byte tokens here, each decoding alone to U+FFFD: bytes above 0x7f.
  const auto tokens = tok().encode("Hello café", false);
  std::vector<Choice> choices(1);
  choices[0].tokens = tokens;
  choices[0].samples = samples_for(tokens, 3);
  choices[0].finish = FinishReason::kStop;
  const json j = completion_response("id", 1, kModel, true, choices, 3, true, tok());
  const json& lp = j["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object());
  ASSERT_EQ(lp.size(), 1u);
  const json& content = lp["content"];
  ASSERT_EQ(content.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const json& e = content[i];
    std::vector<std::string> keys;
    for (const auto& [k, v] : e.items()) keys.push_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"token", "logprob", "bytes", "top_logprobs"}));
    EXPECT_FLOAT_EQ(e["logprob"].get<float>(), choices[0].samples[i].logprob);
    const std::string raw = tok().token_bytes(tokens[i]);  // t, except for part of a character
    ASSERT_EQ(e["bytes"].size(), raw.size());
    for (size_t b = 0; b < raw.size(); ++b) {
      ASSERT_TRUE(e["bytes"][b].is_number_integer());
      EXPECT_EQ(e["bytes"][b].get<int>(), static_cast<int>(static_cast<unsigned char>(raw[b])));  // 0..255
    }
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
      const auto& alt = choices[0].samples[i].top[k];
      const json& a = e["top_logprobs"][k];  // a list, in the sampler's order
      EXPECT_FLOAT_EQ(a["logprob"].get<float>(), alt.logprob);
      EXPECT_EQ(a["bytes"].size(), tok().token_bytes(alt.token).size());
      EXPECT_FALSE(a.contains("top_logprobs"));
    }
  }
  // Fewer samples than tokens: only the sampled ones are reported.
  choices[0].samples.resize(2);
  EXPECT_EQ(
      completion_response("id", 1, kModel, true, choices, 3, true, tok())["choices"][0]["logprobs"]["content"].size(),
      2u);
}

// A token of part of a character ("é" is two byte tokens in this vocabulary): its logprob
// entries carry its own bytes, never U+FFFD's, and name it by its bytes, "\xc3" in chat and
// "bytes:\xc3" in the legacy completions (OpenAI's spellings); the bytes of the tokens, joined,
// are the text, and the completions' text_offset indexes the text.
TEST(OpenAiLogprobs, PartialCharactersShowTheirOwnBytes) {
  const std::string text = "Hello caf\xC3\xA9 \xE2\x82\xAC!";  // café €
  const auto tokens = tok().encode(text, false);
  std::vector<Choice> choices(1);
  choices[0].tokens = tokens;
  choices[0].samples = samples_for(tokens, 1);
  choices[0].text = text;
  choices[0].finish = FinishReason::kStop;
  auto escaped = [](const std::string& raw) {
    std::string s;
    for (unsigned char c : raw) s += c < 0x80 ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02x}", c);
    return s;
  };
  const json chat = completion_response("id", 1, kModel, true, choices, 3, true, tok());
  const json legacy = completion_response("id", 1, kModel, false, choices, 3, true, tok());
  const json& content = chat["choices"][0]["logprobs"]["content"];
  const json& lp = legacy["choices"][0]["logprobs"];
  ASSERT_EQ(content.size(), tokens.size());
  std::string joined;
  int partial = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string raw = tok().token_bytes(tokens[i]);
    std::string bytes;
    for (const json& b : content[i]["bytes"]) bytes += static_cast<char>(b.get<int>());
    EXPECT_EQ(bytes, raw) << i;
    // The top alternative is the token itself here: the same bytes.
    EXPECT_EQ(content[i]["top_logprobs"][0]["bytes"], content[i]["bytes"]) << i;
    EXPECT_EQ(content[i]["top_logprobs"][0]["token"], content[i]["token"]) << i;
    const std::string chat_token = content[i]["token"];
    const std::string legacy_token = lp["tokens"][i];
    EXPECT_EQ(chat_token.find("\xEF\xBF\xBD"), std::string::npos) << i;
    EXPECT_EQ(legacy_token.find("\xEF\xBF\xBD"), std::string::npos) << i;
    if (text::utf8_lossy(raw) != raw) {
      ++partial;
      EXPECT_EQ(chat_token, escaped(raw)) << i;
      EXPECT_EQ(legacy_token, "bytes:" + escaped(raw)) << i;
      EXPECT_TRUE(lp["top_logprobs"][i].contains(legacy_token)) << i;
    } else {
      EXPECT_EQ(chat_token, raw) << i;
      EXPECT_EQ(legacy_token, raw) << i;
    }
    EXPECT_EQ(lp["text_offset"][i].get<size_t>(), joined.size()) << i;
    EXPECT_EQ(text.compare(joined.size(), raw.size(), raw), 0) << i;
    joined += raw;
  }
  EXPECT_GE(partial, 4);  // é and € are byte tokens here
  EXPECT_EQ(joined, text);
  // The streamed chunks say the same.
  StreamChunk c;
  c.token_ids = tokens;
  c.samples = choices[0].samples;
  EXPECT_EQ(stream_chunk("c", 1, kModel, true, 0, c, false, true, tok())["choices"][0]["logprobs"]["content"], content);
  EXPECT_EQ(stream_chunk("c", 1, kModel, false, 0, c, false, true, tok())["choices"][0]["logprobs"], lp);
}

// The legacy top_logprobs is an object keyed by token text: two ids that decode alike (here
// the byte-fallback <0x41> and the token "A") must not overwrite each other. The more likely
// keeps the text, the other is keyed "token_id:N"; every alternative keeps its own logprob.
TEST(OpenAiLogprobs, AlternativesWithTheSameTextAreAllKept) {
  const Tokenizer sp = Tokenizer::load(testing::fixture_dir("tiny-llama2-sp"));
  const std::optional<int32_t> letter = sp.token_to_id("A"), byte = sp.token_to_id("<0x41>");
  ASSERT_TRUE(letter && byte);
  ASSERT_EQ(sp.decode(std::vector<int32_t>{*letter}), sp.decode(std::vector<int32_t>{*byte}));
  const std::optional<int32_t> other = sp.token_to_id("a");
  ASSERT_TRUE(other);
  std::vector<Choice> choices(1);
  choices[0].tokens = {*letter};
  Sample s{*letter, -0.1f, {{*letter, -0.1f}, {*other, -2.5f}, {*byte, -3.0f}}};
  choices[0].samples = {s};
  choices[0].finish = FinishReason::kLength;
  const json top =
      completion_response("id", 1, kModel, false, choices, 1, true, sp)["choices"][0]["logprobs"]["top_logprobs"][0];
  EXPECT_EQ(top.size(), 3u) << top.dump();
  EXPECT_FLOAT_EQ(top["A"].get<float>(), -0.1f);  // the more likely keeps the text
  EXPECT_FLOAT_EQ(top["a"].get<float>(), -2.5f);
  ASSERT_TRUE(top.contains(fmt::format("token_id:{}", *byte))) << top.dump();
  EXPECT_FLOAT_EQ(top[fmt::format("token_id:{}", *byte)].get<float>(), -3.0f);
  // In the same order the other way round: the byte token first keeps "A".
  choices[0].samples[0].top = {{*byte, -0.2f}, {*letter, -0.3f}};
  const json swapped =
      completion_response("id", 1, kModel, false, choices, 1, true, sp)["choices"][0]["logprobs"]["top_logprobs"][0];
  EXPECT_FLOAT_EQ(swapped["A"].get<float>(), -0.2f);
  EXPECT_FLOAT_EQ(swapped[fmt::format("token_id:{}", *letter)].get<float>(), -0.3f);
  // Chat's top_logprobs is a list: both entries, same text and bytes, their own logprobs.
  const json chat = completion_response("id", 1, kModel, true, choices, 1, true,
                                        sp)["choices"][0]["logprobs"]["content"][0]["top_logprobs"];
  ASSERT_EQ(chat.size(), 2u);
  EXPECT_EQ(chat[0]["token"], "A");
  EXPECT_EQ(chat[1]["token"], "A");
  EXPECT_EQ(chat[0]["bytes"], json::array({65}));
  EXPECT_FLOAT_EQ(chat[1]["logprob"].get<float>(), -0.3f);
}

TEST(OpenAiResponse, ChatStreamChunks) {
  const auto tokens = some_tokens();
  StreamChunk first;
  first.text = "Hel";
  first.token_ids = {tokens[0]};
  const json a = stream_chunk("chatcmpl-2", 42, kModel, true, 3, first, true, false, tok());
  EXPECT_EQ(a["id"], "chatcmpl-2");
  EXPECT_EQ(a["object"], "chat.completion.chunk");
  EXPECT_EQ(a["created"], 42);
  EXPECT_EQ(a["model"], kModel);
  ASSERT_EQ(a["choices"].size(), 1u);
  EXPECT_EQ(a["choices"][0]["index"], 3);
  EXPECT_EQ(a["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", "Hel"}}));
  EXPECT_TRUE(a["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(a["choices"][0]["logprobs"].is_null());
  EXPECT_FALSE(a.contains("usage"));

  // The first chunk names the role even with no text yet.
  const json a0 = stream_chunk("c", 1, kModel, true, 0, StreamChunk{}, true, false, tok());
  EXPECT_EQ(a0["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));

  StreamChunk middle;
  middle.text = "lo";
  const json b = stream_chunk("chatcmpl-2", 42, kModel, true, 3, middle, false, false, tok());
  EXPECT_EQ(b["choices"][0]["delta"], (json{{"content", "lo"}}));
  EXPECT_TRUE(b["choices"][0]["finish_reason"].is_null());

  StreamChunk last;
  last.finish = FinishReason::kStop;
  const json c = stream_chunk("chatcmpl-2", 42, kModel, true, 3, last, false, false, tok());
  EXPECT_EQ(c["choices"][0]["delta"], json::object());
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");

  last.finish = FinishReason::kCancelled;
  EXPECT_EQ(stream_chunk("c", 1, kModel, true, 0, last, false, false, tok())["choices"][0]["finish_reason"], "abort");
  last.finish = FinishReason::kLength;
  last.text = "!";
  const json d = stream_chunk("c", 1, kModel, true, 0, last, false, false, tok());
  EXPECT_EQ(d["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(d["choices"][0]["delta"], (json{{"content", "!"}}));

  // With logprobs: the chunk's tokens, in chat's layout.
  StreamChunk lp;
  lp.text = "x";
  lp.token_ids = {tokens[0], tokens[1]};
  lp.samples = samples_for(lp.token_ids, 1);
  const json e = stream_chunk("c", 1, kModel, true, 0, lp, false, true, tok());
  ASSERT_EQ(e["choices"][0]["logprobs"]["content"].size(), 2u);
  EXPECT_EQ(e["choices"][0]["logprobs"]["content"][1]["token"], token_text(tokens[1]));
  EXPECT_EQ(e["choices"][0]["logprobs"]["content"][1]["top_logprobs"].size(), 1u);
}

TEST(OpenAiResponse, CompletionStreamChunks) {
  const auto tokens = some_tokens();
  StreamChunk c;
  c.text = "Hello";
  c.token_ids = {tokens[0], tokens[1]};
  c.samples = samples_for(c.token_ids, 2);
  const json a = stream_chunk("cmpl-5", 7, kModel, false, 1, c, true, false, tok());
  EXPECT_EQ(a["object"], "text_completion");
  ASSERT_EQ(a["choices"].size(), 1u);
  EXPECT_EQ(a["choices"][0]["index"], 1);
  EXPECT_EQ(a["choices"][0]["text"], "Hello");
  EXPECT_TRUE(a["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(a["choices"][0]["logprobs"].is_null());
  EXPECT_FALSE(a["choices"][0].contains("delta"));

  const json b = stream_chunk("cmpl-5", 7, kModel, false, 1, c, false, true, tok());
  const json& lp = b["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 2u);
  EXPECT_EQ(lp["tokens"][0], token_text(tokens[0]));
  EXPECT_EQ(lp["top_logprobs"][1].size(), 2u);
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][1], token_text(tokens[0]).size());

  c.finish = FinishReason::kLength;
  c.text.clear();
  const json f = stream_chunk("cmpl-5", 7, kModel, false, 1, c, false, false, tok());
  EXPECT_EQ(f["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(f["choices"][0]["text"], "");
  c.finish = FinishReason::kCancelled;
  EXPECT_EQ(stream_chunk("c", 1, kModel, false, 0, c, false, false, tok())["choices"][0]["finish_reason"], "abort");
}

TEST(OpenAiResponse, UsageChunk) {
  for (bool chat : {false, true}) {
    const json u = usage_chunk("id-3", 99, kModel, chat, 12, 30);
    EXPECT_EQ(u["id"], "id-3");
    EXPECT_EQ(u["object"], chat ? "chat.completion.chunk" : "text_completion");
    EXPECT_EQ(u["created"], 99);
    EXPECT_EQ(u["model"], kModel);
    EXPECT_EQ(u["choices"], json::array());
    EXPECT_EQ(u["usage"], (json{{"prompt_tokens", 12}, {"completion_tokens", 30}, {"total_tokens", 42}}));
  }
}

TEST(OpenAiResponse, ErrorBody) {
  const json e = error_body("bad temperature", "invalid_request_error", "temperature", "");
  EXPECT_EQ(e.size(), 1u);
  const json& err = e["error"];
  std::vector<std::string> keys;
  for (const auto& [k, v] : err.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"message", "type", "param", "code"}));
  EXPECT_EQ(err["message"], "bad temperature");
  EXPECT_EQ(err["type"], "invalid_request_error");
  EXPECT_EQ(err["param"], "temperature");
  EXPECT_TRUE(err["code"].is_null());
  const json f = error_body("gone", "server_error", "", "model_not_found");
  EXPECT_TRUE(f["error"]["param"].is_null());
  EXPECT_EQ(f["error"]["code"], "model_not_found");
  EXPECT_EQ(f.dump(), R"({"error":{"message":"gone","type":"server_error","param":null,"code":"model_not_found"}})");
}

TEST(OpenAiResponse, ApiErrorDefaults) {
  const ApiError e(400, "msg");
  EXPECT_EQ(e.status, 400);
  EXPECT_STREQ(e.what(), "msg");
  EXPECT_EQ(e.param, "");
  EXPECT_EQ(e.code, "");
  EXPECT_EQ(e.type, "invalid_request_error");
}

}  // namespace

TEST(OpenAiUnsupported, FieldsWeDoNotImplementAre400sNamingThem) {
  for (bool chat : {false, true}) {
    EXPECT_400(body_for(chat, {{"response_format", {{"type", "json_object"}}}}), chat, "response_format");
    EXPECT_400(body_for(chat, {{"response_format", {{"type", "json_schema"}, {"json_schema", json::object()}}}}), chat,
               "response_format");
    EXPECT_400(body_for(chat, {{"tools", json::array({{{"type", "function"}}})}}), chat, "tools");
    EXPECT_400(body_for(chat, {{"tool_choice", "auto"}}), chat, "tool_choice");
    EXPECT_400(body_for(chat, {{"functions", json::array()}}), chat, "functions");
    EXPECT_400(body_for(chat, {{"logit_bias", {{"50", 10}}}}), chat, "logit_bias");
    EXPECT_400(body_for(chat, {{"best_of", 3}}), chat, "best_of");
    EXPECT_400(body_for(chat, {{"suffix", "tail"}}), chat, "suffix");
    // Values that ask for nothing are accepted.
    for (const json& extra :
         {json{{"response_format", {{"type", "text"}}}}, json{{"tools", json::array()}}, json{{"tool_choice", "none"}},
          json{{"logit_bias", json::object()}}, json{{"best_of", 1}}, json{{"suffix", ""}}, json{{"tools", nullptr}}})
      EXPECT_EQ(error_of(body_for(chat, extra), chat).status, 0) << extra.dump();
  }
}

TEST(OpenAiUnsupported, StopTokenIdsReachTheEngineAndAreChecked) {
  EXPECT_EQ(parse(completion({{"stop_token_ids", {5, 7}}}), false).options.stop_token_ids,
            (std::vector<int32_t>{5, 7}));
  EXPECT_EQ(parse(chat_body({{"stop_token_ids", json::array()}}), true).options.stop_token_ids.size(), 0u);
  EXPECT_400(completion({{"stop_token_ids", {5, 1024}}}), false, "stop_token_ids");  // vocab_size 1024
  EXPECT_400(completion({{"stop_token_ids", 5}}), false, "stop_token_ids");
  EXPECT_400(completion({{"stop_token_ids", {-1}}}), false, "stop_token_ids");
}

TEST(OpenAiRoutes, ModelCardTokenizeAndDetokenize) {
  const json card = model_card(context(), false);
  EXPECT_EQ(card["id"], kModel);
  EXPECT_EQ(card["object"], "model");
  EXPECT_GT(card["max_model_len"].get<int64_t>(), 0);
  const json t = tokenize_response({{"prompt", "Hello world"}}, context());
  EXPECT_EQ(t["tokens"].get<std::vector<int32_t>>(), tok().encode("Hello world", true));
  EXPECT_EQ(t["count"], t["tokens"].size());
  EXPECT_EQ(tokenize_response({{"prompt", "Hello world"}, {"add_special_tokens", false}}, context())["tokens"]
                .get<std::vector<int32_t>>(),
            tok().encode("Hello world", false));
  // messages: the chat template's prompt, as /v1/chat/completions would build it.
  EXPECT_EQ(tokenize_response(chat_body(), context())["tokens"].get<std::vector<int32_t>>(),
            parse(chat_body(), true).prompts[0]);
  const json d = detokenize_response({{"tokens", tok().encode("Hello world", false)}}, context());
  EXPECT_EQ(d["prompt"], "Hello world");
  auto status = [](auto&& fn) {
    try {
      fn();
    } catch (const ApiError& e) {
      return e.status;
    }
    return 0;
  };
  EXPECT_EQ(status([] { tokenize_response({{"prompt", 5}}, context()); }), 400);
  EXPECT_EQ(status([] { tokenize_response(json::array(), context()); }), 400);
  EXPECT_EQ(status([] { detokenize_response({{"tokens", {1, 5000}}}, context()); }), 400);
  EXPECT_EQ(status([] { detokenize_response({{"tokens", "1 2"}}, context()); }), 400);
}

TEST(OpenAiStream, CompletionTextOffsetsContinueAcrossChunks) {
  StreamChunk c;
  c.text = "lo";
  c.token_ids = {tok().encode("lo", false)[0]};
  c.samples.resize(1);
  const json j = stream_chunk("c", 1, kModel, false, 0, c, false, true, tok(), 42);
  EXPECT_EQ(j["choices"][0]["logprobs"]["text_offset"][0], 42);
}

}  // namespace fp6serve::server
