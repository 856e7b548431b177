#include "engine/output.h"

#include <algorithm>

namespace fp6serve {

OutputStream::OutputStream(const Tokenizer& tokenizer, const GenerateOptions& options, std::vector<int32_t> eos_ids)
    : decoder_(tokenizer, options.skip_special_tokens), stop_(options.stop), stop_ids_(options.stop_token_ids) {
  if (!options.ignore_eos) stop_ids_.insert(stop_ids_.end(), eos_ids.begin(), eos_ids.end());
}

bool OutputStream::push(int32_t token, std::string& text) {
  if (std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end()) {
    text += pending_;  // no stop string completed: the held-back text is final
    pending_.clear();
    return true;
  }
  pending_ += decoder_.push(token);
  // The earliest stop string in the pending text ends the request before it.
  size_t cut = std::string::npos;
  for (const std::string& stop : stop_) cut = std::min(cut, pending_.find(stop));
  if (cut != std::string::npos) {
    text += pending_.substr(0, cut);
    pending_.clear();
    return true;
  }
  // Hold back the longest suffix that could still grow into a stop string.
  size_t hold = 0;
  for (const std::string& stop : stop_)
    for (size_t k = std::min(stop.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
  text += pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return false;
}

std::string OutputStream::flush() {
  std::string out = std::move(pending_) + decoder_.flush();
  pending_.clear();
  return out;
}

}  // namespace fp6serve
