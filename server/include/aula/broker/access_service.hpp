// What may be observed, and by whom: the audit log, which live events an
// actor may see, and the gauges of /metrics.
#pragma once

#include <map>
#include <string>

#include "aula/broker/context.hpp"

namespace aula::broker {

class AccessService {
 public:
  explicit AccessService(BrokerContext& ctx) : ctx_(ctx) {}

  Result<Json> listAudit(const Actor& actor, const std::map<std::string, std::string>& filter);
  // Whether `actor` may see `event` on the live stream.
  bool canSee(const Actor& actor, const Event& event) const;
  Result<Json> gauges();  // desktops by state, hosts by state, users, sessions

 private:
  BrokerContext& ctx_;
};

}  // namespace aula::broker
