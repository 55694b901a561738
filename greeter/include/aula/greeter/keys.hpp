// Keys as the greeter's input delivers them (Linux evdev key codes, with the
// text the current keyboard layout makes of them), and the table from Linux
// key codes to the PC XT set-1 scancodes that SPICE's inputs channel takes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::greeter {

struct Key {
  std::uint32_t code = 0;  // KEY_* of <linux/input-event-codes.h>
  bool pressed = true;
  std::string text;  // UTF-8 the layout makes of it on a press, or empty
  bool shift = false;
  bool ctrl = false;
  bool alt = false;
};

enum class MouseButton { kLeft, kMiddle, kRight, kSide, kExtra };

// The mouse as the greeter's input delivers it: a mouse moves by pixels, a
// tablet or touch screen (and QEMU's usb-tablet) says where on the screen.
struct Pointer {
  enum class Kind { kMotion, kAbsolute, kButton, kWheel };
  Kind kind = Kind::kMotion;
  double dx = 0;  // kMotion: pixels moved
  double dy = 0;
  double x = 0;  // kAbsolute: where, 0 to 1 across and down the screen
  double y = 0;
  MouseButton button = MouseButton::kLeft;  // kButton
  bool pressed = true;
  int wheel = 0;  // kWheel: notches; more than 0 is towards the user (scrolls down)
};

// The mouse button of a Linux BTN_* code, if it is one the guest can get.
std::optional<MouseButton> mouseButton(std::uint32_t linuxCode);

// The XT set-1 scancode of a Linux key code, with 0xe0-prefixed keys as
// 0x100 | code, as spice_inputs_channel_key_press() takes them; none for a
// key a PC keyboard does not have.
std::optional<std::uint32_t> xtScancode(std::uint32_t linuxCode);

// One line of scripted input, as `aula-greeter --output headless
// --keys-from-stdin` reads them (benchmarks and tests drive the program with
// it; a lab PC never has it): "type TEXT" presses a key for each character
// of TEXT (its text as typed, US keys), "key NAME" presses one named key:
// enter, esc, tab, backspace, up, down, left, right, f5, or menu (Shift+F12).
// Each press comes with its release. An error names what was not understood.
Result<std::vector<Key>> scriptedKeys(std::string_view line);

}  // namespace aula::greeter
