// fp6serve's C++ API, in the spirit of DeepSpeed-MII's mii.pipeline:
//
//   fp6serve::Pipeline pipe("path/to/hf-model", {.quantization_mode = "wf6af16"});
//   auto responses = pipe({"DeepSpeed is", "Seattle is"}, {.max_new_tokens = 128});
//   std::cout << responses[0].generated_text;
//
// The model is loaded once (every linear layer quantized while loading); each call runs the
// prompts together through the continuous-batching engine, on the engine's thread: on_text
// is called there. Options and GenerateOptions are in options.h. Errors are fp6serve::Error.
#pragma once

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

class Pipeline {
 public:
  explicit Pipeline(const std::string& model_dir, const Options& options = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  std::vector<Response> operator()(const std::vector<std::string>& prompts, const GenerateOptions& options = {});

  // One prompt given as token ids; on_text receives the text as it is generated.
  Response generate(const std::vector<int32_t>& prompt_ids, const GenerateOptions& options = {},
                    const std::function<void(std::string_view)>& on_text = {});
  // Same with a text prompt.
  Response generate(const std::string& prompt, const GenerateOptions& options = {},
                    const std::function<void(std::string_view)>& on_text = {});

  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = true) const;
  std::string describe() const;  // model, mode, device, memory

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fp6serve
