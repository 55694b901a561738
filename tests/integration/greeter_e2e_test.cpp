// The greeter end to end, with everything real but the screen: aula-broker,
// aula-agent, libvirtd and the test guest under TCG, the greeter's runtime
// with the HTTPS broker client pinned to the CA fingerprint and the SPICE
// session, drawing on the headless output and driven by scripted keys, as a
// student would type them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <regex>

#include <glib.h>
#include <gtest/gtest.h>
#include <linux/input-event-codes.h>

#include "aula/greeter/ports.hpp"

#include "headless_output.hpp"
#include "runtime.hpp"
#include "spice_session.hpp"
#include "support/agent_stack.hpp"
#include "support/temp_dir.hpp"

namespace aula::greeter {
namespace {

using namespace std::chrono_literals;
using test::AgentStackTest;

struct Shares {
  double blue = 0;
  double white = 0;
};

// How much of the greeter's frame is the test guest's blue and white.
Shares guestShares(Canvas canvas) {
  std::size_t blue = 0;
  std::size_t white = 0;
  for (int y = 0; y < canvas.height; ++y) {
    const auto* row = canvas.pixels + static_cast<std::ptrdiff_t>(y) * (canvas.stride / 4);
    for (int x = 0; x < canvas.width; ++x) {
      const std::uint32_t p = row[x];
      const unsigned r = (p >> 16) & 0xff;
      const unsigned g = (p >> 8) & 0xff;
      const unsigned b = p & 0xff;
      if (r > 160 && g > 160 && b > 160)
        ++white;
      else if (b > 100 && r < 80 && g < 80)
        ++blue;
    }
  }
  const double all = static_cast<double>(canvas.width) * canvas.height;
  return {100.0 * static_cast<double>(blue) / all, 100.0 * static_cast<double>(white) / all};
}

class GreeterEndToEnd : public AgentStackTest {
 protected:
  static void SetUpTestSuite() { startStack(); }

  void SetUp() override {
    AgentStackTest::SetUp();
    if (IsSkipped())
      return;
    auto translations = Translations::load(AULA_GREETER_LOCALE_DIR);
    ASSERT_TRUE(translations) << translations.error().message();
    auto fingerprint = crypto::certificateFingerprint(env_->caPem);
    ASSERT_TRUE(fingerprint);
    broker_ = std::make_unique<HttpBroker>(BrokerAddress{env_->url(), *fingerprint, {}});
    output_ = std::make_unique<HeadlessOutput>(std::vector<HeadSize>{{1024, 768}});
    Options options;
    options.reconnectFor = 30s;
    runtime_ = std::make_unique<Runtime>(RuntimeParts{*broker_,
                                                      session_,
                                                      *output_,
                                                      std::move(translations).value(),
                                                      options,
                                                      MachineInfo{"127.0.0.1", "", "test"},
                                                      {}});
    runtime_->start();
  }

  void TearDown() override {
    runtime_.reset();
    pump(200ms);
    AgentStackTest::TearDown();
  }

  // Runs the main context until `done`, or fails after `timeout`.
  template <typename Done>
  bool until(Done done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done())
        return true;
      if (!g_main_context_iteration(nullptr, FALSE))
        std::this_thread::sleep_for(5ms);
    }
    return done();
  }
  void pump(std::chrono::milliseconds time) {
    until([] { return false; }, time);
  }

  void press(std::uint32_t code, std::string text = {}) {
    runtime_->key(Key{code, true, std::move(text)});
    runtime_->key(Key{code, false, {}});
  }
  void type(std::string_view text) {
    for (char c : text)
      press(KEY_A, std::string(1, c));
  }
  const Greeter& greeter() { return runtime_->greeter(); }
  std::string where() {
    return fmt::format("screen {}, notice {}: {}", static_cast<int>(greeter().screen()),
                       static_cast<int>(greeter().message().notice), greeter().message().detail);
  }

  void logIn(std::string_view password) {
    ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kLogin; }, 20s)) << where();
    press(KEY_ESC);  // an empty form
    type(test::kStudent);
    press(KEY_ENTER);
    type(password);
    press(KEY_ENTER);
  }

  void logInToTheList() {
    logIn(test::kStudentPassword);
    ASSERT_TRUE(until(
        [&] { return greeter().screen() == Screen::kDesktops && greeter().listLoaded(); }, 30s))
        << where();
  }
  // Enter on the list: the guest's fixed screen, blue with white text, in
  // the greeter's own frame.
  void connectAndSeeTheGuest() {
    press(KEY_ENTER);
    ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kSession; }, 180s)) << where();
    Shares shares;
    ASSERT_TRUE(until(
        [&] {
          shares = guestShares(output_->shown(0));
          return shares.blue > 20 && shares.white > 1;
        },
        60s))
        << "blue " << shares.blue << "%, white " << shares.white << "%";
  }
  // The student's one desktop on screen.
  void openTheDesktop() {
    ASSERT_NO_FATAL_FAILURE(logInToTheList());
    ASSERT_NO_FATAL_FAILURE(connectAndSeeTheGuest());
  }

  std::int64_t consoles(std::int64_t id) {
    return env_->admin("GET", fmt::format("/api/v1/desktops/{}", id))["consoles"]
        .get<std::int64_t>();
  }

  void writeShot(const std::string& name) {
    if (const char* dir = std::getenv("AULA_GREETER_SHOTS_DIR")) {
      (void)output_->writePng(0, std::filesystem::path(dir) / name);
    }
  }

  // The desktop's sound, as ALSA's file plugin writes what the greeter
  // plays: raw 16-bit frames.
  test::TempDir soundDir_;
  const std::filesystem::path sound_ = soundDir_.path() / "desktop.raw";
  SpiceSession session_{"file:FILE=" + sound_.string()};
  std::unique_ptr<HttpBroker> broker_;
  std::unique_ptr<HeadlessOutput> output_;
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(GreeterEndToEnd, AStudentLogsInPicksTheDesktopAndSeesItsScreen) {
  const std::int64_t id = newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(logInToTheList());
  ASSERT_EQ(greeter().desktops().size(), 1u);
  EXPECT_EQ(greeter().desktops()[0].id, id);
  EXPECT_EQ(greeter().desktops()[0].name, "Informatik");
  ASSERT_NO_FATAL_FAILURE(connectAndSeeTheGuest());
  writeShot("e2e-session.png");

  // The mouse: QEMU's own trace of its input layer shows what reached the
  // guest. The guest's screen (720x400) sits in the middle of 1024x768, so
  // The pointer starts in the middle of the 1024x768 head; 180 px right and
  // 100 down of it is (692, 484) on the head.
  const std::string domain = fmt::format("aula-{}", id);
  const std::filesystem::path log = fmt::format("/var/log/libvirt/qemu/{}.log", domain);
  const auto logBefore = test::readFile(log).size();
  test::virsh({"qemu-monitor-command", "--hmp", domain, "trace-event input_event_* on"});
  Pointer move;
  move.dx = 180;
  move.dy = 100;
  runtime_->pointer(move);
  Pointer left;
  left.kind = Pointer::Kind::kButton;
  runtime_->pointer(left);
  left.pressed = false;
  runtime_->pointer(left);
  std::string seen;
  until(
      [&] {
        auto text = test::readFile(log);
        seen = text.size() > logBefore ? text.substr(logBefore) : "";
        return seen.find("input_event_btn") != std::string::npos &&
               seen.rfind("down 0") != std::string::npos;
      },
      20s);
  test::virsh({"qemu-monitor-command", "--hmp", domain, "trace-event input_event_* off"});
  // The test guest drives its USB tablet, so the tablet is QEMU's pointer
  // and SPICE is in client mouse mode: the position goes, scaled to
  // 0..0x7fff, not the motion.
  int rx = 0;
  int ry = 0;
  std::optional<double> ax;
  std::optional<double> ay;
  static const std::regex kMotion(
      R"(input_event_(rel|abs) con -?\d+, axis ([xy]), value (0x[0-9a-f]+|-?\d+))");
  for (auto it = std::sregex_iterator(seen.begin(), seen.end(), kMotion);
       it != std::sregex_iterator(); ++it) {
    const bool x = (*it)[2].str() == "x";
    const long value = std::stol((*it)[3].str(), nullptr, 0);
    if ((*it)[1].str() == "rel")
      (x ? rx : ry) += static_cast<int>(value);
    else
      (x ? ax : ay) = static_cast<double>(value) / 0x7fff;
  }
  ASSERT_TRUE(ax && ay) << "no absolute position reached the guest (relative " << rx << ", " << ry
                        << "): SPICE is not in client mouse mode\n"
                        << seen;
  // Where (692, 484) is on the guest's screen, centred on the head.
  auto frame = session_.frame();
  ASSERT_TRUE(frame);
  const int gx = 692 - (1024 - frame->width) / 2;
  const int gy = 484 - (768 - frame->height) / 2;
  EXPECT_NEAR(*ax, static_cast<double>(gx) / (frame->width - 1), 0.01) << seen;
  EXPECT_NEAR(*ay, static_cast<double>(gy) / (frame->height - 1), 0.01) << seen;
  EXPECT_NE(seen.find("button left, down 1"), std::string::npos) << seen;
  EXPECT_NE(seen.find("button left, down 0"), std::string::npos) << seen;
  // The greeter's arrow is where the pointer is, its tip black, its inside
  // white; moved away, the guest's pixels come back.
  auto pixel = [&](int px, int py) {
    Canvas c = output_->shown(0);
    return c.pixels[static_cast<std::ptrdiff_t>(py) * (c.stride / 4) + px] & 0xffffffU;
  };
  EXPECT_EQ(pixel(692, 484), 0x000000U);
  EXPECT_EQ(pixel(693, 489), 0xffffffU);
  writeShot("e2e-session-pointer.png");
  move.dx = -300;
  move.dy = 0;
  runtime_->pointer(move);
  EXPECT_EQ(pixel(392, 484), 0x000000U) << "the arrow is at its new place";
  // Where it was, the head shows the guest's own pixels again (black
  // around the guest's screen).
  frame = session_.frame();
  ASSERT_TRUE(frame);
  const int left0 = (1024 - frame->width) / 2;
  const int top0 = (768 - frame->height) / 2;
  int wrong = 0;
  for (int y = 484; y < 484 + 19; ++y) {
    for (int x = 692; x < 692 + 12; ++x) {
      const int fx = x - left0;
      const int fy = y - top0;
      const bool inside = fx >= 0 && fy >= 0 && fx < frame->width && fy < frame->height;
      const std::uint32_t guest =
          inside ? frame->pixels[static_cast<std::ptrdiff_t>(fy) * (frame->stride / 4) + fx] &
                       0xffffffU
                 : 0U;
      wrong += pixel(x, y) != guest ? 1 : 0;
    }
  }
  EXPECT_EQ(wrong, 0) << "pixels of the arrow's old place that are not the guest's";

  // Sound: the test guest plays a 440 Hz tone on its HD Audio card, 1 s out
  // of every 10; through SPICE's playback channel the greeter plays it on
  // its ALSA device (here ALSA's file plugin). SPICE sends 16-bit stereo at
  // 44.1 or 48 kHz, so a 440 Hz tone crosses zero about 880 times a second
  // on either channel.
  std::vector<std::int16_t> samples;
  auto loud = [&] {
    std::ifstream in(sound_, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    samples.resize(bytes.size() / 2);
    std::memcpy(samples.data(), bytes.data(), samples.size() * 2);
    std::size_t n = 0;
    for (std::size_t i = 0; i + 1 < samples.size(); i += 2)
      n += std::abs(samples[i]) > 2000 ? 1 : 0;
    return n;
  };
  ASSERT_TRUE(until([&] { return loud() > 24000; }, 30s))
      << "half a second of the desktop's tone did not reach the greeter's sound device; "
      << samples.size() / 2 << " frames written, " << loud() << " loud";
  // The longest loud stretch of the left channel, and its zero crossings.
  std::size_t best = 0;
  std::size_t bestCrossings = 0;
  for (std::size_t i = 0; i + 2 < samples.size();) {
    std::size_t j = i;
    std::size_t crossings = 0;
    std::size_t quiet = 0;
    while (j + 2 < samples.size() && quiet < 400) {
      quiet = std::abs(samples[j]) < 500 ? quiet + 1 : 0;
      crossings += (samples[j] < 0) != (samples[j + 2] < 0) ? 1 : 0;
      j += 2;
    }
    if ((j - i) / 2 > best) {
      best = (j - i) / 2;
      bestCrossings = crossings;
    }
    i = j + 2;
  }
  ASSERT_GT(best, 17640u) << "no 0.4 s of tone in one piece";
  const double at48 = static_cast<double>(bestCrossings) / 2 / (static_cast<double>(best) / 48000);
  const double at44 = static_cast<double>(bestCrossings) / 2 / (static_cast<double>(best) / 44100);
  EXPECT_TRUE(std::abs(at48 - 440) < 50 || std::abs(at44 - 440) < 50)
      << "the tone is " << at44 << " Hz (at 44.1 kHz) or " << at48 << " Hz (at 48 kHz), not 440";
  // The guest plays it at a quarter of full scale (8192) with its mixer at
  // half volume, which QEMU leaves to the client: played at about 4096.
  std::vector<int> levels;
  for (std::size_t i = 0; i < samples.size(); i += 2) {
    if (std::abs(samples[i]) > 2000)
      levels.push_back(std::abs(samples[i]));
  }
  std::nth_element(levels.begin(), levels.begin() + static_cast<std::ptrdiff_t>(levels.size() / 2),
                   levels.end());
  const int level = levels[levels.size() / 2];
  EXPECT_TRUE(level > 3000 && level < 5500)
      << "the tone plays at " << level
      << ", not at about 4096: the desktop's mixer at half volume was not followed";

  // The guest going away from under the session brings the list back.
  test::virsh({"destroy", fmt::format("aula-{}", id)});
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kDesktops; }, 60s)) << where();
  EXPECT_EQ(greeter().message().notice, Notice::kShutDown) << where();
}

// A student who reaches for the mouse: clicks the fields, the button and
// the desktop, as they are drawn, instead of Tab and Enter.
TEST_F(GreeterEndToEnd, TheMouseClicksTheFieldsTheLogInButtonAndTheDesktop) {
  auto clickOn = [&](Target target, std::size_t index) {
    const auto hits = runtime_->clickable();
    auto hit = std::find_if(hits.begin(), hits.end(),
                            [&](const Hit& h) { return h.target == target && h.index == index; });
    ASSERT_NE(hit, hits.end()) << "nothing to click: target " << static_cast<int>(target)
                               << " index " << index << "; " << where();
    const Canvas canvas = output_->canvas(0);
    Pointer to;
    to.kind = Pointer::Kind::kAbsolute;
    // The middle pixel, aimed at its centre so that rounding keeps it.
    const int middleX = hit->rect.x + hit->rect.width / 2;
    const int middleY = hit->rect.y + hit->rect.height / 2;
    to.x = (middleX + 0.5) / (canvas.width - 1);
    to.y = (middleY + 0.5) / (canvas.height - 1);
    runtime_->pointer(to);
    Pointer button;
    button.kind = Pointer::Kind::kButton;
    button.button = MouseButton::kLeft;
    button.pressed = true;
    runtime_->pointer(button);
    button.pressed = false;
    runtime_->pointer(button);
  };
  newDesktop("Informatik", env_->templateId, true);
  newDesktop("Musik", env_->templateId, true);
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kLogin; }, 30s)) << where();
  press(KEY_ESC);
  ASSERT_NO_FATAL_FAILURE(clickOn(Target::kField, 1));  // the password field
  EXPECT_EQ(greeter().loginField(), LoginField::kPassword);
  ASSERT_NO_FATAL_FAILURE(clickOn(Target::kField, 0));  // back to the name
  EXPECT_EQ(greeter().loginField(), LoginField::kUser);
  type(test::kStudent);
  ASSERT_NO_FATAL_FAILURE(clickOn(Target::kField, 1));
  type(test::kStudentPassword);
  writeShot("login-mouse.png");
  ASSERT_NO_FATAL_FAILURE(clickOn(Target::kButton, 0));  // Log in
  ASSERT_TRUE(
      until([&] { return greeter().screen() == Screen::kDesktops && greeter().listLoaded(); }, 30s))
      << where();
  // The second desktop's row: the first click chooses it (the first row is
  // chosen to begin with), the second opens it.
  pump(200ms);
  ASSERT_EQ(greeter().desktops().size(), 2u);
  ASSERT_EQ(greeter().selected(), 0u);
  ASSERT_NO_FATAL_FAILURE(clickOn(Target::kRow, 1));
  EXPECT_EQ(greeter().screen(), Screen::kDesktops);
  EXPECT_EQ(greeter().selected(), 1u);
  const std::int64_t second = greeter().desktops()[1].id;
  // The arrow is drawn over the row where the pointer is: its tip black, its
  // inside white, on the row's light colours.
  {
    const auto hits = runtime_->clickable();
    ASSERT_FALSE(hits.empty());
    const auto row = std::find_if(hits.begin(), hits.end(), [](const Hit& h) {
      return h.target == Target::kRow && h.index == 1;
    });
    ASSERT_NE(row, hits.end());
    const Canvas shown = output_->shown(0);
    const int px = row->rect.x + row->rect.width / 2;
    const int py = row->rect.y + row->rect.height / 2;
    auto at = [&](int x, int y) {
      return shown.pixels[static_cast<std::ptrdiff_t>(y) * (shown.stride / 4) + x] & 0xffffffU;
    };
    EXPECT_EQ(at(px, py), 0x000000U) << "no arrow tip where the pointer is";
    EXPECT_EQ(at(px + 1, py + 4), 0xffffffU) << "no arrow inside below the tip";
    writeShot("list-mouse.png");
  }
  ASSERT_NO_FATAL_FAILURE(clickOn(Target::kRow, 1));
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kSession; }, 180s)) << where();
  ASSERT_NE(greeter().current(), nullptr);
  EXPECT_EQ(greeter().current()->id, second);
}

TEST_F(GreeterEndToEnd, AWrongPasswordShowsItsMessage) {
  logIn("not-the-password");
  ASSERT_TRUE(until([&] { return greeter().message().notice != Notice::kNone; }, 30s)) << where();
  EXPECT_EQ(greeter().screen(), Screen::kLogin);
  EXPECT_EQ(greeter().message().notice, Notice::kWrongPassword) << where();
  EXPECT_EQ(greeter().username(), test::kStudent);
}

TEST_F(GreeterEndToEnd, ABrokerThatStopsShowsTheRetryScreenAndRecovers) {
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kLogin; }, 20s)) << where();
  env_->broker->stop(SIGTERM);
  type(test::kStudent);
  press(KEY_ENTER);
  type(test::kStudentPassword);
  press(KEY_ENTER);
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kTrouble; }, 30s)) << where();
  EXPECT_EQ(greeter().message().notice, Notice::kBrokerUnreachable) << where();
  writeShot("e2e-unreachable.png");
  env_->startBroker();
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kLogin; }, 30s)) << where();
  logIn(test::kStudentPassword);
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kDesktops; }, 30s)) << where();
}

// The network drops under a session: every TCP connection of the guest's
// SPICE ports is cut (ss -K, as a pulled cable or a switch reboot would).
// The greeter says it is reconnecting, asks the broker for a fresh ticket
// (the desktop's console count goes up by one) and the guest is back.
TEST_F(GreeterEndToEnd, ADroppedLinkIsReestablishedWithAFreshTicket) {
  const std::int64_t id = newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(openTheDesktop());
  const std::int64_t before = consoles(id);
  const std::string display = test::virsh({"domdisplay", fmt::format("aula-{}", id)});
  std::vector<std::string> ports;
  for (std::string_view key : {"spice://127.0.0.1:", "tls-port="}) {
    if (auto at = display.find(key); at != std::string::npos) {
      auto from = at + key.size();
      ports.push_back(display.substr(from, display.find_first_not_of("0123456789", from) - from));
    }
  }
  ASSERT_FALSE(ports.empty()) << display;
  std::string killed;
  for (const auto& port : ports) {
    auto cut = test::runProgram({"ss", "-K", "-t", "state", "established", "(", "sport", "=",
                                 ":" + port, "or", "dport", "=", ":" + port, ")"});
    killed += cut.out;
  }
  // ss prints each socket it cut, under a header.
  if (killed.find("127.0.0.1:") == std::string::npos)
    GTEST_SKIP() << "This kernel cannot cut sockets (ss -K needs CONFIG_INET_DIAG_DESTROY): "
                 << display << " / " << killed;

  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kReconnecting; }, 20s)) << where();
  ASSERT_TRUE(until(
      [&] {
        const auto shares = guestShares(output_->shown(0));
        return greeter().screen() == Screen::kSession && shares.blue > 20 && shares.white > 1;
      },
      60s))
      << where();
  EXPECT_EQ(consoles(id), before + 1) << "The greeter did not come back with a fresh ticket.";
}

// A teacher opens the student's desktop from elsewhere: the broker hands
// out a new ticket that disconnects the greeter, which goes back to the
// list, says so, and does not take the desktop back.
TEST_F(GreeterEndToEnd, ADesktopOpenedElsewhereIsNotTakenBack) {
  const std::int64_t id = newDesktop("Informatik", env_->templateId, true);
  ASSERT_NO_FATAL_FAILURE(openTheDesktop());
  const std::int64_t before = consoles(id);
  env_->admin("POST", fmt::format("/api/v1/desktops/{}/console", id));
  ASSERT_TRUE(until([&] { return greeter().screen() == Screen::kDesktops; }, 30s)) << where();
  EXPECT_EQ(greeter().message().notice, Notice::kTakenOver) << where();
  pump(3s);
  EXPECT_EQ(consoles(id), before + 1) << "The greeter asked for the desktop again.";
}

}  // namespace
}  // namespace aula::greeter
