// The public C++ API, used the way the README shows.
#include "fp6serve/pipeline.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/support/fixture.h"

namespace fp6serve {
namespace {

TEST(Pipeline, GreedyBatchMatchesTheReferenceAndStreamsTheSameText) {
  testing::Reference ref("tiny-llama");
  Pipeline pipe(testing::fixture_dir("tiny-llama"), {.quantization_mode = "fp32", .progress = false, .device = "cpu"});
  const auto& g = ref.json["greedy"][0];
  const auto prompt = ref.ids("greedy_prompt_0");
  const auto want = ref.ids("greedy_ids_0");
  std::string streamed;
  const Response r = pipe.generate(prompt, {.max_new_tokens = 20, .temperature = 0.0, .ignore_eos = true},
                                   [&](std::string_view t) { streamed += t; });
  EXPECT_EQ(r.generated_ids, std::vector<int32_t>(want.begin(), want.begin() + 20)) << g["name"];
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.prompt_tokens, static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(r.generated_tokens, 20);
  EXPECT_EQ(streamed, r.generated_text);

  const auto responses = pipe({"DeepSpeed is", "Seattle is"}, {.max_new_tokens = 8, .temperature = 0.0});
  ASSERT_EQ(responses.size(), 2u);
  for (const Response& resp : responses) {
    EXPECT_FALSE(resp.finish_reason.empty());
    EXPECT_LE(resp.generated_tokens, 8);
    EXPECT_EQ(resp.prompt_ids.front(), 1019);  // BOS from the tokenizer's post-processor
  }
  // Alone, the second prompt gives what it gave in the batch.
  EXPECT_EQ(pipe({"Seattle is"}, {.max_new_tokens = 8, .temperature = 0.0})[0].generated_ids,
            responses[1].generated_ids);
}

TEST(Pipeline, BadOptionsAreErrorsNotCrashes) {
  EXPECT_THROW(
      Pipeline(testing::fixture_dir("tiny-llama"), {.quantization_mode = "int3", .progress = false, .device = "cpu"}),
      Error);
  EXPECT_THROW(Pipeline(testing::fixture_dir("tiny-llama"), {.progress = false, .device = "tpu"}), Error);
  EXPECT_THROW(Pipeline("/no/such/model", {}), Error);
  Pipeline pipe(testing::fixture_dir("tiny-qwen2"), {.progress = false, .device = "cpu"});
  EXPECT_THROW(pipe({"x"}, {.max_new_tokens = 100000}), Error);
  EXPECT_THROW(pipe({"x"}, {.top_p = 2.0}), Error);
  // Still usable afterwards.
  EXPECT_EQ(pipe({"x"}, {.max_new_tokens = 3, .ignore_eos = true})[0].generated_tokens, 3);
}

// start(): a Generation to wait for, cancel from another thread, or drop; the text streams
// with `last` once per prompt; the pipeline is usable after each.
TEST(Pipeline, StartedGenerationsCanBeCancelledFromAnotherThread) {
  Pipeline pipe(testing::fixture_dir("tiny-trained"), {.progress = false, .device = "cpu"});
  const std::vector<int32_t> prompt = pipe.encode("Debian is");
  const GenerateOptions greedy{.max_new_tokens = 16, .temperature = 0.0, .ignore_eos = true};
  const std::vector<int32_t> want = pipe.generate(prompt, greedy).generated_ids;

  std::string text;
  int lasts = 0;
  Generation g = pipe.start({prompt}, greedy, [&](size_t i, std::string_view t, bool last) {
    EXPECT_EQ(i, 0u);
    text += t;
    lasts += last;
  });
  const std::vector<Response> r = g.get();
  EXPECT_EQ(r[0].generated_ids, want);
  EXPECT_EQ(text, r[0].generated_text);
  EXPECT_EQ(lasts, 1);

  const GenerateOptions long_run{.max_new_tokens = 1000, .temperature = 0.0, .ignore_eos = true};
  Generation running = pipe.start({prompt, prompt}, long_run);
  EXPECT_FALSE(running.wait_for(std::chrono::milliseconds(0)));
  std::thread other([&] { pipe.cancel(); });
  other.join();
  for (const Response& c : running.get()) {
    EXPECT_EQ(c.finish_reason, "cancelled");
    EXPECT_LT(c.generated_tokens, 1000);
  }
  { Generation dropped = pipe.start({prompt}, long_run); }  // cancelled by its destructor
  EXPECT_EQ(pipe.generate(prompt, greedy).generated_ids, want);
  EXPECT_THROW(pipe.start({prompt, {999999}}, greedy), Error);
  EXPECT_EQ(pipe.generate(prompt, greedy).generated_ids, want);
}

TEST(Pipeline, DecodesAndRendersTheChatTemplate) {
  Pipeline pipe(testing::fixture_dir("tiny-trained"), {.progress = false, .device = "cpu"});
  const std::vector<int32_t> ids = pipe.encode("Debian is", false);
  EXPECT_EQ(pipe.decode(ids), "Debian is");
  EXPECT_EQ(pipe.apply_chat_template({{"user", "hi"}}),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(pipe.apply_chat_template({{"user", "hi"}}, false, "{{ messages[0].content }}!"), "hi!");
  try {
    pipe.apply_chat_template({{"user", "hi"}}, true, "{{ bad");
    FAIL() << "a template that does not parse";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kBadInput);
  }
}

}  // namespace
}  // namespace fp6serve
