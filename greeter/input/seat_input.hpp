// The lab PC's seat: the DRM and input devices handed over by logind or
// seatd through libseat (the greeter runs unprivileged), keyboards and mice
// read with libinput, keys turned into text with xkbcommon in the layout the
// login screen chose.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "aula/common/file.hpp"
#include "aula/greeter/keys.hpp"

namespace aula::greeter {

class Seat {
 public:
  // Opens the seat and waits (up to 10 s) until it is ours.
  static Result<std::unique_ptr<Seat>> open();
  ~Seat();
  Seat(const Seat&) = delete;
  Seat& operator=(const Seat&) = delete;

  // A device of the seat (/dev/dri/card0, /dev/input/event3, /dev/fb0); the
  // fd stays the seat's: close it with closeDevice.
  Result<int> openDevice(const std::string& path);
  void closeDevice(int fd);
  int fd() const;  // poll it, then dispatch()
  void dispatch();
  std::string name() const;

  struct Impl;

 private:
  Seat();
  std::unique_ptr<Impl> impl_;
};

class SeatInput {
 public:
  // Keyboards and mice of the seat through libinput (udev, or
  // /dev/input/event* where there is no udev); `onKey` hears each key,
  // `onPointer` each motion, button and wheel notch.
  static Result<std::unique_ptr<SeatInput>> open(Seat& seat, std::function<void(const Key&)> onKey,
                                                 std::function<void(const Pointer&)> onPointer);
  ~SeatInput();
  SeatInput(const SeatInput&) = delete;
  SeatInput& operator=(const SeatInput&) = delete;

  // An xkb layout, with its variant in parentheses: "us", "es(cat)".
  Status setLayout(const std::string& xkb);
  int fd() const;  // poll it, then dispatch()
  void dispatch();

  struct Impl;

 private:
  SeatInput();
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::greeter
