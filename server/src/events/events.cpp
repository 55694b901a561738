// The event bus behind /api/v1/events.
#include "aula/broker/events.hpp"

#include <algorithm>

namespace aula::broker {

namespace {

std::uint64_t nowMicroseconds() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

void EventBus::deliver(Event event) {
  {
    std::lock_guard lock(mutex_);
    lastId_ = std::max(lastId_ + 1, nowMicroseconds());
    event.id = lastId_;
    events_.push_back(std::move(event));
    while (events_.size() > history_)
      events_.pop_front();
  }
  changed_.notify_all();
}

void EventBus::publish(Event event) {
  std::function<void(const Event&)> relay;
  {
    std::lock_guard lock(relayMutex_);
    relay = relay_;
  }
  if (!relay) {
    deliver(std::move(event));
    return;
  }
  deliver(event);
  relay(event);
}

void EventBus::setRelay(std::function<void(const Event&)> relay) {
  std::lock_guard lock(relayMutex_);
  relay_ = std::move(relay);
}

std::vector<Event> EventBus::waitAfter(std::uint64_t after, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return closed_ || lastId_ > after; });
  std::vector<Event> out;
  for (const auto& e : events_) {
    if (e.id > after)
      out.push_back(e);
  }
  return out;
}

std::uint64_t EventBus::lastId() const {
  std::lock_guard lock(mutex_);
  return lastId_;
}

bool EventBus::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

void EventBus::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

}  // namespace aula::broker
