// Boot hosts: which machine (by MAC address) network-boots what.
#pragma once

#include <string_view>

#include "aula/broker/context.hpp"

namespace aula::broker {

class BootHostService {
 public:
  explicit BootHostService(BrokerContext& ctx) : ctx_(ctx) {}

  Result<Json> list(const Actor& actor);
  Result<Json> put(const Actor& actor, std::string_view mac, const Json& body);
  Status remove(const Actor& actor, std::string_view mac);

 private:
  BrokerContext& ctx_;
};

}  // namespace aula::broker
