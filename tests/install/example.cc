// The README's C++ example, built against an installed fp6serve (tests/install/run.sh).
#include <fp6serve/pipeline.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  try {
    fp6serve::Pipeline pipe(argv[1], {.quantization_mode = "wf6af16", .progress = false, .device = "cpu"});
    auto responses = pipe({"DeepSpeed is", "Seattle is"}, {.max_new_tokens = 8});
    for (const auto& r : responses)
      std::printf("%lld tokens (%s): %s\n", static_cast<long long>(r.generated_tokens), r.finish_reason.c_str(),
                  r.generated_text.c_str());
  } catch (const fp6serve::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
