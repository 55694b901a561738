// Pools and hosts, and what their agents report: heartbeats, lifecycle
// events, and hosts that fell silent.
#pragma once

#include <cstdint>

#include "aula/broker/context.hpp"

namespace aula::broker {

class HostService {
 public:
  explicit HostService(BrokerContext& ctx) : ctx_(ctx) {}

  Result<Json> listPools(const Actor& actor);
  Result<Json> createPool(const Actor& actor, const Json& body);
  Status deletePool(const Actor& actor, std::int64_t id);

  Result<Json> list(const Actor& actor);
  Result<Json> get(const Actor& actor, std::int64_t id);
  // What the host's agent last reported of its PCI devices: host, kind,
  // reported_at (null before any report), iommu_groups and devices.
  Result<Json> devices(const Actor& actor, std::int64_t id);
  Result<Json> create(const Actor& actor, const Json& body);
  Result<Json> update(const Actor& actor, std::int64_t id, const Json& body);
  Status remove(const Actor& actor, std::int64_t id);

  // The agent's heartbeat (the API authenticates it by certificate).
  Status recordHeartbeat(std::int64_t hostId, const Json& load);
  // Lifecycle events from a host's agent ({"events": [{domain, desktop_id,
  // event, detail, at}]}): a desktop that stopped or crashed on its own is
  // marked stopped, one started outside the broker running. Events for
  // desktops the broker is starting or stopping itself change nothing.
  Status recordAgentEvents(std::int64_t hostId, const Json& body);
  // Marks hosts silent for longer than hostLostAfter as lost; returns how many.
  Result<int> markLost();

 private:
  BrokerContext& ctx_;
};

}  // namespace aula::broker
