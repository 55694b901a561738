// Reading a guest's screen in tests: how much of a P6 PPM screenshot is the
// test guest's blue background and how much its white text (see
// tests/template/README.md), so a test can tell the guest's known screen
// from a black, BIOS or half-drawn one.
#pragma once

#include <filesystem>
#include <string>

namespace aula::test {

// The shares of the test guest's blue background and of its white text in a
// screenshot, in percent; both -1 when the file is not a P6 PPM with
// 8-bit channels.
struct ScreenShares {
  int width = 0;
  int height = 0;
  double blue = -1;
  double white = -1;
};

ScreenShares analysePpm(const std::filesystem::path& path);

// A P6 PPM with 8-bit channels (QEMU's screendump): RGB triplets, row by
// row; width 0 when the file is not one.
struct Ppm {
  int width = 0;
  int height = 0;
  std::string rgb;
};
Ppm readPpm(const std::filesystem::path& path);

}  // namespace aula::test
