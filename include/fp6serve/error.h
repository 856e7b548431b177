// The one error type of fp6serve. The library never aborts or exits: every failure is an
// Error whose message says what was wrong and where (file, tensor, field, position), and whose
// kind lets a front end choose its answer (the server maps kinds to HTTP status codes).
#pragma once

#include <stdexcept>
#include <string>

namespace fp6serve {

enum class ErrorKind {
  kInvalidArgument,  // a parameter or request that can never be valid
  kBadInput,         // a malformed file or document: checkpoint, config, tokenizer, JSON
  kNotFound,         // a file, tensor or name that does not exist
  kUnsupported,      // valid, but not something fp6serve does (a model_type, a format, no GPU)
  kOutOfMemory,      // host or device memory ran out
  kUnavailable,      // the system refused a resource: a port in use, an address not ours
  kCuda,             // a CUDA or cuBLAS call failed
  kInternal,         // a broken invariant: a bug in fp6serve
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace fp6serve
