// Keys as the greeter's input delivers them (Linux evdev key codes, with the
// text the current keyboard layout makes of them), and the table from Linux
// key codes to the PC XT set-1 scancodes that SPICE's inputs channel takes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace aula::greeter {

struct Key {
  std::uint32_t code = 0;  // KEY_* of <linux/input-event-codes.h>
  bool pressed = true;
  std::string text;  // UTF-8 the layout makes of it on a press, or empty
  bool shift = false;
  bool ctrl = false;
  bool alt = false;
};

// The XT set-1 scancode of a Linux key code, with 0xe0-prefixed keys as
// 0x100 | code, as spice_inputs_channel_key_press() takes them; none for a
// key a PC keyboard does not have.
std::optional<std::uint32_t> xtScancode(std::uint32_t linuxCode);

}  // namespace aula::greeter
