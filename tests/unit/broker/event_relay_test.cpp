// EventBus numbering and relaying, and the messages EventRelay sends between
// brokers, without a database.
#include "aula/broker/event_relay.hpp"

#include <chrono>
#include <vector>

#include <gtest/gtest.h>

#include "aula/broker/events.hpp"

namespace aula::broker {
namespace {

using namespace std::chrono_literals;

TEST(EventRelayTest, AnEventReadsBackAsItWasSentByAnotherBroker) {
  Event sent{.type = "desktop.state",
             .data = json::Json{{"id", 7}, {"state", "running"}},
             .ownerId = 12,
             .categoryId = 3};
  auto message = EventRelay::encode(sent, "broker-a");
  auto heard = EventRelay::decode(message, "broker-b");
  ASSERT_TRUE(heard.has_value());
  EXPECT_EQ(heard->type, "desktop.state");
  EXPECT_EQ(heard->data, sent.data);
  EXPECT_EQ(heard->ownerId, 12);
  EXPECT_EQ(heard->categoryId, 3);
  EXPECT_FALSE(heard->adminOnly);
  EXPECT_FALSE(heard->everyone);
  EXPECT_FALSE(heard->internal);
  EXPECT_EQ(heard->id, 0u) << "the receiving bus numbers it";
}

TEST(EventRelayTest, VisibilityFlagsCrossToTheOtherBroker) {
  auto adminOnly = EventRelay::decode(
      EventRelay::encode(Event{.type = "host.state", .adminOnly = true}, "a"), "b");
  ASSERT_TRUE(adminOnly);
  EXPECT_TRUE(adminOnly->adminOnly);
  EXPECT_FALSE(adminOnly->ownerId.has_value());
  auto internal = EventRelay::decode(
      EventRelay::encode(Event{.type = "session.ended", .ownerId = 5, .internal = true}, "a"), "b");
  ASSERT_TRUE(internal);
  EXPECT_TRUE(internal->internal);
  EXPECT_EQ(internal->ownerId, 5);
}

TEST(EventRelayTest, ABrokerDoesNotHearItsOwnEventsTwice) {
  auto message = EventRelay::encode(Event{.type = "desktop.state"}, "broker-a");
  EXPECT_FALSE(EventRelay::decode(message, "broker-a").has_value());
}

TEST(EventRelayTest, WhatIsNotAnAulaEventIsIgnored) {
  for (const char* message : {"", "not json", "[1,2]", R"({"type":"desktop.state"})",
                              R"({"origin":"a"})", R"({"origin":1,"type":"x"})"}) {
    EXPECT_FALSE(EventRelay::decode(message, "b").has_value()) << message;
  }
}

TEST(EventBusTest, IdsKeepGrowingAndStartFromTheWallClock) {
  const auto before =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  EventBus bus;
  EXPECT_EQ(bus.lastId(), 0u);
  for (int i = 0; i < 100; ++i)
    bus.publish(Event{.type = "desktop.state"});
  auto events = bus.waitAfter(0, 0ms);
  ASSERT_EQ(events.size(), 100u);
  // A restarted broker numbers after what its clients last saw.
  EXPECT_GE(events.front().id, before);
  for (std::size_t i = 1; i < events.size(); ++i)
    EXPECT_GT(events[i].id, events[i - 1].id);
  EXPECT_EQ(bus.lastId(), events.back().id);
}

TEST(EventBusTest, OnlyEventsRaisedHereGoToTheRelay) {
  EventBus bus;
  std::vector<std::string> relayed;
  bus.setRelay([&](const Event& e) { relayed.push_back(e.type); });
  bus.publish(Event{.type = "raised.here"});
  bus.deliver(Event{.type = "heard.from.another"});
  EXPECT_EQ(relayed, std::vector<std::string>{"raised.here"});
  // Both reach this broker's streams, in order.
  auto events = bus.waitAfter(0, 0ms);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].type, "heard.from.another");
  EXPECT_GT(events[1].id, events[0].id);

  bus.setRelay({});
  bus.publish(Event{.type = "after"});
  EXPECT_EQ(relayed.size(), 1u);
}

}  // namespace
}  // namespace aula::broker
