#include "engine/service.h"

#include <fmt/format.h>

namespace fp6serve {

Service::Service(const std::string& model_dir, Options options) : model_dir_(model_dir), options_(std::move(options)) {
  apply_environment(options_);
  options_.validate();
  const model::ModelConfig config = model::ModelConfig::load(model_dir);
  const model::GenerationDefaults defaults = model::GenerationDefaults::load(model_dir, config);
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(model_dir));
  model_ = Model::load(model_dir, options_);
  engine_ = std::make_unique<Engine>(*model_, *tokenizer_, options_, defaults);
  runner_ = std::make_unique<EngineRunner>(*engine_);
}

Service::~Service() {
  if (runner_) runner_->stop();
}

std::string Service::describe() const {
  const auto& c = model_->config();
  return fmt::format(
      "{} ({} layers, hidden {}, vocab {}), {} on {}, weights {:.1f} MiB, KV cache {} blocks of {} tokens, "
      "context {} tokens",
      c.model_type, c.num_layers, c.hidden_size, c.vocab_size, model_->quantization().name,
      model_->backend().describe(), model_->weights().bytes() / 1048576.0, engine_->kv_blocks(),
      engine_->kv_block_size(), engine_->max_model_len());
}

}  // namespace fp6serve
