// Joins this broker's event bus to the buses of every other broker on the
// same database, through the database's own messages (PostgreSQL's NOTIFY
// and LISTEN on the channel "aula_events"). Each event raised here goes out
// as JSON with this broker's origin; each one heard from another origin is
// delivered to the local bus, so a stream on any broker sees what every
// broker raised. When the listening connection was lost and comes back, the
// bus gets an "events.gap" notice for every stream: a client then reloads
// what it shows. SQLite has one broker, and the relay does nothing there.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "aula/broker/database.hpp"
#include "aula/broker/events.hpp"

namespace aula::broker {

class EventRelay {
 public:
  static constexpr std::string_view kChannel = "aula_events";

  // Starts listening and sets the bus's relay; stops both when destroyed,
  // which must happen before the bus or the database go.
  static Result<std::unique_ptr<EventRelay>> start(db::Database& database, EventBus& bus);
  ~EventRelay();
  EventRelay(const EventRelay&) = delete;
  EventRelay& operator=(const EventRelay&) = delete;

  // The message for an event and back (exposed for tests); an event from
  // this origin reads back as none.
  static std::string encode(const Event& event, std::string_view origin);
  static std::optional<Event> decode(std::string_view message, std::string_view ownOrigin);

 private:
  EventRelay(db::Database& database, EventBus& bus, std::string origin);
  void enqueue(std::string message);
  void send();

  db::Database& database_;
  EventBus& bus_;
  std::string origin_;
  std::unique_ptr<db::Subscription> subscription_;
  // Events go out from a thread of their own, all that queued meanwhile in
  // one round trip: raising one never waits for the database.
  std::mutex mutex_;
  std::condition_variable queued_;
  std::vector<std::string> queue_;
  bool stopping_ = false;
  std::thread sender_;
};

}  // namespace aula::broker
