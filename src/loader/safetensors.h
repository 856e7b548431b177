// Reading and writing safetensors files, and Hugging Face checkpoints made of them.
//
// A file is an 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" map of strings), then the
// data. Files are memory-mapped read-only: tensors are views into the mapping, so loading a
// checkpoint never copies the 16-bit model into anonymous memory. Every malformed header,
// offset or size is an Error(kBadInput) naming the file and the tensor; parse_safetensors
// does that validation on bytes in memory, for the file reader and the fuzz target alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace fp6serve::loader {

// The dtypes safetensors can name. Loading checks which ones a tensor may have.
enum class StDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };
const char* st_dtype_name(StDType dtype);
size_t st_dtype_size(StDType dtype);

struct TensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping
  size_t bytes = 0;
  int64_t numel() const { return shape_numel(shape); }
  std::string shape_string() const { return fp6serve::shape_string(shape); }  // "[4096, 11008]"
};

// The header of a safetensors file, validated against the file's bytes.
struct SafetensorsContents {
  std::map<std::string, TensorInfo> tensors;  // data points into the bytes parsed
  std::map<std::string, std::string> metadata;
};

// The safetensors reference implementation's header limit: real headers are kilobytes to a
// few megabytes (a 1000-layer model has ~20k entries), and nothing bigger is worth parsing.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Validates the whole file held in `bytes` (every tensor's dtype, shape, offsets, size and
// alignment) and returns its tensors, pointing into `bytes`. `bytes` must be aligned to 8
// (as a mapping or a malloc'd buffer is), so that a tensor is aligned in memory exactly when
// its position in the file is. Throws Error(kBadInput) "<source>: ..." naming the tensor.
SafetensorsContents parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source);

class SafetensorsFile {
 public:
  // Maps and validates the whole header; throws kNotFound / kBadInput.
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return contents_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return contents_.metadata; }
  const TensorInfo* find(const std::string& name) const;

 private:
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  SafetensorsContents contents_;
};

// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // Throws kNotFound naming the tensor and where it was looked for (describe()).
  const TensorInfo& get(const std::string& name) const;
  std::vector<std::string> names() const;
  // The file a tensor lives in, for error messages.
  std::filesystem::path file_of(const std::string& name) const;
  // The tensor's dtype as a float DType; throws kBadInput naming the file and the tensor when
  // it is not F16, BF16 or F32.
  DType float_dtype(const TensorInfo& t) const;
  // Metadata of the first file (the prequantized format keeps its own there).
  const std::map<std::string, std::string>& metadata() const { return files_.front()->metadata(); }
  // The first file, which holds that metadata (for error messages about it).
  const std::filesystem::path& metadata_file() const { return files_.front()->path(); }
  // The file for a single-file checkpoint, else the index: what error messages name.
  const std::filesystem::path& describe() const { return describe_; }

 private:
  std::filesystem::path dir_;
  std::filesystem::path describe_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> owner_;
};

// Writes a safetensors file (header padded to 8 bytes, as the reference writer does).
class SafetensorsWriter {
 public:
  void add(const std::string& name, StDType dtype, std::vector<int64_t> shape, const void* data, size_t bytes);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes to path.tmp then renames, so a crash never leaves a half-written file in place.
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    StDType dtype;
    std::vector<int64_t> shape;
    const void* data;
    size_t bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fp6serve::loader
