#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "fp6serve/error.h"
#include "tests/support/errors.h"

namespace fp6serve {
namespace {

using nlohmann::ordered_json;

const std::string kData = FP6SERVE_TEST_DATA;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const ordered_json& goldens() {
  static const ordered_json g = ordered_json::parse(read_file(kData + "/chat_templates/goldens.json"));
  return g;
}

// Renders like the golden generator: messages and add_generation_prompt, then the extras.
std::string render_case(const ChatTemplate& t, const ordered_json& c, bool agp) {
  return t.render_json(c.at("messages"), agp, c.at("extra"));
}

void expect_golden(const ChatTemplate& t, const ordered_json& c, bool agp, const std::string& where) {
  if (c.contains("text")) {
    try {
      EXPECT_EQ(render_case(t, c, agp), c.at("text").get<std::string>()) << where;
    } catch (const Error& e) {
      ADD_FAILURE() << where << ": unexpected error: " << e.what();
    }
    return;
  }
  try {
    const std::string out = render_case(t, c, agp);
    ADD_FAILURE() << where << ": jinja2 failed with '" << c.at("error").get<std::string>() << "' but got: " << out;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << where;
    if (c.at("raised").get<bool>()) EXPECT_EQ(std::string(e.what()), c.at("error").get<std::string>()) << where;
  }
}

TEST(ChatTemplate, FixturesMatchTransformers) {
  for (const char* model : {"tiny-llama", "tiny-llama2-sp", "tiny-qwen2"}) {
    const std::string dir = kData + "/" + model;
    const ChatTemplate t(read_file(dir + "/chat_template.jinja"));
    const auto reference = ordered_json::parse(read_file(dir + "/reference.json")).at("chat_template");
    const auto config = ordered_json::parse(read_file(dir + "/tokenizer_config.json"));
    ordered_json extra = ordered_json::object();
    for (const char* token : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      if (config.contains(token) && config[token].is_string()) extra[token] = config[token];
    }
    EXPECT_EQ(t.render_json(reference.at("messages"), reference.at("add_generation_prompt").get<bool>(), extra),
              reference.at("text").get<std::string>())
        << model;
    // The same conversation through the plain {role, content} API.
    std::vector<ChatMessage> messages;
    for (const auto& m : reference.at("messages")) {
      messages.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
    }
    EXPECT_EQ(t.render(messages, reference.at("add_generation_prompt").get<bool>(), nlohmann::json(extra)),
              reference.at("text").get<std::string>())
        << model;
    // The inline copy in tokenizer_config.json is the same template.
    if (config.contains("chat_template")) {
      EXPECT_EQ(
          ChatTemplate(config.at("chat_template").get<std::string>()).render(messages, true, nlohmann::json(extra)),
          reference.at("text").get<std::string>())
          << model;
    }
  }
}

TEST(ChatTemplate, PublishedTemplatesMatchJinja2) {
  const auto& templates = goldens().at("templates");
  ASSERT_GE(templates.size(), 7u);
  for (auto it = templates.begin(); it != templates.end(); ++it) {
    const ChatTemplate t(read_file(kData + "/chat_templates/" + it.value().at("file").get<std::string>()));
    for (const auto& c : it.value().at("cases")) {
      expect_golden(t, c, c.at("add_generation_prompt").get<bool>(), it.key() + " " + c.at("name").get<std::string>());
    }
  }
}

TEST(JinjaFeatures, MatchJinja2) {
  for (const auto& c : goldens().at("features")) {
    const std::string name = c.at("name").get<std::string>();
    try {
      const ChatTemplate t(c.at("template").get<std::string>());
      expect_golden(t, c, false, name);
    } catch (const Error& e) {
      ADD_FAILURE() << name << ": parse error: " << e.what();
    }
  }
}

std::string render_text(const std::string& source, const nlohmann::json& extra = nlohmann::json::object()) {
  return ChatTemplate(source).render({}, false, extra);
}

using testing::error_of;

TEST(ChatTemplate, SyntaxErrorsNameLineAndColumn) {
  const auto parse_error = [](const std::string& source) {
    return error_of([&] { ChatTemplate t(source); }, ErrorKind::kBadInput);
  };
  // The template's one trailing newline is dropped, as jinja2 does, so it ends on line 2.
  EXPECT_NE(parse_error("{% for x in xs %}\n  {{ x }}\n").find("at 2:10"), std::string::npos);
  EXPECT_NE(parse_error("{% for x in xs %}\n  {{ x }}\n").find("'endfor'"), std::string::npos);
  EXPECT_NE(parse_error("ab\ncd {{ x + }}").find("at 2:11: expected an expression"), std::string::npos);
  EXPECT_NE(parse_error("{% if x %}{% endfor %}").find("unknown tag 'endfor'"), std::string::npos);
  EXPECT_NE(parse_error("{{ 'unterminated }}").find("1:4"), std::string::npos);
  EXPECT_NE(parse_error("{# never closed").find("comment"), std::string::npos);
  EXPECT_NE(parse_error("{{ (1 }}").find("expected ')'"), std::string::npos);
  EXPECT_NE(parse_error("{% break %}").find("outside of a loop"), std::string::npos);
  EXPECT_NE(parse_error("{% frobnicate %}").find("unknown tag 'frobnicate'"), std::string::npos);
  EXPECT_NE(parse_error("{{ x }").find("1:"), std::string::npos);
}

TEST(ChatTemplate, RaiseExceptionIsInvalidArgumentWithTheMessage) {
  const std::string message = error_of(
      [] {
        render_text("{% if true %}{{ raise_exception('Roles must alternate: ' + who) }}{% endif %}", {{"who", "x"}});
      },
      ErrorKind::kInvalidArgument);
  EXPECT_EQ(message, "Roles must alternate: x");
}

TEST(ChatTemplate, RuntimeErrorsNameTheLine) {
  const std::string message = error_of([] { render_text("line one\n{{ 'a' + 1 }}"); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("2:"), std::string::npos) << message;
  EXPECT_NE(message.find("concatenate"), std::string::npos) << message;
}

// Both checked against jinja2 3.1: integer powers of -1, and the left operand evaluated (and
// failing) first.
TEST(ChatTemplate, ArithmeticAndEvaluationOrderFollowPython) {
  EXPECT_EQ(render_text("{{ (-1) ** 3 }} {{ (-1) ** 4 }} {{ 0 ** 0 }} {{ 2 ** 10 }} {{ (-2) ** 3 }}"),
            "-1 1 1 1024 -8");
  const std::string message = error_of([] { render_text("{{ missing.x + other.y }}"); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(message.find("'missing' is undefined"), std::string::npos) << message;
  EXPECT_EQ(message.find("other"), std::string::npos) << message;
}

TEST(ChatTemplate, HostileTemplatesHitLimitsInsteadOfHanging) {
  // Unbounded output.
  error_of(
      [] { render_text("{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}"); },
      ErrorKind::kInvalidArgument);
  // Work without output.
  error_of([] { render_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"); },
           ErrorKind::kInvalidArgument);
  // Exponential string growth.
  error_of(
      [] {
        render_text("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}");
      },
      ErrorKind::kInvalidArgument);
  error_of([] { render_text("{{ 'x' * 100000000000 }}"); }, ErrorKind::kInvalidArgument);
  // Unbounded recursion.
  error_of([] { render_text("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"); }, ErrorKind::kInvalidArgument);
  // A namespace holding itself.
  error_of([] { render_text("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"); }, ErrorKind::kInvalidArgument);
  // Deep nesting is refused by the parser, not by the stack.
  error_of([] { ChatTemplate t("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"); },
           ErrorKind::kBadInput);
  error_of([] { ChatTemplate t("{{ " + std::string(3000, '-') + "1 }}"); }, ErrorKind::kBadInput);
}

TEST(ChatTemplate, ToolsAndDocumentsDefaultToNone) {
  EXPECT_EQ(render_text("{{ tools is none }} {{ documents is none }}"), "True True");
  EXPECT_EQ(render_text("{{ tools|length }}", {{"tools", {1, 2}}}), "2");
}

TEST(ChatTemplate, OrderedJsonKeepsMemberOrder) {
  const ChatTemplate t("{{ messages[0]|tojson }}");
  const auto messages = ordered_json::parse(R"([{"role": "user", "content": "x", "b": 1, "a": 2}])");
  EXPECT_EQ(t.render_json(messages, false), R"({"role": "user", "content": "x", "b": 1, "a": 2})");
  // nlohmann::json sorts object members.
  EXPECT_EQ(t.render_json(nlohmann::json(messages), false), R"({"a": 2, "b": 1, "content": "x", "role": "user"})");
}

TEST(ChatTemplate, RejectsBadArguments) {
  const ChatTemplate t("x");
  error_of([&] { t.render_json(nlohmann::json::object(), false); }, ErrorKind::kInvalidArgument);
  error_of([&] { t.render({}, false, nlohmann::json::array()); }, ErrorKind::kInvalidArgument);
  error_of([&] { t.render({}, false, {{"messages", 1}}); }, ErrorKind::kInvalidArgument);
}

TEST(ChatTemplate, RendersConcurrently) {
  const ChatTemplate t(read_file(kData + "/chat_templates/llama-3.1-8b-instruct.jinja"));
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  const nlohmann::json extra = {{"bos_token", "<|begin_of_text|>"}};
  const std::string expected = t.render(messages, true, extra);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k) {
        if (t.render(messages, true, extra) != expected) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace fp6serve
