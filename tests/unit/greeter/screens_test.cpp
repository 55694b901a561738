// Every greeter screen drawn on the headless output, in every language, as
// PNGs (the pictures in docs/greeter.md come from here), and what a person
// would check in them: the focus ring is where the keys go, errors are red,
// a 4K monitor gets the same layout as a 1280x1024 one.
//
//   AULA_GREETER_SHOTS_DIR=docs/greeter build/dev/tests/greeter_screens_tests
//
// rewrites the docs' pictures; without it they go to a temporary directory.
#include <cstdlib>
#include <functional>
#include <map>

#include <cairo.h>
#include <gtest/gtest.h>
#include <linux/input-event-codes.h>

#include "aula/greeter/greeter.hpp"
#include "aula/greeter/view.hpp"

#include "headless_output.hpp"
#include "render.hpp"
#include "support/temp_dir.hpp"

namespace aula::greeter {
namespace {

using namespace std::chrono_literals;

Key press(std::uint32_t code, std::string text = {}) {
  return Key{code, true, std::move(text)};
}

// Drives a greeter to one screen, as a user and the broker would.
struct Script {
  Instant now{};
  Greeter greeter{Options{}, MachineInfo{"10.20.0.57", "52:54:00:3a:91:0c", "2026.12.1"}};

  void on(const Event& event) { greeter.handle(event, now); }
  void type(std::string_view text) {
    for (char c : text)
      on(press(KEY_A, std::string(1, c)));
  }
  void ready(Language language) {
    greeter.start(now);
    on(BrokerReady{School{"Institut Joan Miró", "", 300s}});
    on(press(KEY_TAB));
    on(press(KEY_TAB));
    for (Language l : kLanguages) {
      if (l == language)
        break;
      on(press(KEY_RIGHT));
    }
    on(press(KEY_TAB));
    on(press(KEY_TAB));
    on(press(KEY_TAB));
  }
  // A login the broker refused.
  void refused(Language language, LoginRefused refusal) {
    ready(language);
    type("anna");
    on(press(KEY_ENTER));
    type("wrong");
    on(press(KEY_ENTER));
    on(refusal);
  }
  void loggedIn(Language language, std::vector<Desktop> desktops) {
    ready(language);
    type("anna");
    on(press(KEY_ENTER));
    type("secret");
    on(press(KEY_ENTER));
    on(LoggedIn{"Anna Puig"});
    on(DesktopsListed{std::move(desktops)});
  }
};

std::vector<Desktop> someDesktops() {
  return {{12, "Informàtica", "Debian 12 Desktop", DesktopState::kRunning, true},
          {13, "Matemàtiques", "GeoGebra Lab", DesktopState::kStopped, true},
          {14, "Examen", "Exam image", DesktopState::kStopped, false}};
}

using Scene = std::function<void(Script&, Language)>;

const std::map<std::string, Scene>& scenes() {
  static const std::map<std::string, Scene> all = {
      {"login",
       [](Script& s, Language l) {
         s.ready(l);
         s.type("anna");
       }},
      {"login-wrong-password",
       [](Script& s, Language l) {
         s.refused(l, {Notice::kWrongPassword, "", 0});
       }},
      {"login-locked",
       [](Script& s, Language l) {
         s.refused(l, {Notice::kLocked, "", 30});
       }},
      {"unreachable",
       [](Script& s, Language l) {
         s.refused(l,
                   {Notice::kBrokerUnreachable,
                    "Cannot connect to https://aula.school.example:8443: connection refused.", 0});
       }},
      {"certificate",
       [](Script& s, Language l) {
         s.refused(l, {Notice::kCertificateRejected,
                       "Expected CA 3F:2A:…:91, the server showed 77:0B:…:C4.", 0});
       }},
      {"setup-wrong",
       [](Script& s, Language l) {
         Options options;
         options.language = l;
         options.setupError =
             "The CA fingerprint (aula.ca_fp, ca_fingerprint or --ca-fingerprint) is wrong: "
             "'3F:2A:91:0C:77:0B:E4:C4' is not a SHA-256 fingerprint; expected 64 hexadecimal "
             "digits, optionally in pairs separated by ':'.";
         s.greeter = Greeter{options, s.greeter.machine()};
         s.greeter.start(s.now);
       }},
      {"clock",
       [](Script& s, Language l) {
         s.refused(l, {Notice::kClockOff,
                       "This PC says 2001-01-01 00:02; the server says 2026-12-05 08:59.", 0});
       }},
      {"desktops", [](Script& s, Language l) { s.loggedIn(l, someDesktops()); }},
      {"desktops-none", [](Script& s, Language l) { s.loggedIn(l, {}); }},
      {"desktops-quota",
       [](Script& s, Language l) {
         s.loggedIn(l, someDesktops());
         s.on(press(KEY_DOWN));
         s.on(press(KEY_ENTER));
         s.on(ConsoleRefused{
             Notice::kQuotaReached,
             "You have reached the limit of 1 running desktops; free some up "
             "first or ask your teacher.",
         });
       }},
      {"connecting",
       [](Script& s, Language l) {
         s.loggedIn(l, someDesktops());
         s.on(press(KEY_DOWN));
         s.on(press(KEY_ENTER));
       }},
      {"reconnecting",
       [](Script& s, Language l) {
         s.loggedIn(l, someDesktops());
         s.on(press(KEY_ENTER));
         s.on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t"), "", ""}});
         s.on(SessionOpened{});
         s.on(SessionEnded{SessionEnd::kLinkLost, ""});
       }},
      {"session-menu",
       [](Script& s, Language l) {
         s.loggedIn(l, someDesktops());
         s.on(press(KEY_ENTER));
         s.on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t"), "", ""}});
         s.on(SessionOpened{});
         Key combo = press(KEY_F12);
         combo.shift = true;
         s.on(combo);
       }},
      {"session-usb",
       [](Script& s, Language l) {
         s.loggedIn(l, someDesktops());
         s.on(press(KEY_ENTER));
         s.on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t"), "", "", "storage"}});
         s.on(SessionOpened{});
         Key combo = press(KEY_F12);
         combo.shift = true;
         s.on(combo);
         s.on(press(KEY_DOWN));
         s.on(press(KEY_ENTER));
         s.on(UsbDevicesChanged{
             {UsbDevice{"1-2", "SanDisk Cruzer Blade [0781:5567]", true, true, ""},
              UsbDevice{"1-4", "Logitech USB Keyboard [046d:c31c]", false, false, ""},
              UsbDevice{"2-1", "Kingston DataTraveler 3.0 [0951:1666]", true, false, ""}}});
       }},
  };
  return all;
}

class ScreensTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = Translations::load(AULA_GREETER_LOCALE_DIR);
    ASSERT_TRUE(loaded) << loaded.error().message();
    catalogs_ = std::move(loaded).value();
  }

  std::filesystem::path shotsDir() {
    if (const char* dir = std::getenv("AULA_GREETER_SHOTS_DIR"))
      return dir;
    return temp_.path();
  }

  // Draws a scene; returns the head's pixels.
  Canvas draw(const std::string& scene, Language language, HeadlessOutput& output,
              const std::string& file = {}) {
    Script script;
    scenes().at(scene)(script, language);
    const View view = describe(script.greeter, catalogs_);
    EXPECT_EQ(script.greeter.language(), language) << scene;
    Canvas canvas = output.canvas(0);
    if (view.screen == Screen::kSession) {
      // The guest's frame: the test template's blue screen.
      std::fill(canvas.pixels, canvas.pixels + canvas.width * canvas.height, 0x000000aa);
      renderer_.drawOverlay(view, canvas);
    } else {
      renderer_.draw(view, canvas, "08:59");
    }
    EXPECT_TRUE(output.present(0, {}));
    if (!file.empty()) {
      auto written = output.writePng(0, shotsDir() / file);
      EXPECT_TRUE(written) << written.error().message();
    }
    return output.shown(0);
  }

  static std::size_t count(Canvas canvas, std::uint32_t rgb) {
    std::size_t n = 0;
    for (int y = 0; y < canvas.height; ++y) {
      const auto* row = canvas.pixels + static_cast<std::ptrdiff_t>(y) * (canvas.stride / 4);
      for (int x = 0; x < canvas.width; ++x)
        n += (row[x] & 0xffffff) == rgb ? 1 : 0;
    }
    return n;
  }

  static inline Translations catalogs_;
  Renderer renderer_;
  test::TempDir temp_;
};

constexpr std::uint32_t kFocusRing = 0xf5a524;
constexpr std::uint32_t kErrorBar = 0xc8321f;
constexpr std::uint32_t kCard = 0xffffff;

TEST_F(ScreensTest, EveryScreenInEveryLanguageIsDrawn) {
  HeadlessOutput output({{1280, 1024}});
  for (const auto& [scene, script] : scenes()) {
    for (Language language : kLanguages) {
      const std::string file = fmt::format("{}-{}.png", scene, languageCode(language));
      const Canvas shown = draw(scene, language, output, file);
      EXPECT_GT(count(shown, kCard), 50'000u) << file << ": the card is drawn";
      EXPECT_TRUE(std::filesystem::exists(shotsDir() / file));
    }
  }
}

TEST_F(ScreensTest, TheFocusRingMarksWhereTheKeysGo) {
  HeadlessOutput output({{1280, 1024}});
  EXPECT_GT(count(draw("login", Language::kEnglish, output), kFocusRing), 500u);
  EXPECT_GT(count(draw("desktops", Language::kEnglish, output), kFocusRing), 500u);
  EXPECT_GT(count(draw("session-menu", Language::kEnglish, output), kFocusRing), 300u);
  EXPECT_GT(count(draw("session-usb", Language::kEnglish, output), kFocusRing), 300u);
  EXPECT_EQ(count(draw("connecting", Language::kEnglish, output), kFocusRing), 0u)
      << "nothing to focus while connecting";
}

TEST_F(ScreensTest, WhatCanBeClickedIsWhereItIsDrawnAndOnlyThat) {
  HeadlessOutput output({{1280, 1024}});
  auto targets = [&](Target target) {
    std::vector<Hit> out;
    for (const Hit& h : renderer_.hits()) {
      if (h.target == target)
        out.push_back(h);
    }
    return out;
  };
  const Canvas login = draw("login", Language::kEnglish, output);
  std::vector<Hit> fields;
  std::vector<Hit> arrows;
  for (const Hit& h : targets(Target::kField))
    (h.turn == 0 ? fields : arrows).push_back(h);
  ASSERT_EQ(fields.size(), 4u);
  ASSERT_EQ(arrows.size(), 4u) << "the language's and the keyboard's ‹ and ›";
  for (const Hit& a : arrows) {
    const Hit& choice = fields.at(a.index);
    EXPECT_GE(a.index, 2u);
    EXPECT_TRUE(a.turn < 0 ? a.rect.x == choice.rect.x
                           : a.rect.x + a.rect.width >= choice.rect.x + choice.rect.width - 1)
        << "an arrow at its own end of the field";
  }
  const auto buttons = targets(Target::kButton);
  ASSERT_EQ(buttons.size(), 1u);
  for (std::size_t i = 0; i < fields.size(); ++i) {
    EXPECT_EQ(fields[i].index, i);
    EXPECT_GT(fields[i].rect.width, 150);
    EXPECT_GE(fields[i].rect.height, 48);
  }
  EXPECT_LT(fields[0].rect.y + fields[0].rect.height, fields[1].rect.y) << "the name above";
  EXPECT_EQ(fields[2].rect.y, fields[3].rect.y) << "language and keyboard side by side";
  EXPECT_LT(fields[2].rect.x + fields[2].rect.width, fields[3].rect.x);
  EXPECT_GT(buttons[0].rect.y, fields[3].rect.y + fields[3].rect.height) << "log in below";
  // The middle of the focused name field is the field's own colour, not the card's.
  const Rect name = fields[0].rect;
  const std::uint32_t middle =
      login.pixels[static_cast<std::ptrdiff_t>(name.y + name.height / 2) * (login.stride / 4) +
                   name.x + name.width - 10] &
      0xffffffU;
  EXPECT_NE(middle, kCard);

  draw("desktops", Language::kEnglish, output);
  EXPECT_EQ(targets(Target::kRow).size(), 3u);
  EXPECT_EQ(targets(Target::kButton).size(), 2u);
  draw("connecting", Language::kEnglish, output);
  EXPECT_TRUE(renderer_.hits().empty()) << "nothing to click while connecting";
  draw("session-menu", Language::kEnglish, output);
  EXPECT_EQ(targets(Target::kButton).size(), 4u);
}

TEST_F(ScreensTest, ErrorsAreRedAndInformationIsNot) {
  HeadlessOutput output({{1280, 1024}});
  EXPECT_EQ(count(draw("login", Language::kEnglish, output), kErrorBar), 0u);
  EXPECT_GT(count(draw("login-wrong-password", Language::kEnglish, output), kErrorBar), 100u);
  EXPECT_GT(count(draw("desktops-quota", Language::kEnglish, output), kErrorBar), 100u);
  EXPECT_EQ(count(draw("desktops-none", Language::kEnglish, output), kErrorBar), 0u)
      << "no desktop yet is information, not an error";
}

TEST_F(ScreensTest, A4kMonitorGetsTheSameLayoutScaled) {
  HeadlessOutput small({{1280, 1024}});
  HeadlessOutput large({{3840, 2160}});
  const double smallShare =
      static_cast<double>(count(draw("login", Language::kEnglish, small), kCard)) / (1280 * 1024);
  const double largeShare =
      static_cast<double>(
          count(draw("login", Language::kEnglish, large, "login-4k-en.png"), kCard)) /
      (3840.0 * 2160.0);
  // The card is sized by the height (2160/1024), so its share of a wider
  // screen is smaller by the ratio of the aspect ratios.
  const double expected = smallShare * (1280.0 / 1024.0) / (3840.0 / 2160.0);
  EXPECT_NEAR(largeShare, expected, expected * 0.1);
}

TEST_F(ScreensTest, TheSchoolsLogoIsDrawnBesideItsName) {
  // A 64x64 logo in a colour nothing else uses, as the broker sends it.
  cairo_surface_t* logo = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 64, 64);
  cairo_t* cr = cairo_create(logo);
  cairo_set_source_rgb(cr, 1.0, 0.0, 0.8);
  cairo_paint(cr);
  cairo_destroy(cr);
  std::string png;
  cairo_surface_write_to_png_stream(
      logo,
      [](void* closure, const unsigned char* data, unsigned int length) {
        static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
        return CAIRO_STATUS_SUCCESS;
      },
      &png);
  cairo_surface_destroy(logo);
  HeadlessOutput output({{1280, 1024}});
  EXPECT_EQ(count(draw("login", Language::kEnglish, output), 0xff00cc), 0u);
  renderer_.setLogo(png);
  const std::size_t pink =
      count(draw("login", Language::kEnglish, output, "login-logo-en.png"), 0xff00cc);
  EXPECT_GT(pink, 44u * 44u * 8 / 10) << "drawn 44 px high at this scale";
  renderer_.setLogo("not a png");
  EXPECT_EQ(count(draw("login", Language::kEnglish, output), 0xff00cc), 0u)
      << "a broken logo draws nothing, and nothing breaks";
}

}  // namespace
}  // namespace aula::greeter
