#include "engine/service.h"

#include <fmt/format.h>

#include "model/device.h"

namespace fp6serve {

Service::Service(const std::string& model_dir, const PipelineOptions& options)
    : model_dir_(model_dir), options_(options) {
  const model::ModelConfig config = model::ModelConfig::load(model_dir);
  defaults_ = model::GenerationDefaults::load(model_dir, config);
  tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(model_dir));
  model::LoadOptions load;
  load.mode = model::QuantizationMode::parse(options.quantization_mode);
  load.mode_explicit = true;
  load.quantize_lm_head = options.quantize_lm_head;
  load.progress = options.progress;
  model_ = model::Model::load(model_dir, load, model::make_backend(options.device, config, load.mode));
  EngineConfig ec;
  ec.max_batch_tokens = options.max_batch_tokens;
  ec.max_model_len = options.max_model_len;
  ec.kv_cache_bytes = options.kv_cache_bytes;
  ec.eos_token_ids = defaults_.eos_token_ids;
  if (ec.eos_token_ids.empty() && tokenizer_->eos_id()) ec.eos_token_ids.push_back(*tokenizer_->eos_id());
  engine_ = std::make_unique<Engine>(*model_, *tokenizer_, ec);
}

GenerationParams Service::params(const GenerateOptions& o) const {
  GenerationParams p;
  p.max_new_tokens = o.max_new_tokens;
  p.stop = o.stop;
  p.ignore_eos = o.ignore_eos;
  SamplingParams& s = p.sampling;
  const bool sample = defaults_.do_sample;
  s.temperature = o.temperature.value_or(sample ? defaults_.temperature : 0.0);
  s.top_p = o.top_p.value_or(sample ? defaults_.top_p : 1.0);
  s.top_k = o.top_k.value_or(sample ? defaults_.top_k : 0);
  s.min_p = o.min_p.value_or(0.0);
  s.repetition_penalty = o.repetition_penalty.value_or(defaults_.repetition_penalty);
  s.seed = o.seed;
  return p;
}

std::string Service::describe() const {
  const auto& c = model_->config();
  return fmt::format("{} ({} layers, hidden {}, vocab {}), {} on {}, weights {:.1f} MiB, KV cache {} blocks of {} tokens, "
                     "context {} tokens",
                     c.model_type, c.num_layers, c.hidden_size, c.vocab_size, options_.quantization_mode,
                     model_->backend().describe(), model_->weights().bytes() / 1048576.0, engine_->config().num_blocks,
                     engine_->config().block_size, engine_->max_model_len());
}

}  // namespace fp6serve
