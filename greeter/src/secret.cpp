// Wiping secrets: explicit_bzero, which the compiler may not remove as a
// dead store.
#include "aula/greeter/secret.hpp"

#include <algorithm>

#include <string.h>  // NOLINT(modernize-deprecated-headers): explicit_bzero is not in <cstring>

namespace aula::greeter {

void wipe(std::string& text) {
  if (!text.empty())
    explicit_bzero(text.data(), text.size());
  text.clear();
}

void Secret::append(std::string_view more) {
  if (text_.capacity() < kMinCapacity || text_.size() + more.size() > text_.capacity()) {
    std::string grown;
    grown.reserve(std::max(kMinCapacity, (text_.size() + more.size()) * 2));
    grown.append(text_);
    wipe(text_);
    text_.swap(grown);
  }
  text_.append(more);
}

void Secret::popCharacter() {
  while (!text_.empty()) {
    const auto last = static_cast<unsigned char>(text_.back());
    text_.back() = '\0';
    text_.pop_back();
    if ((last & 0xc0) != 0x80)  // not a continuation byte: the character's first
      break;
  }
}

void Secret::clear() {
  wipe(text_);
}

}  // namespace aula::greeter
