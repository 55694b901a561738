// Templates: the disk images desktops are made from, who may use them, and
// the deletion of images Aula made.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aula/broker/context.hpp"

namespace aula::broker {

class TemplateService {
 public:
  explicit TemplateService(BrokerContext& ctx) : ctx_(ctx) {}

  Result<Json> list(const Actor& actor);
  Result<Json> get(const Actor& actor, std::int64_t id);
  Result<Json> create(const Actor& actor, const Json& body);
  Result<Json> update(const Actor& actor, std::int64_t id, const Json& body);
  Status remove(const Actor& actor, std::int64_t id);

 private:
  // Asks the hosts to delete a deleted template's image and audits the outcome.
  void deleteTemplateImage(const Actor& actor, std::int64_t templateId, const std::string& storage,
                           const std::string& disk, const std::vector<HostAddress>& hosts);

  BrokerContext& ctx_;
};

}  // namespace aula::broker
