// libseat, libinput and xkbcommon behind Seat and SeatInput. Every C
// callback runs inside guardCallback.
#include "seat_input.hpp"

#include <fcntl.h>
#include <libinput.h>
#include <libudev.h>
#include <poll.h>
#include <xkbcommon/xkbcommon.h>

// libseat 0.7's header has no extern "C" of its own.
extern "C" {
#include <libseat.h>
}

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "aula/common/callback_guard.hpp"
#include "aula/common/log.hpp"

namespace aula::greeter {

// ---- Seat ------------------------------------------------------------------

struct Seat::Impl {
  libseat* seat = nullptr;
  bool enabled = false;
  std::map<int, int> devices;  // fd -> libseat device id

  static void onEnable(libseat*, void* data) {
    guardCallback("libseat's enable handler", [&] { static_cast<Impl*>(data)->enabled = true; });
  }
  static void onDisable(libseat* seat, void* data) {
    guardCallback("libseat's disable handler", [&] {
      static_cast<Impl*>(data)->enabled = false;
      libseat_disable_seat(seat);
    });
  }
};

namespace {

// libseat's own messages (which backend opened the seat, and why one could
// not) go to the greeter's log: on a lab PC they are in the journal.
// `format` is libseat's own printf format (the attribute says so).
__attribute__((format(printf, 2, 0))) void onSeatLog(libseat_log_level level, const char* format,
                                                     va_list args) {
  char line[512] = {};
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-vararg): libseat hands a va_list
  (void)std::vsnprintf(line, sizeof line, format, args);
  if (level == LIBSEAT_LOG_LEVEL_ERROR)
    log::warn("libseat: {}", line);
  else
    log::info("libseat: {}", line);
}

}  // namespace

Seat::Seat() : impl_(std::make_unique<Impl>()) {}

Seat::~Seat() {
  if (impl_->seat != nullptr) {
    for (const auto& [fd, id] : impl_->devices)
      libseat_close_device(impl_->seat, id);
    libseat_close_seat(impl_->seat);
  }
}

Result<std::unique_ptr<Seat>> Seat::open() {
  std::unique_ptr<Seat> seat(new Seat());
  libseat_set_log_handler(&onSeatLog);
  libseat_set_log_level(LIBSEAT_LOG_LEVEL_INFO);
  static const libseat_seat_listener listener = {&Impl::onEnable, &Impl::onDisable};
  seat->impl_->seat = libseat_open_seat(&listener, seat->impl_.get());
  if (seat->impl_->seat == nullptr) {
    return makeError(Errc::kUnavailable,
                     "Cannot open the seat: neither systemd-logind nor seatd answered ({}).",
                     std::strerror(errno));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!seat->impl_->enabled && std::chrono::steady_clock::now() < deadline) {
    if (libseat_dispatch(seat->impl_->seat, 500) < 0)
      return makeError(Errc::kUnavailable, "The seat went away: {}.", std::strerror(errno));
  }
  if (!seat->impl_->enabled)
    return makeError(Errc::kTimeout, "The seat was not handed to the greeter within 10 s.");
  return seat;
}

Result<int> Seat::openDevice(const std::string& path) {
  int fd = -1;
  const int id = libseat_open_device(impl_->seat, path.c_str(), &fd);
  if (id < 0)
    return makeError(Errc::kPermissionDenied, "The seat did not open {}: {}.", path,
                     std::strerror(errno));
  impl_->devices[fd] = id;
  return fd;
}

void Seat::closeDevice(int fd) {
  if (auto it = impl_->devices.find(fd); it != impl_->devices.end()) {
    libseat_close_device(impl_->seat, it->second);
    impl_->devices.erase(it);
  }
  ::close(fd);
}

int Seat::fd() const {
  return libseat_get_fd(impl_->seat);
}

void Seat::dispatch() {
  libseat_dispatch(impl_->seat, 0);
}

std::string Seat::name() const {
  return libseat_seat_name(impl_->seat);
}

// ---- SeatInput ---------------------------------------------------------

struct SeatInput::Impl {
  Seat* seat = nullptr;
  std::function<void(const Key&)> onKey;
  std::function<void(const Pointer&)> onPointer;
  double wheel120 = 0;  // high-resolution wheel movement not yet a whole notch
  udev* udevContext = nullptr;
  libinput* input = nullptr;
  xkb_context* xkb = nullptr;
  xkb_keymap* keymap = nullptr;
  xkb_state* state = nullptr;

  ~Impl() {
    if (state != nullptr)
      xkb_state_unref(state);
    if (keymap != nullptr)
      xkb_keymap_unref(keymap);
    if (xkb != nullptr)
      xkb_context_unref(xkb);
    if (input != nullptr)
      libinput_unref(input);
    if (udevContext != nullptr)
      udev_unref(udevContext);
  }

  static int openRestricted(const char* path, int, void* data) {
    return guardCallback("libinput's open handler", -EIO, [&] {
      auto fd = static_cast<Impl*>(data)->seat->openDevice(path);
      return fd ? *fd : -EACCES;
    });
  }
  static void closeRestricted(int fd, void* data) {
    guardCallback("libinput's close handler",
                  [&] { static_cast<Impl*>(data)->seat->closeDevice(fd); });
  }

  void key(libinput_event_keyboard* event) {
    const std::uint32_t code = libinput_event_keyboard_get_key(event);
    const bool pressed = libinput_event_keyboard_get_key_state(event) == LIBINPUT_KEY_STATE_PRESSED;
    Key key{code, pressed, {}};
    if (state != nullptr) {
      const xkb_keycode_t xkbCode = code + 8;  // evdev to xkb
      if (pressed) {
        char text[16] = {};
        xkb_state_key_get_utf8(state, xkbCode, text, sizeof text);
        key.text = text;
      }
      key.shift =
          xkb_state_mod_name_is_active(state, XKB_MOD_NAME_SHIFT, XKB_STATE_MODS_EFFECTIVE) > 0;
      key.ctrl =
          xkb_state_mod_name_is_active(state, XKB_MOD_NAME_CTRL, XKB_STATE_MODS_EFFECTIVE) > 0;
      key.alt = xkb_state_mod_name_is_active(state, XKB_MOD_NAME_ALT, XKB_STATE_MODS_EFFECTIVE) > 0;
      xkb_state_update_key(state, xkbCode, pressed ? XKB_KEY_DOWN : XKB_KEY_UP);
    }
    onKey(key);
  }

  void pointer(libinput_event* event) {
    if (!onPointer)
      return;
    const auto type = libinput_event_get_type(event);
    if (type != LIBINPUT_EVENT_POINTER_MOTION && type != LIBINPUT_EVENT_POINTER_MOTION_ABSOLUTE &&
        type != LIBINPUT_EVENT_POINTER_BUTTON && type != LIBINPUT_EVENT_POINTER_SCROLL_WHEEL)
      return;
    auto* p = libinput_event_get_pointer_event(event);
    Pointer out;
    switch (type) {
      case LIBINPUT_EVENT_POINTER_MOTION:
        out.kind = Pointer::Kind::kMotion;
        out.dx = libinput_event_pointer_get_dx(p);
        out.dy = libinput_event_pointer_get_dy(p);
        break;
      case LIBINPUT_EVENT_POINTER_MOTION_ABSOLUTE:
        out.kind = Pointer::Kind::kAbsolute;
        out.x = libinput_event_pointer_get_absolute_x_transformed(p, kScale) / kScale;
        out.y = libinput_event_pointer_get_absolute_y_transformed(p, kScale) / kScale;
        break;
      case LIBINPUT_EVENT_POINTER_BUTTON: {
        auto button = mouseButton(libinput_event_pointer_get_button(p));
        if (!button)
          return;
        out.kind = Pointer::Kind::kButton;
        out.button = *button;
        out.pressed = libinput_event_pointer_get_button_state(p) == LIBINPUT_BUTTON_STATE_PRESSED;
        break;
      }
      case LIBINPUT_EVENT_POINTER_SCROLL_WHEEL: {
        if (libinput_event_pointer_has_axis(p, LIBINPUT_POINTER_AXIS_SCROLL_VERTICAL) == 0)
          return;
        wheel120 +=
            libinput_event_pointer_get_scroll_value_v120(p, LIBINPUT_POINTER_AXIS_SCROLL_VERTICAL);
        const int notches = static_cast<int>(wheel120 / 120);
        if (notches == 0)
          return;
        wheel120 -= notches * 120.0;
        out.kind = Pointer::Kind::kWheel;
        out.wheel = notches;
        break;
      }
      default:
        return;
    }
    onPointer(out);
  }

  static constexpr std::uint32_t kScale = 1U << 16;
};

SeatInput::SeatInput() : impl_(std::make_unique<Impl>()) {}
SeatInput::~SeatInput() = default;

Result<std::unique_ptr<SeatInput>> SeatInput::open(Seat& seat,
                                                   std::function<void(const Key&)> onKey,
                                                   std::function<void(const Pointer&)> onPointer) {
  std::unique_ptr<SeatInput> keyboard(new SeatInput());
  Impl& impl = *keyboard->impl_;
  impl.seat = &seat;
  impl.onKey = std::move(onKey);
  impl.onPointer = std::move(onPointer);
  static const libinput_interface interface = {&Impl::openRestricted, &Impl::closeRestricted};
  impl.udevContext = udev_new();
  bool udevWorks = false;
  if (impl.udevContext != nullptr) {
    impl.input = libinput_udev_create_context(&interface, &impl, impl.udevContext);
    udevWorks = impl.input != nullptr &&
                libinput_udev_assign_seat(impl.input, seat.name().c_str()) == 0 &&
                std::filesystem::exists("/run/udev/control");
  }
  if (!udevWorks) {
    // No udev (a small test system): every event device, as it is now.
    if (impl.input != nullptr)
      libinput_unref(impl.input);
    impl.input = libinput_path_create_context(&interface, &impl);
    if (impl.input == nullptr)
      return makeError(Errc::kInternal, "libinput could not start.");
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/dev/input", ec)) {
      if (entry.path().filename().string().starts_with("event"))
        libinput_path_add_device(impl.input, entry.path().c_str());
    }
  }
  impl.xkb = xkb_context_new(XKB_CONTEXT_NO_FLAGS);
  if (impl.xkb == nullptr)
    return makeError(Errc::kInternal, "xkbcommon could not start.");
  AULA_TRY_STATUS(keyboard->setLayout("us"));
  return keyboard;
}

Status SeatInput::setLayout(const std::string& xkb) {
  Impl& impl = *impl_;
  std::string layout = xkb;
  std::string variant;
  if (auto open = xkb.find('('); open != std::string::npos && xkb.back() == ')') {
    layout = xkb.substr(0, open);
    variant = xkb.substr(open + 1, xkb.size() - open - 2);
  }
  xkb_rule_names names{};
  names.rules = "evdev";
  names.model = "pc105";
  names.layout = layout.c_str();
  names.variant = variant.c_str();
  xkb_keymap* keymap = xkb_keymap_new_from_names(impl.xkb, &names, XKB_KEYMAP_COMPILE_NO_FLAGS);
  if (keymap == nullptr)
    return makeError(Errc::kConfig, "The keyboard layout '{}' is not in this image's xkb data.",
                     xkb);
  if (impl.state != nullptr)
    xkb_state_unref(impl.state);
  if (impl.keymap != nullptr)
    xkb_keymap_unref(impl.keymap);
  impl.keymap = keymap;
  impl.state = xkb_state_new(keymap);
  return okStatus();
}

int SeatInput::fd() const {
  return libinput_get_fd(impl_->input);
}

void SeatInput::dispatch() {
  Impl& impl = *impl_;
  libinput_dispatch(impl.input);
  while (libinput_event* event = libinput_get_event(impl.input)) {
    if (libinput_event_get_type(event) == LIBINPUT_EVENT_KEYBOARD_KEY)
      impl.key(libinput_event_get_keyboard_event(event));
    else
      impl.pointer(event);
    libinput_event_destroy(event);
  }
}

}  // namespace aula::greeter
