// The public Pipeline (include/fp6serve/pipeline.h): a Service, and calls that submit their
// prompts to its runner and wait for every answer.
#include "fp6serve/pipeline.h"

#include <condition_variable>
#include <mutex>

#include "core/check.h"
#include "engine/service.h"

namespace fp6serve {

struct Pipeline::Impl {
  Impl(const std::string& dir, const Options& o) : service(dir, o) {}
  Service service;

  // Submits every prompt and waits until all are done.
  std::vector<Response> run(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& o,
                            const std::function<void(size_t, std::string_view)>& on_text) {
    EngineRunner& runner = service.runner();
    std::mutex mutex;
    std::condition_variable done;
    std::vector<Response> out(prompts.size());
    std::vector<std::string> errors;
    size_t submitted = 0, finished = 0;
    std::vector<uint64_t> ids;
    auto wait_for_all = [&] {
      std::unique_lock lock(mutex);
      done.wait(lock, [&] { return finished == submitted; });
    };
    try {
      for (size_t i = 0; i < prompts.size(); ++i) {
        out[i].prompt_ids = prompts[i];
        out[i].prompt_tokens = static_cast<int64_t>(prompts[i].size());
        {
          std::lock_guard lock(mutex);
          ++submitted;
        }
        try {
          ids.push_back(runner.submit(prompts[i], o, [&, i](const StreamChunk& c) {
            if (on_text && !c.text.empty()) on_text(i, c.text);
            std::lock_guard lock(mutex);
            Response& r = out[i];
            r.generated_text += c.text;
            r.generated_ids.insert(r.generated_ids.end(), c.token_ids.begin(), c.token_ids.end());
            r.generated_tokens = c.generated_tokens;
            if (c.finish == FinishReason::kNone) return;
            r.finish_reason = finish_reason_name(c.finish);
            if (c.finish == FinishReason::kError) errors.push_back(c.error);
            ++finished;
            done.notify_all();
          }));
        } catch (...) {
          std::lock_guard lock(mutex);
          --submitted;
          throw;
        }
      }
    } catch (...) {
      // A bad prompt: nothing of this call stays queued.
      for (uint64_t id : ids) runner.cancel(id);
      wait_for_all();
      throw;
    }
    wait_for_all();
    FP6_CHECK(errors.empty(), kInternal, "generation failed: {}", errors.empty() ? "" : errors.front());
    return out;
  }
};

Pipeline::Pipeline(const std::string& model_dir, const Options& options)
    : impl_(std::make_unique<Impl>(model_dir, options)) {}

Pipeline::~Pipeline() = default;

std::vector<int32_t> Pipeline::encode(const std::string& text, bool add_special_tokens) const {
  return impl_->service.tokenizer().encode(text, add_special_tokens);
}

std::vector<Response> Pipeline::operator()(const std::vector<std::string>& prompts, const GenerateOptions& options) {
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& p : prompts) ids.push_back(encode(p, options.add_special_tokens));
  return impl_->run(ids, options, {});
}

Response Pipeline::generate(const std::vector<int32_t>& prompt_ids, const GenerateOptions& options,
                            const std::function<void(std::string_view)>& on_text) {
  return impl_->run({prompt_ids}, options, [&](size_t, std::string_view t) {
    if (on_text) on_text(t);
  })[0];
}

Response Pipeline::generate(const std::string& prompt, const GenerateOptions& options,
                            const std::function<void(std::string_view)>& on_text) {
  return generate(encode(prompt, options.add_special_tokens), options, on_text);
}

std::string Pipeline::describe() const {
  return impl_->service.describe();
}

}  // namespace fp6serve
