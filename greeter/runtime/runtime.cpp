// The greeter's runtime: a worker thread for the broker's blocking calls,
// GLib idle sources to bring their answers back to the main context, a
// 250 ms timer for countdowns, retries and the clock, and the drawing.
#include "runtime.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <glib.h>
#include <time.h>

#include "aula/common/callback_guard.hpp"
#include "aula/common/log.hpp"
#include "aula/common/overloaded.hpp"

#include "render.hpp"

namespace aula::greeter {

namespace {

// Runs `fn` on the default main context's thread, later (never inside the
// caller: an answer must not re-enter the code that asked).
void post(std::function<void()> fn) {
  auto* boxed = new std::function<void()>(std::move(fn));
  g_idle_add_full(
      G_PRIORITY_DEFAULT,
      [](gpointer data) -> gboolean {
        guardCallback("a greeter main-loop task",
                      [&] { (*static_cast<std::function<void()>*>(data))(); });
        return G_SOURCE_REMOVE;
      },
      boxed, [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
}

// The pointer drawn over the desktop: an arrow, its tip the hot spot. 'B'
// black, 'W' white, ' ' the desktop.
constexpr std::array<std::string_view, 19> kArrow = {
    "B",         "BB",         "BWB",        "BWWB",        "BWWWB",        "BWWWWB",   "BWWWWWB",
    "BWWWWWWB",  "BWWWWWWWB",  "BWWWWWWWWB", "BWWWWWWWWWB", "BWWWWWWBBBBB", "BWWWBWWB", "BWWB BWWB",
    "BWB  BWWB", "BB    BWWB", "B     BWWB", "       BWWB", "        BB"};
constexpr int kArrowWidth = 12;

bool overlaps(const Rect& a, const Rect& b) {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}

std::string clockText() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char buffer[8] = {};
  (void)std::strftime(buffer, sizeof buffer, "%H:%M", &tm);
  return buffer;
}

}  // namespace

struct Runtime::Impl {
  explicit Impl(RuntimeParts p)
      : parts(std::move(p)),
        greeter(parts.options, parts.machine),
        alive(std::make_shared<bool>(true)) {
    worker = std::thread([this] { work(); });
  }

  ~Impl() {
    *alive = false;
    stopWatching();
    if (timer != 0)
      g_source_remove(timer);
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake.notify_all();
    worker.join();
    parts.session.close();
  }

  RuntimeParts parts;
  Greeter greeter;
  Renderer renderer;
  std::shared_ptr<bool> alive;

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> jobs;
  bool stopping = false;
  std::thread worker;
  std::uint64_t generation = 0;  // main thread only

  guint timer = 0;
  int frames = 0;
  int shownWidth = 0;
  int shownHeight = 0;
  // What the last drawing showed, to redraw only when it changes.
  std::string drawnSignature;
  std::string menuShown;  // what the session's menu overlay shows; empty: none
  bool loginShown = false;
  bool setupShown = false;
  bool listShown = false;          // since another screen
  bool sessionFrameShown = false;  // since the session screen came up
  // The pointer on head 0 (its middle until the mouse moves), and where the
  // arrow was last drawn over the desktop.
  double pointerX = -1;
  double pointerY = -1;
  std::optional<Rect> arrowDrawn;
  // On the greeter's own screens and the session's menu: the pixels under
  // the arrow, put back when it moves; and what a click there reaches.
  std::vector<std::uint32_t> underArrow;
  bool pointerUsed = false;  // the arrow shows on the screens once the mouse moved
  std::vector<Hit> hits;

  static Instant now() { return std::chrono::steady_clock::now(); }

  void work() {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex);
        wake.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (stopping)
          return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      guardCallback("a greeter broker request", job);
    }
  }

  // Runs `call` on the worker; its event comes back to the state machine,
  // unless CancelRequests came first.
  void ask(std::function<Event()> call) {
    const std::uint64_t asked = generation;
    auto keep = alive;
    std::lock_guard lock(mutex);
    jobs.emplace_back([this, call = std::move(call), asked, keep] {
      auto event = std::make_shared<Event>(call());
      post([this, event, asked, keep] {
        if (*keep && asked == generation)
          handle(*event);
      });
    });
    wake.notify_one();
  }

  void handle(const Event& event) {
    apply(greeter.handle(event, now()));
    redraw(false);
  }

  void apply(std::vector<Effect> effects) {
    for (Effect& effect : effects) {
      std::visit(Overloaded{
                     [&](ProbeBroker&) { ask([this] { return parts.broker.probe(); }); },
                     [&](LogIn& login) {
                       // For whoever reads a lab PC's log: who tried, and why
                       // they were turned away. Never the password.
                       log::info("Signing in as '{}'.", login.username);
                       auto password = std::make_shared<Secret>(std::move(login.password));
                       ask([this, user = login.username, password] {
                         Event answer = parts.broker.logIn(user, *password);
                         password->clear();
                         if (const auto* refused = std::get_if<LoginRefused>(&answer)) {
                           log::info("The broker did not sign '{}' in: {}", user,
                                     refused->detail.empty() ? std::string("no reason given")
                                                             : refused->detail);
                         }
                         return answer;
                       });
                     },
                     [&](ListDesktops&) { ask([this] { return parts.broker.listDesktops(); }); },
                     [&](WatchDesktops&) { startWatching(); },
                     [&](RequestConsole& request) {
                       ask([this, request] {
                         return parts.broker.console(request.desktopId, request.resume);
                       });
                     },
                     [&](StopDesktop& stop) {
                       ask([this, id = stop.desktopId] { return parts.broker.stop(id); });
                     },
                     [&](CancelRequests&) { ++generation; },
                     [&](OpenSession& open) { openSession(open.console); },
                     [&](CloseSession&) { parts.session.close(); },
                     [&](SendKey& key) { parts.session.key(key.scancode, key.pressed); },
                     [&](SendMouse& send) { parts.session.mouse(toGuest(send), send.buttons); },
                     [&](SendCtrlAltDel&) { parts.session.ctrlAltDel(); },
                     [&](ListUsb&) { handle(UsbDevicesChanged{parts.session.usbDevices()}); },
                     [&](ShareUsb& share) { parts.session.shareUsb(share.id, share.share); },
                     [&](LogOut&) {
                       watching = false;
                       ask([this] {
                         parts.broker.logOut();
                         return Event{Tick{}};
                       });
                     },
                     [&](SetLayout& layout) {
                       if (parts.setLayout)
                         parts.setLayout(layout.xkb);
                     },
                 },
                 effect);
    }
  }

  void openSession(const Console& console) {
    auto keep = alive;
    Session::Listener listener;
    listener.opened = [this, keep] {
      post([this, keep] {
        if (*keep)
          handle(SessionOpened{});
      });
    };
    listener.ended = [this, keep](SessionEnd why, std::string detail) {
      post([this, keep, why, detail = std::move(detail)] {
        if (*keep)
          handle(SessionEnded{why, detail});
      });
    };
    listener.usb = [this, keep](std::vector<UsbDevice> devices) {
      post([this, keep, devices = std::move(devices)] {
        if (*keep)
          handle(UsbDevicesChanged{devices});
      });
    };
    listener.drawn = [this](const Frame& frame, Rect damage) {
      if (greeter.screen() != Screen::kSession || greeter.menuOpen())
        return;
      if (frame.width != shownWidth || frame.height != shownHeight)
        showWholeFrame();  // a new resolution: no old pixels around it
      else
        showFrame(frame, damage);
    };
    parts.session.open(console, std::move(listener));
  }

  // Where the guest's screen sits on head 0: centred.
  static std::pair<int, int> origin(const Canvas& canvas, int width, int height) {
    return {std::max(0, (canvas.width - width) / 2), std::max(0, (canvas.height - height) / 2)};
  }

  // Copies part of the guest's screen onto head 0's canvas, centred; returns
  // the part of head 0 that changed, if any.
  static std::optional<Rect> copyFrame(const Frame& frame, Rect damage, Canvas canvas) {
    const auto [left, top] = origin(canvas, frame.width, frame.height);
    const int x0 = std::clamp(damage.x, 0, frame.width);
    const int y0 = std::clamp(damage.y, 0, frame.height);
    const int x1 =
        std::clamp(damage.x + damage.width, 0, std::min(frame.width, canvas.width - left));
    const int y1 =
        std::clamp(damage.y + damage.height, 0, std::min(frame.height, canvas.height - top));
    if (x1 <= x0 || y1 <= y0)
      return std::nullopt;
    const auto bytes = static_cast<std::size_t>(x1 - x0) * 4;
    for (int y = y0; y < y1; ++y) {
      const auto* from = reinterpret_cast<const std::uint8_t*>(frame.pixels) +
                         static_cast<std::ptrdiff_t>(y) * frame.stride +
                         static_cast<std::ptrdiff_t>(x0) * 4;
      auto* to = reinterpret_cast<std::uint8_t*>(canvas.pixels) +
                 static_cast<std::ptrdiff_t>(y + top) * canvas.stride +
                 static_cast<std::ptrdiff_t>(x0 + left) * 4;
      std::memcpy(to, from, bytes);
    }
    return Rect{x0 + left, y0 + top, x1 - x0, y1 - y0};
  }

  // ---- The pointer over the desktop ----

  // Over the desktop (where the guest draws nothing of its own), on the
  // menu over it, and on the screens with something to click.
  bool overDesktop() const { return greeter.screen() == Screen::kSession && !greeter.menuOpen(); }
  bool arrowWanted() const {
    switch (greeter.screen()) {
      case Screen::kSession:
        return overDesktop() || pointerUsed;
      case Screen::kLogin:
      case Screen::kDesktops:
        return pointerUsed;
      default:
        return false;
    }
  }

  void placePointerIfNew() {
    if (pointerX >= 0)
      return;
    Canvas canvas = parts.output.canvas(0);
    pointerX = canvas.width / 2.0;
    pointerY = canvas.height / 2.0;
  }

  // The index of (row, col) in a block `width` wide stored row by row.
  static std::size_t cell(int row, int col, int width) {
    return static_cast<std::size_t>(row) * static_cast<std::size_t>(width) +
           static_cast<std::size_t>(col);
  }

  // Draws the arrow at the pointer on head 0's canvas; returns where.
  Rect drawArrow(Canvas canvas) {
    placePointerIfNew();
    const int scale = canvas.width >= 2560 ? 2 : 1;
    const int px = static_cast<int>(pointerX);
    const int py = static_cast<int>(pointerY);
    const int aw = kArrowWidth * scale;
    const int ah = static_cast<int>(kArrow.size()) * scale;
    // What the arrow covers, to put back when it moves.
    underArrow.assign(static_cast<std::size_t>(aw) * static_cast<std::size_t>(ah), 0U);
    for (int y = std::max(0, py); y < std::min(canvas.height, py + ah); ++y) {
      for (int x = std::max(0, px); x < std::min(canvas.width, px + aw); ++x) {
        underArrow[cell(y - py, x - px, aw)] =
            canvas.pixels[static_cast<std::ptrdiff_t>(y) * (canvas.stride / 4) + x];
      }
    }
    for (int row = 0; row < static_cast<int>(kArrow.size()) * scale; ++row) {
      const int y = py + row;
      if (y < 0 || y >= canvas.height)
        continue;
      const std::string_view line = kArrow[static_cast<std::size_t>(row / scale)];
      auto* out = canvas.pixels + static_cast<std::ptrdiff_t>(y) * (canvas.stride / 4);
      for (int col = 0; col < static_cast<int>(line.size()) * scale; ++col) {
        const int x = px + col;
        if (x < 0 || x >= canvas.width)
          continue;
        const char c = line[static_cast<std::size_t>(col / scale)];
        if (c == 'B')
          out[x] = 0x000000;
        else if (c == 'W')
          out[x] = 0xffffff;
      }
    }
    Rect at{px, py, kArrowWidth * scale, static_cast<int>(kArrow.size()) * scale};
    arrowDrawn = at;
    return at;
  }

  // Puts back what the arrow covered: over the desktop, the guest's pixels
  // as they are now, black around them; elsewhere what was there.
  void eraseArrow(Canvas canvas) {
    if (!arrowDrawn)
      return;
    const Rect r = *arrowDrawn;
    arrowDrawn.reset();
    if (!overDesktop()) {
      for (int y = std::max(0, r.y); y < std::min(canvas.height, r.y + r.height); ++y) {
        for (int x = std::max(0, r.x); x < std::min(canvas.width, r.x + r.width); ++x) {
          canvas.pixels[static_cast<std::ptrdiff_t>(y) * (canvas.stride / 4) + x] =
              underArrow[cell(y - r.y, x - r.x, r.width)];
        }
      }
      return;
    }
    for (int y = std::max(0, r.y); y < std::min(canvas.height, r.y + r.height); ++y) {
      const int x0 = std::max(0, r.x);
      const int x1 = std::min(canvas.width, r.x + r.width);
      if (x1 > x0)
        std::fill_n(canvas.pixels + static_cast<std::ptrdiff_t>(y) * (canvas.stride / 4) + x0,
                    x1 - x0, 0U);
    }
    if (auto frame = parts.session.frame()) {
      const auto [left, top] = origin(canvas, frame->width, frame->height);
      (void)copyFrame(*frame, Rect{r.x - left, r.y - top, r.width, r.height}, canvas);
    }
  }

  void moveArrow() {
    if (!arrowWanted() || (overDesktop() && !sessionFrameShown) ||
        (!overDesktop() && drawnSignature.empty()))
      return;
    Canvas canvas = parts.output.canvas(0);
    std::vector<Rect> damage;
    if (arrowDrawn)
      damage.push_back(*arrowDrawn);
    eraseArrow(canvas);
    damage.push_back(drawArrow(canvas));
    if (auto presented = parts.output.present(0, damage); !presented)
      log::warn("Showing the pointer failed: {}", presented.error().message());
  }

  // SendMouse's position on head 0, moved to the guest's screen.
  Mouse toGuest(const SendMouse& send) {
    Mouse out = send.mouse;
    if (shownWidth > 0 && shownHeight > 0) {
      const auto [left, top] = origin(parts.output.canvas(0), shownWidth, shownHeight);
      out.x = std::clamp(send.mouse.x - left, 0, shownWidth - 1);
      out.y = std::clamp(send.mouse.y - top, 0, shownHeight - 1);
    }
    return out;
  }

  // Moves the pointer on head 0 as the mouse says, and hands it on.
  void pointer(const Pointer& p) {
    placePointerIfNew();
    const Canvas canvas = parts.output.canvas(0);
    const double maxX = std::max(0, canvas.width - 1);
    const double maxY = std::max(0, canvas.height - 1);
    const int oldX = static_cast<int>(pointerX);
    const int oldY = static_cast<int>(pointerY);
    Mouse mouse;
    switch (p.kind) {
      case Pointer::Kind::kMotion:
        pointerX = std::clamp(pointerX + p.dx, 0.0, maxX);
        pointerY = std::clamp(pointerY + p.dy, 0.0, maxY);
        break;
      case Pointer::Kind::kAbsolute:
        pointerX = std::clamp(p.x * maxX, 0.0, maxX);
        pointerY = std::clamp(p.y * maxY, 0.0, maxY);
        break;
      case Pointer::Kind::kButton:
        mouse.button = p.button;
        mouse.pressed = p.pressed;
        break;
      case Pointer::Kind::kWheel:
        mouse.wheel = p.wheel;
        break;
    }
    mouse.x = static_cast<int>(pointerX);
    mouse.y = static_cast<int>(pointerY);
    mouse.dx = mouse.x - oldX;
    mouse.dy = mouse.y - oldY;
    bool moved = mouse.dx != 0 || mouse.dy != 0;
    if (!moved && !mouse.button && mouse.wheel == 0)
      return;
    // On the greeter's own screens and the menu, a left click reaches what
    // is under the arrow; over the desktop everything goes to the guest. A
    // click that closed the menu stays the greeter's: the guest never gets
    // its press (nor, so, its release).
    bool clicked = false;
    if (!overDesktop()) {
      const bool wasShown = arrowWanted();
      pointerUsed = true;
      if (mouse.button == MouseButton::kLeft && mouse.pressed) {
        for (const Hit& hit : hits) {
          if (mouse.x >= hit.rect.x && mouse.x < hit.rect.x + hit.rect.width &&
              mouse.y >= hit.rect.y && mouse.y < hit.rect.y + hit.rect.height) {
            apply(greeter.handle(Click{.target = hit.target, .index = hit.index, .turn = hit.turn},
                                 now()));
            clicked = true;
            break;
          }
        }
      }
      if (!wasShown && arrowWanted())
        moved = true;
    }
    if (!clicked)
      apply(greeter.handle(mouse, now()));
    if (moved)
      moveArrow();
    if (greeter.screen() != Screen::kSession)
      redraw(false);
  }

  // Copies part of the guest's screen onto head 0, with the pointer over
  // it, and shows it.
  void showFrame(const Frame& frame, Rect damage) {
    Canvas canvas = parts.output.canvas(0);
    auto copied = copyFrame(frame, damage, canvas);
    if (!copied)
      return;
    shownWidth = frame.width;
    shownHeight = frame.height;
    std::vector<Rect> shown{*copied};
    if (arrowWanted() && (!arrowDrawn || overlaps(*copied, *arrowDrawn)))
      shown.push_back(drawArrow(canvas));
    if (auto presented = parts.output.present(0, shown); !presented)
      log::warn("Showing the desktop's screen failed: {}", presented.error().message());
    ++frames;
    if (!sessionFrameShown) {
      sessionFrameShown = true;
      // Benchmarks time Enter to this line.
      log::info("The desktop is on screen ({}x{}).", frame.width, frame.height);
    }
  }

  // Head 0's canvas all black, with no arrow on it.
  Canvas blackCanvas() {
    Canvas canvas = parts.output.canvas(0);
    arrowDrawn.reset();
    for (int y = 0; y < canvas.height; ++y)
      std::memset(reinterpret_cast<std::uint8_t*>(canvas.pixels) +
                      static_cast<std::ptrdiff_t>(y) * canvas.stride,
                  0, static_cast<std::size_t>(canvas.width) * 4);
    return canvas;
  }

  // The whole guest screen on head 0's canvas, on black, not yet shown.
  void paintWholeFrame() {
    Canvas canvas = blackCanvas();
    if (auto frame = parts.session.frame();
        frame && copyFrame(*frame, Rect{0, 0, frame->width, frame->height}, canvas)) {
      shownWidth = frame->width;
      shownHeight = frame->height;
    }
  }

  // What the menu overlay shows, to draw it again only when that changes.
  static std::string menuSignature(const View& view) {
    std::string out = view.subtitle + "|" + view.hints;
    if (view.notice)
      out += "|" + view.notice->headline + view.notice->body;
    for (const auto& r : view.rows)
      out += fmt::format("|{}{}{}{}", r.name, r.state, r.detail, r.selected);
    for (const auto& b : view.buttons)
      out += fmt::format("|{}{}", b.label, b.focused);
    return out;
  }

  // The whole guest screen on head 0, on black.
  void showWholeFrame() {
    (void)blackCanvas();
    auto frame = parts.session.frame();
    if (frame) {
      showFrame(*frame, Rect{0, 0, frame->width, frame->height});
    } else {
      (void)parts.output.present(0, {});
      ++frames;
    }
  }

  // Draws the screen if what it shows changed (or always, when forced).
  void redraw(bool force) {
    const View view = describe(greeter, parts.translations);
    if (view.screen != Screen::kSession)
      sessionFrameShown = false;
    if (view.screen == Screen::kSession) {
      const bool entering = drawnSignature != "session";
      drawnSignature = "session";
      const std::string menu = view.menu ? menuSignature(view) : "";
      if (entering || menu != menuShown) {
        menuShown = menu;
        if (view.menu) {
          // The overlay is translucent: drawn on the desktop's own pixels,
          // never on the overlay it replaces, and shown in one present.
          paintWholeFrame();
          Canvas canvas = parts.output.canvas(0);
          renderer.drawOverlay(view, canvas);
          hits = renderer.hits();
          if (arrowWanted())
            (void)drawArrow(canvas);
          (void)parts.output.present(0, {});
          ++frames;
        } else {
          showWholeFrame();
        }
      }
      return;
    }
    menuShown.clear();
    const std::string clock = clockText();
    // A cheap fingerprint of what is on screen.
    std::string signature = fmt::format(
        "{}|{}|{}|{}|{}|{}|{}", static_cast<int>(view.screen), view.title, view.subtitle, clock,
        view.notice ? view.notice->headline + view.notice->body + view.notice->detail : "",
        view.hints, view.footer);
    for (const auto& f : view.fields)
      signature += fmt::format("|{}{}{}", f.label, f.value, f.focused);
    for (const auto& r : view.rows)
      signature += fmt::format("|{}{}{}{}", r.name, r.state, r.detail, r.selected);
    for (const auto& b : view.buttons)
      signature += fmt::format("|{}{}{}", b.label, b.focused, b.enabled);
    if (!force && signature == drawnSignature)
      return;
    drawnSignature = std::move(signature);
    for (int head = 0; head < parts.output.heads(); ++head) {
      renderer.draw(view, parts.output.canvas(head), clock);
      if (head == 0) {
        hits = renderer.hits();
        arrowDrawn.reset();
        if (arrowWanted())
          (void)drawArrow(parts.output.canvas(0));
      }
      if (auto presented = parts.output.present(head, {}); !presented)
        log::warn("Showing the greeter's screen failed: {}", presented.error().message());
    }
    if (++frames == 1) {
      // Boot-time benchmarks wait for this line: the first thing a student sees.
      log::info("The greeter's first frame is on screen.");
    }
    if (view.screen == Screen::kLogin && !loginShown) {
      loginShown = true;
      // Benchmarks and boot-time checks wait for this line.
      log::info("The login screen is up.");
    }
    if (view.screen == Screen::kTrouble && greeter.message().notice == Notice::kMisconfigured &&
        !setupShown) {
      setupShown = true;
      log::info("The screen says this PC is not set up correctly.");
    }
    // For whoever reads a lab PC's log (and for the VM test): who got in.
    if (view.screen != Screen::kDesktops) {
      listShown = false;
    } else if (greeter.listLoaded() && !listShown) {
      listShown = true;
      log::info("{} is signed in; the desktop list is up ({} desktops).", greeter.username(),
                greeter.desktops().size());
    }
  }

  static gboolean onTimer(gpointer data) {
    guardCallback("the greeter's timer", [&] { static_cast<Impl*>(data)->tick(); });
    return G_SOURCE_CONTINUE;
  }

  void tick() {
    apply(greeter.handle(Tick{}, now()));
    redraw(false);
  }

  // Follows the broker's event stream on a thread of its own while logged
  // in; a stream that breaks is opened again after a pause.
  void startWatching() {
    stopWatching();
    watching = true;
    auto keep = alive;
    watcher = std::thread([this, keep] {
      auto keepGoing = [this] { return watching.load(); };
      while (watching) {
        auto ended = parts.broker.watch(
            [this, keep](Event event) {
              auto boxed = std::make_shared<Event>(std::move(event));
              post([this, keep, boxed] {
                if (*keep && greeter.loggedIn())
                  handle(*boxed);
              });
            },
            keepGoing);
        if (!ended && ended.error().code() == Errc::kUnauthenticated)
          break;  // the session is over; the next request says so
        for (int i = 0; i < 20 && watching; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  void stopWatching() {
    watching = false;
    if (watcher.joinable())
      watcher.join();
  }
  std::atomic<bool> watching{false};
  std::thread watcher;
};

Runtime::Runtime(RuntimeParts parts) : impl_(std::make_unique<Impl>(std::move(parts))) {}

Runtime::~Runtime() = default;

void Runtime::start() {
  Impl& impl = *impl_;
  impl.apply(impl.greeter.start(Impl::now()));
  impl.redraw(true);
  impl.timer = g_timeout_add(250, &Impl::onTimer, &impl);
}

void Runtime::key(const Key& key) {
  Impl& impl = *impl_;
  impl.apply(impl.greeter.handle(key, Impl::now()));
  impl.redraw(false);
}

void Runtime::machine(MachineInfo info) {
  Impl& impl = *impl_;
  if (impl.greeter.machine() == info)
    return;
  log::info("This PC is now: {}.", describeMachine(info));
  impl.greeter.setMachine(std::move(info));
  impl.redraw(false);
}

void Runtime::pointer(const Pointer& pointer) {
  impl_->pointer(pointer);
}

const Greeter& Runtime::greeter() const {
  return impl_->greeter;
}

int Runtime::framesPresented() const {
  return impl_->frames;
}

std::vector<Hit> Runtime::clickable() const {
  return impl_->hits;
}

}  // namespace aula::greeter
