// The live event stream: desktop and host state changes, fanned out to
// subscribers (the greeter, admin tools) as server-sent events. Each event
// says who may see it; the API filters per subscriber. A short history lets
// a client that reconnects with Last-Event-ID catch up. With several brokers
// on one PostgreSQL, an EventRelay carries each event raised here to the
// others' buses and theirs to this one (event_relay.hpp).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "aula/common/json.hpp"

namespace aula::broker {

// json's noexcept moves and destructor call code clang-tidy cannot prove
// non-throwing.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct Event {
  std::uint64_t id = 0;  // assigned by the bus, increasing
  std::string type;      // "desktop.state", "host.state", "deployment.created", ...
  json::Json data;
  // Visibility: admins see everything; a manager sees events of their
  // category; a user sees events about what they own.
  std::optional<std::int64_t> ownerId;
  std::optional<std::int64_t> categoryId;
  bool adminOnly = false;
  // For every stream (a notice such as "events.gap"), whoever holds it.
  bool everyone = false;
  // For the broker itself, never written to a stream: "session.ended"
  // makes the streams of that user check that their session still holds.
  bool internal = false;
};

class EventBus {
 public:
  // An event's id is the wall clock in microseconds when it reached this
  // bus, or one more than the last id if that is larger: ids keep growing
  // across broker restarts, and the buses of several brokers number about
  // alike, so a client's Last-Event-ID stays meaningful on another broker.
  explicit EventBus(std::size_t history = 1024) : history_(history) {}

  // An event raised on this broker: stored, then handed to the relay.
  void publish(Event event);
  // An event another broker raised: stored only.
  void deliver(Event event);
  // Who hears of each event this broker raises (the EventRelay); empty
  // for none. Set it before events flow, or while none are published.
  void setRelay(std::function<void(const Event&)> relay);
  // Events with id > `after`, waiting up to `timeout` for the first one.
  // Returns empty on timeout or when the bus closes.
  std::vector<Event> waitAfter(std::uint64_t after, std::chrono::milliseconds timeout);
  std::uint64_t lastId() const;  // 0 before the first event
  void close();                  // wakes every waiter; used at shutdown
  bool closed() const;

 private:
  std::size_t history_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Event> events_;
  std::uint64_t lastId_ = 0;
  bool closed_ = false;
  std::mutex relayMutex_;
  std::function<void(const Event&)> relay_;
};

}  // namespace aula::broker
