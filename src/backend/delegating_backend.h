// A backend that forwards every call to an inner one: derive from it and override what you
// change (the calibration of fp6serve quantize --calibration measures the linears' inputs;
// tests inject faults or pretend to be a GPU).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"

namespace fp6serve {

class DelegatingBackend : public Backend {
 public:
  explicit DelegatingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}
  Device device() const override { return inner_->device(); }
  DType act_dtype() const override { return inner_->act_dtype(); }
  DType pack_target(fpx::Format f) const override { return inner_->pack_target(f); }
  std::string describe() const override { return "delegating to " + inner_->describe(); }
  Memory memory() const override { return inner_->memory(); }
  std::unique_ptr<LinearWeight> adopt_linear(HostLinear&& h) override { return inner_->adopt_linear(std::move(h)); }
  std::unique_ptr<ExpertWeights> adopt_experts(std::vector<HostLinear>&& e) override {
    return inner_->adopt_experts(std::move(e));
  }
  Tensor adopt_tensor(Tensor t) override { return inner_->adopt_tensor(std::move(t)); }
  void upload(const Tensor& host, Tensor& dst) override { inner_->upload(host, dst); }
  std::unique_ptr<LinearWeight> random_linear(int64_t rows, int64_t cols, const QuantizationMode& mode, float stddev,
                                              uint64_t seed) override {
    return inner_->random_linear(rows, cols, mode, stddev, seed);
  }
  KvCache make_kv_cache(int64_t n, int64_t b) override { return inner_->make_kv_cache(n, b); }
  size_t kv_block_bytes(int64_t b) const override { return inner_->kv_block_bytes(b); }
  Tensor activations(int64_t r, int64_t c) override { return inner_->activations(r, c); }
  void begin_forward(const Batch& b, const KvCache& c) override { inner_->begin_forward(b, c); }
  void embed(const Tensor& t, Tensor& o) override { inner_->embed(t, o); }
  void rms_norm(const Tensor& x, const Tensor& w, double e, Tensor& o) override { inner_->rms_norm(x, w, e, o); }
  void add_rms_norm(Tensor& r, const Tensor& x, const Tensor& w, double e, Tensor& o) override {
    inner_->add_rms_norm(r, x, w, e, o);
  }
  void linear(const Tensor& x, const LinearWeight& w, Tensor& y) override { inner_->linear(x, w, y); }
  void rope_write_kv(Tensor& q, KvCache& c, int64_t l) override { inner_->rope_write_kv(q, c, l); }
  void attention(const Tensor& q, const KvCache& c, int64_t l, Tensor& o) override { inner_->attention(q, c, l, o); }
  void qk_norm(Tensor& q, const Tensor& qw, const Tensor& kw, double e) override { inner_->qk_norm(q, qw, kw, e); }
  void moe(const Tensor& x, const MoeWeights& w, Tensor& o) override { inner_->moe(x, w, o); }
  void silu_mul(const Tensor& g, Tensor& o) override { inner_->silu_mul(g, o); }
  void add(Tensor& a, const Tensor& x) override { inner_->add(a, x); }
  void gather_logit_rows(const Tensor& x, Tensor& o) override { inner_->gather_logit_rows(x, o); }
  Tensor to_host_f32(const Tensor& x) override { return inner_->to_host_f32(x); }
  std::vector<Sample> sample(const Tensor& l, const std::vector<SampleRow>& r) override { return inner_->sample(l, r); }

 protected:
  Backend& inner() { return *inner_; }
  const Backend& inner() const { return *inner_; }

 private:
  std::unique_ptr<Backend> inner_;
};

}  // namespace fp6serve
