// fp6serve's C++ API, in the spirit of DeepSpeed-MII's mii.pipeline:
//
//   fp6serve::Pipeline pipe("path/to/hf-model", {.quantization_mode = "wf6af16"});
//   auto responses = pipe({"DeepSpeed is", "Seattle is"}, {.max_new_tokens = 128});
//   std::cout << responses[0].generated_text;
//
// The model is loaded once (every linear layer quantized while loading); each call runs the
// prompts together through the continuous-batching engine, on the engine's thread: on_text
// is called there. Options and GenerateOptions are in options.h. Errors are fp6serve::Error.
//
// start() is the one way a generation runs (the calls below wait on it): it returns at once
// with a Generation to wait for or cancel from any thread. A Pipeline may be called from
// several threads at once; their prompts share the engine's batches.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fp6serve/error.h"
#include "fp6serve/options.h"

namespace fp6serve {

struct Response {
  std::string generated_text;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  std::string finish_reason;  // "stop" (EOS or stop string), "length", "error"
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
};

// One turn of a conversation, for Pipeline::apply_chat_template.
struct Message {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

// Receives prompt `index`'s newly generated text, on the engine's thread; `last` is true on
// the prompt's final call (whose text may be empty).
using TextCallback = std::function<void(size_t index, std::string_view text, bool last)>;

// Prompts started by Pipeline::start, running on the engine's thread.
class Generation {
 public:
  Generation(Generation&&) noexcept;
  Generation& operator=(Generation&&) noexcept;
  ~Generation();  // cancels what is still running and waits until it stopped

  // True once every prompt has finished; waits at most `timeout` for that.
  bool wait_for(std::chrono::milliseconds timeout);
  // Waits until every prompt has finished; the responses in prompt order. Throws Error
  // (kInternal) when the engine failed a request.
  std::vector<Response> get();
  // Finishes every prompt still running at the engine's next step, finish_reason "cancelled"
  // (the text generated until then is kept). Safe from any thread; a no-op once finished.
  void cancel();

 private:
  friend class Pipeline;
  struct State;
  explicit Generation(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

class Pipeline {
 public:
  explicit Pipeline(const std::string& model_dir, const Options& options = {});
  ~Pipeline();  // cancels the generations still running (a Generation may outlive it)
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  std::vector<Response> operator()(const std::vector<std::string>& prompts, const GenerateOptions& options = {});

  // One prompt given as token ids; on_text receives the text as it is generated.
  Response generate(const std::vector<int32_t>& prompt_ids, const GenerateOptions& options = {},
                    const std::function<void(std::string_view)>& on_text = {});
  // Same with a text prompt.
  Response generate(const std::string& prompt, const GenerateOptions& options = {},
                    const std::function<void(std::string_view)>& on_text = {});

  // Starts prompts given as token ids and returns at once; throws (nothing stays queued) for
  // a prompt the engine refuses: empty, a token outside the vocabulary, too long.
  Generation start(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options = {},
                   TextCallback on_text = {});
  // Cancels every generation of this Pipeline in progress (Generation::cancel), from any thread.
  void cancel();

  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = true) const;
  // The conversation rendered by the model's chat template (or by `chat_template`, Jinja
  // source, when not empty), with bos_token and eos_token set as transformers sets them.
  // Encode the result with add_special_tokens = false: the template writes BOS itself.
  // A model without a template, or a template raising an error, is kInvalidArgument; one
  // that does not parse is kBadInput.
  std::string apply_chat_template(const std::vector<Message>& messages, bool add_generation_prompt = true,
                                  const std::string& chat_template = "") const;
  std::string describe() const;  // model, mode, device, memory

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp6serve
