// A model ready to serve: its config, tokenizer, generation defaults, the loaded model, its
// engine and the runner that steps it. The Pipeline (one caller at a time) and the HTTP
// server (many clients) are both built on it.
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/runner.h"
#include "fp6serve/options.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "transformer/model.h"

namespace fp6serve {

class Service {
 public:
  // Loads model_dir as `options` say (Options::validate, then the environment's knobs:
  // apply_environment).
  Service(const std::string& model_dir, Options options);
  // A model of a real shape with random weights (ModelConfig::shape: llama2-7b, ..., or a
  // config.json) and a synthetic tokenizer (tokenizer/synthetic.h): for benchmarks without a
  // checkpoint. Its name says so ("llama2-7b (random weights)").
  static std::unique_ptr<Service> random_weights(const std::string& shape, Options options);
  ~Service();

  EngineRunner& runner() { return *runner_; }
  const Engine& engine() const { return *engine_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const model::ModelConfig& config() const { return model_->config(); }
  const Options& options() const { return options_; }
  const std::string& model_dir() const { return model_dir_; }  // or the shape of random weights
  bool random() const { return random_; }
  std::string describe() const;

 private:
  Service() = default;
  void start(const model::GenerationDefaults& defaults);

  std::string model_dir_;
  bool random_ = false;
  Options options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<EngineRunner> runner_;
};

}  // namespace fp6serve
