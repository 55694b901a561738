// The in-memory Output: drawing and showing buffers per head, and PNGs
// through cairo.
#include "headless_output.hpp"

#include <algorithm>
#include <memory>

#include <cairo.h>

namespace aula::greeter {

HeadlessOutput::HeadlessOutput(const std::vector<HeadSize>& heads) {
  for (const HeadSize& size : heads) {
    const auto pixels =
        static_cast<std::size_t>(size.width) * static_cast<std::size_t>(size.height);
    heads_.push_back(
        {size, std::vector<std::uint32_t>(pixels, 0), std::vector<std::uint32_t>(pixels, 0), 0});
  }
}

Canvas HeadlessOutput::canvas(int head) {
  Head& h = heads_.at(static_cast<std::size_t>(head));
  return {h.drawing.data(), h.size.width, h.size.height, h.size.width * 4};
}

Canvas HeadlessOutput::shown(int head) {
  Head& h = heads_.at(static_cast<std::size_t>(head));
  return {h.showing.data(), h.size.width, h.size.height, h.size.width * 4};
}

Status HeadlessOutput::present(int head, std::span<const Rect> damage) {
  Head& h = heads_.at(static_cast<std::size_t>(head));
  if (damage.empty()) {
    h.showing = h.drawing;
  } else {
    for (const Rect& rect : damage) {
      const int x0 = std::clamp(rect.x, 0, h.size.width);
      const int x1 = std::clamp(rect.x + rect.width, 0, h.size.width);
      const int y0 = std::clamp(rect.y, 0, h.size.height);
      const int y1 = std::clamp(rect.y + rect.height, 0, h.size.height);
      for (int y = y0; y < y1; ++y) {
        const auto offset = static_cast<std::size_t>(y) * static_cast<std::size_t>(h.size.width);
        std::copy(
            h.drawing.begin() + static_cast<std::ptrdiff_t>(offset + static_cast<std::size_t>(x0)),
            h.drawing.begin() + static_cast<std::ptrdiff_t>(offset + static_cast<std::size_t>(x1)),
            h.showing.begin() + static_cast<std::ptrdiff_t>(offset + static_cast<std::size_t>(x0)));
      }
    }
  }
  ++h.frames;
  return okStatus();
}

Status HeadlessOutput::writePng(int head, const std::filesystem::path& path) {
  const Canvas frame = shown(head);
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
      cairo_image_surface_create_for_data(reinterpret_cast<unsigned char*>(frame.pixels),
                                          CAIRO_FORMAT_RGB24, frame.width, frame.height,
                                          frame.stride),
      &cairo_surface_destroy);
  const cairo_status_t status = cairo_surface_write_to_png(surface.get(), path.c_str());
  if (status != CAIRO_STATUS_SUCCESS) {
    return makeError(Errc::kIo, "Cannot write the screenshot {}: {}.", path.string(),
                     cairo_status_to_string(status));
  }
  return okStatus();
}

}  // namespace aula::greeter
