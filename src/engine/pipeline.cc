// The public Pipeline (include/fp6serve/pipeline.h): a Service, and Generations that submit
// their prompts to its runner and collect the answers.
#include "fp6serve/pipeline.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "chat/chat_template.h"
#include "core/check.h"
#include "engine/service.h"

namespace fp6serve {

// Shared by a Generation and the callbacks of its requests (which may run after the
// Generation object is gone, until the engine has finished them).
struct Generation::State {
  EngineRunner* runner = nullptr;
  TextCallback on_text;
  std::mutex mutex;
  std::condition_variable done;
  std::vector<Response> out;
  std::vector<std::string> errors;
  std::vector<uint64_t> ids;
  size_t running = 0;  // submitted and not finished

  void cancel() {
    std::vector<uint64_t> to_cancel;
    {
      std::lock_guard lock(mutex);
      if (running == 0) return;
      to_cancel = ids;
    }
    for (uint64_t id : to_cancel) runner->cancel(id);
  }
  void wait() {
    std::unique_lock lock(mutex);
    done.wait(lock, [&] { return running == 0; });
  }
};

Generation::Generation(std::shared_ptr<State> state) : state_(std::move(state)) {}
Generation::Generation(Generation&&) noexcept = default;
Generation& Generation::operator=(Generation&& other) noexcept {
  if (this != &other) {
    if (state_) {
      state_->cancel();
      state_->wait();
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

Generation::~Generation() {
  if (!state_) return;
  state_->cancel();
  state_->wait();
}

bool Generation::wait_for(std::chrono::milliseconds timeout) {
  FP6_CHECK(state_, kInvalidArgument, "wait_for on a moved-from Generation");
  std::unique_lock lock(state_->mutex);
  return state_->done.wait_for(lock, timeout, [&] { return state_->running == 0; });
}

std::vector<Response> Generation::get() {
  FP6_CHECK(state_, kInvalidArgument, "get on a moved-from Generation");
  state_->wait();
  std::lock_guard lock(state_->mutex);
  FP6_CHECK(state_->errors.empty(), kInternal, "generation failed: {}",
            state_->errors.empty() ? "" : state_->errors.front());
  return state_->out;
}

void Generation::cancel() {
  if (state_) state_->cancel();
}

struct Pipeline::Impl {
  Impl(const std::string& dir, const Options& o) : service(dir, o) {
    // A template that does not parse leaves the model without one; apply_chat_template says why.
    const std::string& source = service.tokenizer().chat_template();
    if (!source.empty()) {
      try {
        chat.emplace(source);
      } catch (const Error& e) {
        chat_error = e.what();
      }
    }
  }
  Service service;
  std::optional<ChatTemplate> chat;
  std::string chat_error;

  std::mutex mutex;
  std::vector<std::weak_ptr<Generation::State>> active;  // for Pipeline::cancel

  std::vector<std::shared_ptr<Generation::State>> running() {
    std::vector<std::shared_ptr<Generation::State>> out;
    std::lock_guard lock(mutex);
    for (const auto& w : active)
      if (auto s = w.lock()) out.push_back(std::move(s));
    return out;
  }

  std::shared_ptr<Generation::State> start(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& o,
                                           TextCallback on_text) {
    auto st = std::make_shared<Generation::State>();
    st->runner = &service.runner();
    st->on_text = std::move(on_text);
    st->out.resize(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      st->out[i].prompt_ids = prompts[i];
      st->out[i].prompt_tokens = static_cast<int64_t>(prompts[i].size());
    }
    {
      std::lock_guard lock(mutex);
      std::erase_if(active, [](const auto& w) { return w.expired(); });
      active.push_back(st);
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::unique_lock lock(st->mutex);
      ++st->running;
      lock.unlock();
      try {
        // The callback owns the state: the engine may call it after the Generation is gone.
        const uint64_t id = st->runner->submit(prompts[i], o, [st, i](const StreamChunk& c) {
          const bool last = c.finish != FinishReason::kNone;
          if (st->on_text && (!c.text.empty() || last)) st->on_text(i, c.text, last);
          std::lock_guard lock(st->mutex);
          Response& r = st->out[i];
          r.generated_text += c.text;
          r.generated_ids.insert(r.generated_ids.end(), c.token_ids.begin(), c.token_ids.end());
          r.generated_tokens = c.generated_tokens;
          if (!last) return;
          r.finish_reason = finish_reason_name(c.finish);
          if (c.finish == FinishReason::kError) st->errors.push_back(c.error);
          if (--st->running == 0) st->done.notify_all();
        });
        lock.lock();
        st->ids.push_back(id);
      } catch (...) {
        // A bad prompt: nothing of this call stays queued.
        lock.lock();
        --st->running;
        lock.unlock();
        st->cancel();
        st->wait();
        throw;
      }
    }
    return st;
  }
};

Pipeline::Pipeline(const std::string& model_dir, const Options& options)
    : impl_(std::make_unique<Impl>(model_dir, options)) {}

Pipeline::~Pipeline() {
  for (const auto& st : impl_->running()) {
    st->cancel();
    st->wait();
  }
}

Generation Pipeline::start(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                           TextCallback on_text) {
  return Generation(impl_->start(prompts, options, std::move(on_text)));
}

void Pipeline::cancel() {
  for (const auto& st : impl_->running()) st->cancel();
}

std::vector<int32_t> Pipeline::encode(const std::string& text, bool add_special_tokens) const {
  return impl_->service.tokenizer().encode(text, add_special_tokens);
}

std::string Pipeline::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return impl_->service.tokenizer().decode(ids, skip_special_tokens);
}

std::string Pipeline::apply_chat_template(const std::vector<Message>& messages, bool add_generation_prompt,
                                          const std::string& chat_template) const {
  std::optional<ChatTemplate> own;
  const ChatTemplate* t = nullptr;
  if (!chat_template.empty()) {
    own.emplace(chat_template);
    t = &*own;
  } else {
    FP6_CHECK(impl_->chat_error.empty(), kBadInput, "{}: the model's chat template does not parse: {}",
              impl_->service.model_dir(), impl_->chat_error);
    FP6_CHECK(impl_->chat.has_value(), kInvalidArgument,
              "{} ships no chat template (tokenizer_config.json chat_template or chat_template.jinja): "
              "pass one as chat_template",
              impl_->service.model_dir());
    t = &*impl_->chat;
  }
  std::vector<ChatMessage> turns;
  turns.reserve(messages.size());
  for (const Message& m : messages) turns.push_back({m.role, m.content});
  const Tokenizer& tok = impl_->service.tokenizer();
  return t->render(turns, add_generation_prompt, {{"bos_token", tok.bos_token()}, {"eos_token", tok.eos_token()}});
}

std::vector<Response> Pipeline::operator()(const std::vector<std::string>& prompts, const GenerateOptions& options) {
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& p : prompts) ids.push_back(encode(p, options.add_special_tokens));
  return start(ids, options).get();
}

Response Pipeline::generate(const std::vector<int32_t>& prompt_ids, const GenerateOptions& options,
                            const std::function<void(std::string_view)>& on_text) {
  TextCallback cb;
  if (on_text)
    cb = [&on_text](size_t, std::string_view t, bool) {
      if (!t.empty()) on_text(t);
    };
  return start({prompt_ids}, options, std::move(cb)).get()[0];
}

Response Pipeline::generate(const std::string& prompt, const GenerateOptions& options,
                            const std::function<void(std::string_view)>& on_text) {
  return generate(encode(prompt, options.add_special_tokens), options, on_text);
}

std::string Pipeline::describe() const {
  return impl_->service.describe();
}

}  // namespace fp6serve
