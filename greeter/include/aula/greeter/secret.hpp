// A secret (a password, a SPICE ticket) that wipes its bytes when it is
// cleared, overwritten or destroyed, and can be moved but not copied, so that
// no stray copy stays behind in freed memory.
#pragma once

#include <string>
#include <string_view>

namespace aula::greeter {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string_view text) { append(text); }
  ~Secret() { clear(); }
  Secret(Secret&& other) noexcept : text_(std::move(other.text_)) { other.clear(); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      clear();
      text_ = std::move(other.text_);
      other.clear();
    }
    return *this;
  }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;

  // An explicit copy, for the one place that must hand the bytes on twice.
  Secret copy() const { return Secret(text_); }

  std::string_view view() const { return text_; }
  std::size_t size() const { return text_.size(); }
  bool empty() const { return text_.empty(); }

  // Appends text; the old buffer is wiped if the string has to grow.
  void append(std::string_view more);
  // Removes the last UTF-8 character.
  void popCharacter();
  void clear();

 private:
  // Held on the heap from the first byte, so that a move hands over the
  // pointer instead of copying a short string's bytes out of its inline
  // buffer (which the moved-from string would keep).
  static constexpr std::size_t kMinCapacity = 64;
  std::string text_;
};

// Overwrites a string's bytes in a way the compiler cannot drop, then
// empties it: for request bodies that carried a secret.
void wipe(std::string& text);

}  // namespace aula::greeter
