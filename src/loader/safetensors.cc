#include "loader/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/file.h"
#include "core/json.h"

namespace fp6serve::loader {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DTypeName {
  StDType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeName kDTypes[] = {
    {StDType::kF64, "F64", 8},   {StDType::kF32, "F32", 4},        {StDType::kF16, "F16", 2},
    {StDType::kBF16, "BF16", 2}, {StDType::kI64, "I64", 8},        {StDType::kI32, "I32", 4},
    {StDType::kI16, "I16", 2},   {StDType::kI8, "I8", 1},          {StDType::kU8, "U8", 1},
    {StDType::kBool, "BOOL", 1}, {StDType::kF8E4M3, "F8_E4M3", 1}, {StDType::kF8E5M2, "F8_E5M2", 1},
};

}  // namespace

const char* st_dtype_name(StDType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

size_t st_dtype_size(StDType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

namespace {

// A header value for an error message, cut short: it may be megabytes long.
std::string brief(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 64 ? s.substr(0, 61) + "..." : s;
}

// One tensor entry of the header. `data_start` is where the data begins in the file.
TensorInfo parse_entry(const std::string& name, const json& entry, const uint8_t* data, uint64_t data_size,
                       uint64_t data_start, const std::string& source) {
  FP6_CHECK(entry.is_object(), kBadInput, "{}: tensor '{}' is {}, not an object", source, name, brief(entry));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    FP6_CHECK(entry.contains(key), kBadInput, "{}: tensor '{}' lacks '{}'", source, name, key);
  TensorInfo t;
  t.name = name;
  const json& dt = entry["dtype"];
  bool known = false;
  for (const auto& d : kDTypes)
    if (dt.is_string() && dt.get_ref<const std::string&>() == d.name) t.dtype = d.dtype, known = true;
  FP6_CHECK(known, kBadInput, "{}: tensor '{}' has unknown dtype {}", source, name, brief(dt));
  const json& shape = entry["shape"];
  FP6_CHECK(shape.is_array(), kBadInput, "{}: tensor '{}' shape is not a list", source, name);
  for (const json& d : shape) {
    FP6_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0 && d.get<int64_t>() < (int64_t{1} << 40), kBadInput,
              "{}: tensor '{}' has an invalid dimension {}", source, name, brief(d));
    t.shape.push_back(d.get<int64_t>());
  }
  // Every dimension is below 2^40, but their product (and its size in bytes) can still wrap
  // around and then match a small data range.
  const size_t elem = st_dtype_size(t.dtype);
  const std::optional<int64_t> numel = checked_shape_numel(t.shape);
  uint64_t expected = 0;
  FP6_CHECK(numel && !__builtin_mul_overflow(static_cast<uint64_t>(*numel), elem, &expected), kBadInput,
            "{}: tensor '{}' {} {} has more than 2^64 bytes", source, name, st_dtype_name(t.dtype), t.shape_string());
  const json& off = entry["data_offsets"];
  FP6_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), kBadInput,
            "{}: tensor '{}' data_offsets must be two non-negative integers, not {}", source, name, brief(off));
  const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  FP6_CHECK(begin <= end && end <= data_size, kBadInput,
            "{}: tensor '{}' data [{}, {}) lies outside the {} data bytes: truncated file?", source, name, begin, end,
            data_size);
  FP6_CHECK(end - begin == expected, kBadInput, "{}: tensor '{}' {} {} needs {} bytes but has {}", source, name,
            st_dtype_name(t.dtype), t.shape_string(), expected, end - begin);
  // Tensors are read in place as arrays of their element type: one at a position that is not
  // a multiple of its element size would be read misaligned (undefined behaviour).
  FP6_CHECK((data_start + begin) % elem == 0, kBadInput,
            "{}: tensor '{}' ({}) starts at byte {} of the file (data offset {}), which is not a multiple of its "
            "{}-byte element size",
            source, name, st_dtype_name(t.dtype), data_start + begin, begin, elem);
  t.data = data + begin;
  t.bytes = end - begin;
  return t;
}

}  // namespace

SafetensorsContents parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source) {
  return naming_file(source, [&] {
    FP6_CHECK(size >= 8, kBadInput, "{}: truncated safetensors file ({} bytes, less than the 8-byte header length)",
              source, size);
    FP6_CHECK(reinterpret_cast<uintptr_t>(bytes) % 8 == 0, kInternal,
              "parse_safetensors: the bytes of {} are not 8-byte aligned", source);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian on any host
    FP6_CHECK(header_len <= size - 8, kBadInput,
              "{}: header length {} runs past the end of the file ({} bytes): truncated or not a safetensors file",
              source, header_len, size);
    FP6_CHECK(header_len <= kMaxSafetensorsHeaderBytes, kBadInput,
              "{}: the JSON header is {} bytes, more than the {} a safetensors header may have", source, header_len,
              kMaxSafetensorsHeaderBytes);
    const json header =
        parse_json(std::string_view(reinterpret_cast<const char*>(bytes + 8), header_len), source + " (JSON header)");
    FP6_CHECK(header.is_object(), kBadInput, "{}: the JSON header is not an object", source);
    SafetensorsContents out;
    const uint64_t data_start = 8 + header_len;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        FP6_CHECK(entry.is_object(), kBadInput, "{}: __metadata__ is not an object", source);
        for (const auto& [k, v] : entry.items()) {
          FP6_CHECK(v.is_string(), kBadInput, "{}: __metadata__ value '{}' is not a string", source, k);
          out.metadata[k] = v.get<std::string>();
        }
        continue;
      }
      out.tensors.emplace(name, parse_entry(name, entry, bytes + data_start, size - data_start, data_start, source));
    }
    return out;
  });
}

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FP6_CHECK(fd >= 0, kNotFound, "cannot open {}: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    FP6_THROW(kBadInput, "cannot stat {}: {}", path.string(), std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    FP6_THROW(kBadInput, "{} is not a regular file", path.string());
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    FP6_THROW(kBadInput, "{}: truncated safetensors file ({} bytes, less than the 8-byte header length)", path.string(),
              size_);
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    FP6_THROW(kBadInput, "cannot map {}: {}", path.string(), std::strerror(errno));
  }
  // The destructor does not run for a constructor that throws: unmap first.
  try {
    contents_ = parse_safetensors(static_cast<const uint8_t*>(map_), size_, path.string());
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = contents_.tensors.find(name);
  return it == contents_.tensors.end() ? nullptr : &it->second;
}

Checkpoint::Checkpoint(const fs::path& dir) : dir_(dir) {
  FP6_CHECK(fs::is_directory(dir), kNotFound, "model directory {} does not exist", dir.string());
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    describe_ = single;
    files_.push_back(std::make_unique<SafetensorsFile>(single));
  } else if (fs::exists(index)) {
    describe_ = index;
    const std::string source = index.string();
    // (tensor, file) pairs of the weight map; the shards are opened after, so that their own
    // errors name them rather than the index.
    const auto entries = naming_file(source, [&] {
      const json j = parse_json(read_file(index), source);
      FP6_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), kBadInput,
                "{}: no weight_map object", source);
      std::vector<std::pair<std::string, std::string>> out;
      for (const auto& [tensor, file] : j["weight_map"].items()) {
        FP6_CHECK(file.is_string() && !file.get_ref<const std::string&>().empty(), kBadInput,
                  "{}: weight_map['{}'] is not a file name", source, tensor);
        const std::string f = file.get<std::string>();
        FP6_CHECK(f.find('/') == std::string::npos && f.find("..") == std::string::npos, kBadInput,
                  "{}: weight_map['{}'] names a file outside the directory: {}", source, tensor, f);
        out.emplace_back(tensor, f);
      }
      FP6_CHECK(!out.empty(), kBadInput, "{}: weight_map is empty", source);
      return out;
    });
    std::map<std::string, const SafetensorsFile*> by_file;
    for (const auto& [tensor, f] : entries) {
      if (!by_file.count(f)) {
        files_.push_back(std::make_unique<SafetensorsFile>(dir / f));
        by_file[f] = files_.back().get();
      }
      FP6_CHECK(by_file[f]->find(tensor) != nullptr, kBadInput, "{}: lists tensor '{}' in {}, which does not hold it",
                source, tensor, f);
    }
  } else {
    FP6_THROW(kNotFound, "{} has neither model.safetensors nor model.safetensors.index.json", dir.string());
  }
  for (const auto& f : files_)
    for (const auto& [name, info] : f->tensors()) owner_[name] = f.get();
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  const auto it = owner_.find(name);
  return it == owner_.end() ? nullptr : it->second->find(name);
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  FP6_CHECK(t != nullptr, kNotFound, "{}: tensor '{}' is missing", describe_.string(), name);
  return *t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : owner_) out.push_back(name);
  return out;
}

DType Checkpoint::float_dtype(const TensorInfo& t) const {
  switch (t.dtype) {
    case StDType::kF32:
      return DType::kF32;
    case StDType::kF16:
      return DType::kF16;
    case StDType::kBF16:
      return DType::kBF16;
    default:
      FP6_THROW(kBadInput, "{}: tensor '{}' has dtype {}; expected F16, BF16 or F32", file_of(t.name).string(), t.name,
                st_dtype_name(t.dtype));
  }
}

fs::path Checkpoint::file_of(const std::string& name) const {
  const auto it = owner_.find(name);
  return it == owner_.end() ? dir_ : it->second->path();
}

void SafetensorsWriter::add(const std::string& name, StDType dtype, std::vector<int64_t> shape, const void* data,
                            size_t bytes) {
  entries_.push_back({name, dtype, std::move(shape), data, bytes});
}

void SafetensorsWriter::write(const fs::path& path) const {
  json header = json::object();
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    header[e.name] = {
        {"dtype", st_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes}}};
    offset += e.bytes;
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    FP6_CHECK(out.good(), kInvalidArgument, "cannot write {}", tmp.string());
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Entry& e : entries_) out.write(static_cast<const char*>(e.data), static_cast<std::streamsize>(e.bytes));
    FP6_CHECK(out.good(), kInvalidArgument, "writing {} failed (disk full?)", tmp.string());
  }
  fs::rename(tmp, path);
}

}  // namespace fp6serve::loader
