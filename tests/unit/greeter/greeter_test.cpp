// The greeter's screens, transition by transition: keys, the broker's
// answers, the SPICE session's events and time, with no I/O at all.
#include "aula/greeter/greeter.hpp"

#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/input-event-codes.h>

#include "aula/greeter/view.hpp"

namespace aula::greeter {
namespace {

using namespace std::chrono_literals;

template <typename T>
bool has(const std::vector<Effect>& effects) {
  return std::any_of(effects.begin(), effects.end(),
                     [](const Effect& e) { return std::holds_alternative<T>(e); });
}

template <typename T>
const T& first(const std::vector<Effect>& effects) {
  for (const auto& e : effects) {
    if (const T* found = std::get_if<T>(&e))
      return *found;
  }
  ADD_FAILURE() << "no such effect";
  static const T none{};
  return none;
}

Key press(std::uint32_t code, std::string text = {}) {
  return Key{code, true, std::move(text)};
}
Key release(std::uint32_t code) {
  return Key{code, false, {}};
}

Desktop desktop(std::int64_t id, std::string name, DesktopState state) {
  return {id, std::move(name), "Debian 12", state, true};
}

class GreeterTest : public ::testing::Test {
 protected:
  Instant now = Instant{} + 1000s;
  Greeter greeter{Options{}, MachineInfo{"10.0.2.15", "52:54:00:12:34:56", "2026.12"}};

  std::vector<Effect> on(const Event& event) { return greeter.handle(event, now); }
  std::vector<Effect> after(std::chrono::seconds passed) {
    now += passed;
    return greeter.handle(Tick{}, now);
  }
  void type(std::string_view text) {
    for (char c : text)
      on(press(KEY_A, std::string(1, c)));
  }
  std::vector<Effect> key(std::uint32_t code) { return on(press(code)); }

  void ready() {
    greeter.start(now);
    on(BrokerReady{School{"IES Aula", "", 300s}});
  }
  std::vector<Effect> logIn() {
    ready();
    type("anna");
    key(KEY_TAB);
    type("secret");
    auto effects = key(KEY_ENTER);
    on(LoggedIn{"Anna K."});
    return effects;
  }
  void withList(std::vector<Desktop> desktops) {
    logIn();
    on(DesktopsListed{std::move(desktops)});
  }
  void inSession() {
    withList({desktop(12, "Informatik", DesktopState::kRunning)});
    key(KEY_ENTER);
    on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t1"), "O=Aula,CN=hv1", "pem"}});
    on(SessionOpened{});
    ASSERT_EQ(greeter.screen(), Screen::kSession);
  }
};

TEST_F(GreeterTest, StartsByProbingTheBrokerWithTheLanguagesLayout) {
  auto effects = greeter.start(now);
  EXPECT_EQ(greeter.screen(), Screen::kStarting);
  EXPECT_TRUE(has<ProbeBroker>(effects));
  EXPECT_EQ(first<SetLayout>(effects).xkb, "us");
}

TEST_F(GreeterTest, ABrokerThatAnswersShowsTheLoginWithTheSchool) {
  ready();
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
  EXPECT_EQ(greeter.school().name, "IES Aula");
  EXPECT_EQ(greeter.loginField(), LoginField::kUser);
}

TEST_F(GreeterTest, AnUnreachableBrokerCountsDownAndTriesAgainWithGrowingPauses) {
  greeter.start(now);
  on(BrokerFailed{Notice::kBrokerUnreachable, "Connection refused."});
  EXPECT_EQ(greeter.screen(), Screen::kTrouble);
  EXPECT_EQ(greeter.message().notice, Notice::kBrokerUnreachable);
  EXPECT_EQ(greeter.message().seconds, 5);
  EXPECT_EQ(greeter.machine().mac, "52:54:00:12:34:56");
  EXPECT_FALSE(has<ProbeBroker>(after(2s)));
  EXPECT_EQ(greeter.message().seconds, 3);
  EXPECT_TRUE(has<ProbeBroker>(after(3s)));
  EXPECT_TRUE(greeter.trying());
  on(BrokerFailed{Notice::kBrokerUnreachable, "Connection refused."});
  EXPECT_EQ(greeter.message().seconds, 10);
  after(10s);
  on(BrokerFailed{Notice::kBrokerUnreachable, ""});
  EXPECT_EQ(greeter.message().seconds, 20);
  after(20s);
  on(BrokerFailed{Notice::kBrokerUnreachable, ""});
  EXPECT_EQ(greeter.message().seconds, 30) << "the pause stops growing at 30 s";
  after(30s);
  on(BrokerReady{School{"IES Aula", "", 300s}});
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
  EXPECT_EQ(greeter.message().notice, Notice::kNone);
}

TEST_F(GreeterTest, EnterOnTheTroubleScreenTriesAtOnce) {
  greeter.start(now);
  on(BrokerFailed{Notice::kBrokerUnreachable, ""});
  EXPECT_TRUE(has<ProbeBroker>(key(KEY_ENTER)));
  EXPECT_FALSE(has<ProbeBroker>(key(KEY_ENTER))) << "one try at a time";
}

// What the greeter logs about this PC, with what is not known said so.
TEST(MachineInfoTest, DescribedForTheLogWithWhatIsMissingNamed) {
  EXPECT_EQ(describeMachine({"10.0.2.15", "52:54:00:12:34:56", "thin 20261205-abc"}),
            "10.0.2.15 52:54:00:12:34:56, image thin 20261205-abc");
  EXPECT_EQ(describeMachine({}), "no address no MAC, image unknown");
}

TEST(GreeterSetupTest, WrongSettingsAreShownAndNothingIsTried) {
  const Instant now = Instant{} + 1000s;
  Options options;
  options.language = Language::kCatalan;
  options.setupError = "The broker's address (aula.broker) is missing.";
  Greeter greeter{options, MachineInfo{"10.0.2.15", "52:54:00:12:34:56", "2026.12"}};
  const auto effects = greeter.start(now);
  EXPECT_FALSE(has<ProbeBroker>(effects)) << "there is no broker to ask";
  EXPECT_TRUE(has<SetLayout>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kTrouble);
  EXPECT_EQ(greeter.message().notice, Notice::kMisconfigured);
  EXPECT_EQ(greeter.message().detail, options.setupError);
  EXPECT_EQ(greeter.language(), Language::kCatalan);
  EXPECT_FALSE(greeter.nextDeadline()) << "no countdown: only an admin can fix it";
  EXPECT_TRUE(greeter.handle(press(KEY_ENTER), now).empty()) << "Enter does not try";
  EXPECT_TRUE(greeter.handle(Tick{}, now + 3600s).empty());
  EXPECT_EQ(greeter.screen(), Screen::kTrouble);
}

TEST_F(GreeterTest, ARejectedCertificateAndAWrongClockAreNamed) {
  greeter.start(now);
  on(BrokerFailed{Notice::kCertificateRejected, "fingerprint AB:CD"});
  EXPECT_EQ(greeter.message().notice, Notice::kCertificateRejected);
  EXPECT_EQ(greeter.message().detail, "fingerprint AB:CD");
  after(5s);
  on(BrokerFailed{Notice::kClockOff, "This PC says 2001-01-01."});
  EXPECT_EQ(greeter.screen(), Screen::kTrouble);
  EXPECT_EQ(greeter.message().notice, Notice::kClockOff);
}

TEST_F(GreeterTest, TypingFillsTheFieldsAndEnterSendsThePasswordOnce) {
  ready();
  type("anna");
  EXPECT_EQ(greeter.username(), "anna");
  key(KEY_ENTER);
  EXPECT_EQ(greeter.loginField(), LoginField::kPassword) << "Enter on the name moves on";
  type("pässword");
  EXPECT_EQ(greeter.passwordCharacters(), 8u);
  key(KEY_BACKSPACE);
  EXPECT_EQ(greeter.passwordCharacters(), 7u);
  auto effects = key(KEY_ENTER);
  ASSERT_TRUE(has<LogIn>(effects));
  EXPECT_EQ(first<LogIn>(effects).username, "anna");
  EXPECT_EQ(first<LogIn>(effects).password.view(), "pässwor");
  EXPECT_EQ(greeter.passwordCharacters(), 0u) << "the greeter forgets the password once sent";
  EXPECT_EQ(greeter.screen(), Screen::kLoggingIn);
  EXPECT_TRUE(key(KEY_ENTER).empty()) << "no second login while one is out";
}

TEST_F(GreeterTest, TabShiftTabAndArrowsMoveTheFocus) {
  ready();
  key(KEY_TAB);
  EXPECT_EQ(greeter.loginField(), LoginField::kPassword);
  key(KEY_TAB);
  EXPECT_EQ(greeter.loginField(), LoginField::kLanguage);
  key(KEY_TAB);
  key(KEY_TAB);
  EXPECT_EQ(greeter.loginField(), LoginField::kSubmit);
  key(KEY_TAB);
  EXPECT_EQ(greeter.loginField(), LoginField::kUser) << "the focus wraps around";
  Key back = press(KEY_TAB);
  back.shift = true;
  on(back);
  EXPECT_EQ(greeter.loginField(), LoginField::kSubmit);
  key(KEY_UP);
  EXPECT_EQ(greeter.loginField(), LoginField::kSubmit) << "Up does nothing on the button";
}

TEST_F(GreeterTest, AnEmptyUserNameIsAskedForNotSent) {
  ready();
  type("  ");
  auto effects = key(KEY_ENTER);
  EXPECT_FALSE(has<LogIn>(effects));
  EXPECT_EQ(greeter.message().notice, Notice::kNoUserName);
  EXPECT_EQ(greeter.loginField(), LoginField::kUser);
}

TEST_F(GreeterTest, ControlKeysAndShortcutsTypeNothing) {
  ready();
  on(press(KEY_A, "\x01"));
  Key ctrl = press(KEY_C, "c");
  ctrl.ctrl = true;
  on(ctrl);
  EXPECT_EQ(greeter.username(), "");
}

TEST_F(GreeterTest, AWrongPasswordSaysSoAndKeepsTheName) {
  ready();
  type("anna");
  key(KEY_TAB);
  type("wrong");
  key(KEY_ENTER);
  on(LoginRefused{Notice::kWrongPassword, "The user name or password is wrong.", 0});
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
  EXPECT_EQ(greeter.message().notice, Notice::kWrongPassword);
  EXPECT_EQ(greeter.username(), "anna");
  EXPECT_EQ(greeter.passwordCharacters(), 0u);
  EXPECT_EQ(greeter.loginField(), LoginField::kPassword);
}

TEST_F(GreeterTest, ALockedAccountCountsDownAndSendsNothingUntilThen) {
  ready();
  type("anna");
  key(KEY_TAB);
  type("x");
  key(KEY_ENTER);
  on(LoginRefused{Notice::kLocked, "Too many failed logins", 30});
  EXPECT_EQ(greeter.message().notice, Notice::kLocked);
  EXPECT_EQ(greeter.message().seconds, 30);
  after(10s);
  EXPECT_EQ(greeter.message().seconds, 20);
  type("y");
  EXPECT_FALSE(has<LogIn>(key(KEY_ENTER)));
  after(20s);
  EXPECT_EQ(greeter.message().notice, Notice::kNone);
  EXPECT_TRUE(has<LogIn>(key(KEY_ENTER)));
}

TEST_F(GreeterTest, ADisabledAccountAndAnUnreachableBrokerAtLogin) {
  ready();
  type("bob");
  key(KEY_ENTER);
  key(KEY_ENTER);
  on(LoginRefused{Notice::kDisabled, "This account is disabled.", 0});
  EXPECT_EQ(greeter.message().notice, Notice::kDisabled);
  EXPECT_EQ(greeter.loginField(), LoginField::kUser) << "perhaps the wrong name";
  key(KEY_ENTER);
  key(KEY_ENTER);
  on(LoginRefused{Notice::kBrokerUnreachable, "timeout", 0});
  EXPECT_EQ(greeter.screen(), Screen::kTrouble);
  after(5s);
  on(BrokerReady{});
  EXPECT_EQ(greeter.screen(), Screen::kLogin) << "back to the login, not logged in";
}

TEST_F(GreeterTest, LanguageAndLayoutChangeWithLeftAndRight) {
  ready();
  key(KEY_TAB);
  key(KEY_TAB);
  auto effects = key(KEY_RIGHT);
  EXPECT_EQ(greeter.language(), Language::kSpanish);
  EXPECT_EQ(first<SetLayout>(effects).xkb, "es") << "the language brings its layout";
  key(KEY_RIGHT);
  EXPECT_EQ(greeter.language(), Language::kCatalan);
  EXPECT_EQ(greeter.layout().xkb, "es(cat)");
  key(KEY_TAB);
  effects = key(KEY_LEFT);
  EXPECT_EQ(first<SetLayout>(effects).xkb, "es");
  key(KEY_LEFT);
  Key back = press(KEY_TAB);
  back.shift = true;
  on(back);
  EXPECT_TRUE(key(KEY_RIGHT).empty()) << "a layout chosen by hand stays";
  EXPECT_EQ(greeter.language(), Language::kFrench);
  EXPECT_EQ(greeter.layout().xkb, "gb");
}

TEST_F(GreeterTest, LoggingInListsAndWatchesTheDesktops) {
  auto sent = logIn();
  ASSERT_TRUE(has<LogIn>(sent));
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.displayName(), "Anna K.");
  EXPECT_FALSE(greeter.listLoaded());
  on(DesktopsListed{{desktop(12, "Informatik", DesktopState::kStopped),
                     desktop(13, "Mates", DesktopState::kRunning)}});
  EXPECT_TRUE(greeter.listLoaded());
  EXPECT_EQ(greeter.desktops().size(), 2u);
}

TEST_F(GreeterTest, NoDesktopIsSaid) {
  withList({});
  EXPECT_EQ(greeter.message().notice, Notice::kNoDesktop);
  on(DesktopsListed{{desktop(1, "New", DesktopState::kStopped)}});
  EXPECT_EQ(greeter.message().notice, Notice::kNone);
}

TEST_F(GreeterTest, TheEventStreamKeepsTheListCurrentAndTheSelectionFollowsTheDesktop) {
  withList({desktop(12, "A", DesktopState::kStopped), desktop(13, "B", DesktopState::kStopped)});
  key(KEY_DOWN);
  EXPECT_EQ(greeter.selected(), 1u);
  on(DesktopChanged{13, DesktopState::kRunning});
  EXPECT_EQ(greeter.desktops()[1].state, DesktopState::kRunning);
  on(DesktopsListed{{desktop(11, "Z", DesktopState::kStopped),
                     desktop(12, "A", DesktopState::kStopped),
                     desktop(13, "B", DesktopState::kRunning)}});
  EXPECT_EQ(greeter.selected(), 2u) << "still on B after a reload";
  EXPECT_TRUE(has<ListDesktops>(key(KEY_F5)));
}

TEST_F(GreeterTest, EnterConnectsShowingProgressAndOpensTheSession) {
  withList({desktop(12, "Informatik", DesktopState::kStopped)});
  auto effects = key(KEY_ENTER);
  EXPECT_EQ(first<RequestConsole>(effects).desktopId, 12);
  EXPECT_EQ(greeter.screen(), Screen::kConnecting);
  EXPECT_FALSE(greeter.opening());
  effects = on(ConsoleReady{
      Console{12, "hv1", 5912, 0, Secret("ticket"), "O=Aula,CN=hv1", "pem", "storage"}});
  EXPECT_TRUE(greeter.opening());
  ASSERT_TRUE(has<OpenSession>(effects));
  const Console& opened = first<OpenSession>(effects).console;
  EXPECT_EQ(opened.ticket.view(), "ticket");
  EXPECT_EQ(opened.host, "hv1");
  EXPECT_EQ(opened.tlsPort, 5912);
  EXPECT_EQ(opened.hostSubject, "O=Aula,CN=hv1");
  EXPECT_EQ(opened.caPem, "pem");
  EXPECT_EQ(opened.usb, "storage") << "the template's USB policy goes to the session";
  on(SessionOpened{});
  EXPECT_EQ(greeter.screen(), Screen::kSession);
  EXPECT_EQ(greeter.current()->name, "Informatik");
}

TEST_F(GreeterTest, EscapeCancelsAConnection) {
  withList({desktop(12, "Informatik", DesktopState::kStopped)});
  key(KEY_ENTER);
  auto effects = key(KEY_ESC);
  EXPECT_TRUE(has<CancelRequests>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_TRUE(on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t"), "", ""}}).empty())
      << "a late answer opens nothing";
}

TEST_F(GreeterTest, AQuotaOrAFailedStartIsExplainedOnTheList) {
  withList({desktop(12, "Informatik", DesktopState::kStopped)});
  key(KEY_ENTER);
  on(ConsoleRefused{Notice::kQuotaReached, "You have reached the limit of 1 running desktops."});
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.message().notice, Notice::kQuotaReached);
  EXPECT_EQ(greeter.message().detail, "You have reached the limit of 1 running desktops.");
  key(KEY_ENTER);
  auto effects = on(ConsoleRefused{Notice::kStartFailed, "No host can start this desktop."});
  EXPECT_EQ(greeter.message().notice, Notice::kStartFailed);
  EXPECT_TRUE(has<ListDesktops>(effects));
}

TEST_F(GreeterTest, AnExpiredSessionGoesBackToTheLogin) {
  withList({desktop(12, "Informatik", DesktopState::kStopped)});
  key(KEY_ENTER);
  auto effects = on(ConsoleRefused{Notice::kSessionEnded, "expired"});
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
  EXPECT_EQ(greeter.message().notice, Notice::kSessionEnded);
  EXPECT_TRUE(has<LogOut>(effects));
  EXPECT_FALSE(greeter.loggedIn());
}

TEST_F(GreeterTest, ShutDownAndLogOutAreButtons) {
  withList({desktop(12, "Informatik", DesktopState::kRunning)});
  key(KEY_TAB);
  EXPECT_EQ(greeter.listFocus(), ListFocus::kShutDown);
  auto effects = key(KEY_ENTER);
  EXPECT_EQ(first<StopDesktop>(effects).desktopId, 12);
  EXPECT_EQ(greeter.desktops()[0].state, DesktopState::kStopping);
  EXPECT_TRUE(key(KEY_ENTER).empty()) << "a stopping desktop is not stopped twice";
  key(KEY_TAB);
  effects = key(KEY_ENTER);
  EXPECT_TRUE(has<LogOut>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
  EXPECT_EQ(greeter.username(), "") << "the next student starts from an empty form";
}

TEST_F(GreeterTest, AListLeftAloneLogsOutAfterTheSchoolsIdleTime) {
  withList({desktop(12, "Informatik", DesktopState::kRunning)});
  EXPECT_EQ(greeter.nextDeadline(), now + 300s);
  after(200s);
  key(KEY_DOWN);
  EXPECT_TRUE(after(200s).empty()) << "a key restarts the idle time";
  auto effects = after(100s);
  EXPECT_TRUE(has<LogOut>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
  EXPECT_EQ(greeter.message().notice, Notice::kIdleLogout);
  EXPECT_EQ(greeter.message().seconds, 5);
}

TEST_F(GreeterTest, AHalfTypedLoginIsClearedWhenLeftAlone) {
  ready();
  type("anna");
  after(301s);
  EXPECT_EQ(greeter.username(), "");
}

TEST_F(GreeterTest, KeysInTheSessionGoToTheGuestAsXtScancodes) {
  inSession();
  auto effects = on(press(KEY_A, "a"));
  EXPECT_EQ(first<SendKey>(effects).scancode, 0x1eu);
  EXPECT_TRUE(first<SendKey>(effects).pressed);
  effects = on(release(KEY_A));
  EXPECT_FALSE(first<SendKey>(effects).pressed);
  effects = on(press(KEY_RIGHTCTRL));
  EXPECT_EQ(first<SendKey>(effects).scancode, 0x11du) << "0xe0-prefixed keys are 0x100|code";
  effects = on(press(KEY_UP));
  EXPECT_EQ(first<SendKey>(effects).scancode, 0x148u);
}

TEST_F(GreeterTest, ShiftF12OpensTheMenuAndReleasesHeldKeysInTheGuest) {
  inSession();
  on(press(KEY_LEFTSHIFT));
  Key combo = press(KEY_F12);
  combo.shift = true;
  auto effects = on(combo);
  EXPECT_TRUE(greeter.menuOpen());
  ASSERT_TRUE(has<SendKey>(effects));
  EXPECT_EQ(first<SendKey>(effects).scancode, 0x2au);
  EXPECT_FALSE(first<SendKey>(effects).pressed) << "Shift is let go in the guest";
  EXPECT_TRUE(on(release(KEY_F12)).empty());
  key(KEY_ESC);
  EXPECT_FALSE(greeter.menuOpen());
  EXPECT_TRUE(on(release(KEY_LEFTSHIFT)).empty()) << "the guest already had its release";
}

Mouse moveTo(int x, int y, int dx, int dy) {
  Mouse m;
  m.x = x;
  m.y = y;
  m.dx = dx;
  m.dy = dy;
  return m;
}
Mouse click(MouseButton button, bool pressed) {
  Mouse m;
  m.x = 100;
  m.y = 50;
  m.button = button;
  m.pressed = pressed;
  return m;
}

TEST_F(GreeterTest, TheMouseInTheSessionGoesToTheGuestWithTheButtonsHeld) {
  inSession();
  auto effects = on(moveTo(100, 50, 3, -2));
  ASSERT_TRUE(has<SendMouse>(effects));
  EXPECT_EQ(first<SendMouse>(effects).mouse.x, 100);
  EXPECT_EQ(first<SendMouse>(effects).mouse.dy, -2);
  EXPECT_EQ(first<SendMouse>(effects).buttons, 0u);

  effects = on(click(MouseButton::kLeft, true));
  EXPECT_EQ(first<SendMouse>(effects).mouse.button, MouseButton::kLeft);
  EXPECT_EQ(first<SendMouse>(effects).buttons, 1u) << "left held";
  effects = on(click(MouseButton::kRight, true));
  EXPECT_EQ(first<SendMouse>(effects).buttons, 5u) << "left and right held";
  effects = on(moveTo(120, 60, 20, 10));
  EXPECT_EQ(first<SendMouse>(effects).buttons, 5u) << "a drag carries its buttons";
  effects = on(click(MouseButton::kLeft, false));
  EXPECT_EQ(first<SendMouse>(effects).buttons, 4u);
  EXPECT_FALSE(first<SendMouse>(effects).mouse.pressed);

  Mouse wheel;
  wheel.wheel = -2;
  effects = on(wheel);
  EXPECT_EQ(first<SendMouse>(effects).mouse.wheel, -2);
}

TEST_F(GreeterTest, TheMenuLetsGoOfHeldButtonsAndTakesNoMouse) {
  inSession();
  on(click(MouseButton::kLeft, true));
  Key combo = press(KEY_F12);
  combo.shift = true;
  auto effects = on(combo);
  ASSERT_TRUE(greeter.menuOpen());
  ASSERT_TRUE(has<SendMouse>(effects)) << "the button is let go in the guest";
  EXPECT_EQ(first<SendMouse>(effects).mouse.button, MouseButton::kLeft);
  EXPECT_FALSE(first<SendMouse>(effects).mouse.pressed);
  EXPECT_EQ(first<SendMouse>(effects).buttons, 0u);
  EXPECT_TRUE(on(moveTo(5, 5, -95, -45)).empty()) << "the menu is on screen";
  key(KEY_ESC);
  EXPECT_TRUE(on(click(MouseButton::kLeft, false)).empty()) << "the guest already had its release";
  EXPECT_TRUE(has<SendMouse>(on(moveTo(6, 6, 1, 1))));
}

TEST_F(GreeterTest, TheMouseOnTheScreensSendsNothingButKeepsTheListFromIdling) {
  withList({desktop(12, "Informatik", DesktopState::kRunning)});
  after(200s);
  EXPECT_TRUE(on(moveTo(10, 10, 1, 0)).empty());
  EXPECT_TRUE(on(click(MouseButton::kLeft, true)).empty());
  EXPECT_TRUE(after(200s).empty()) << "moving the mouse restarts the idle time";
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
}

TEST_F(GreeterTest, ClicksOnTheLoginFocusTheFieldsTurnTheChoicesAndLogIn) {
  ready();
  on(Click{Target::kField, 1});
  EXPECT_EQ(greeter.loginField(), LoginField::kPassword);
  on(Click{Target::kField, 0});
  EXPECT_EQ(greeter.loginField(), LoginField::kUser);
  type("anna");
  on(Click{Target::kField, 2});  // the language: the first click focuses it
  EXPECT_EQ(greeter.loginField(), LoginField::kLanguage);
  EXPECT_EQ(greeter.language(), Language::kEnglish);
  auto effects = on(Click{Target::kField, 2});  // the next one turns it
  EXPECT_EQ(greeter.language(), Language::kSpanish);
  EXPECT_EQ(first<SetLayout>(effects).xkb, "es");
  on(Click{Target::kField, 2, -1});  // its ‹ turns it back
  EXPECT_EQ(greeter.language(), Language::kEnglish);
  on(Click{Target::kField, 3, 1});  // the keyboard's › focuses it and turns it
  EXPECT_EQ(greeter.loginField(), LoginField::kLayout);
  EXPECT_NE(greeter.layout().xkb, "us");
  on(Click{Target::kField, 1, 1});
  EXPECT_EQ(greeter.loginField(), LoginField::kPassword)
      << "a field that is no choice just focuses";
  EXPECT_TRUE(on(Click{Target::kField, 9}).empty()) << "nothing there";
  on(Click{Target::kField, 1});
  type("secret");
  effects = on(Click{Target::kButton, 0});
  ASSERT_TRUE(has<LogIn>(effects));
  EXPECT_EQ(first<LogIn>(effects).username, "anna");
  EXPECT_EQ(greeter.screen(), Screen::kLoggingIn);
  EXPECT_TRUE(on(Click{Target::kButton, 0}).empty()) << "the password goes once";
}

TEST_F(GreeterTest, AClickChoosesADesktopAndASecondOpensIt) {
  withList({desktop(12, "Informatik", DesktopState::kRunning),
            desktop(13, "Mates", DesktopState::kStopped)});
  EXPECT_TRUE(on(Click{Target::kRow, 1}).empty());
  EXPECT_EQ(greeter.selected(), 1u);
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  auto effects = on(Click{Target::kRow, 1});
  EXPECT_EQ(first<RequestConsole>(effects).desktopId, 13);
  EXPECT_EQ(greeter.screen(), Screen::kConnecting);
}

TEST_F(GreeterTest, TheListsButtonsAreClickedAsTheyAreFocused) {
  withList({desktop(12, "Informatik", DesktopState::kRunning)});
  EXPECT_TRUE(on(Click{Target::kRow, 5}).empty()) << "no such row";
  auto effects = on(Click{Target::kButton, 0});  // shut down
  EXPECT_EQ(first<StopDesktop>(effects).desktopId, 12);
  EXPECT_EQ(greeter.listFocus(), ListFocus::kShutDown);
  effects = on(Click{Target::kButton, 1});  // log out
  EXPECT_TRUE(has<LogOut>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
}

TEST_F(GreeterTest, TheMenusItemsTakeClicksAndTheDesktopNone) {
  inSession();
  EXPECT_TRUE(on(Click{Target::kButton, 0}).empty())
      << "the menu is closed: clicks are the guest's";
  Key combo = press(KEY_F12);
  combo.shift = true;
  on(combo);
  EXPECT_TRUE(has<SendCtrlAltDel>(on(Click{Target::kButton, 0})));
  on(combo);
  on(Click{Target::kButton, 1});  // USB devices
  EXPECT_TRUE(greeter.usbListOpen());
}

TEST_F(GreeterTest, TheMenuSendsCtrlAltDelDisconnectsAndLogsOut) {
  inSession();
  Key combo = press(KEY_F12);
  combo.shift = true;
  on(combo);
  EXPECT_EQ(greeter.menuItem(), MenuItem::kCtrlAltDel);
  EXPECT_TRUE(has<SendCtrlAltDel>(key(KEY_ENTER)));
  on(combo);
  key(KEY_DOWN);
  key(KEY_DOWN);
  EXPECT_EQ(greeter.menuItem(), MenuItem::kDisconnect);
  auto effects = key(KEY_ENTER);
  EXPECT_TRUE(has<CloseSession>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_TRUE(greeter.loggedIn());
  key(KEY_ENTER);
  on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t2"), "", ""}});
  on(SessionOpened{});
  on(combo);
  key(KEY_UP);
  effects = key(KEY_ENTER);
  EXPECT_TRUE(has<CloseSession>(effects));
  EXPECT_TRUE(has<LogOut>(effects));
  EXPECT_EQ(greeter.screen(), Screen::kLogin);
}

// A session whose template lets USB storage go to the desktop, with the
// menu's USB list open.
class GreeterUsbTest : public GreeterTest {
 protected:
  void SetUp() override {
    GreeterTest::SetUp();
    withList({desktop(12, "Informatik", DesktopState::kRunning)});
    key(KEY_ENTER);
    on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t1"), "", "", "storage"}});
    on(SessionOpened{});
    Key combo = press(KEY_F12);
    combo.shift = true;
    on(combo);
    key(KEY_DOWN);
    ASSERT_EQ(greeter.menuItem(), MenuItem::kUsbDevices);
    listAsked = has<ListUsb>(key(KEY_ENTER));
  }

  static std::vector<UsbDevice> stickAndKeyboard(bool stickShared) {
    return {UsbDevice{"1-2", "SanDisk Cruzer [0781:5567]", true, stickShared, ""},
            UsbDevice{"1-3", "Logitech Keyboard [046d:c31c]", false, false, ""}};
  }

  bool listAsked = false;
};

TEST_F(GreeterUsbTest, TheMenusUsbListAsksTheSessionAndShowsEachDeviceAndWhereItIs) {
  EXPECT_TRUE(listAsked);
  EXPECT_TRUE(greeter.usbListOpen());
  auto view = describe(greeter, Translations{});
  ASSERT_TRUE(view.notice.has_value());
  EXPECT_EQ(view.notice->headline, "No USB device is plugged in.");
  EXPECT_FALSE(view.notice->error);

  on(UsbDevicesChanged{stickAndKeyboard(true)});
  view = describe(greeter, Translations{});
  EXPECT_FALSE(view.notice.has_value());
  ASSERT_EQ(view.rows.size(), 2u);
  EXPECT_EQ(view.rows[0].name, "SanDisk Cruzer [0781:5567]");
  EXPECT_EQ(view.rows[0].state, "On the desktop");
  EXPECT_TRUE(view.rows[0].selected);
  EXPECT_EQ(view.rows[1].state, "Stays on this PC");
  EXPECT_EQ(view.rows[1].detail, "This desktop takes USB storage only.");
  EXPECT_EQ(view.subtitle, "USB devices");
}

TEST_F(GreeterUsbTest, EnterMovesTheChosenDeviceToTheDesktopOrBack) {
  on(UsbDevicesChanged{stickAndKeyboard(true)});
  auto back = first<ShareUsb>(key(KEY_ENTER));
  EXPECT_EQ(back.id, "1-2");
  EXPECT_FALSE(back.share) << "a device on the desktop comes back to this PC";
  on(UsbDevicesChanged{stickAndKeyboard(false)});
  auto there = first<ShareUsb>(key(KEY_ENTER));
  EXPECT_TRUE(there.share);
  EXPECT_TRUE(greeter.usbListOpen()) << "the list stays open to show where it went";
}

TEST_F(GreeterUsbTest, TheDevicesThatMayGoToTheDesktopComeFirst) {
  auto devices = stickAndKeyboard(false);
  std::swap(devices[0], devices[1]);
  on(UsbDevicesChanged{devices});
  ASSERT_EQ(greeter.usbDevices().size(), 2u);
  EXPECT_EQ(greeter.usbDevices()[0].id, "1-2");
  EXPECT_EQ(first<ShareUsb>(key(KEY_ENTER)).id, "1-2");
}

TEST_F(GreeterUsbTest, ADeviceThePolicyKeepsHereDoesNotMove) {
  on(UsbDevicesChanged{stickAndKeyboard(false)});
  key(KEY_DOWN);
  EXPECT_EQ(greeter.usbSelected(), 1u);
  EXPECT_TRUE(key(KEY_ENTER).empty());
  key(KEY_DOWN);
  EXPECT_EQ(greeter.usbSelected(), 0u) << "the choice wraps around";
}

TEST_F(GreeterUsbTest, AFailedMoveShowsTheSessionsReason) {
  auto devices = stickAndKeyboard(false);
  devices[0].problem = "No free USB channel";
  on(UsbDevicesChanged{devices});
  auto view = describe(greeter, Translations{});
  ASSERT_FALSE(view.rows.empty());
  EXPECT_EQ(view.rows[0].detail, "It could not be moved: No free USB channel");
  EXPECT_EQ(view.rows[0].stateKind, DesktopState::kFailed);
}

TEST_F(GreeterUsbTest, EscGoesBackToTheMenuThenToTheDesktopAndKeysGoToTheGuestAgain) {
  key(KEY_ESC);
  EXPECT_FALSE(greeter.usbListOpen());
  EXPECT_TRUE(greeter.menuOpen());
  EXPECT_EQ(greeter.menuItem(), MenuItem::kUsbDevices);
  key(KEY_ESC);
  EXPECT_FALSE(greeter.menuOpen());
  EXPECT_TRUE(has<SendKey>(key(KEY_A)));
}

TEST_F(GreeterUsbTest, AUnplugWhileTheListIsOpenKeepsTheChoiceOnTheList) {
  on(UsbDevicesChanged{stickAndKeyboard(false)});
  key(KEY_DOWN);
  on(UsbDevicesChanged{{stickAndKeyboard(false)[0]}});
  EXPECT_EQ(greeter.usbSelected(), 0u);
  on(UsbDevicesChanged{{}});
  EXPECT_TRUE(key(KEY_ENTER).empty());
}

TEST_F(GreeterUsbTest, LeavingTheSessionForgetsItsDevices) {
  on(UsbDevicesChanged{stickAndKeyboard(true)});
  on(SessionEnded{SessionEnd::kGuestShutDown, ""});
  EXPECT_TRUE(greeter.usbDevices().empty());
  EXPECT_FALSE(greeter.usbListOpen());
  // A list that arrives late, from the closed session, is dropped.
  on(UsbDevicesChanged{stickAndKeyboard(true)});
  EXPECT_TRUE(greeter.usbDevices().empty());
}

TEST_F(GreeterTest, ATemplateThatKeepsUsbHereSaysSoInTheList) {
  inSession();  // its console carries no USB policy: none
  Key combo = press(KEY_F12);
  combo.shift = true;
  on(combo);
  key(KEY_DOWN);
  key(KEY_ENTER);
  auto view = describe(greeter, Translations{});
  ASSERT_TRUE(view.notice.has_value());
  EXPECT_EQ(view.notice->headline, "USB devices stay with this PC.");
  EXPECT_THAT(view.notice->body, ::testing::HasSubstr("Ask your teacher"));
}

TEST_F(GreeterTest, ADroppedLinkGetsAFreshTicketAndReconnects) {
  inSession();
  auto effects = on(SessionEnded{SessionEnd::kLinkLost, "reset by peer"});
  EXPECT_EQ(greeter.screen(), Screen::kReconnecting);
  EXPECT_TRUE(has<CloseSession>(effects));
  EXPECT_FALSE(has<RequestConsole>(effects)) << "a pause first";
  effects = after(2s);
  EXPECT_EQ(first<RequestConsole>(effects).desktopId, 12);
  EXPECT_TRUE(first<RequestConsole>(effects).resume) << "never start a desktop that shut down";
  effects = on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("fresh"), "", ""}});
  EXPECT_EQ(first<OpenSession>(effects).console.ticket.view(), "fresh");
  on(SessionOpened{});
  EXPECT_EQ(greeter.screen(), Screen::kSession);
}

TEST_F(GreeterTest, ALinkThatStaysDownGivesUpAfterAWhileAndSaysSo) {
  inSession();
  on(SessionEnded{SessionEnd::kLinkLost, "reset"});
  after(2s);
  for (int i = 0; i < 100 && greeter.screen() == Screen::kReconnecting; ++i) {
    on(ConsoleRefused{Notice::kStartFailed, "The agent cannot be reached."});
    if (greeter.screen() != Screen::kReconnecting)
      break;
    auto effects = after(2s);
    ASSERT_TRUE(has<RequestConsole>(effects)) << "try " << i;
  }
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.message().notice, Notice::kLinkLost);
}

TEST_F(GreeterTest, TheGuestShuttingDownBringsTheListBack) {
  inSession();
  auto effects = on(SessionEnded{SessionEnd::kGuestShutDown, ""});
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.message().notice, Notice::kShutDown);
  EXPECT_EQ(greeter.message().detail, "Informatik");
  EXPECT_EQ(greeter.desktops()[0].state, DesktopState::kStopped);
  EXPECT_TRUE(has<ListDesktops>(effects));
}

TEST_F(GreeterTest, ALinkLostBecauseTheDesktopStoppedEndsOnTheList) {
  inSession();
  on(SessionEnded{SessionEnd::kLinkLost, ""});
  after(2s);
  auto effects = on(DesktopChanged{12, DesktopState::kStopped});
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.message().notice, Notice::kShutDown);
  EXPECT_TRUE(has<ListDesktops>(effects));
}

TEST_F(GreeterTest, TheEventStreamSayingTheDesktopStoppedEndsTheSession) {
  inSession();
  on(DesktopChanged{13, DesktopState::kStopped});
  EXPECT_EQ(greeter.screen(), Screen::kSession) << "another desktop";
  auto effects = on(DesktopChanged{12, DesktopState::kStopping});
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_TRUE(has<CloseSession>(effects));
}

TEST_F(GreeterTest, ALinkLostToAnotherViewerIsNotTakenBack) {
  inSession();
  on(SessionEnded{SessionEnd::kLinkLost, ""});
  EXPECT_TRUE(first<RequestConsole>(after(2s)).resume);
  on(SessionEnded{SessionEnd::kTakenOver, ""});  // the broker's answer to the resume
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.message().notice, Notice::kTakenOver);
  EXPECT_FALSE(has<RequestConsole>(after(5s))) << "no more tries";
}

TEST_F(GreeterTest, AnotherViewerTakingTheDesktopIsSaid) {
  inSession();
  on(SessionEnded{SessionEnd::kTakenOver, ""});
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_EQ(greeter.message().notice, Notice::kTakenOver);
}

TEST_F(GreeterTest, ASessionThatCannotOpenIsAnError) {
  withList({desktop(12, "Informatik", DesktopState::kRunning)});
  key(KEY_ENTER);
  on(ConsoleReady{Console{12, "hv1", 5912, 0, Secret("t"), "", ""}});
  auto effects = on(SessionEnded{SessionEnd::kFailed, "TLS handshake failed"});
  EXPECT_TRUE(has<CloseSession>(effects));
  EXPECT_EQ(greeter.message().notice, Notice::kSessionFailed);
  EXPECT_EQ(greeter.message().detail, "TLS handshake failed");
}

TEST_F(GreeterTest, AnUnreachableBrokerAfterLoginComesBackToTheList) {
  withList({desktop(12, "Informatik", DesktopState::kRunning)});
  on(RequestFailed{Notice::kBrokerUnreachable, "refused"});
  EXPECT_EQ(greeter.screen(), Screen::kTrouble);
  auto effects = after(5s);
  ASSERT_TRUE(has<ProbeBroker>(effects));
  effects = on(BrokerReady{School{"IES Aula", "", 300s}});
  EXPECT_EQ(greeter.screen(), Screen::kDesktops);
  EXPECT_TRUE(has<ListDesktops>(effects));
}

TEST(SecretTest, WipesItsBytesAndMovesWithoutCopies) {
  Secret secret("correct horse");
  const char* bytes = secret.view().data();
  Secret moved(std::move(secret));
  EXPECT_EQ(moved.view().data(), bytes) << "a move hands the buffer over";
  EXPECT_TRUE(secret.empty());  // NOLINT(bugprone-use-after-move): the point of the test
  moved.popCharacter();
  EXPECT_EQ(moved.view(), "correct hors");
  moved.append("é");
  moved.popCharacter();
  EXPECT_EQ(moved.view(), "correct hors") << "a two-byte character goes at once";
}

TEST(KeysTest, LinuxButtonCodesMapToMouseButtons) {
  EXPECT_EQ(mouseButton(BTN_LEFT), MouseButton::kLeft);
  EXPECT_EQ(mouseButton(BTN_RIGHT), MouseButton::kRight);
  EXPECT_EQ(mouseButton(BTN_MIDDLE), MouseButton::kMiddle);
  EXPECT_EQ(mouseButton(BTN_SIDE), MouseButton::kSide);
  EXPECT_EQ(mouseButton(BTN_EXTRA), MouseButton::kExtra);
  EXPECT_FALSE(mouseButton(BTN_TOUCH));
  EXPECT_FALSE(mouseButton(KEY_A));
}

TEST(KeysTest, LinuxCodesMapToXtScancodes) {
  EXPECT_EQ(xtScancode(KEY_ESC), 0x01u);
  EXPECT_EQ(xtScancode(KEY_F12), 0x58u);
  EXPECT_EQ(xtScancode(KEY_102ND), 0x56u);
  EXPECT_EQ(xtScancode(KEY_KPENTER), 0x11cu);
  EXPECT_EQ(xtScancode(KEY_DELETE), 0x153u);
  EXPECT_EQ(xtScancode(KEY_LEFTMETA), 0x15bu);
  EXPECT_EQ(xtScancode(KEY_RIGHTALT), 0x138u);
  EXPECT_FALSE(xtScancode(KEY_MACRO1).has_value());
}

TEST(KeysTest, ScriptedInputTypesTextAndNamedKeysAndNamesWhatItDoesNotKnow) {
  auto typed = scriptedKeys("type a b\n");
  ASSERT_TRUE(typed) << typed.error().message();
  ASSERT_EQ(typed->size(), 6u);  // a press and a release a character
  EXPECT_EQ((*typed)[0].text, "a");
  EXPECT_TRUE((*typed)[0].pressed);
  EXPECT_FALSE((*typed)[1].pressed);
  EXPECT_EQ((*typed)[2].text, " ");

  auto menu = scriptedKeys("key menu");
  ASSERT_TRUE(menu);
  EXPECT_EQ((*menu)[0].code, static_cast<std::uint32_t>(KEY_F12));
  EXPECT_TRUE((*menu)[0].shift);

  auto unknown = scriptedKeys("key hyper");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message().find("'hyper'"), std::string::npos);
  EXPECT_NE(unknown.error().message().find("enter, esc"), std::string::npos);
  auto garbage = scriptedKeys("press enter");
  ASSERT_FALSE(garbage);
  EXPECT_NE(garbage.error().message().find("'type TEXT' or 'key NAME'"), std::string::npos);
  EXPECT_FALSE(scriptedKeys("type a\tb"));
}

}  // namespace
}  // namespace aula::greeter
