// The greeter's look: a calm blue backdrop, the school's name and logo at
// the top, one white card in the middle with the screen's content, the keys
// the screen takes at the bottom, and this PC's address for the admin.
// Every size is a multiple of `u`, the screen's scale (1 on 1280x1024).
#include "render.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include <cairo.h>
#include <pango/pangocairo.h>

namespace aula::greeter {

namespace {

struct Color {
  double r = 0;
  double g = 0;
  double b = 0;
  double a = 1;
};

constexpr Color rgb(std::uint32_t value, double alpha = 1.0) {
  return {static_cast<double>((value >> 16) & 0xff) / 255.0,
          static_cast<double>((value >> 8) & 0xff) / 255.0,
          static_cast<double>(value & 0xff) / 255.0, alpha};
}

constexpr Color kBackTop = rgb(0x0b1f3a);
constexpr Color kBackBottom = rgb(0x1b4a86);
constexpr Color kCard = rgb(0xffffff);
constexpr Color kInk = rgb(0x1a2233);
constexpr Color kMuted = rgb(0x5b6578);
constexpr Color kLine = rgb(0xc9d1de);
constexpr Color kFieldBack = rgb(0xf6f8fb);
constexpr Color kAccent = rgb(0x2257d6);
constexpr Color kFocus = rgb(0xf5a524);
constexpr Color kSelected = rgb(0xeaf1ff);
constexpr Color kErrorBack = rgb(0xfdeceb);
constexpr Color kErrorBar = rgb(0xc8321f);
constexpr Color kErrorInk = rgb(0x7a1d12);
constexpr Color kInfoBack = rgb(0xe8f0fd);
constexpr Color kInfoInk = rgb(0x173f8a);
constexpr Color kWhite = rgb(0xffffff);

void setColor(cairo_t* cr, Color color) {
  cairo_set_source_rgba(cr, color.r, color.g, color.b, color.a);
}

void roundedRect(cairo_t* cr, double x, double y, double width, double height, double radius) {
  constexpr double kPi = std::numbers::pi;
  radius = std::min({radius, width / 2, height / 2});
  cairo_new_sub_path(cr);
  cairo_arc(cr, x + width - radius, y + radius, radius, -kPi / 2, 0);
  cairo_arc(cr, x + width - radius, y + height - radius, radius, 0, kPi / 2);
  cairo_arc(cr, x + radius, y + height - radius, radius, kPi / 2, kPi);
  cairo_arc(cr, x + radius, y + radius, radius, kPi, 3 * kPi / 2);
  cairo_close_path(cr);
}

struct Style {
  double px = 17;  // at u = 1
  PangoWeight weight = PANGO_WEIGHT_NORMAL;
  Color color = kInk;
  PangoAlignment align = PANGO_ALIGN_LEFT;
  bool oneLine = false;  // with a width: one line, cut with "…" where it would wrap
};

struct LayoutDeleter {
  void operator()(PangoLayout* layout) const { g_object_unref(layout); }
};
using LayoutPtr = std::unique_ptr<PangoLayout, LayoutDeleter>;

// Lays out, measures and draws text and boxes from top to bottom. With
// `paint` false it only measures, so a card can be sized before it is drawn.
class Flow {
 public:
  Flow(cairo_t* cr, double u, double x, double y, double width, bool paint)
      : cr_(cr), u_(u), x_(x), y_(y), width_(width), paint_(paint) {}

  double y() const { return y_; }
  double x() const { return x_; }
  double width() const { return width_; }
  double u() const { return u_; }
  bool painting() const { return paint_; }
  cairo_t* cairo() const { return cr_; }
  // Where clicks land: what this flow paints is recorded there.
  void recordHits(std::vector<Hit>* hits) { hits_ = hits; }
  std::vector<Hit>* hitsOut() const { return hits_; }
  void hit(Target target, std::size_t index, double x, double y, double w, double h,
           int turn = 0) const {
    if (paint_ && hits_ != nullptr) {
      hits_->push_back(
          Hit{.rect = Rect{static_cast<int>(x), static_cast<int>(y), static_cast<int>(std::ceil(w)),
                           static_cast<int>(std::ceil(h))},
              .target = target,
              .index = index,
              .turn = turn});
    }
  }
  void gap(double px) { y_ += px * u_; }

  LayoutPtr layout(std::string_view text, const Style& style, double width) const {
    LayoutPtr layout(pango_cairo_create_layout(cr_));
    PangoFontDescription* font = pango_font_description_from_string("Inter");
    pango_font_description_set_absolute_size(font, style.px * u_ * PANGO_SCALE);
    pango_font_description_set_weight(font, style.weight);
    pango_layout_set_font_description(layout.get(), font);
    pango_font_description_free(font);
    if (width > 0) {
      pango_layout_set_width(layout.get(), static_cast<int>(width * PANGO_SCALE));
      if (style.oneLine)
        pango_layout_set_ellipsize(layout.get(), PANGO_ELLIPSIZE_END);
      else
        pango_layout_set_wrap(layout.get(), PANGO_WRAP_WORD_CHAR);
    }
    pango_layout_set_alignment(layout.get(), style.align);
    pango_layout_set_text(layout.get(), text.data(), static_cast<int>(text.size()));
    return layout;
  }

  // Draws text at (x, y) without moving the flow; returns its size.
  std::pair<double, double> textAt(std::string_view text, const Style& style, double x, double y,
                                   double width) const {
    auto laid = layout(text, style, width);
    int w = 0;
    int h = 0;
    pango_layout_get_pixel_size(laid.get(), &w, &h);
    if (paint_) {
      setColor(cr_, style.color);
      cairo_move_to(cr_, x, y);
      pango_cairo_show_layout(cr_, laid.get());
    }
    return {w, h};
  }

  // A paragraph across the flow's width.
  void text(std::string_view text, const Style& style) {
    if (text.empty())
      return;
    y_ += textAt(text, style, x_, y_, width_).second;
  }

  // A box the width of the flow; `draw` paints it at (x, y, w, h).
  template <typename Draw>
  void box(double height, Draw&& draw) {
    if (paint_)
      draw(x_, y_, width_, height * u_);
    y_ += height * u_;
  }

 private:
  cairo_t* cr_;
  double u_;
  double x_;
  double y_;
  double width_;
  bool paint_;
  std::vector<Hit>* hits_ = nullptr;
};

void focusRing(cairo_t* cr, double u, double x, double y, double width, double height,
               double radius) {
  const double pad = 3 * u;
  roundedRect(cr, x - pad, y - pad, width + 2 * pad, height + 2 * pad, radius + pad);
  setColor(cr, kFocus);
  cairo_set_line_width(cr, 3 * u);
  cairo_stroke(cr);
}

void spinner(cairo_t* cr, double u, double cx, double cy) {
  constexpr double kPi = std::numbers::pi;
  cairo_set_line_width(cr, 4 * u);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
  setColor(cr, rgb(0xdbe3f0));
  cairo_arc(cr, cx, cy, 14 * u, 0, 2 * kPi);
  cairo_stroke(cr);
  setColor(cr, kAccent);
  cairo_arc(cr, cx, cy, 14 * u, -kPi / 2, kPi);
  cairo_stroke(cr);
}

void field(Flow& flow, const Field& field, std::size_t index) {
  flow.text(field.label, {.px = 14, .weight = PANGO_WEIGHT_SEMIBOLD, .color = kMuted});
  flow.gap(6);
  const double u = flow.u();
  flow.box(48, [&](double x, double y, double w, double h) {
    // A choice's arrows first: the runtime takes the first area that holds
    // the click.
    if (field.choice) {
      flow.hit(Target::kField, index, x, y, 44 * u, h, -1);
      flow.hit(Target::kField, index, x + w - 44 * u, y, 44 * u, h, 1);
    }
    flow.hit(Target::kField, index, x, y, w, h);
    cairo_t* cr = flow.cairo();
    roundedRect(cr, x, y, w, h, 8 * u);
    setColor(cr, kFieldBack);
    cairo_fill_preserve(cr);
    setColor(cr, field.focused ? kAccent : kLine);
    cairo_set_line_width(cr, (field.focused ? 2 : 1) * u);
    cairo_stroke(cr);
    if (field.focused)
      focusRing(cr, u, x, y, w, h, 8 * u);
    const Style value{.px = 18};
    const double textY = y + (h - 18 * u * 1.25) / 2;
    if (field.choice) {
      const Style arrow{.px = 18, .weight = PANGO_WEIGHT_BOLD, .color = kAccent};
      flow.textAt("‹", arrow, x + 14 * u, textY, 0);
      flow.textAt(field.value, {.px = 18, .align = PANGO_ALIGN_CENTER}, x, textY, w);
      flow.textAt("›", arrow, x + w - 24 * u, textY, 0);
      return;
    }
    const auto [tw, th] = flow.textAt(field.value, value, x + 14 * u, textY, 0);
    (void)th;
    if (field.focused) {  // the caret
      setColor(cr, kInk);
      cairo_rectangle(cr, x + 14 * u + tw + 2 * u, y + 12 * u, 2 * u, h - 24 * u);
      cairo_fill(cr);
    }
  });
}

void button(Flow& flow, const Button& button, std::size_t index, double x, double y, double width,
            bool primary) {
  const double u = flow.u();
  const double height = 48 * u;
  if (!flow.painting())
    return;
  if (button.enabled)
    flow.hit(Target::kButton, index, x, y, width, height);
  cairo_t* cr = flow.cairo();
  roundedRect(cr, x, y, width, height, 8 * u);
  if (primary) {
    setColor(cr, button.enabled ? kAccent : rgb(0x9aaed8));
    cairo_fill(cr);
  } else {
    setColor(cr, kWhite);
    cairo_fill_preserve(cr);
    setColor(cr, kLine);
    cairo_set_line_width(cr, 1.5 * u);
    cairo_stroke(cr);
  }
  if (button.focused)
    focusRing(cr, u, x, y, width, height, 8 * u);
  const Color ink = primary ? kWhite : (button.enabled ? kInk : rgb(0xa3acbb));
  flow.textAt(
      button.label,
      {.px = 17, .weight = PANGO_WEIGHT_SEMIBOLD, .color = ink, .align = PANGO_ALIGN_CENTER}, x,
      y + (height - 17 * u * 1.25) / 2, width);
}

void callout(Flow& flow, const Callout& notice) {
  const double u = flow.u();
  const double pad = 14 * u;
  const double inner = flow.width() - 2 * pad - 4 * u;
  const Style head{
      .px = 16, .weight = PANGO_WEIGHT_SEMIBOLD, .color = notice.error ? kErrorInk : kInfoInk};
  const Style body{.px = 15, .color = notice.error ? kErrorInk : kInfoInk};
  const Style detail{.px = 14, .color = notice.error ? kErrorInk : kInfoInk};
  auto content = [&](Flow& inside) {
    inside.text(notice.headline, head);
    if (!notice.body.empty()) {
      inside.gap(4);
      inside.text(notice.body, body);
    }
    if (!notice.detail.empty()) {
      inside.gap(6);
      inside.text(notice.detail, detail);
    }
  };
  Flow measure(flow.cairo(), u, 0, 0, inner, false);
  content(measure);
  const double height = measure.y() / u + 2 * pad / u;
  flow.box(height, [&](double x, double y, double w, double h) {
    cairo_t* cr = flow.cairo();
    roundedRect(cr, x, y, w, h, 8 * u);
    setColor(cr, notice.error ? kErrorBack : kInfoBack);
    cairo_fill(cr);
    cairo_rectangle(cr, x, y + 6 * u, 4 * u, h - 12 * u);
    setColor(cr, notice.error ? kErrorBar : kAccent);
    cairo_fill(cr);
    Flow inside(cr, u, x + pad + 4 * u, y + pad, inner, true);
    content(inside);
  });
}

Color stateColor(DesktopState state) {
  switch (state) {
    case DesktopState::kRunning:
      return rgb(0x15803d);
    case DesktopState::kStarting:
    case DesktopState::kStopping:
      return rgb(0xb45309);
    case DesktopState::kFailed:
      return kErrorBar;
    case DesktopState::kStopped:
      return kMuted;
  }
  return kMuted;
}

void row(Flow& flow, const Row& row, std::size_t index, bool listFocused) {
  const double u = flow.u();
  flow.box(72, [&](double x, double y, double w, double h) {
    flow.hit(Target::kRow, index, x, y, w, h);
    cairo_t* cr = flow.cairo();
    if (row.selected) {
      roundedRect(cr, x, y + 2 * u, w, h - 4 * u, 10 * u);
      setColor(cr, kSelected);
      cairo_fill(cr);
      if (listFocused)
        focusRing(cr, u, x, y + 2 * u, w, h - 4 * u, 10 * u);
    }
    // The state as a pill on the right; the name and detail, one line each,
    // in the room left of it.
    const Color color = stateColor(row.stateKind);
    const Style pill{.px = 14, .weight = PANGO_WEIGHT_SEMIBOLD, .color = color};
    Flow measure(cr, u, 0, 0, 0, false);
    const auto [pw, ph] = measure.textAt(row.state, pill, 0, 0, 0);
    const double pillW = pw + 24 * u;
    const double pillH = ph + 10 * u;
    const double px = x + w - pillW - 18 * u;
    const double left = x + 18 * u;
    const double room = std::max(40 * u, px - 16 * u - left);
    flow.textAt(row.name, {.px = 19, .weight = PANGO_WEIGHT_SEMIBOLD, .oneLine = true}, left,
                y + 13 * u, room);
    flow.textAt(row.detail, {.px = 14, .color = kMuted, .oneLine = true}, left, y + 40 * u, room);
    const double py = y + (h - pillH) / 2;
    roundedRect(cr, px, py, pillW, pillH, pillH / 2);
    setColor(cr, {color.r, color.g, color.b, 0.12});
    cairo_fill(cr);
    flow.textAt(row.state, pill, px + 12 * u, py + 5 * u, 0);
  });
}

// The card's content; returns its height. Measures only, unless painting.
double cardContent(const View& view, Flow& flow) {
  const double top = flow.y();
  const double u = flow.u();
  flow.text(view.title, {.px = 30, .weight = PANGO_WEIGHT_BOLD});
  if (!view.subtitle.empty()) {
    flow.gap(6);
    flow.text(view.subtitle, {.px = 17, .color = kMuted});
  }
  flow.gap(24);

  switch (view.screen) {
    case Screen::kLogin:
    case Screen::kLoggingIn: {
      field(flow, view.fields[0], 0);
      flow.gap(18);
      field(flow, view.fields[1], 1);
      flow.gap(18);
      // Language and keyboard side by side.
      const double half = (flow.width() - 16 * u) / 2;
      Flow left(flow.cairo(), u, flow.x(), flow.y(), half, flow.painting());
      Flow right(flow.cairo(), u, flow.x() + half + 16 * u, flow.y(), half, flow.painting());
      left.recordHits(flow.hitsOut());
      right.recordHits(flow.hitsOut());
      field(left, view.fields[2], 2);
      field(right, view.fields[3], 3);
      flow.gap((left.y() - flow.y()) / u);
      flow.gap(24);
      if (view.notice) {
        callout(flow, *view.notice);
        flow.gap(20);
      }
      const double y = flow.y();
      flow.box(48, [](double, double, double, double) {});
      button(flow, view.buttons[0], 0, flow.x(), y, flow.width(), true);
      if (view.busy && flow.painting())
        spinner(flow.cairo(), u, flow.x() + flow.width() - 30 * u, y + 24 * u);
      break;
    }
    case Screen::kDesktops: {
      if (view.notice) {
        callout(flow, *view.notice);
        flow.gap(16);
      }
      const bool listFocused = std::none_of(view.buttons.begin(), view.buttons.end(),
                                            [](const Button& b) { return b.focused; });
      for (std::size_t i = 0; i < view.rows.size(); ++i)
        row(flow, view.rows[i], i, listFocused);
      if (view.busy && flow.painting())
        spinner(flow.cairo(), u, flow.x() + flow.width() / 2, flow.y() + 24 * u);
      if (view.busy)
        flow.gap(48);
      flow.gap(24);
      const double y = flow.y();
      flow.box(48, [](double, double, double, double) {});
      const double bw = 170 * u;
      button(flow, view.buttons[1], 1, flow.x() + flow.width() - bw, y, bw, false);
      button(flow, view.buttons[0], 0, flow.x() + flow.width() - 2 * bw - 14 * u, y, bw, false);
      break;
    }
    case Screen::kStarting:
    case Screen::kConnecting:
    case Screen::kReconnecting:
    case Screen::kTrouble: {
      if (view.screen == Screen::kTrouble && view.notice) {
        flow.text(view.notice->body, {.px = 17, .color = kInk});
        if (!view.notice->detail.empty()) {
          flow.gap(10);
          flow.text(view.notice->detail, {.px = 15, .color = kMuted});
        }
        flow.gap(20);
        Flow measure(flow.cairo(), u, 0, 0, flow.width() - 28 * u, false);
        measure.text(view.footer, {.px = 16});
        flow.box(measure.y() / u + 28, [&](double x, double y, double w, double h) {
          roundedRect(flow.cairo(), x, y, w, h, 8 * u);
          setColor(flow.cairo(), kFieldBack);
          cairo_fill(flow.cairo());
          flow.textAt(view.footer, {.px = 16, .weight = PANGO_WEIGHT_SEMIBOLD}, x + 14 * u,
                      y + 14 * u, w - 28 * u);
        });
      } else if (view.notice) {
        callout(flow, *view.notice);
      }
      if (view.busy) {
        flow.gap(12);
        const double y = flow.y();
        flow.box(40, [](double, double, double, double) {});
        if (flow.painting())
          spinner(flow.cairo(), u, flow.x() + flow.width() / 2, y + 20 * u);
      }
      break;
    }
    case Screen::kSession: {
      // The menu's items, or its USB list: a notice and the devices.
      if (view.notice) {
        callout(flow, *view.notice);
        flow.gap(16);
      }
      for (std::size_t i = 0; i < view.rows.size(); ++i)
        row(flow, view.rows[i], i, true);
      for (std::size_t i = 0; i < view.buttons.size(); ++i) {
        const double y = flow.y();
        flow.box(48, [](double, double, double, double) {});
        button(flow, view.buttons[i], i, flow.x(), y, flow.width(), false);
        flow.gap(12);
      }
      break;
    }
  }
  return flow.y() - top;
}

double cardWidth(const View& view) {
  if (view.screen == Screen::kSession && (view.notice || !view.rows.empty()))
    return 720;  // the menu's USB list
  switch (view.screen) {
    case Screen::kDesktops:
      return 720;
    case Screen::kTrouble:
      return 640;
    case Screen::kSession:
      return 400;
    default:
      return 500;
  }
}

void card(cairo_t* cr, const View& view, double u, double width, double height,
          std::vector<Hit>* hits) {
  const double cw = cardWidth(view) * u;
  const double pad = 40 * u;
  Flow measure(cr, u, 0, 0, cw - 2 * pad, false);
  const double contentHeight = cardContent(view, measure);
  const double ch = contentHeight + 2 * pad;
  const double x = std::round((width - cw) / 2);
  const double y = std::round(std::max(90 * u, (height - ch) / 2 - 10 * u));
  // A soft shadow: a few widening translucent outlines.
  for (int i = 6; i >= 1; --i) {
    roundedRect(cr, x - i * 2 * u, y - i * 2 * u + 6 * u, cw + i * 4 * u, ch + i * 4 * u,
                (16 + i * 2) * u);
    cairo_set_source_rgba(cr, 0, 0, 0, 0.035);
    cairo_fill(cr);
  }
  roundedRect(cr, x, y, cw, ch, 16 * u);
  setColor(cr, kCard);
  cairo_fill(cr);
  Flow flow(cr, u, x + pad, y + pad, cw - 2 * pad, true);
  flow.recordHits(hits);
  cardContent(view, flow);
}

struct SurfaceDeleter {
  void operator()(cairo_surface_t* surface) const { cairo_surface_destroy(surface); }
};
using SurfacePtr = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
struct CairoDeleter {
  void operator()(cairo_t* cr) const { cairo_destroy(cr); }
};
using CairoPtr = std::unique_ptr<cairo_t, CairoDeleter>;

SurfacePtr surfaceOf(Canvas canvas) {
  return SurfacePtr(cairo_image_surface_create_for_data(
      reinterpret_cast<unsigned char*>(canvas.pixels), CAIRO_FORMAT_RGB24, canvas.width,
      canvas.height, canvas.stride));
}

double scaleOf(Canvas canvas) {
  const double u = std::min(canvas.width / 1280.0, canvas.height / 1024.0);
  return std::clamp(u, 0.6, 4.0);
}

struct PngReader {
  std::string_view bytes;
  std::size_t at = 0;
};

cairo_status_t readPng(void* closure, unsigned char* data, unsigned int length) {
  auto* reader = static_cast<PngReader*>(closure);
  if (reader->bytes.size() - reader->at < length)
    return CAIRO_STATUS_READ_ERROR;
  std::copy_n(reader->bytes.data() + reader->at, length, data);
  reader->at += length;
  return CAIRO_STATUS_SUCCESS;
}

}  // namespace

struct Renderer::Impl {
  SurfacePtr logo;
  std::vector<Hit> hits;
};

Renderer::Renderer() : impl_(std::make_unique<Impl>()) {}
Renderer::~Renderer() = default;

void Renderer::setLogo(std::string_view png) {
  impl_->logo.reset();
  if (png.empty())
    return;
  PngReader reader{png, 0};
  SurfacePtr logo(cairo_image_surface_create_from_png_stream(readPng, &reader));
  if (cairo_surface_status(logo.get()) == CAIRO_STATUS_SUCCESS)
    impl_->logo = std::move(logo);
}

void Renderer::draw(const View& view, Canvas canvas, std::string_view clock) {
  SurfacePtr surface = surfaceOf(canvas);
  CairoPtr owner(cairo_create(surface.get()));
  cairo_t* cr = owner.get();
  const double u = scaleOf(canvas);
  const double width = canvas.width;
  const double height = canvas.height;

  cairo_pattern_t* back = cairo_pattern_create_linear(0, 0, width * 0.3, height);
  cairo_pattern_add_color_stop_rgb(back, 0, kBackTop.r, kBackTop.g, kBackTop.b);
  cairo_pattern_add_color_stop_rgb(back, 1, kBackBottom.r, kBackBottom.g, kBackBottom.b);
  cairo_set_source(cr, back);
  cairo_paint(cr);
  cairo_pattern_destroy(back);

  Flow top(cr, u, 0, 0, width, true);
  // The school: logo and name, top left.
  double nameX = 36 * u;
  if (impl_->logo) {
    const double lw = cairo_image_surface_get_width(impl_->logo.get());
    const double lh = cairo_image_surface_get_height(impl_->logo.get());
    const double scale = 44 * u / std::max(lh, 1.0);
    cairo_save(cr);
    cairo_translate(cr, 36 * u, 26 * u);
    cairo_scale(cr, scale, scale);
    cairo_set_source_surface(cr, impl_->logo.get(), 0, 0);
    cairo_paint(cr);
    cairo_restore(cr);
    nameX += lw * scale + 14 * u;
  }
  top.textAt(view.schoolName.empty() ? "Aula" : view.schoolName,
             {.px = 24, .weight = PANGO_WEIGHT_SEMIBOLD, .color = kWhite}, nameX, 33 * u, 0);
  if (!clock.empty()) {
    top.textAt(
        clock,
        {.px = 24, .weight = PANGO_WEIGHT_MEDIUM, .color = kWhite, .align = PANGO_ALIGN_RIGHT},
        width - 36 * u - 300 * u, 33 * u, 300 * u);
  }

  impl_->hits.clear();
  card(cr, view, u, width, height, &impl_->hits);

  // Bottom: the keys this screen takes, and this PC for the admin.
  if (!view.hints.empty()) {
    top.textAt(view.hints, {.px = 15, .color = rgb(0xffffff, 0.85), .align = PANGO_ALIGN_CENTER}, 0,
               height - 86 * u, width);
  }
  if (view.screen != Screen::kTrouble) {
    top.textAt(view.footer, {.px = 13, .color = rgb(0xffffff, 0.6)}, 36 * u, height - 44 * u, 0);
  }
  cairo_surface_flush(surface.get());
}

void Renderer::drawOverlay(const View& view, Canvas canvas) {
  impl_->hits.clear();
  if (!view.menu)
    return;
  SurfacePtr surface = surfaceOf(canvas);
  CairoPtr owner(cairo_create(surface.get()));
  cairo_t* cr = owner.get();
  const double u = scaleOf(canvas);
  cairo_set_source_rgba(cr, 0.02, 0.06, 0.14, 0.6);
  cairo_paint(cr);
  card(cr, view, u, canvas.width, canvas.height, &impl_->hits);
  Flow bottom(cr, u, 0, 0, canvas.width, true);
  bottom.textAt(view.hints, {.px = 15, .color = kWhite, .align = PANGO_ALIGN_CENTER}, 0,
                canvas.height - 86 * u, canvas.width);
  cairo_surface_flush(surface.get());
}

const std::vector<Hit>& Renderer::hits() const {
  return impl_->hits;
}

}  // namespace aula::greeter
