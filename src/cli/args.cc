// Parsing helpers shared by the subcommands (commands.h).
#include <limits>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/check.h"

namespace fp6serve::cli {

std::vector<int64_t> parse_int_list(const std::string& text, const char* option, int64_t min, int64_t max) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    FP6_CHECK(used == item.size() && !item.empty() && v >= min && v <= max, kInvalidArgument,
              "{}: '{}' is not an integer in [{}, {}] (expected a comma-separated list)", option, item, min, max);
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace fp6serve::cli
