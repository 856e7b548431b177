#include "engine/service.h"

#include <fmt/format.h>

#include "tokenizer/synthetic.h"
#include "transformer/device.h"

namespace fp6serve {

Service::Service(const std::string& model_dir, Options options) : model_dir_(model_dir), options_(std::move(options)) {
  apply_environment(options_);
  options_.validate();
  const model::ModelConfig config = model::ModelConfig::load(model_dir);
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(model_dir));
  model_ = Model::load(model_dir, options_);
  start(model::GenerationDefaults::load(model_dir, config));
}

std::unique_ptr<Service> Service::random_weights(const std::string& shape, Options options) {
  std::unique_ptr<Service> s(new Service());
  s->model_dir_ = shape;
  s->random_ = true;
  s->options_ = std::move(options);
  apply_environment(s->options_);
  s->options_.validate();
  const model::ModelConfig config = model::ModelConfig::shape(shape);
  const auto mode = model::QuantizationMode::parse(
      s->options_.quantization_mode.empty() ? model::QuantizationMode::kDefault : s->options_.quantization_mode);
  s->tokenizer_ = std::make_unique<Tokenizer>(synthetic_tokenizer(config.vocab_size));
  s->model_ = Model::random(config, mode, s->options_);
  s->start({});
  return s;
}

void Service::start(const model::GenerationDefaults& defaults) {
  engine_ = std::make_unique<Engine>(*model_, *tokenizer_, options_, defaults);
  runner_ = std::make_unique<EngineRunner>(*engine_);
}

Service::~Service() {
  if (runner_) runner_->stop();
}

std::string Service::describe() const {
  const auto& c = model_->config();
  return fmt::format(
      "{}{} ({} layers, hidden {}, vocab {}), {} on {}{}, weights {:.1f} MiB, KV cache {} blocks of {} tokens "
      "({:.1f} MiB, {}: {} full-context sequences), context {} tokens",
      random_ ? "RANDOM WEIGHTS of a " : "", c.model_type, c.num_layers, c.hidden_size, c.vocab_size,
      model_->quantization().name, model_->backend().describe(),
      model_->tensor_parallel_size() > 1
          ? fmt::format(" and {} more ranks (tensor parallel; weights and KV cache: rank 0's)",
                        model_->tensor_parallel_size() - 1)
          : "",
      model_->weights().bytes() / 1048576.0, engine_->kv_blocks(), engine_->kv_block_size(),
      engine_->kv_bytes() / 1048576.0, engine_->kv_sizing(),
      engine_->kv_blocks() * engine_->kv_block_size() / engine_->max_model_len(), engine_->max_model_len());
}

}  // namespace fp6serve
