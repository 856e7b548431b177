// Reading files from outside: a whole file, with the error every loader wants when it cannot,
// and the net that makes any failure while reading one an fp6serve::Error naming it.
#pragma once

#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "core/check.h"

namespace fp6serve {

// The file's bytes; throws Error(kNotFound) naming the path when it cannot be read.
std::string read_file(const std::filesystem::path& path);

// Runs fn() while reading `source` (config.json, tokenizer.json, a checkpoint, ...): an
// exception other than Error becomes Error "<source>: <what>" (kOutOfMemory for bad_alloc,
// kBadInput otherwise); an Error whose message does not name `source` is rethrown with it
// prefixed (kInvalidArgument becomes kBadInput: the argument came from the file). The net
// under the field checks, for what a check cannot foresee (a JSON accessor's type_error,
// bad_alloc, an Error from a lower layer that knows no file).
template <class Fn>
decltype(auto) naming_file(const std::string& source, Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const Error& e) {
    if (std::string_view(e.what()).find(source) != std::string_view::npos) throw;
    throw Error(e.kind() == ErrorKind::kInvalidArgument ? ErrorKind::kBadInput : e.kind(), source + ": " + e.what());
  } catch (const std::bad_alloc&) {
    FP6_THROW(kOutOfMemory, "{}: out of memory while reading it", source);
  } catch (const std::exception& e) {
    FP6_THROW(kBadInput, "{}: {}", source, e.what());
  }
}

}  // namespace fp6serve
