// The in-memory Output: drawing and showing buffers per head, and PNGs
// through cairo.
#include "headless_output.hpp"

#include <memory>

#include <cairo.h>

namespace aula::greeter {

HeadlessOutput::HeadlessOutput(const std::vector<HeadSize>& heads) {
  for (const HeadSize& size : heads) {
    const auto pixels =
        static_cast<std::size_t>(size.width) * static_cast<std::size_t>(size.height);
    heads_.push_back({size, std::vector<std::uint32_t>(pixels, 0), 0});
  }
}

Canvas HeadlessOutput::canvas(int head) {
  Head& h = heads_.at(static_cast<std::size_t>(head));
  return {h.pixels.data(), h.size.width, h.size.height, h.size.width * 4};
}

Canvas HeadlessOutput::shown(int head) {
  return canvas(head);
}

Status HeadlessOutput::present(int head, std::span<const Rect>) {
  ++heads_.at(static_cast<std::size_t>(head)).frames;
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
