// Errors about files read from outside (config.json, generation_config.json, checkpoints):
// whatever goes wrong while reading one must be an fp6serve::Error naming the file. Field
// checks name the field too; this is the net under them, for what a check cannot foresee (a
// JSON accessor's type_error, bad_alloc, an Error from a lower layer that knows no file).
// tokenizer/fields.h is its twin for the tokenizer layer, which cannot see this one.
#pragma once

#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "core/check.h"

namespace fp6serve::model {

// Runs fn() while reading `source`: an exception other than Error becomes Error "<source>:
// <what>" (kOutOfMemory for bad_alloc, kBadInput otherwise); an Error whose message does not
// name `source` is rethrown with it prefixed (kInvalidArgument becomes kBadInput: the
// argument came from the file).
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

}  // namespace fp6serve::model
