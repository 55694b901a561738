// Each screen's words, translated, and the .mo reader behind them.
#include "aula/greeter/view.hpp"

#include <cstdint>
#include <cstring>

#include <fmt/args.h>
#include <fmt/format.h>

#include "aula/common/file.hpp"

namespace aula::greeter {

namespace {

// Every English message, once. msgids are the English text, as gettext's.
namespace msg {
constexpr std::string_view kLogIn = "Log in";
constexpr std::string_view kWelcome = "Welcome";
constexpr std::string_view kUserName = "User name";
constexpr std::string_view kPassword = "Password";
constexpr std::string_view kLanguage = "Language";
constexpr std::string_view kKeyboard = "Keyboard";
constexpr std::string_view kLoginHints =
    "Tab: next field · Left/Right: change language or keyboard · Enter: log in";
constexpr std::string_view kLoggingIn = "Logging in…";
constexpr std::string_view kNoUserName = "Type your user name first.";
constexpr std::string_view kWrongPassword = "The user name or password is wrong.";
constexpr std::string_view kWrongPasswordHelp =
    "Check Caps Lock and the keyboard layout, then try again.";
constexpr std::string_view kLocked = "Too many failed logins.";
constexpr std::string_view kLockedHelp = "Try again in {} s.";
constexpr std::string_view kDisabled = "This account is disabled.";
constexpr std::string_view kDisabledHelp = "Ask your teacher or an admin.";
constexpr std::string_view kSessionEnded = "Your session has ended.";
constexpr std::string_view kSessionEndedHelp = "Log in again.";
constexpr std::string_view kIdleLogout = "You were logged out after {} minutes without use.";
constexpr std::string_view kConnectingToServer = "Connecting to the Aula server…";
constexpr std::string_view kUnreachable = "Cannot reach the Aula server.";
constexpr std::string_view kRetryIn =
    "Trying again in {} s. Press Enter to try now. If this goes on, tell an admin what is "
    "shown below.";
constexpr std::string_view kRetryingNow = "Trying again now…";
constexpr std::string_view kCertificate =
    "The Aula server's certificate is not the one this PC expects.";
constexpr std::string_view kCertificateHelp =
    "This PC sends no password to it. Tell an admin: the server was changed, or someone is "
    "pretending to be it.";
constexpr std::string_view kClockOff = "This PC's clock is wrong.";
constexpr std::string_view kClockOffHelp =
    "Secure connections fail when the clock is far off; the clock battery may be flat. Tell an "
    "admin.";
constexpr std::string_view kMisconfigured = "This PC is not set up correctly.";
constexpr std::string_view kMisconfiguredHelp =
    "It does not know how to reach the Aula server, so nobody can log in here. Tell an admin "
    "what is shown below; please use another PC for now.";
constexpr std::string_view kBrokerError = "The Aula server answered with an error.";
constexpr std::string_view kYourDesktops = "Your desktops";
constexpr std::string_view kLoggedInAs = "Logged in as {}";
constexpr std::string_view kStopped = "Stopped";
constexpr std::string_view kStarting = "Starting";
constexpr std::string_view kRunning = "Running";
constexpr std::string_view kStopping = "Shutting down";
constexpr std::string_view kFailed = "Failed";
constexpr std::string_view kKeepsChanges = "{} · keeps your changes";
constexpr std::string_view kStartsFresh = "{} · starts fresh each time";
constexpr std::string_view kShutDown = "Shut down";
constexpr std::string_view kLogOut = "Log out";
constexpr std::string_view kListHints =
    "Up/Down: choose · Enter: connect · Tab: buttons · F5: refresh";
constexpr std::string_view kLoadingList = "Loading your desktops…";
constexpr std::string_view kNoDesktop = "You have no desktops yet.";
constexpr std::string_view kNoDesktopHelp = "Ask your teacher to give you one.";
constexpr std::string_view kQuotaReached = "You have reached a limit.";
constexpr std::string_view kStartFailed = "Your desktop did not start.";
constexpr std::string_view kStartFailedHelp = "Try again; if it keeps failing, tell your teacher.";
constexpr std::string_view kSessionFailed = "Could not open your desktop's screen.";
constexpr std::string_view kLinkLost = "The connection to your desktop was lost.";
constexpr std::string_view kLinkLostHelp =
    "It could not be restored. Your desktop is still running: connect again.";
constexpr std::string_view kTakenOver = "'{}' was opened on another computer.";
constexpr std::string_view kShutDownDone = "'{}' has shut down.";
constexpr std::string_view kConnectingTo = "Connecting to {}";
constexpr std::string_view kStartingDesktop = "Starting your desktop… this can take a minute.";
constexpr std::string_view kAskingServer = "Asking the server…";
constexpr std::string_view kOpeningScreen = "Opening the screen…";
constexpr std::string_view kCancelHint = "Esc: cancel";
constexpr std::string_view kReconnectingTo = "Reconnecting to {}";
constexpr std::string_view kReconnecting = "The connection was lost. Trying again…";
constexpr std::string_view kBackHint = "Esc: back to your desktops";
constexpr std::string_view kMenu = "Menu";
constexpr std::string_view kCtrlAltDel = "Send Ctrl+Alt+Del";
constexpr std::string_view kDisconnect = "Disconnect";
constexpr std::string_view kMenuHints = "Up/Down: choose · Enter: do it · Esc: back to the desktop";
constexpr std::string_view kUsbDevices = "USB devices";
constexpr std::string_view kOnDesktop = "On the desktop";
constexpr std::string_view kOnThisPc = "On this PC";
constexpr std::string_view kStaysHere = "Stays on this PC";
constexpr std::string_view kUsbNone = "USB devices stay with this PC.";
constexpr std::string_view kUsbNoneHelp =
    "This desktop does not take USB devices. Ask your teacher if you need one.";
constexpr std::string_view kNoUsb = "No USB device is plugged in.";
constexpr std::string_view kNoUsbHelp =
    "Plug one in: it goes to the desktop by itself if the desktop takes it.";
constexpr std::string_view kStorageOnly = "This desktop takes USB storage only.";
constexpr std::string_view kUsbFailed = "It could not be moved: {}";
constexpr std::string_view kUsbHints =
    "Up/Down: choose · Enter: move to the desktop or back · Esc: back to the menu";
constexpr std::string_view kSessionHint = "Shift+F12: menu";
constexpr std::string_view kThisPc = "This PC: {} · {} · image {}";
constexpr std::string_view kUnknown = "unknown";

constexpr std::string_view kAll[] = {
    kLogIn,
    kWelcome,
    kUserName,
    kPassword,
    kLanguage,
    kKeyboard,
    kLoginHints,
    kLoggingIn,
    kNoUserName,
    kWrongPassword,
    kWrongPasswordHelp,
    kLocked,
    kLockedHelp,
    kDisabled,
    kDisabledHelp,
    kSessionEnded,
    kSessionEndedHelp,
    kIdleLogout,
    kConnectingToServer,
    kUnreachable,
    kRetryIn,
    kRetryingNow,
    kCertificate,
    kCertificateHelp,
    kClockOff,
    kClockOffHelp,
    kMisconfigured,
    kMisconfiguredHelp,
    kBrokerError,
    kYourDesktops,
    kLoggedInAs,
    kStopped,
    kStarting,
    kRunning,
    kStopping,
    kFailed,
    kKeepsChanges,
    kStartsFresh,
    kShutDown,
    kLogOut,
    kListHints,
    kLoadingList,
    kNoDesktop,
    kNoDesktopHelp,
    kQuotaReached,
    kStartFailed,
    kStartFailedHelp,
    kSessionFailed,
    kLinkLost,
    kLinkLostHelp,
    kTakenOver,
    kShutDownDone,
    kConnectingTo,
    kStartingDesktop,
    kAskingServer,
    kOpeningScreen,
    kCancelHint,
    kReconnectingTo,
    kReconnecting,
    kBackHint,
    kMenu,
    kCtrlAltDel,
    kDisconnect,
    kMenuHints,
    kUsbDevices,
    kOnDesktop,
    kOnThisPc,
    kStaysHere,
    kUsbNone,
    kUsbNoneHelp,
    kNoUsb,
    kNoUsbHelp,
    kStorageOnly,
    kUsbFailed,
    kUsbHints,
    kSessionHint,
    kThisPc,
    kUnknown,
};
}  // namespace msg

std::uint32_t readWord(std::string_view bytes, std::size_t at, bool swap) {
  std::uint32_t word = 0;
  std::memcpy(&word, bytes.data() + at, sizeof word);
  return swap ? __builtin_bswap32(word) : word;
}

}  // namespace

Result<Catalog> parseMo(std::string_view bytes) {
  constexpr std::uint32_t kMagic = 0x950412de;
  if (bytes.size() < 28)
    return makeError(Errc::kParse, "A .mo catalog holds at least 28 bytes, not {}.", bytes.size());
  bool swap = false;
  if (readWord(bytes, 0, false) != kMagic) {
    if (readWord(bytes, 0, true) != kMagic)
      return makeError(Errc::kParse, "This is not a .mo catalog: its magic number is wrong.");
    swap = true;
  }
  const std::uint32_t count = readWord(bytes, 8, swap);
  const std::uint32_t originals = readWord(bytes, 12, swap);
  const std::uint32_t translations = readWord(bytes, 16, swap);
  auto text = [&](std::uint32_t table, std::uint32_t index) -> Result<std::string_view> {
    const std::size_t entry = std::size_t{table} + std::size_t{index} * 8;
    if (entry + 8 > bytes.size())
      return makeError(Errc::kParse, "The .mo catalog's string table runs past its end.");
    const std::uint32_t length = readWord(bytes, entry, swap);
    const std::uint32_t offset = readWord(bytes, entry + 4, swap);
    if (std::size_t{offset} + length > bytes.size())
      return makeError(Errc::kParse, "A string of the .mo catalog runs past its end.");
    return bytes.substr(offset, length);
  };
  Catalog catalog;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::string_view original = AULA_TRY(text(originals, i));
    const std::string_view translated = AULA_TRY(text(translations, i));
    if (original.empty() || translated.empty())
      continue;  // the header, or an untranslated entry
    catalog.emplace(std::string(original), std::string(translated));
  }
  return catalog;
}

Result<Translations> Translations::load(const std::filesystem::path& localeDir) {
  Translations translations;
  for (Language language : kLanguages) {
    if (language == Language::kEnglish)
      continue;
    const auto path =
        localeDir / std::string(languageCode(language)) / "LC_MESSAGES" / "aula-greeter.mo";
    auto bytes = file::readFile(path);
    if (!bytes)
      return bytes.error().context(fmt::format("Cannot read the translations for {} ({}).",
                                               languageName(language), languageCode(language)));
    auto catalog = parseMo(*bytes);
    if (!catalog)
      return catalog.error().context(fmt::format("Cannot read {}.", path.string()));
    translations.add(language, std::move(catalog).value());
  }
  return translations;
}

void Translations::add(Language language, Catalog catalog) {
  catalogs_[language] = std::move(catalog);
}

std::string_view Translations::get(Language language, std::string_view msgid) const {
  const auto catalog = catalogs_.find(language);
  if (catalog == catalogs_.end())
    return msgid;
  const auto found = catalog->second.find(std::string(msgid));
  return found == catalog->second.end() ? msgid : std::string_view(found->second);
}

bool Translations::has(Language language, std::string_view msgid) const {
  const auto catalog = catalogs_.find(language);
  return catalog != catalogs_.end() && catalog->second.contains(std::string(msgid));
}

std::string translateFormat(const Translations& translations, Language language,
                            std::string_view msgid, const std::vector<std::string>& args) {
  auto format = [&](std::string_view pattern) {
    fmt::dynamic_format_arg_store<fmt::format_context> store;
    for (const auto& arg : args)
      store.push_back(arg);
    return fmt::vformat(pattern, store);
  };
  try {
    return format(translations.get(language, msgid));
  } catch (const fmt::format_error&) {
    return format(msgid);
  }
}

std::vector<std::string_view> allMessages() {
  return {std::begin(msg::kAll), std::end(msg::kAll)};
}

namespace {

// The session menu's USB list: each device plugged into this PC, where it
// is now, and why one stays here.
template <typename Tr, typename Trf>
void describeUsb(const Greeter& greeter, const Tr& tr, const Trf& trf, View& view) {
  view.subtitle = tr(msg::kUsbDevices);
  view.hints = tr(msg::kUsbHints);
  const auto& devices = greeter.usbDevices();
  if (greeter.usbPolicy() == "none") {
    view.notice = Callout{tr(msg::kUsbNone), tr(msg::kUsbNoneHelp), {}, false};
  } else if (devices.empty()) {
    view.notice = Callout{tr(msg::kNoUsb), tr(msg::kNoUsbHelp), {}, false};
  }
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const UsbDevice& device = devices[i];
    Row row;
    row.name = device.name;
    row.selected = i == greeter.usbSelected();
    if (!device.allowed) {
      row.state = tr(msg::kStaysHere);
      row.stateKind = DesktopState::kStopping;
      if (greeter.usbPolicy() == "storage")
        row.detail = tr(msg::kStorageOnly);
    } else if (device.shared) {
      row.state = tr(msg::kOnDesktop);
      row.stateKind = DesktopState::kRunning;
    } else {
      row.state = tr(msg::kOnThisPc);
      row.stateKind = DesktopState::kStopped;
    }
    if (!device.problem.empty()) {
      row.detail = trf(msg::kUsbFailed, {device.problem});
      row.stateKind = DesktopState::kFailed;
    }
    view.rows.push_back(std::move(row));
  }
}

}  // namespace

View describe(const Greeter& greeter, const Translations& translations) {
  const Language language = greeter.language();
  auto tr = [&](std::string_view msgid) { return std::string(translations.get(language, msgid)); };
  auto trf = [&](std::string_view msgid, const std::vector<std::string>& args) {
    return translateFormat(translations, language, msgid, args);
  };

  View view;
  view.screen = greeter.screen();
  view.schoolName = greeter.school().name;
  const MachineInfo& machine = greeter.machine();
  auto orUnknown = [&](const std::string& value) {
    return value.empty() ? tr(msg::kUnknown) : value;
  };
  view.footer = trf(msg::kThisPc, {orUnknown(machine.address), orUnknown(machine.mac),
                                   orUnknown(machine.imageVersion)});

  const Message& message = greeter.message();
  auto callout = [&](std::string_view headline, std::string body, std::string detail = {}) {
    view.notice = Callout{std::string(headline), std::move(body), std::move(detail),
                          !isInformation(message.notice)};
  };
  const std::string seconds = std::to_string(message.seconds);
  switch (message.notice) {
    case Notice::kNone:
      break;
    case Notice::kNoUserName:
      callout(tr(msg::kNoUserName), {});
      break;
    case Notice::kWrongPassword:
      callout(tr(msg::kWrongPassword), tr(msg::kWrongPasswordHelp));
      break;
    case Notice::kLocked:
      callout(tr(msg::kLocked), trf(msg::kLockedHelp, {seconds}));
      break;
    case Notice::kDisabled:
      callout(tr(msg::kDisabled), tr(msg::kDisabledHelp));
      break;
    case Notice::kSessionEnded:
      callout(tr(msg::kSessionEnded), tr(msg::kSessionEndedHelp));
      break;
    case Notice::kIdleLogout:
      callout(trf(msg::kIdleLogout, {seconds}), {});
      break;
    case Notice::kBrokerUnreachable:
      callout(tr(msg::kUnreachable),
              greeter.trying() ? tr(msg::kRetryingNow) : trf(msg::kRetryIn, {seconds}),
              message.detail);
      break;
    case Notice::kCertificateRejected:
      callout(tr(msg::kCertificate), tr(msg::kCertificateHelp), message.detail);
      break;
    case Notice::kClockOff:
      callout(tr(msg::kClockOff), tr(msg::kClockOffHelp), message.detail);
      break;
    case Notice::kMisconfigured:
      callout(tr(msg::kMisconfigured), tr(msg::kMisconfiguredHelp), message.detail);
      break;
    case Notice::kBrokerError:
      callout(tr(msg::kBrokerError), {}, message.detail);
      break;
    case Notice::kNoDesktop:
      callout(tr(msg::kNoDesktop), tr(msg::kNoDesktopHelp));
      break;
    case Notice::kQuotaReached:
      callout(tr(msg::kQuotaReached), {}, message.detail);
      break;
    case Notice::kStartFailed:
      callout(tr(msg::kStartFailed), tr(msg::kStartFailedHelp), message.detail);
      break;
    case Notice::kSessionFailed:
      callout(tr(msg::kSessionFailed), {}, message.detail);
      break;
    case Notice::kLinkLost:
      callout(tr(msg::kLinkLost),
              greeter.screen() == Screen::kReconnecting ? std::string() : tr(msg::kLinkLostHelp),
              message.detail);
      break;
    case Notice::kTakenOver:
      callout(trf(msg::kTakenOver, {message.detail}), {});
      break;
    case Notice::kShutDown:
      callout(trf(msg::kShutDownDone, {message.detail}), {});
      break;
  }

  const Desktop* current = greeter.current();
  const std::string currentName = current == nullptr ? std::string() : current->name;
  switch (greeter.screen()) {
    case Screen::kStarting:
      view.title = tr(msg::kConnectingToServer);
      view.busy = true;
      break;
    case Screen::kTrouble:
      view.title = view.notice ? view.notice->headline : tr(msg::kUnreachable);
      view.busy = greeter.trying();
      break;
    case Screen::kLogin:
    case Screen::kLoggingIn: {
      const bool busy = greeter.screen() == Screen::kLoggingIn;
      view.title = busy ? tr(msg::kLoggingIn) : tr(msg::kLogIn);
      view.subtitle = greeter.school().name.empty() ? tr(msg::kWelcome) : greeter.school().name;
      view.busy = busy;
      const LoginField field = greeter.loginField();
      view.fields = {
          {tr(msg::kUserName), greeter.username(), !busy && field == LoginField::kUser, false},
          {tr(msg::kPassword), {}, !busy && field == LoginField::kPassword, false},
          {tr(msg::kLanguage), std::string(languageName(language)),
           !busy && field == LoginField::kLanguage, true},
          {tr(msg::kKeyboard), greeter.layout().name, !busy && field == LoginField::kLayout, true},
      };
      for (std::size_t i = 0; i < greeter.passwordCharacters(); ++i)
        view.fields[1].value += "●";
      view.buttons = {{tr(msg::kLogIn), !busy && field == LoginField::kSubmit, !busy}};
      view.hints = tr(msg::kLoginHints);
      break;
    }
    case Screen::kDesktops: {
      view.title = tr(msg::kYourDesktops);
      view.subtitle = trf(msg::kLoggedInAs, {greeter.displayName()});
      if (!greeter.listLoaded()) {
        view.busy = true;
        view.subtitle = tr(msg::kLoadingList);
      }
      const auto& desktops = greeter.desktops();
      bool canStop = false;
      for (std::size_t i = 0; i < desktops.size(); ++i) {
        const Desktop& desktop = desktops[i];
        Row row;
        row.name = desktop.name;
        row.detail = trf(desktop.persistent ? msg::kKeepsChanges : msg::kStartsFresh,
                         {desktop.templateName});
        row.stateKind = desktop.state;
        switch (desktop.state) {
          case DesktopState::kStopped:
            row.state = tr(msg::kStopped);
            break;
          case DesktopState::kStarting:
            row.state = tr(msg::kStarting);
            break;
          case DesktopState::kRunning:
            row.state = tr(msg::kRunning);
            break;
          case DesktopState::kStopping:
            row.state = tr(msg::kStopping);
            break;
          case DesktopState::kFailed:
            row.state = tr(msg::kFailed);
            break;
        }
        row.selected = i == greeter.selected();
        if (row.selected)
          canStop =
              desktop.state == DesktopState::kRunning || desktop.state == DesktopState::kStarting;
        view.rows.push_back(std::move(row));
      }
      view.buttons = {{tr(msg::kShutDown), greeter.listFocus() == ListFocus::kShutDown, canStop},
                      {tr(msg::kLogOut), greeter.listFocus() == ListFocus::kLogOut, true}};
      view.hints = tr(msg::kListHints);
      break;
    }
    case Screen::kConnecting: {
      view.title = trf(msg::kConnectingTo, {currentName});
      const bool stopped = current != nullptr && current->state == DesktopState::kStopped;
      view.subtitle = greeter.opening() ? tr(msg::kOpeningScreen)
                      : stopped         ? tr(msg::kStartingDesktop)
                                        : tr(msg::kAskingServer);
      view.busy = true;
      view.hints = tr(msg::kCancelHint);
      break;
    }
    case Screen::kReconnecting:
      view.title = trf(msg::kReconnectingTo, {currentName});
      view.subtitle = tr(msg::kReconnecting);
      view.busy = true;
      view.hints = tr(msg::kBackHint);
      break;
    case Screen::kSession:
      view.title = currentName;
      view.menu = greeter.menuOpen();
      if (greeter.usbListOpen()) {
        describeUsb(greeter, tr, trf, view);
      } else if (view.menu) {
        view.subtitle = tr(msg::kMenu);
        for (MenuItem item : kMenuItems) {
          const std::string_view label = item == MenuItem::kCtrlAltDel   ? msg::kCtrlAltDel
                                         : item == MenuItem::kUsbDevices ? msg::kUsbDevices
                                         : item == MenuItem::kDisconnect ? msg::kDisconnect
                                                                         : msg::kLogOut;
          view.buttons.push_back({tr(label), greeter.menuItem() == item, true});
        }
        view.hints = tr(msg::kMenuHints);
      } else {
        view.hints = tr(msg::kSessionHint);
      }
      break;
  }
  return view;
}

}  // namespace aula::greeter
