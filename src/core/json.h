// JSON from outside (files, request bodies), parsed with limits. Nesting is bounded before
// parsing because copying, comparing or dumping a deeply nested value recurses once per level
// (a 200 KB body of 100,000 nested arrays overflowed the stack); what is malformed or too deep
// is Error(kBadInput) naming `source`, never a library exception.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace fp6serve {

// Deeper than any config, tokenizer or OpenAI request needs (tool schemas nest ~10 levels).
inline constexpr int kMaxJsonDepth = 64;

// Throws Error(kBadInput) "<source>: JSON nested deeper than <max_depth> levels" when arrays
// and objects nest deeper than max_depth (brackets inside strings do not count).
void check_json_depth(std::string_view text, const std::string& source, int max_depth = kMaxJsonDepth);

// check_json_depth, then nlohmann's parser; errors are Error(kBadInput) "<source>: malformed
// JSON: ...". Json: nlohmann::json or nlohmann::ordered_json (keeps member order).
template <typename Json = nlohmann::json>
Json parse_json(std::string_view text, const std::string& source, int max_depth = kMaxJsonDepth);

extern template nlohmann::json parse_json<nlohmann::json>(std::string_view, const std::string&, int);
extern template nlohmann::ordered_json parse_json<nlohmann::ordered_json>(std::string_view, const std::string&, int);

}  // namespace fp6serve
