// Linux key codes to PC XT set-1 scancodes. The first 88 Linux codes are the
// XT codes themselves (the kernel's numbering started from them); the rest
// follow keycodemapdb's linux -> xtkbd table for the keys of a PC keyboard.
#include "aula/greeter/keys.hpp"

#include <array>
#include <utility>

#include <linux/input-event-codes.h>

namespace aula::greeter {

namespace {

constexpr std::uint32_t kExtended = 0x100;

constexpr std::array<std::pair<std::uint32_t, std::uint32_t>, 37> kBeyondXt = {{
    {KEY_RO, 0x73},
    {KEY_KATAKANAHIRAGANA, 0x70},
    {KEY_HENKAN, 0x79},
    {KEY_MUHENKAN, 0x7b},
    {KEY_KPENTER, kExtended | 0x1c},
    {KEY_RIGHTCTRL, kExtended | 0x1d},
    {KEY_KPSLASH, kExtended | 0x35},
    {KEY_SYSRQ, kExtended | 0x37},
    {KEY_RIGHTALT, kExtended | 0x38},
    {KEY_HOME, kExtended | 0x47},
    {KEY_UP, kExtended | 0x48},
    {KEY_PAGEUP, kExtended | 0x49},
    {KEY_LEFT, kExtended | 0x4b},
    {KEY_RIGHT, kExtended | 0x4d},
    {KEY_END, kExtended | 0x4f},
    {KEY_DOWN, kExtended | 0x50},
    {KEY_PAGEDOWN, kExtended | 0x51},
    {KEY_INSERT, kExtended | 0x52},
    {KEY_DELETE, kExtended | 0x53},
    {KEY_MUTE, kExtended | 0x20},
    {KEY_VOLUMEDOWN, kExtended | 0x2e},
    {KEY_VOLUMEUP, kExtended | 0x30},
    {KEY_POWER, kExtended | 0x5e},
    {KEY_KPEQUAL, 0x59},
    {KEY_PAUSE, kExtended | 0x46},
    {KEY_KPCOMMA, 0x7e},
    {KEY_YEN, 0x7d},
    {KEY_LEFTMETA, kExtended | 0x5b},
    {KEY_RIGHTMETA, kExtended | 0x5c},
    {KEY_COMPOSE, kExtended | 0x5d},
    {KEY_F13, 0x5d},
    {KEY_F14, 0x5e},
    {KEY_F15, 0x5f},
    {KEY_F16, 0x55},
    {KEY_NEXTSONG, kExtended | 0x19},
    {KEY_PREVIOUSSONG, kExtended | 0x10},
    {KEY_PLAYPAUSE, kExtended | 0x22},
}};

}  // namespace

std::optional<MouseButton> mouseButton(std::uint32_t linuxCode) {
  switch (linuxCode) {
    case BTN_LEFT:
      return MouseButton::kLeft;
    case BTN_MIDDLE:
      return MouseButton::kMiddle;
    case BTN_RIGHT:
      return MouseButton::kRight;
    case BTN_SIDE:
    case BTN_BACK:
      return MouseButton::kSide;
    case BTN_EXTRA:
    case BTN_FORWARD:
      return MouseButton::kExtra;
    default:
      return std::nullopt;
  }
}

std::optional<std::uint32_t> xtScancode(std::uint32_t linuxCode) {
  if (linuxCode >= KEY_ESC && linuxCode <= KEY_F12 && linuxCode != 84 && linuxCode != 85)
    return linuxCode;
  for (const auto& [linux, xt] : kBeyondXt) {
    if (linux == linuxCode)
      return xt;
  }
  return std::nullopt;
}

Result<std::vector<Key>> scriptedKeys(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
    line.remove_suffix(1);
  std::vector<Key> keys;
  auto press = [&keys](std::uint32_t code, std::string text, bool shift = false) {
    keys.push_back(Key{code, true, std::move(text), shift});
    keys.push_back(Key{code, false, {}, shift});
  };
  if (line.starts_with("type ")) {
    for (char c : line.substr(5)) {
      if (static_cast<unsigned char>(c) < 0x20)
        return makeError(Errc::kInvalidArgument, "Scripted input: 'type' takes printable text.");
      press(KEY_A, std::string(1, c));  // the text is what counts; the code is any letter's
    }
    return keys;
  }
  if (line.starts_with("key ")) {
    static constexpr std::pair<std::string_view, std::uint32_t> kNamed[] = {
        {"enter", KEY_ENTER}, {"esc", KEY_ESC},   {"tab", KEY_TAB},   {"backspace", KEY_BACKSPACE},
        {"up", KEY_UP},       {"down", KEY_DOWN}, {"left", KEY_LEFT}, {"right", KEY_RIGHT},
        {"f5", KEY_F5},       {"menu", KEY_F12}};
    const std::string_view name = line.substr(4);
    for (const auto& [known, code] : kNamed) {
      if (name == known) {
        press(code, {}, name == "menu");
        return keys;
      }
    }
    return makeError(Errc::kInvalidArgument,
                     "Scripted input: no key named '{}' (enter, esc, tab, backspace, up, down, "
                     "left, right, f5, menu).",
                     name);
  }
  return makeError(Errc::kInvalidArgument,
                   "Scripted input: a line is 'type TEXT' or 'key NAME', not '{}'.", line);
}

}  // namespace aula::greeter
