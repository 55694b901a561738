// Events between brokers (see event_relay.hpp).
#include "aula/broker/event_relay.hpp"

#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"

namespace aula::broker {

namespace {

// PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
constexpr std::size_t kMaxMessage = 7999;

std::optional<std::int64_t> optId(const json::Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer())
    return std::nullopt;
  return it->get<std::int64_t>();
}

}  // namespace

std::string EventRelay::encode(const Event& event, std::string_view origin) {
  json::Json j{{"origin", origin}, {"type", event.type}, {"data", event.data}};
  if (event.ownerId)
    j["owner_id"] = *event.ownerId;
  if (event.categoryId)
    j["category_id"] = *event.categoryId;
  if (event.adminOnly)
    j["admin_only"] = true;
  if (event.everyone)
    j["everyone"] = true;
  if (event.internal)
    j["internal"] = true;
  return j.dump();
}

std::optional<Event> EventRelay::decode(std::string_view message, std::string_view ownOrigin) {
  auto j = json::Json::parse(message, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("origin") || !j["origin"].is_string() ||
      !j.contains("type") || !j["type"].is_string()) {
    log::warn("Ignoring a message on '{}' that is not an Aula event: {:.80}", kChannel, message);
    return std::nullopt;
  }
  if (j["origin"].get<std::string>() == ownOrigin)
    return std::nullopt;
  Event event;
  event.type = j["type"].get<std::string>();
  event.data = j.value("data", json::Json());
  event.ownerId = optId(j, "owner_id");
  event.categoryId = optId(j, "category_id");
  event.adminOnly = j.value("admin_only", false);
  event.everyone = j.value("everyone", false);
  event.internal = j.value("internal", false);
  return event;
}

EventRelay::EventRelay(db::Database& database, EventBus& bus, std::string origin)
    : database_(database), bus_(bus), origin_(std::move(origin)) {}

Result<std::unique_ptr<EventRelay>> EventRelay::start(db::Database& database, EventBus& bus) {
  auto origin = AULA_TRY(crypto::randomToken(12));
  std::unique_ptr<EventRelay> relay(new EventRelay(database, bus, std::move(origin)));
  auto* self = relay.get();
  relay->subscription_ = AULA_TRY(database.listen(
      std::string(kChannel),
      [self](std::string_view message) {
        if (auto event = decode(message, self->origin_))
          self->bus_.deliver(std::move(*event));
      },
      [self] {
        log::info("Listening to the other brokers' events again; some may have been missed.");
        self->bus_.deliver(Event{.type = "events.gap",
                                 .data = json::Json{{"reason", "the database connection was lost"}},
                                 .everyone = true});
      }));
  if (!relay->subscription_)
    return relay;  // one broker on this database: nobody to tell
  relay->sender_ = std::thread([self] { self->send(); });
  bus.setRelay([self](const Event& event) {
    auto message = encode(event, self->origin_);
    if (message.size() > kMaxMessage) {
      log::warn(
          "The event '{}' is too large ({} bytes) for the other brokers; only this one has it.",
          event.type, message.size());
      return;
    }
    self->enqueue(std::move(message));
  });
  return relay;
}

void EventRelay::enqueue(std::string message) {
  std::lock_guard lock(mutex_);
  queue_.push_back(std::move(message));
  queued_.notify_one();
}

void EventRelay::send() {
  std::unique_lock lock(mutex_);
  for (;;) {
    queued_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty())
      return;  // stopping, and everything raised went out
    std::vector<std::string> batch;
    batch.swap(queue_);
    lock.unlock();
    if (auto sent = database_.notifyEach(kChannel, batch); !sent) {
      log::warn("The other brokers did not hear of {} event(s): {}", batch.size(),
                sent.error().message());
    }
    lock.lock();
  }
}

EventRelay::~EventRelay() {
  bus_.setRelay({});
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queued_.notify_one();
  }
  if (sender_.joinable())
    sender_.join();
  subscription_.reset();
}

}  // namespace aula::broker
