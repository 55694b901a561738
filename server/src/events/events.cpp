// The event bus behind /api/v1/events.
#include "aula/broker/events.hpp"

namespace aula::broker {

void EventBus::publish(Event event) {
  {
    std::lock_guard lock(mutex_);
    event.id = nextId_++;
    events_.push_back(std::move(event));
    while (events_.size() > history_)
      events_.pop_front();
  }
  changed_.notify_all();
}

std::vector<Event> EventBus::waitAfter(std::uint64_t after, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return closed_ || nextId_ - 1 > after; });
  std::vector<Event> out;
  for (const auto& e : events_) {
    if (e.id > after)
      out.push_back(e);
  }
  return out;
}

std::uint64_t EventBus::lastId() const {
  std::lock_guard lock(mutex_);
  return nextId_ - 1;
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
