// Fuzzes config.json and generation_config.json parsing: any input is a model config or an
// fp6serve::Error naming the file; anything else (another exception, a crash, a huge
// allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fp6serve/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const fp6serve::model::ModelConfig c = fp6serve::model::ModelConfig::parse(text, "config.json");
    (void)c.rope_inv_freq();
  } catch (const fp6serve::Error&) {
  }
  return 0;
}
