// Reading tokenizer.json and tokenizer_config.json field by field: every wrong type or value
// is an Error(kBadInput) naming the file and the JSON path, never an exception of the JSON
// library (its value() throws type_error on a wrong type) or an out-of-range id.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "core/check.h"

namespace fp6serve::tokenizer_parts {

// Token ids are used as indices (id -> token tables) and sizes (the vocabulary is the largest
// id + 1), so they are bounded before use: 2^31 wrapped negative in int32, and 2e8 sized a
// 7.5 GB table. 2^24 (16.7M) is far above any real vocabulary (256k; 1M at most), the bound
// of config.json's vocab_size too, and leaves every product with it far from overflowing.
inline constexpr int64_t kMaxTokenId = int64_t{1} << 24;

// A JSON value for an error message, cut short: it may be a megabyte long.
inline std::string brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 64 ? s.substr(0, 61) + "..." : s;
}

// A token id in [0, kMaxTokenId), or kBadInput "<source>: <what> ...".
inline int32_t token_id(const nlohmann::json& v, const std::string& source, const std::string& what) {
  FP6_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < kMaxTokenId, kBadInput,
            "{}: {} must be a token id in [0, {}), got {}", source, what, kMaxTokenId, brief(v));
  return static_cast<int32_t>(v.get<int64_t>());
}

// The optional field `key` of object `j` (at JSON path `path`), or `fallback` when absent or
// null; a value of another type is kBadInput naming the file and the field.
inline bool bool_or(const nlohmann::json& j, const char* key, bool fallback, const std::string& source,
                    const std::string& path) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  FP6_CHECK(j[key].is_boolean(), kBadInput, "{}: {}.{} must be true or false, got {}", source, path, key,
            brief(j[key]));
  return j[key].get<bool>();
}

inline std::string string_or(const nlohmann::json& j, const char* key, const std::string& fallback,
                             const std::string& source, const std::string& path) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  FP6_CHECK(j[key].is_string(), kBadInput, "{}: {}.{} must be a string, got {}", source, path, key, brief(j[key]));
  return j[key].get<std::string>();
}

inline uint64_t count_or(const nlohmann::json& j, const char* key, uint64_t fallback, const std::string& source,
                         const std::string& path) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  FP6_CHECK(j[key].is_number_unsigned(), kBadInput, "{}: {}.{} must be a non-negative integer, got {}", source, path,
            key, brief(j[key]));
  return j[key].get<uint64_t>();
}

}  // namespace fp6serve::tokenizer_parts
