// Desktops: creation within quotas, start (placement on a host), stop,
// deletion, the console descriptor, and templates made from a desktop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "aula/broker/context.hpp"
#include "aula/broker/desktop_state.hpp"

namespace aula::broker {

class DesktopService {
 public:
  explicit DesktopService(BrokerContext& ctx) : ctx_(ctx), placer_(ctx.settings.placement) {}

  Result<Json> list(const Actor& actor, const std::map<std::string, std::string>& filter);
  // The same, inside a read transaction the caller holds.
  Result<Json> list(db::Transaction& tx, const Actor& actor,
                    const std::map<std::string, std::string>& filter);
  Result<Json> get(const Actor& actor, std::int64_t id);
  Result<Json> create(const Actor& actor, const Json& body);
  Result<Json> start(const Actor& actor, std::int64_t id);
  // Starts many desktops (a deployment's) together: one transaction plans
  // them all, then the agents start them a few at a time. Returns each one's
  // outcome, in the order of `ids`. `authorized`: the caller has checked
  // that the actor may start every one of them.
  std::vector<Status> startMany(const Actor& actor, const std::vector<std::int64_t>& ids,
                                bool authorized);
  // Which desktops to start, read inside the planning transaction (a
  // deployment's desktops): the list and the plan are one snapshot, and one
  // transaction instead of two. An error starts none.
  using StartSelection = std::function<Result<std::vector<std::int64_t>>(db::Transaction&)>;
  struct StartOutcome {
    std::int64_t id = 0;
    Status status;
  };
  // The same as startMany, for the desktops `select` names; each one's
  // outcome, in its order.
  Result<std::vector<StartOutcome>> startSelected(const Actor& actor, const StartSelection& select,
                                                  bool authorized);
  Result<Json> stop(const Actor& actor, std::int64_t id, bool force);
  Status remove(const Actor& actor, std::int64_t id);
  Result<Json> console(const Actor& actor, std::int64_t id);
  // A template from a stopped desktop's disk, made by the agent of the host
  // that holds the disk ({"name", "mode", "description", "access"}); the new
  // template, as TemplateService::create() answers it.
  Result<Json> makeTemplate(const Actor& actor, std::int64_t id, const Json& body);

 private:
  struct StartPlan;
  Result<std::vector<StartPlan>> planStarts(const Actor& actor, const StartSelection& select,
                                            bool authorized);
  void runStarts(std::vector<StartPlan>& plans);
  void recordStarts(const std::vector<StartPlan*>& go,
                    const std::vector<std::optional<Result<Observed>>>& answers,
                    const std::vector<std::size_t>& batch, const StateTiming& timing);
  void giveBack(StartPlan& plan);
  bool copying(std::int64_t desktopId);

  BrokerContext& ctx_;
  Placer placer_;
  // Desktops whose disk is being made into a template: they neither start
  // nor go away until the copy is done.
  std::mutex copyingMutex_;
  std::set<std::int64_t> copying_;
};

}  // namespace aula::broker
