// Fuzzes what a client sends to /v1/completions and /v1/chat/completions: any body is a parsed
// request or an ApiError/fp6serve::Error turned into an OpenAI error answer; anything else
// (another exception, a crash, a sanitizer report, a huge allocation) is a finding. The first
// byte picks the route (odd: chat).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/json.h"
#include "engine/service.h"
#include "server/openai.h"

namespace {

struct World {
  World() : service(std::string(FP6SERVE_TEST_DATA) + "/tiny-llama", options()) {
    chat_template = std::make_unique<fp6serve::ChatTemplate>(service.tokenizer().chat_template());
  }
  static fp6serve::Options options() {
    fp6serve::Options o;
    o.device = "cpu";
    o.progress = false;
    o.kv_cache_blocks = 64;
    return o;
  }
  fp6serve::Service service;
  std::unique_ptr<fp6serve::ChatTemplate> chat_template;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  using namespace fp6serve;
  try {
    const auto json = parse_json<nlohmann::ordered_json>(body, "the request body");
    const server::ParsedRequest r =
        server::parse_request(json, chat, {world.service, "tiny", world.chat_template.get()});
    r.options.validate();
  } catch (...) {
    (void)server::dump_json(server::error_reply(std::current_exception()).body);
  }
  return 0;
}
