// The desktop's session over SPICE (spice-client-glib, no GTK): connects with
// the broker's one-time ticket over TLS checked against the broker's CA and
// the host's certificate subject, hands the display channel's damaged
// rectangles to the runtime, and sends keys as XT scancodes and the mouse
// as a position or a motion, as the server's mouse mode asks. Runs on the
// default GLib main context, like spice-client-glib itself.
#pragma once

#include <memory>
#include <string>

#include "aula/greeter/ports.hpp"

namespace aula::greeter {

class SpiceSession final : public Session {
 public:
  // `audioDevice`: the ALSA device the desktop's sound goes to ("default");
  // empty: no sound.
  explicit SpiceSession(std::string audioDevice = {});
  ~SpiceSession() override;
  SpiceSession(const SpiceSession&) = delete;
  SpiceSession& operator=(const SpiceSession&) = delete;

  void open(const Console& console, Listener listener) override;
  void close() override;
  void key(std::uint32_t scancode, bool pressed) override;
  void mouse(const Mouse& mouse, std::uint32_t buttons) override;
  void ctrlAltDel() override;
  std::vector<UsbDevice> usbDevices() override;
  void shareUsb(const std::string& id, bool share) override;
  std::optional<Frame> frame() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::greeter
