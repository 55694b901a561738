// Desktops: creation within quotas, start (placement on a host), stop,
// deletion, the console descriptor, and templates made from a desktop.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "aula/broker/context.hpp"

namespace aula::broker {

class DesktopService {
 public:
  explicit DesktopService(BrokerContext& ctx) : ctx_(ctx), placer_(ctx.settings.placement) {}

  Result<Json> list(const Actor& actor, const std::map<std::string, std::string>& filter);
  Result<Json> get(const Actor& actor, std::int64_t id);
  Result<Json> create(const Actor& actor, const Json& body);
  Result<Json> start(const Actor& actor, std::int64_t id);
  Result<Json> stop(const Actor& actor, std::int64_t id, bool force);
  Status remove(const Actor& actor, std::int64_t id);
  Result<Json> console(const Actor& actor, std::int64_t id);
  // A template from a stopped desktop's disk, made by the agent of the host
  // that holds the disk ({"name", "mode", "description", "access"}); the new
  // template, as TemplateService::create() answers it.
  Result<Json> makeTemplate(const Actor& actor, std::int64_t id, const Json& body);

 private:
  bool copying(std::int64_t desktopId);

  BrokerContext& ctx_;
  Placer placer_;
  // Desktops whose disk is being made into a template: they neither start
  // nor go away until the copy is done.
  std::mutex copyingMutex_;
  std::set<std::int64_t> copying_;
};

}  // namespace aula::broker
