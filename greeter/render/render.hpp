// Draws a View onto a Canvas with cairo and pango: the greeter's look. Sizes
// follow the screen (a 1280x1024 monitor and a 4K one get the same layout at
// different scales); the font is Inter (fonts-inter), with fontconfig's
// fallbacks for scripts it lacks.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aula/greeter/output.hpp"
#include "aula/greeter/view.hpp"

namespace aula::greeter {

class Renderer {
 public:
  Renderer();
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // The school's logo (PNG bytes); an empty or unreadable one draws none.
  void setLogo(std::string_view png);

  // Draws the whole screen. `clock` is the wall-clock text for the corner
  // ("08:59"), or empty.
  void draw(const View& view, Canvas canvas, std::string_view clock);

  // kSession: the frame is the guest's; this draws only the menu over it
  // (when open), dimming what is below.
  void drawOverlay(const View& view, Canvas canvas);

  // The fields, rows and buttons the last draw() or drawOverlay() drew.
  const std::vector<Hit>& hits() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::greeter
