// Fuzzes the safetensors parser (loader::parse_safetensors, the validation SafetensorsFile runs
// on its mapping) with whole files in memory: any input is a set of tensors that can be read
// in place, or an fp6serve::Error naming the file; anything else (another exception, a crash,
// a read out of bounds or misaligned, a huge allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "fp6serve/error.h"
#include "loader/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp6serve;
  // An exact-size heap copy: aligned as a mapping is for what the parser needs (8), and
  // AddressSanitizer sees a read one byte past the end.
  const std::unique_ptr<uint8_t[]> bytes(new uint8_t[size]);
  if (size) std::memcpy(bytes.get(), data, size);
  try {
    const loader::SafetensorsContents c = loader::parse_safetensors(bytes.get(), size, "model.safetensors");
    volatile uint32_t sink = 0;
    for (const auto& [name, t] : c.tensors) {
      (void)t.shape_string();
      const auto numel = static_cast<size_t>(t.numel());
      if (numel == 0) continue;
      // Every byte the tensor claims, then its values as the loader reads them (in place, as
      // arrays of the element type: UBSan reports a misaligned one).
      for (size_t i = 0; i < t.bytes; ++i) sink = sink + t.data[i];
      DType dtype;
      switch (t.dtype) {
        case loader::StDType::kF32:
          dtype = DType::kF32;
          break;
        case loader::StDType::kF16:
          dtype = DType::kF16;
          break;
        case loader::StDType::kBF16:
          dtype = DType::kBF16;
          break;
        default:
          continue;
      }
      std::vector<float> out(numel);
      convert_to_f32(t.data, dtype, out.data(), numel);
    }
  } catch (const Error&) {
  }
  return 0;
}
