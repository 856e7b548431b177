// A model ready to serve: config, tokenizer, generation defaults, the loaded model and its
// engine. The Pipeline (one caller, synchronous) and the HTTP server (many clients, an
// engine thread) are both built on it.
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"
#include "fp6serve/pipeline.h"
#include "model/config.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace fp6serve {

class Service {
 public:
  Service(const std::string& model_dir, const PipelineOptions& options);

  Engine& engine() { return *engine_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const model::ModelConfig& config() const { return model_->config(); }
  const model::GenerationDefaults& defaults() const { return defaults_; }
  const PipelineOptions& options() const { return options_; }
  const std::string& model_dir() const { return model_dir_; }

  // Generation parameters: what the caller set, else the checkpoint's generation_config
  // (Hugging Face semantics: without do_sample its temperature does not apply), else greedy.
  GenerationParams params(const GenerateOptions& options) const;
  std::string describe() const;

 private:
  std::string model_dir_;
  PipelineOptions options_;
  model::GenerationDefaults defaults_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace fp6serve
