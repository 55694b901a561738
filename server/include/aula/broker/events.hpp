// The live event stream: desktop and host state changes, fanned out to
// subscribers (the greeter, admin tools) as server-sent events. Each event
// says who may see it; the API filters per subscriber. A short history lets
// a client that reconnects with Last-Event-ID catch up.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "aula/common/json.hpp"

namespace aula::broker {

struct Event {
  std::uint64_t id = 0;  // assigned by the bus, increasing
  std::string type;      // "desktop.state", "host.state", "deployment.created", ...
  json::Json data;
  // Visibility: admins see everything; a manager sees events of their
  // category; a user sees events about what they own.
  std::optional<std::int64_t> ownerId;
  std::optional<std::int64_t> categoryId;
  bool adminOnly = false;
};

class EventBus {
 public:
  // Ids start at the current time in microseconds, so they keep growing
  // across broker restarts and a client's Last-Event-ID stays comparable.
  explicit EventBus(std::size_t history = 1024)
      : history_(history),
        nextId_(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count())) {}

  void publish(Event event);
  // Events with id > `after`, waiting up to `timeout` for the first one.
  // Returns empty on timeout or when the bus closes.
  std::vector<Event> waitAfter(std::uint64_t after, std::chrono::milliseconds timeout);
  std::uint64_t lastId() const;
  void close();  // wakes every waiter; used at shutdown
  bool closed() const;

 private:
  std::size_t history_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Event> events_;
  std::uint64_t nextId_;
  bool closed_ = false;
};

}  // namespace aula::broker
