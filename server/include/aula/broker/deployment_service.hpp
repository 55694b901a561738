// Deployments: one desktop per member of a group from one template, started,
// stopped and deleted together through the DesktopService.
#pragma once

#include <cstdint>

#include "aula/broker/context.hpp"
#include "aula/broker/desktop_service.hpp"

namespace aula::broker {

class DeploymentService {
 public:
  DeploymentService(BrokerContext& ctx, DesktopService& desktops)
      : ctx_(ctx), desktops_(desktops) {}

  Result<Json> list(const Actor& actor);
  Result<Json> get(const Actor& actor, std::int64_t id);
  Result<Json> create(const Actor& actor, const Json& body);
  Result<Json> start(const Actor& actor, std::int64_t id);
  Result<Json> stop(const Actor& actor, std::int64_t id, bool force);
  Status remove(const Actor& actor, std::int64_t id);

 private:
  BrokerContext& ctx_;
  DesktopService& desktops_;
};

}  // namespace aula::broker
