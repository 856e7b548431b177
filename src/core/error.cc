#include "fp6serve/error.h"

namespace fp6serve {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid_argument";
    case ErrorKind::kBadInput:
      return "bad_input";
    case ErrorKind::kNotFound:
      return "not_found";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kOutOfMemory:
      return "out_of_memory";
    case ErrorKind::kUnavailable:
      return "unavailable";
    case ErrorKind::kCuda:
      return "cuda";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "unknown";
}

}  // namespace fp6serve
