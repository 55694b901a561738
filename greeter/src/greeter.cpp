// The greeter's screens: every transition, driven by events and the time the
// caller passes in.
#include "aula/greeter/greeter.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <utility>

#include <linux/input-event-codes.h>

#include "aula/common/overloaded.hpp"

namespace aula::greeter {

namespace {

// The key that opens the session's menu: Shift+F12, as virt-viewer's.
bool opensMenu(const Key& key) {
  return key.pressed && key.code == KEY_F12 && key.shift;
}

// A button's bit in SendMouse's mask (SPICE's SPICE_MOUSE_BUTTON_MASK_*).
std::uint32_t buttonBit(MouseButton button) {
  switch (button) {
    case MouseButton::kLeft:
      return 1U << 0;
    case MouseButton::kMiddle:
      return 1U << 1;
    case MouseButton::kRight:
      return 1U << 2;
    case MouseButton::kSide:
      return 1U << 5;
    case MouseButton::kExtra:
      return 1U << 6;
  }
  return 0;
}

bool isBrokerTrouble(Notice notice) {
  return notice == Notice::kBrokerUnreachable || notice == Notice::kCertificateRejected ||
         notice == Notice::kClockOff;
}

int secondsUntil(Instant later, Instant now) {
  if (later <= now)
    return 0;
  // Round up: a countdown shows 1 until the last moment.
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(later - now).count();
  return static_cast<int>((left + 999) / 1000);
}

// A vector of effects; not an initializer list, which would copy them (and
// effects that carry secrets cannot be copied).
template <typename... Ts>
std::vector<Effect> list(Ts&&... effects) {
  std::vector<Effect> out;
  out.reserve(sizeof...(Ts));
  (out.emplace_back(std::forward<Ts>(effects)), ...);
  return out;
}

constexpr std::array<std::string_view, 5> kStateNames = {"stopped", "starting", "running",
                                                         "stopping", "failed"};

// Each language: its code, its name in itself, its keyboard layout (an index
// into layouts()), in the order of the Language enum.
struct LanguageInfo {
  std::string_view code;
  std::string_view name;
  std::size_t layout;
};
constexpr std::array<LanguageInfo, 4> kLanguageInfo = {{
    {"en", "English", 0},
    {"es", "Español", 2},
    {"ca", "Català", 3},
    {"fr", "Français", 4},
}};

const LanguageInfo& infoOf(Language language) {
  return kLanguageInfo.at(static_cast<std::size_t>(language));
}

}  // namespace

std::string_view languageCode(Language language) {
  return infoOf(language).code;
}

std::string_view languageName(Language language) {
  return infoOf(language).name;
}

std::optional<Language> languageFromCode(std::string_view code) {
  for (Language language : kLanguages) {
    if (languageCode(language) == code)
      return language;
  }
  return std::nullopt;
}

const std::vector<Layout>& layouts() {
  static const std::vector<Layout> all = {
      {"us", "English (US)"}, {"gb", "English (UK)"}, {"es", "Español"},   {"es(cat)", "Català"},
      {"fr", "Français"},     {"de", "Deutsch"},      {"pt", "Português"},
  };
  return all;
}

std::size_t defaultLayoutOf(Language language) {
  return infoOf(language).layout;
}

bool isInformation(Notice notice) {
  return notice == Notice::kIdleLogout || notice == Notice::kShutDown ||
         notice == Notice::kTakenOver || notice == Notice::kNoDesktop;
}

std::optional<DesktopState> desktopStateFromName(std::string_view name) {
  for (std::size_t i = 0; i < kStateNames.size(); ++i) {
    if (kStateNames[i] == name)
      return static_cast<DesktopState>(i);
  }
  return std::nullopt;
}

std::string describeMachine(const MachineInfo& machine) {
  std::string text = machine.address.empty() ? "no address" : machine.address;
  text += ' ';
  text += machine.mac.empty() ? "no MAC" : machine.mac;
  text += ", image ";
  text += machine.imageVersion.empty() ? "unknown" : machine.imageVersion;
  return text;
}

std::string_view desktopStateName(DesktopState state) {
  return kStateNames[static_cast<std::size_t>(state)];
}

Greeter::Greeter(Options options, MachineInfo machine)
    : options_(std::move(options)),
      machine_(std::move(machine)),
      language_(options_.language),
      layout_(defaultLayoutOf(options_.language)) {}

const Layout& Greeter::layout() const {
  return layouts()[layout_];
}

const Desktop* Greeter::current() const {
  for (const auto& desktop : desktops_) {
    if (desktop.id == currentId_)
      return &desktop;
  }
  return nullptr;
}

std::size_t Greeter::passwordCharacters() const {
  const std::string_view text = password_.view();
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  }));
}

std::string Greeter::selectedName() const {
  const Desktop* desktop = current();
  return desktop == nullptr ? std::string() : desktop->name;
}

std::vector<Effect> Greeter::start(Instant now) {
  lastInput_ = now;
  if (!options_.setupError.empty()) {
    // Nothing to try: the settings will not change until an admin fixes
    // them and the PC restarts.
    screen_ = Screen::kTrouble;
    message_ = {Notice::kMisconfigured, options_.setupError, 0};
    return list(SetLayout{layout().xkb});
  }
  screen_ = Screen::kStarting;
  return list(SetLayout{layout().xkb}, ProbeBroker{});
}

std::optional<Instant> Greeter::nextDeadline() const {
  std::optional<Instant> next;
  auto consider = [&](std::optional<Instant> at) {
    if (at && (!next || *at < *next))
      next = at;
  };
  consider(retryAt_);
  consider(countdownEnd_);
  if (lockedUntil_)
    consider(lockedUntil_);
  if (screen_ == Screen::kDesktops || (screen_ == Screen::kLogin && !username_.empty()))
    consider(lastInput_ + school_.idleLogout);
  return next;
}

std::vector<Effect> Greeter::handle(const Event& event, Instant now) {
  return std::visit(
      Overloaded{
          [&](const Tick&) { return onTick(now); },
          [&](const Key& key) { return onKey(key, now); },
          [&](const Mouse& mouse) { return onMouse(mouse, now); },
          [&](const Click& click) { return onClick(click, now); },
          [&](const BrokerReady& ready) -> std::vector<Effect> {
            school_ = ready.school;
            trying_ = false;
            attempts_ = 0;
            retryAt_.reset();
            countdownEnd_.reset();
            if (screen_ != Screen::kStarting && screen_ != Screen::kTrouble)
              return {};
            lastInput_ = now;
            if (loggedIn_) {
              screen_ = Screen::kDesktops;
              message_ = {};
              return list(ListDesktops{}, WatchDesktops{});
            }
            screen_ = Screen::kLogin;
            message_ = {};
            return {};
          },
          [&](const BrokerFailed& failed) -> std::vector<Effect> {
            if (screen_ != Screen::kStarting && screen_ != Screen::kTrouble)
              return {};
            return toTrouble(failed.notice, failed.detail, now);
          },
          [&](const LoggedIn& in) -> std::vector<Effect> {
            if (screen_ != Screen::kLoggingIn)
              return list(LogOut{});  // an answer nobody waits for any more
            loggedIn_ = true;
            displayName_ = in.displayName.empty() ? username_ : in.displayName;
            desktops_.clear();
            listLoaded_ = false;
            selected_ = 0;
            listFocus_ = ListFocus::kList;
            lastInput_ = now;
            screen_ = Screen::kDesktops;
            message_ = {};
            return list(ListDesktops{}, WatchDesktops{});
          },
          [&](const LoginRefused& refused) -> std::vector<Effect> {
            if (screen_ != Screen::kLoggingIn)
              return {};
            if (isBrokerTrouble(refused.notice))
              return toTrouble(refused.notice, refused.detail, now);
            screen_ = Screen::kLogin;
            message_ = {refused.notice, refused.detail, refused.retryAfter};
            loginField_ = LoginField::kPassword;
            if (refused.notice == Notice::kLocked && refused.retryAfter > 0) {
              lockedUntil_ = now + std::chrono::seconds(refused.retryAfter);
            }
            if (refused.notice == Notice::kDisabled)
              loginField_ = LoginField::kUser;
            return {};
          },
          [&](const DesktopsListed& listed) -> std::vector<Effect> {
            if (!loggedIn_)
              return {};
            const std::int64_t keep =
                selected_ < desktops_.size() ? desktops_[selected_].id : std::int64_t{0};
            desktops_ = listed.desktops;
            listLoaded_ = true;
            selected_ = 0;
            for (std::size_t i = 0; i < desktops_.size(); ++i) {
              if (desktops_[i].id == keep)
                selected_ = i;
            }
            if (screen_ == Screen::kDesktops) {
              if (desktops_.empty())
                message_ = {Notice::kNoDesktop, {}, 0};
              else if (message_.notice == Notice::kNoDesktop)
                message_ = {};
            }
            return {};
          },
          [&](const DesktopChanged& changed) -> std::vector<Effect> {
            for (auto& desktop : desktops_) {
              if (desktop.id == changed.id)
                desktop.state = changed.state;
            }
            const bool gone =
                changed.state == DesktopState::kStopped || changed.state == DesktopState::kStopping;
            if (gone && changed.id == currentId_ &&
                (screen_ == Screen::kSession || screen_ == Screen::kReconnecting)) {
              // It shut down from inside (or a teacher stopped it).
              return handle(SessionEnded{SessionEnd::kGuestShutDown, {}}, now);
            }
            return {};
          },
          [&](const RequestFailed& failed) -> std::vector<Effect> {
            if (!loggedIn_)
              return {};
            if (failed.notice == Notice::kSessionEnded)
              return toLogin({Notice::kSessionEnded, failed.detail, 0});
            if (isBrokerTrouble(failed.notice) &&
                (screen_ == Screen::kDesktops || screen_ == Screen::kTrouble))
              return toTrouble(failed.notice, failed.detail, now);
            if (screen_ == Screen::kDesktops)
              message_ = {failed.notice, failed.detail, 0};
            return {};
          },
          [&](const ConsoleReady& ready) -> std::vector<Effect> {
            if ((screen_ != Screen::kConnecting && screen_ != Screen::kReconnecting) ||
                ready.console.desktopId != currentId_) {
              return {};
            }
            opening_ = true;
            trying_ = true;
            retryAt_.reset();
            for (auto& desktop : desktops_) {
              if (desktop.id == currentId_)
                desktop.state = DesktopState::kRunning;
            }
            Console console{ready.console.desktopId,     ready.console.host,
                            ready.console.tlsPort,       ready.console.port,
                            ready.console.ticket.copy(), ready.console.hostSubject,
                            ready.console.caPem,         ready.console.usb};
            usbPolicy_ = console.usb;
            usbDevices_.clear();
            return list(OpenSession{std::move(console)});
          },
          [&](const ConsoleRefused& refused) -> std::vector<Effect> {
            if (screen_ == Screen::kReconnecting) {
              if (refused.notice == Notice::kSessionEnded)
                return toLogin({Notice::kSessionEnded, refused.detail, 0});
              return loseLink(refused.detail, now);
            }
            if (screen_ != Screen::kConnecting)
              return {};
            if (refused.notice == Notice::kSessionEnded)
              return toLogin({Notice::kSessionEnded, refused.detail, 0});
            if (isBrokerTrouble(refused.notice)) {
              screen_ = Screen::kDesktops;
              return toTrouble(refused.notice, refused.detail, now);
            }
            auto effects = toList({refused.notice, refused.detail, 0});
            effects.push_back(ListDesktops{});
            return effects;
          },
          [&](const SessionOpened&) -> std::vector<Effect> {
            if (screen_ != Screen::kConnecting && screen_ != Screen::kReconnecting)
              return {};
            screen_ = Screen::kSession;
            opening_ = false;
            trying_ = false;
            attempts_ = 0;
            retryAt_.reset();
            closeMenu();
            message_ = {};
            return {};
          },
          [&](const SessionEnded& ended) -> std::vector<Effect> {
            const bool live = screen_ == Screen::kSession || screen_ == Screen::kConnecting ||
                              screen_ == Screen::kReconnecting;
            if (!live)
              return {};
            switch (ended.why) {
              case SessionEnd::kLinkLost:
                if (screen_ == Screen::kConnecting) {
                  auto effects = toList({Notice::kSessionFailed, ended.detail, 0});
                  effects.insert(effects.begin(), CloseSession{});
                  return effects;
                }
                return loseLink(ended.detail, now);
              case SessionEnd::kFailed: {
                auto effects = toList({Notice::kSessionFailed, ended.detail, 0});
                effects.insert(effects.begin(), CloseSession{});
                return effects;
              }
              case SessionEnd::kTakenOver: {
                auto effects = toList({Notice::kTakenOver, selectedName(), 0});
                effects.insert(effects.begin(), CloseSession{});
                return effects;
              }
              case SessionEnd::kGuestShutDown: {
                for (auto& desktop : desktops_) {
                  if (desktop.id == currentId_)
                    desktop.state = DesktopState::kStopped;
                }
                auto effects = toList({Notice::kShutDown, selectedName(), 0});
                effects.insert(effects.begin(), CloseSession{});
                effects.push_back(ListDesktops{});
                return effects;
              }
            }
            return {};
          },
          [&](const UsbDevicesChanged& changed) -> std::vector<Effect> {
            if (screen_ != Screen::kSession)
              return {};
            // The devices that may go to the desktop first, as they came.
            usbDevices_ = changed.devices;
            std::stable_partition(usbDevices_.begin(), usbDevices_.end(),
                                  [](const UsbDevice& d) { return d.allowed; });
            if (usbIndex_ >= usbDevices_.size())
              usbIndex_ = usbDevices_.empty() ? 0 : usbDevices_.size() - 1;
            return {};
          },
      },
      event);
}

// ---- Keys ------------------------------------------------------------------

std::vector<Effect> Greeter::onKey(const Key& key, Instant now) {
  lastInput_ = now;
  switch (screen_) {
    case Screen::kLogin:
      return key.pressed ? onLoginKey(key) : std::vector<Effect>{};
    case Screen::kDesktops:
      return key.pressed ? onListKey(key) : std::vector<Effect>{};
    case Screen::kSession:
      return menuOpen_ ? onMenuKey(key) : onSessionKey(key);
    case Screen::kConnecting:
    case Screen::kReconnecting:
      if (key.pressed && key.code == KEY_ESC) {
        auto effects = toList({});
        effects.insert(effects.begin(), CloseSession{});
        effects.insert(effects.begin(), CancelRequests{});
        effects.push_back(ListDesktops{});
        return effects;
      }
      return {};
    case Screen::kTrouble:
      // Enter tries again now, instead of waiting for the countdown.
      if (key.pressed && key.code == KEY_ENTER && !trying_ &&
          message_.notice != Notice::kMisconfigured) {
        trying_ = true;
        retryAt_.reset();
        countdownEnd_.reset();
        return list(ProbeBroker{});
      }
      return {};
    case Screen::kStarting:
    case Screen::kLoggingIn:
      return {};
  }
  return {};
}

std::vector<Effect> Greeter::onLoginKey(const Key& key) {
  constexpr std::array<LoginField, 5> kOrder = {LoginField::kUser, LoginField::kPassword,
                                                LoginField::kLanguage, LoginField::kLayout,
                                                LoginField::kSubmit};
  const auto at = static_cast<std::size_t>(std::find(kOrder.begin(), kOrder.end(), loginField_) -
                                           kOrder.begin());
  auto move = [&](int by) {
    loginField_ = kOrder[(at + kOrder.size() + static_cast<std::size_t>(by + 5)) % kOrder.size()];
  };

  switch (key.code) {
    case KEY_TAB:
      move(key.shift ? -1 : 1);
      return {};
    case KEY_DOWN:
      if (loginField_ == LoginField::kUser || loginField_ == LoginField::kPassword)
        move(1);
      return {};
    case KEY_UP:
      if (loginField_ == LoginField::kPassword || loginField_ == LoginField::kLanguage)
        move(-1);
      return {};
    case KEY_ENTER:
    case KEY_KPENTER:
      if (loginField_ == LoginField::kUser && password_.empty() &&
          username_.find_first_not_of(" \t") != std::string::npos) {
        loginField_ = LoginField::kPassword;
        return {};
      }
      return submitLogin();
    case KEY_LEFT:
    case KEY_RIGHT: {
      const int by = key.code == KEY_RIGHT ? 1 : -1;
      if (loginField_ == LoginField::kLanguage) {
        constexpr auto kCount = static_cast<int>(std::size(kLanguages));
        setLanguage(kLanguages[(static_cast<int>(language_) + by + kCount) % kCount]);
        if (!layoutChosen_) {
          layout_ = defaultLayoutOf(language_);
          return list(SetLayout{layout().xkb});
        }
        return {};
      }
      if (loginField_ == LoginField::kLayout) {
        const auto count = static_cast<int>(layouts().size());
        layout_ = static_cast<std::size_t>((static_cast<int>(layout_) + by + count) % count);
        layoutChosen_ = true;
        return list(SetLayout{layout().xkb});
      }
      return {};
    }
    case KEY_BACKSPACE:
      if (loginField_ == LoginField::kUser && !username_.empty()) {
        // Drop the last UTF-8 character.
        while (!username_.empty()) {
          const auto last = static_cast<unsigned char>(username_.back());
          username_.pop_back();
          if ((last & 0xc0) != 0x80)
            break;
        }
      } else if (loginField_ == LoginField::kPassword) {
        password_.popCharacter();
      }
      return {};
    case KEY_ESC:
      // Start over: a student who walked away leaves nothing behind.
      username_.clear();
      password_.clear();
      loginField_ = LoginField::kUser;
      if (message_.notice != Notice::kLocked)
        message_ = {};
      return {};
    default:
      break;
  }
  if (key.ctrl || key.alt || key.text.empty())
    return {};
  const bool control = static_cast<unsigned char>(key.text[0]) < 0x20;
  if (control)
    return {};
  if (loginField_ == LoginField::kUser) {
    if (username_.size() + key.text.size() <= 256)
      username_ += key.text;
  } else if (loginField_ == LoginField::kPassword) {
    if (password_.size() + key.text.size() <= 1024)
      password_.append(key.text);
  }
  return {};
}

std::vector<Effect> Greeter::submitLogin() {
  if (lockedUntil_) {
    // The countdown on screen already says how long; nothing is sent.
    message_.notice = Notice::kLocked;
    return {};
  }
  // Names are typed as they come; the broker matches them. Blanks around a
  // name are never meant.
  const auto first = username_.find_first_not_of(" \t");
  const auto last = username_.find_last_not_of(" \t");
  username_ =
      first == std::string::npos ? std::string() : username_.substr(first, last - first + 1);
  if (username_.empty()) {
    message_ = {Notice::kNoUserName, {}, 0};
    loginField_ = LoginField::kUser;
    return {};
  }
  screen_ = Screen::kLoggingIn;
  message_ = {};
  LogIn login{username_, std::move(password_)};
  password_.clear();
  return list(std::move(login));
}

std::vector<Effect> Greeter::onListKey(const Key& key) {
  constexpr std::array<ListFocus, 3> kOrder = {ListFocus::kList, ListFocus::kShutDown,
                                               ListFocus::kLogOut};
  const auto at = static_cast<std::size_t>(std::find(kOrder.begin(), kOrder.end(), listFocus_) -
                                           kOrder.begin());
  switch (key.code) {
    case KEY_TAB:
      listFocus_ = kOrder[(at + (key.shift ? kOrder.size() - 1 : 1)) % kOrder.size()];
      return {};
    case KEY_UP:
      if (selected_ > 0)
        --selected_;
      listFocus_ = ListFocus::kList;
      return {};
    case KEY_DOWN:
      if (selected_ + 1 < desktops_.size())
        ++selected_;
      listFocus_ = ListFocus::kList;
      return {};
    case KEY_F5:
      return list(ListDesktops{});
    case KEY_ENTER:
    case KEY_KPENTER:
      break;
    default:
      return {};
  }
  if (listFocus_ == ListFocus::kLogOut)
    return toLogin({});
  if (selected_ >= desktops_.size())
    return {};
  Desktop& desktop = desktops_[selected_];
  if (listFocus_ == ListFocus::kShutDown) {
    if (desktop.state != DesktopState::kRunning && desktop.state != DesktopState::kStarting)
      return {};
    desktop.state = DesktopState::kStopping;
    message_ = {};
    return list(StopDesktop{desktop.id});
  }
  if (desktop.state == DesktopState::kStopping) {
    message_ = {Notice::kStartFailed, "The desktop is still shutting down; try again in a moment.",
                0};
    return {};
  }
  currentId_ = desktop.id;
  opening_ = false;
  screen_ = Screen::kConnecting;
  message_ = {};
  return list(RequestConsole{desktop.id});
}

std::vector<Effect> Greeter::onSessionKey(const Key& key) {
  if (opensMenu(key)) {
    std::vector<Effect> effects;
    releaseHeldKeys(effects);
    menuOpen_ = true;
    menuIndex_ = 0;
    return effects;
  }
  const auto scancode = xtScancode(key.code);
  if (!scancode)
    return {};
  if (key.pressed)
    held_.insert(*scancode);
  else if (held_.erase(*scancode) == 0)
    return {};  // the release of a press the guest never got (the menu's)
  return list(SendKey{*scancode, key.pressed});
}

void Greeter::releaseHeldKeys(std::vector<Effect>& effects) {
  for (std::uint32_t scancode : held_)
    effects.emplace_back(SendKey{scancode, false});
  held_.clear();
  for (MouseButton button : {MouseButton::kLeft, MouseButton::kMiddle, MouseButton::kRight,
                             MouseButton::kSide, MouseButton::kExtra}) {
    const std::uint32_t bit = buttonBit(button);
    if ((buttons_ & bit) != 0) {
      buttons_ &= ~bit;
      Mouse release;
      release.button = button;
      effects.emplace_back(SendMouse{release, buttons_});
    }
  }
}

// ---- The mouse -------------------------------------------------------------

// The mouse goes to the guest while the desktop is on screen; the screens
// themselves are worked with the keyboard. Any use of it counts as use (the
// idle logout waits).
std::vector<Effect> Greeter::onMouse(const Mouse& mouse, Instant now) {
  lastInput_ = now;
  if (screen_ != Screen::kSession || menuOpen_)
    return {};
  if (mouse.button) {
    const std::uint32_t bit = buttonBit(*mouse.button);
    if (mouse.pressed) {
      buttons_ |= bit;
    } else if ((buttons_ & bit) == 0) {
      return {};  // the release of a press the guest never got (the menu's)
    } else {
      buttons_ &= ~bit;
    }
  }
  return list(SendMouse{mouse, buttons_});
}

// A click does what the keys would: it moves the focus to what was clicked
// and, on a button or on the row already chosen, presses Enter.
std::vector<Effect> Greeter::onClick(const Click& click, Instant now) {
  const Key enter{.code = KEY_ENTER, .pressed = true};
  switch (screen_) {
    case Screen::kLogin: {
      constexpr std::array<LoginField, 4> kFields = {LoginField::kUser, LoginField::kPassword,
                                                     LoginField::kLanguage, LoginField::kLayout};
      if (click.target == Target::kButton && click.index == 0) {
        lastInput_ = now;
        loginField_ = LoginField::kSubmit;
        return submitLogin();
      }
      if (click.target != Target::kField || click.index >= kFields.size())
        return {};
      lastInput_ = now;
      const LoginField field = kFields[click.index];
      const bool choice = field == LoginField::kLanguage || field == LoginField::kLayout;
      // An arrow of a choice turns it, as Left or Right does; the choice
      // itself, once focused, moves on to its next value.
      const int turn = !choice ? 0 : click.turn != 0 ? click.turn : field == loginField_ ? 1 : 0;
      loginField_ = field;
      if (turn != 0)
        return onLoginKey(Key{.code = static_cast<std::uint32_t>(turn < 0 ? KEY_LEFT : KEY_RIGHT),
                              .pressed = true});
      return {};
    }
    case Screen::kDesktops:
      if (click.target == Target::kRow && click.index < desktops_.size()) {
        lastInput_ = now;
        const bool chosen = selected_ == click.index && listFocus_ == ListFocus::kList;
        selected_ = click.index;
        listFocus_ = ListFocus::kList;
        return chosen ? onListKey(enter) : std::vector<Effect>{};
      }
      if (click.target == Target::kButton && click.index < 2) {
        lastInput_ = now;
        listFocus_ = click.index == 0 ? ListFocus::kShutDown : ListFocus::kLogOut;
        return onListKey(enter);
      }
      return {};
    case Screen::kSession:
      if (!menuOpen_)
        return {};
      lastInput_ = now;
      if (usbOpen_) {
        if (click.target != Target::kRow || click.index >= usbDevices_.size())
          return {};
        usbIndex_ = click.index;
        return onUsbKey(enter);
      }
      if (click.target != Target::kButton || click.index >= std::size(kMenuItems))
        return {};
      menuIndex_ = click.index;
      return onMenuKey(enter);
    default:
      return {};
  }
}

void Greeter::closeMenu() {
  menuOpen_ = false;
  usbOpen_ = false;
}

std::vector<Effect> Greeter::onMenuKey(const Key& key) {
  if (!key.pressed)
    return {};
  if (usbOpen_)
    return onUsbKey(key);
  constexpr auto kCount = std::size(kMenuItems);
  switch (key.code) {
    case KEY_ESC:
      closeMenu();
      return {};
    case KEY_UP:
      menuIndex_ = (menuIndex_ + kCount - 1) % kCount;
      return {};
    case KEY_DOWN:
    case KEY_TAB:
      menuIndex_ = (menuIndex_ + 1) % kCount;
      return {};
    case KEY_ENTER:
    case KEY_KPENTER:
      break;
    default:
      return {};
  }
  if (kMenuItems[menuIndex_] == MenuItem::kUsbDevices) {
    usbOpen_ = true;
    usbIndex_ = 0;
    return list(ListUsb{});
  }
  closeMenu();
  switch (kMenuItems[menuIndex_]) {
    case MenuItem::kCtrlAltDel:
      return list(SendCtrlAltDel{});
    case MenuItem::kUsbDevices:
      return {};
    case MenuItem::kDisconnect: {
      auto effects = toList({});
      effects.insert(effects.begin(), CloseSession{});
      effects.push_back(ListDesktops{});
      return effects;
    }
    case MenuItem::kLogOut: {
      auto effects = toLogin({});
      effects.insert(effects.begin(), CloseSession{});
      return effects;
    }
  }
  return {};
}

// The menu's USB list: Enter moves the chosen device to the desktop or back
// to this PC, where the template's policy allows it; Esc goes back to the
// menu.
std::vector<Effect> Greeter::onUsbKey(const Key& key) {
  const std::size_t count = usbDevices_.size();
  switch (key.code) {
    case KEY_ESC:
      usbOpen_ = false;
      return {};
    case KEY_UP:
      if (count > 0)
        usbIndex_ = (usbIndex_ + count - 1) % count;
      return {};
    case KEY_DOWN:
    case KEY_TAB:
      if (count > 0)
        usbIndex_ = (usbIndex_ + 1) % count;
      return {};
    case KEY_ENTER:
    case KEY_KPENTER: {
      if (usbIndex_ >= count)
        return {};
      const UsbDevice& device = usbDevices_[usbIndex_];
      if (!device.allowed)
        return {};
      return list(ShareUsb{device.id, !device.shared});
    }
    default:
      return {};
  }
}

// ---- Time ------------------------------------------------------------------

std::vector<Effect> Greeter::onTick(Instant now) {
  if (lockedUntil_) {
    if (now >= *lockedUntil_) {
      lockedUntil_.reset();
      if (message_.notice == Notice::kLocked)
        message_ = {};
    } else if (message_.notice == Notice::kLocked) {
      message_.seconds = secondsUntil(*lockedUntil_, now);
    }
  }
  if (screen_ == Screen::kTrouble && countdownEnd_) {
    message_.seconds = secondsUntil(*countdownEnd_, now);
  }
  if (retryAt_ && now >= *retryAt_) {
    retryAt_.reset();
    countdownEnd_.reset();
    trying_ = true;
    if (screen_ == Screen::kTrouble)
      return list(ProbeBroker{});
    if (screen_ == Screen::kReconnecting)
      return list(RequestConsole{currentId_, true});
  }
  if (screen_ == Screen::kDesktops && now - lastInput_ >= school_.idleLogout) {
    const auto minutes =
        std::chrono::duration_cast<std::chrono::minutes>(school_.idleLogout).count();
    return toLogin({Notice::kIdleLogout, {}, static_cast<int>(minutes)});
  }
  if (screen_ == Screen::kLogin && !username_.empty() && now - lastInput_ >= school_.idleLogout) {
    username_.clear();
    password_.clear();
    loginField_ = LoginField::kUser;
  }
  return {};
}

// ---- Moves between screens -------------------------------------------------

std::vector<Effect> Greeter::toTrouble(Notice notice, std::string detail, Instant now) {
  ++attempts_;
  auto wait = options_.firstRetry;
  for (int i = 1; i < attempts_ && wait < options_.longestRetry; ++i)
    wait *= 2;
  wait = std::min(wait, options_.longestRetry);
  screen_ = Screen::kTrouble;
  trying_ = false;
  retryAt_ = now + wait;
  countdownEnd_ = retryAt_;
  message_ = {notice, std::move(detail), static_cast<int>(wait.count())};
  return {};
}

std::vector<Effect> Greeter::toList(Message message) {
  screen_ = Screen::kDesktops;
  closeMenu();
  usbDevices_.clear();
  opening_ = false;
  trying_ = false;
  retryAt_.reset();
  countdownEnd_.reset();
  held_.clear();
  buttons_ = 0;
  listFocus_ = ListFocus::kList;
  message_ = std::move(message);
  if (message_.notice == Notice::kNone && listLoaded_ && desktops_.empty())
    message_ = {Notice::kNoDesktop, {}, 0};
  return {};
}

std::vector<Effect> Greeter::toLogin(Message message) {
  std::vector<Effect> effects;
  if (loggedIn_)
    effects.emplace_back(LogOut{});
  loggedIn_ = false;
  displayName_.clear();
  desktops_.clear();
  listLoaded_ = false;
  selected_ = 0;
  currentId_ = 0;
  closeMenu();
  usbDevices_.clear();
  opening_ = false;
  trying_ = false;
  attempts_ = 0;
  retryAt_.reset();
  countdownEnd_.reset();
  held_.clear();
  buttons_ = 0;
  username_.clear();
  password_.clear();
  loginField_ = LoginField::kUser;
  screen_ = Screen::kLogin;
  message_ = std::move(message);
  return effects;
}

std::vector<Effect> Greeter::loseLink(std::string detail, Instant now) {
  if (screen_ != Screen::kReconnecting) {
    screen_ = Screen::kReconnecting;
    troubleSince_ = now;
    attempts_ = 0;
    closeMenu();
    usbDevices_.clear();
    held_.clear();
    buttons_ = 0;
    message_ = {Notice::kLinkLost, detail, 0};
    // A pause first: a guest that shut down also drops the link, and the
    // broker hears of that from the agent within a moment.
    trying_ = false;
    opening_ = false;
    retryAt_ = now + options_.reconnectPause;
    return list(CloseSession{});
  }
  // A try failed: again after a pause, while the time allows.
  if (now - troubleSince_ + options_.reconnectPause > options_.reconnectFor) {
    auto effects = toList({Notice::kLinkLost, std::move(detail), 0});
    effects.insert(effects.begin(), CloseSession{});
    effects.push_back(ListDesktops{});
    return effects;
  }
  ++attempts_;
  trying_ = false;
  opening_ = false;
  retryAt_ = now + options_.reconnectPause;
  message_ = {Notice::kLinkLost, std::move(detail), 0};
  return list(CloseSession{});
}

void Greeter::setLanguage(Language language) {
  language_ = language;
}

}  // namespace aula::greeter
