// The greeter's two partners as interfaces of our own: the broker (HTTPS
// JSON, pinned to the CA fingerprint) and the desktop's session (SPICE). The
// runtime calls them as the state machine's effects say, and turns what they
// report into its events; tests put fakes here.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/http_client.hpp"
#include "aula/greeter/greeter.hpp"
#include "aula/greeter/output.hpp"

namespace aula::greeter {

// Calls block: the runtime makes them on a worker thread, one at a time.
// Each returns the event the state machine takes.
class Broker {
 public:
  virtual ~Broker() = default;
  virtual Event probe() = 0;  // BrokerReady or BrokerFailed
  virtual Event logIn(std::string_view username,
                      const Secret& password) = 0;  // LoggedIn, LoginRefused
  virtual Event listDesktops() = 0;                 // DesktopsListed or RequestFailed
  virtual Event console(std::int64_t desktopId,
                        bool resume) = 0;          // ConsoleReady, ConsoleRefused, DesktopChanged
  virtual Event stop(std::int64_t desktopId) = 0;  // DesktopChanged or RequestFailed
  virtual void logOut() = 0;
  // Follows the broker's event stream until `keepGoing` says stop or the
  // stream ends (an Error when it could not be read): desktop changes come
  // as DesktopChanged, a reload after a gap as DesktopsListed, the end of
  // the session as RequestFailed. Called on a thread of its own, alongside
  // the other calls.
  virtual Status watch(const std::function<void(Event)>& onEvent,
                       const std::function<bool()>& keepGoing) = 0;
};

// The guest's screen as the session holds it: 32-bit xRGB, as Canvas.
struct Frame {
  const std::uint32_t* pixels = nullptr;
  int width = 0;
  int height = 0;
  int stride = 0;  // bytes per row
};

class Session {
 public:
  struct Listener {
    std::function<void()> opened;
    std::function<void(SessionEnd, std::string)> ended;
    // Part of the guest's screen changed; `frame` is valid during the call.
    std::function<void(const Frame&, Rect)> drawn;
    // A USB device was plugged in, pulled out, or moved.
    std::function<void(std::vector<UsbDevice>)> usb;
  };
  virtual ~Session() = default;
  // Connects; the listener hears how it goes. Closing first if one is open.
  virtual void open(const Console& console, Listener listener) = 0;
  virtual void close() = 0;
  virtual void key(std::uint32_t scancode, bool pressed) = 0;
  // The mouse, its x and y on the guest's screen, with the buttons held
  // after it (SendMouse's mask). Where the guest's own pointer is wanted
  // (SPICE's client mouse mode: the SPICE agent or a USB tablet in the
  // guest) the position goes; otherwise the motion.
  virtual void mouse(const Mouse& mouse, std::uint32_t buttons) = 0;
  virtual void ctrlAltDel() = 0;
  // The USB devices plugged into this PC, and where each is.
  virtual std::vector<UsbDevice> usbDevices() = 0;
  // Moves a device (UsbDevice::id) to the desktop or back to this PC; the
  // listener's `usb` hears the outcome.
  virtual void shareUsb(const std::string& id, bool share) = 0;
  // The guest's whole screen as it is now, if the session has one.
  virtual std::optional<Frame> frame() = 0;
};

// The broker over HTTPS: the URL (https://host:port) and the SHA-256
// fingerprint of its CA, which every connection is pinned to. `buildTime` is
// when this greeter was built (seconds since the epoch): a PC whose clock is
// earlier than that has a wrong clock, whatever TLS says.
struct BrokerAddress {
  std::string url;
  std::string caFingerprint;
  std::string caPem;  // instead of the fingerprint (aula-greeter --ca-file)
};

class HttpBroker final : public Broker {
 public:
  explicit HttpBroker(BrokerAddress address, std::int64_t buildTime = 0);
  Event probe() override;
  Event logIn(std::string_view username, const Secret& password) override;
  Event listDesktops() override;
  Event console(std::int64_t desktopId, bool resume) override;
  Event stop(std::int64_t desktopId) override;
  void logOut() override;
  Status watch(const std::function<void(Event)>& onEvent,
               const std::function<bool()>& keepGoing) override;

 private:
  Result<http::Response> call(std::string_view method, const std::string& path,
                              std::string body = {});

  BrokerAddress address_;
  std::int64_t buildTime_;
  http::Client client_;
  http::Client streamClient_;  // the watcher's own: a Client serves one thread
  std::mutex tokenMutex_;
  Secret token_;
  // The number the broker gave each console we got (worker thread only).
  std::map<std::int64_t, std::int64_t> consoleNumbers_;
};

// Reads server-sent events: feed() takes chunks as they come and returns
// each whole event (its `event:` name and `data:` lines).
class EventStreamParser {
 public:
  struct Message {
    std::string event;
    std::string data;
  };
  std::vector<Message> feed(std::string_view chunk);

 private:
  std::string buffer_;
};

// What one event of the broker's stream means to the greeter, if anything.
std::optional<Event> eventOf(const EventStreamParser::Message& message);

// How the broker's answers read as events, for HttpBroker and its tests.
namespace answers {
Event probe(const Result<http::Response>& answer, std::int64_t now, std::int64_t buildTime);
Event login(const Result<http::Response>& answer);
Event desktops(const Result<http::Response>& answer);
Event console(const Result<http::Response>& answer, std::int64_t desktopId);
Event stopped(const Result<http::Response>& answer);
}  // namespace answers

}  // namespace aula::greeter
