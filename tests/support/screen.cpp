// Reading a guest's screen in tests (see screen.hpp).
#include "support/screen.hpp"

#include <cstddef>
#include <fstream>
#include <iterator>
#include <string>

namespace aula::test {

Ppm readPpm(const std::filesystem::path& path) {
  Ppm ppm;
  std::ifstream in(path, std::ios::binary);
  std::string magic;
  int maxValue = 0;
  if (!(in >> magic >> ppm.width >> ppm.height >> maxValue) || magic != "P6" || maxValue != 255 ||
      ppm.width <= 0 || ppm.height <= 0) {
    return {};
  }
  in.get();  // the single whitespace after the header
  ppm.rgb.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (ppm.rgb.size() < static_cast<std::size_t>(ppm.width) * ppm.height * 3)
    return {};
  return ppm;
}

ScreenShares analysePpm(const std::filesystem::path& path) {
  ScreenShares shares;
  Ppm ppm = readPpm(path);
  if (ppm.width == 0)
    return shares;
  shares.width = ppm.width;
  shares.height = ppm.height;
  const std::string& pixels = ppm.rgb;
  std::size_t count = static_cast<std::size_t>(shares.width) * shares.height;
  std::size_t blue = 0;
  std::size_t white = 0;
  for (std::size_t i = 0; i < count; ++i) {
    auto r = static_cast<unsigned char>(pixels[i * 3]);
    auto g = static_cast<unsigned char>(pixels[i * 3 + 1]);
    auto b = static_cast<unsigned char>(pixels[i * 3 + 2]);
    if (r > 160 && g > 160 && b > 160) {
      ++white;
    } else if (b > 100 && r < 80 && g < 80) {
      ++blue;
    }
  }
  shares.blue = 100.0 * static_cast<double>(blue) / static_cast<double>(count);
  shares.white = 100.0 * static_cast<double>(white) / static_cast<double>(count);
  return shares;
}

}  // namespace aula::test
