// The greeter's screens as a state machine: keys, timers and the answers of
// the broker and the SPICE session go in; what to show, and effects (ask the
// broker, open the session, send a key to the guest) come out. No drawing, no
// SPICE, no network and no clock of its own: the caller passes the time of
// each event, so every transition is a unit test.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "aula/greeter/keys.hpp"
#include "aula/greeter/secret.hpp"

namespace aula::greeter {

using Instant = std::chrono::steady_clock::time_point;

// Languages the login screen offers, each with its keyboard layout.
enum class Language { kEnglish, kSpanish, kCatalan, kFrench };
inline constexpr Language kLanguages[] = {Language::kEnglish, Language::kSpanish,
                                          Language::kCatalan, Language::kFrench};

std::string_view languageCode(Language language);  // "en", "es", "ca", "fr"
std::string_view languageName(Language language);  // in that language: "Català"
std::optional<Language> languageFromCode(std::string_view code);

// An xkb layout ("us", "es", "es(cat)", "fr", ...) and its name on screen.
struct Layout {
  std::string xkb;
  std::string name;
};
// The layouts the login screen cycles through, the languages' own first.
const std::vector<Layout>& layouts();
std::size_t defaultLayoutOf(Language language);  // an index into layouts()

enum class Screen {
  kStarting,      // asking the broker for its CA and settings
  kTrouble,       // the broker cannot be used: unreachable, certificate, clock
  kLogin,         // user, password, language, keyboard layout
  kLoggingIn,     // the login request is out
  kDesktops,      // the user's desktops
  kConnecting,    // the desktop starts, a ticket is fetched, SPICE opens
  kSession,       // the desktop fills the screen
  kReconnecting,  // the SPICE link dropped; fresh tickets, for a while
};

// What went wrong (or what happened) that a screen explains. The renderer
// turns each into a translated sentence; `detail` (the broker's own
// sentence, in English) is shown below it where it helps.
enum class Notice {
  kNone,
  kNoUserName,           // Enter with an empty user name
  kWrongPassword,        // 401 at login
  kLocked,               // 429 at login: `seconds` to wait
  kDisabled,             // 403 at login
  kSessionEnded,         // a 401 after login: the session expired or was ended
  kIdleLogout,           // logged out after `seconds` without use
  kBrokerUnreachable,    // no connection to the broker: retry in `seconds`
  kCertificateRejected,  // the broker's CA is not the one the PC was told
  kClockOff,             // this PC's clock is far from the broker's
  kMisconfigured,        // this PC's own settings are wrong: it cannot look for the broker
  kBrokerError,          // the broker answered something unexpected
  kNoDesktop,            // the user has no desktop
  kQuotaReached,         // 403 quota_exceeded on start
  kStartFailed,          // the desktop did not start (503 and the like)
  kSessionFailed,        // SPICE could not connect
  kLinkLost,             // the SPICE link dropped and did not come back
  kTakenOver,            // another viewer took the desktop
  kShutDown,             // the desktop shut down from inside (information)
};

// True for notices that are information rather than an error.
bool isInformation(Notice notice);

struct Message {
  Notice notice = Notice::kNone;
  std::string detail;
  int seconds = 0;  // kLocked, kBrokerUnreachable: a countdown; kIdleLogout: minutes
};

enum class DesktopState { kStopped, kStarting, kRunning, kStopping, kFailed };
std::optional<DesktopState> desktopStateFromName(std::string_view name);
std::string_view desktopStateName(DesktopState state);

struct Desktop {
  std::int64_t id = 0;
  std::string name;
  std::string templateName;
  DesktopState state = DesktopState::kStopped;
  bool persistent = true;
};

// What the school's broker tells every greeter (GET /api/v1/greeter).
struct School {
  std::string name;
  std::string logoPng;  // PNG bytes, or empty
  std::chrono::seconds idleLogout{300};
};

// What the trouble screen shows an admin about this PC.
struct MachineInfo {
  std::string address;  // IPv4 or IPv6 of the boot interface
  std::string mac;
  std::string imageVersion;
  bool operator==(const MachineInfo&) const = default;
};
// "ADDRESS MAC, image VERSION" for the log, with "no address", "no MAC" and
// "unknown" for what is not known.
std::string describeMachine(const MachineInfo& machine);

struct Options {
  std::chrono::seconds reconnectFor{60};   // how long to try to restore a lost link
  std::chrono::seconds reconnectPause{2};  // between two tries
  std::chrono::seconds firstRetry{5};      // broker unreachable: first wait, doubling
  std::chrono::seconds longestRetry{30};   // ...up to this
  Language language = Language::kEnglish;
  // Set when this PC's settings are wrong (no broker address, a fingerprint
  // that is not one): the greeter shows it, with this PC's address for the
  // admin, instead of ever asking a broker.
  std::string setupError;
};

// ---- Events: what happened -------------------------------------------------

struct Tick {};  // time passed (countdowns, retries, idle logout)

struct BrokerReady {
  School school;
};
struct BrokerFailed {
  Notice notice = Notice::kBrokerUnreachable;  // or kCertificateRejected, kClockOff
  std::string detail;
};

struct LoggedIn {
  std::string displayName;
};
struct LoginRefused {
  Notice notice = Notice::kWrongPassword;  // kLocked, kDisabled, kBrokerUnreachable, ...
  std::string detail;
  int retryAfter = 0;  // kLocked
};

struct DesktopsListed {
  std::vector<Desktop> desktops;
};
// The broker's event stream: a desktop's state changed.
struct DesktopChanged {
  std::int64_t id = 0;
  DesktopState state = DesktopState::kStopped;
};
// A request after login failed: 401 (kSessionEnded), unreachable, ...
struct RequestFailed {
  Notice notice = Notice::kBrokerError;
  std::string detail;
};

// The console descriptor the broker answered (POST /desktops/{id}/console).
struct Console {
  std::int64_t desktopId = 0;
  std::string host;
  int tlsPort = 0;
  int port = 0;  // plain SPICE, tests only
  Secret ticket;
  std::string hostSubject;
  std::string caPem;
  // The template's USB policy: which devices plugged in during the session
  // go to the desktop (none, storage, all).
  std::string usb = "none";
};
struct ConsoleReady {
  Console console;
};
struct ConsoleRefused {
  Notice notice = Notice::kStartFailed;  // kQuotaReached, kSessionEnded, ...
  std::string detail;
};

struct SessionOpened {};
enum class SessionEnd { kGuestShutDown, kLinkLost, kTakenOver, kFailed };
struct SessionEnded {
  SessionEnd why = SessionEnd::kLinkLost;
  std::string detail;
};

// The mouse, placed on head 0 by the runtime: where it is after the event,
// how far it moved, and the button or wheel that changed, if any.
struct Mouse {
  int x = 0;
  int y = 0;
  int dx = 0;
  int dy = 0;
  std::optional<MouseButton> button;
  bool pressed = false;
  int wheel = 0;  // notches, more than 0 down
};

// A USB device plugged into this PC, as the session sees it.
struct UsbDevice {
  std::string id;        // the session's key for it: "bus-address"
  std::string name;      // as the device names itself, with its vendor:product
  bool allowed = false;  // the template's USB policy lets it go to the desktop
  bool shared = false;   // it is on the desktop now
  std::string problem;   // why it could not be moved the last time, if so
};
// The session's USB devices changed: plugged in, pulled out, or moved.
struct UsbDevicesChanged {
  std::vector<UsbDevice> devices;
};

// A click on something the screen shows, found by the runtime under the
// pointer: the View's field, row or button with this index; on a choice
// field's ‹ or › arrow, `turn` is -1 or 1.
enum class Target { kField, kRow, kButton };
struct Click {
  Target target = Target::kButton;
  std::size_t index = 0;
  int turn = 0;
};

using Event = std::variant<Tick, Key, Mouse, BrokerReady, BrokerFailed, LoggedIn, LoginRefused,
                           DesktopsListed, DesktopChanged, RequestFailed, ConsoleReady,
                           ConsoleRefused, SessionOpened, SessionEnded, UsbDevicesChanged, Click>;

// ---- Effects: what the caller does next ------------------------------------

struct ProbeBroker {};  // fetch the CA (pinned), check the clock, read School
struct LogIn {
  std::string username;
  Secret password;
};
struct ListDesktops {};
struct WatchDesktops {};  // open the event stream (after login)
struct RequestConsole {
  std::int64_t desktopId = 0;
  // After a lost link: only if the desktop still runs. One that stopped is
  // answered with DesktopChanged (it shut down from inside), never started
  // again.
  bool resume = false;
};
struct StopDesktop {
  std::int64_t desktopId = 0;
};
struct CancelRequests {};  // drop the answers of requests still out
struct OpenSession {
  Console console;
};
struct CloseSession {};
struct SendKey {  // to the guest: a PC XT scancode (0xe0-prefixed as 0x100|code)
  std::uint32_t scancode = 0;
  bool pressed = true;
};
// To the guest: the mouse as in Mouse (x, y on head 0), with the buttons
// held after it as a mask (bit 0 left, 1 middle, 2 right, 5 side, 6 extra:
// SPICE's).
struct SendMouse {
  Mouse mouse;
  std::uint32_t buttons = 0;
};
struct SendCtrlAltDel {};
struct ListUsb {};  // ask the session for its USB devices (UsbDevicesChanged)
// Move a USB device to the desktop (`share`) or back to this PC.
struct ShareUsb {
  std::string id;
  bool share = true;
};
struct LogOut {};   // end the broker session, forget the token
struct SetLayout {  // the keyboard layout keys are read with
  std::string xkb;
};

using Effect = std::variant<ProbeBroker, LogIn, ListDesktops, WatchDesktops, RequestConsole,
                            StopDesktop, CancelRequests, OpenSession, CloseSession, SendKey,
                            SendMouse, SendCtrlAltDel, ListUsb, ShareUsb, LogOut, SetLayout>;

// ---- The machine -----------------------------------------------------------

enum class LoginField { kUser, kPassword, kLanguage, kLayout, kSubmit };
enum class ListFocus { kList, kShutDown, kLogOut };
enum class MenuItem { kCtrlAltDel, kUsbDevices, kDisconnect, kLogOut };
inline constexpr MenuItem kMenuItems[] = {MenuItem::kCtrlAltDel, MenuItem::kUsbDevices,
                                          MenuItem::kDisconnect, MenuItem::kLogOut};

class Greeter {
 public:
  explicit Greeter(Options options = {}, MachineInfo machine = {});

  // The first effects: probe the broker (none when Options::setupError is
  // set). Call once, at start.
  std::vector<Effect> start(Instant now);
  std::vector<Effect> handle(const Event& event, Instant now);
  // When the next Tick matters (a countdown, a retry, idle logout), if ever.
  std::optional<Instant> nextDeadline() const;

  // What the screens show.
  Screen screen() const { return screen_; }
  const Message& message() const { return message_; }
  const School& school() const { return school_; }
  const MachineInfo& machine() const { return machine_; }
  // The PC's address came (DHCP answers after the greeter starts) or changed.
  void setMachine(MachineInfo machine) { machine_ = std::move(machine); }
  Language language() const { return language_; }
  const Layout& layout() const;
  const std::string& username() const { return username_; }
  std::size_t passwordCharacters() const;  // shown as dots
  LoginField loginField() const { return loginField_; }
  const std::string& displayName() const { return displayName_; }
  const std::vector<Desktop>& desktops() const { return desktops_; }
  std::size_t selected() const { return selected_; }
  ListFocus listFocus() const { return listFocus_; }
  bool listLoaded() const { return listLoaded_; }
  // The desktop being connected to or shown, if any.
  const Desktop* current() const;
  // kConnecting: true once the broker answered and SPICE is opening.
  bool opening() const { return opening_; }
  bool menuOpen() const { return menuOpen_; }
  MenuItem menuItem() const { return kMenuItems[menuIndex_]; }
  // The menu's USB devices list is open (in place of the menu's items).
  bool usbListOpen() const { return menuOpen_ && usbOpen_; }
  const std::vector<UsbDevice>& usbDevices() const { return usbDevices_; }
  std::size_t usbSelected() const { return usbIndex_; }
  // The session's template's USB policy: none, storage, all.
  const std::string& usbPolicy() const { return usbPolicy_; }
  bool loggedIn() const { return loggedIn_; }
  // kTrouble and kReconnecting: a request is out right now.
  bool trying() const { return trying_; }

 private:
  std::vector<Effect> onKey(const Key& key, Instant now);
  std::vector<Effect> onLoginKey(const Key& key);
  std::vector<Effect> onListKey(const Key& key);
  std::vector<Effect> onSessionKey(const Key& key);
  std::vector<Effect> onMouse(const Mouse& mouse, Instant now);
  std::vector<Effect> onClick(const Click& click, Instant now);
  std::vector<Effect> onMenuKey(const Key& key);
  std::vector<Effect> onUsbKey(const Key& key);
  void closeMenu();
  std::vector<Effect> onTick(Instant now);
  std::vector<Effect> submitLogin();
  std::vector<Effect> toTrouble(Notice notice, std::string detail, Instant now);
  std::vector<Effect> toList(Message message);
  std::vector<Effect> toLogin(Message message);
  std::vector<Effect> loseLink(std::string detail, Instant now);
  void releaseHeldKeys(std::vector<Effect>& effects);
  void setLanguage(Language language);
  std::string selectedName() const;

  Options options_;
  MachineInfo machine_;
  Screen screen_ = Screen::kStarting;
  Message message_;
  School school_;
  Language language_;
  std::size_t layout_;
  bool layoutChosen_ = false;

  // Login.
  std::string username_;
  Secret password_;
  LoginField loginField_ = LoginField::kUser;
  std::optional<Instant> lockedUntil_;

  // After login.
  bool loggedIn_ = false;
  std::string displayName_;
  std::vector<Desktop> desktops_;
  bool listLoaded_ = false;
  std::size_t selected_ = 0;
  ListFocus listFocus_ = ListFocus::kList;
  Instant lastInput_{};

  // Connecting and the session.
  std::int64_t currentId_ = 0;
  bool opening_ = false;
  bool menuOpen_ = false;
  std::size_t menuIndex_ = 0;
  bool usbOpen_ = false;
  std::size_t usbIndex_ = 0;
  std::vector<UsbDevice> usbDevices_;
  std::string usbPolicy_ = "none";
  std::set<std::uint32_t> held_;  // scancodes pressed in the guest
  std::uint32_t buttons_ = 0;     // mouse buttons pressed in the guest (SendMouse's mask)

  // Retries: the broker (kTrouble) and the SPICE link (kReconnecting).
  bool trying_ = false;
  int attempts_ = 0;
  std::optional<Instant> retryAt_;
  Instant troubleSince_{};
  std::optional<Instant> countdownEnd_;
};

}  // namespace aula::greeter
