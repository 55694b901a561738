// Where the greeter's pixels go: one buffer per head (a KMS output, or memory
// in tests), drawn into and then shown. The KMS adapter (greeter/kms/) and the
// headless one (greeter/headless/) implement it.
#pragma once

#include <cstdint>
#include <span>

#include "aula/common/result.hpp"

namespace aula::greeter {

// 32-bit pixels, 0xXXRRGGBB in native byte order (DRM's XRGB8888, cairo's
// RGB24/ARGB32).
struct Canvas {
  std::uint32_t* pixels = nullptr;
  int width = 0;
  int height = 0;
  int stride = 0;  // bytes per row
};

struct Rect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

class Output {
 public:
  virtual ~Output() = default;
  virtual int heads() const = 0;
  // The buffer the next frame of `head` is drawn into. It holds the frame
  // last shown on that head, so a partial update draws only what changed.
  virtual Canvas canvas(int head) = 0;
  // Shows what was drawn; `damage` is what changed (empty: everything).
  virtual Status present(int head, std::span<const Rect> damage) = 0;
};

}  // namespace aula::greeter
