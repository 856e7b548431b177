// Reading a whole file, with the error every loader wants when it cannot.
#pragma once

#include <filesystem>
#include <string>

namespace fp6serve {

// The file's bytes; throws Error(kNotFound) naming the path when it cannot be read.
std::string read_file(const std::filesystem::path& path);

}  // namespace fp6serve
