#include "core/json.h"

#include "core/check.h"

namespace fp6serve {

void check_json_depth(std::string_view text, const std::string& source, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      FP6_CHECK(++depth <= max_depth, kBadInput, "{}: JSON nested deeper than {} levels", source, max_depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

template <typename Json>
Json parse_json(std::string_view text, const std::string& source, int max_depth) {
  check_json_depth(text, source, max_depth);
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    FP6_THROW(kBadInput, "{}: malformed JSON: {}", source, e.what());
  }
}

template nlohmann::json parse_json<nlohmann::json>(std::string_view, const std::string&, int);
template nlohmann::ordered_json parse_json<nlohmann::ordered_json>(std::string_view, const std::string&, int);

}  // namespace fp6serve
