// QEMU's machine protocol (QMP) over its unix socket, for tests that start
// QEMU themselves: screendumps, keys, SPICE passwords.
#pragma once

#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>

#include "aula/common/json.hpp"

namespace aula::test {

// One JSON object per line. Fails by throwing, like the other test helpers.
class Qmp {
 public:
  explicit Qmp(const std::filesystem::path& socketPath);
  ~Qmp();
  Qmp(const Qmp&) = delete;
  Qmp& operator=(const Qmp&) = delete;

  // The command's "return"; throws with QEMU's error.
  json::Json execute(const std::string& command,
                     const json::Json& arguments = json::Json::object());

  // Types `text` as key presses (send-key): letters, digits, space and the
  // common punctuation of a US keyboard; throws on anything else.
  void type(std::string_view text);
  // One key or chord by QEMU's qcodes: {"ret"}, {"ctrl", "alt", "delete"}.
  void press(std::initializer_list<std::string_view> qcodes);

 private:
  json::Json readMessage();

  int fd_ = -1;
  std::string buffer_;
};

}  // namespace aula::test
