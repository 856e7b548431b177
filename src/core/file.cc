#include "core/file.h"

#include <fstream>
#include <sstream>

#include "core/check.h"

namespace fp6serve {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  FP6_CHECK(in.good(), kNotFound, "cannot read {}", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace fp6serve
