// Desktops: creation within quotas, start with placement, stop, deletion,
// the console descriptor.
#include "aula/broker/desktop_service.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "aula/common/log.hpp"

#include "core/policy.hpp"
#include "core/state_store.hpp"
#include "desktops/desktop_rows.hpp"
#include "org/quota_rules.hpp"
#include "templates/template_rows.hpp"

namespace aula::broker {

using namespace detail;

Result<Json> DesktopService::list(const Actor& actor,
                                  const std::map<std::string, std::string>& filter) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead,
                                     [&](db::Transaction& tx) { return list(tx, actor, filter); });
}

Result<Json> DesktopService::list(db::Transaction& tx, const Actor& actor,
                                  const std::map<std::string, std::string>& filter) {
  std::string sql = std::string(kDesktopSelect) + " WHERE ";
  db::Params params;
  auto scope = filter.contains("scope") ? filter.at("scope") : std::string("mine");
  if (scope == "mine") {
    sql += "d.owner_id = ?";
    params.push_back(actor.userId);
  } else if (scope == "all" && actor.role == Role::kAdmin) {
    sql += "1 = 1";
  } else if (scope == "all" && actor.role == Role::kManager) {
    sql +=
        "(u.category_id = ? OR d.owner_id IN (SELECT m.user_id FROM group_members m JOIN groups_ "
        "g ON "
        "g.id = m.group_id WHERE g.category_id = ?))";
    params.push_back(actor.categoryId.value_or(-1));
    params.push_back(actor.categoryId.value_or(-1));
  } else if (scope == "all") {
    return forbidden();
  } else {
    return makeError(Errc::kInvalidArgument, "The scope '{}' is not 'mine' or 'all'.",
                     scope.substr(0, 40));
  }
  if (auto it = filter.find("state"); it != filter.end()) {
    sql += " AND d.state = ?";
    params.push_back(it->second);
  }
  if (auto it = filter.find("deployment_id"); it != filter.end()) {
    sql += " AND d.deployment_id = ?";
    params.push_back(std::int64_t{std::atoll(it->second.c_str())});
  }
  if (auto it = filter.find("owner_id"); it != filter.end()) {
    sql += " AND d.owner_id = ?";
    params.push_back(std::int64_t{std::atoll(it->second.c_str())});
  }
  sql += " ORDER BY d.id";
  auto rows = AULA_TRY(tx.query(sql, params));
  Json out = Json::array();
  for (const auto& r : rows)
    out.push_back(desktopJson(r));
  return out;
}

Result<Json> DesktopService::get(const Actor& actor, std::int64_t id) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
    // Someone else's desktop is "not found", not "forbidden": ids are not probed.
    if (rows.empty() ||
        !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(DesktopCol::kOwnerId), true))) {
      return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
    }
    return desktopJson(rows[0]);
  });
}

Result<Json> DesktopService::create(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"name", "template_id", "persistent", "owner_id"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("desktop", name));
  auto templateId = AULA_TRY(json::getInt(body, "template_id"));
  auto persistent = AULA_TRY(optBool(body, "persistent")).value_or(true);
  auto ownerId = AULA_TRY(optInt(body, "owner_id")).value_or(actor.userId);
  auto now = unixNow(ctx_.clock);
  std::optional<std::int64_t> createdCategory;
  auto created =
      ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
        if (!AULA_TRY(mayActOnUser(tx, actor, ownerId, true)))
          return forbidden();
        auto ownerCategory = AULA_TRY(userCategory(tx, ownerId));
        createdCategory = ownerCategory;
        auto trows =
            AULA_TRY(tx.query(std::string(kTemplateSelect) + " WHERE t.id = ?", {templateId}));
        Actor ownerView = actor;
        if (ownerId != actor.userId) {
          auto o = AULA_TRY(
              tx.queryOne("SELECT role, username FROM users WHERE id = ?", {ownerId}, "gone"));
          ownerView = Actor{.userId = ownerId,
                            .username = o.text(1),
                            .role = parseRole(o.text(0)).value_or(Role::kUser),
                            .categoryId = ownerCategory};
        }
        if (trows.empty() || !AULA_TRY(templateUsable(tx, ownerView, ownerId, ownerCategory,
                                                      templateOf(trows[0])))) {
          return makeError(Errc::kNotFound,
                           "There is no template with id {} that this user may use.", templateId);
        }
        auto t = templateOf(trows[0]);
        if (!t.enabled)
          return makeError(Errc::kConflict, "The template '{}' is disabled.", t.name);
        AULA_TRY_STATUS(
            checkQuotas(tx, ownerId, QuotaCheck::kCreate, t.vcpus, t.memoryMb, t.diskGb, false));
        auto rows = tx.query(
            "INSERT INTO desktops (name, owner_id, template_id, persistent, vcpus, memory_mb, "
            "disk_gb, base_storage, base_disk, template_version, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            {name, ownerId, templateId, std::int64_t{persistent ? 1 : 0}, t.vcpus, t.memoryMb,
             t.diskGb, t.storage, t.baseDisk, t.version, now});
        if (!rows && rows.error().code() == Errc::kAlreadyExists) {
          return makeError(Errc::kAlreadyExists,
                           "A desktop named '{}' exists already for this user.", name);
        }
        auto id = AULA_TRY(std::move(rows))[0].integer(0);
        AULA_TRY(tx.exec("UPDATE desktops SET disk_path = ? WHERE id = ?",
                         {fmt::format("{}/{}.qcow2", ownerId, id), id}));
        AULA_TRY_STATUS(
            audit(tx, actor, now, "desktop.create", fmt::format("desktop:{}", id),
                  Json{{"name", name}, {"owner_id", ownerId}, {"template_id", templateId}}));
        auto row =
            AULA_TRY(tx.queryOne(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}, "gone"));
        return desktopJson(row);
      });
  if (created) {
    ctx_.events.publish(Event{.type = "desktop.created",
                              .data = *created,
                              .ownerId = ownerId,
                              .categoryId = createdCategory});
  }
  return created;
}

namespace {

// Columns of kHostCandidates, in its order.
enum CandidateCol : std::size_t {
  kId,
  kName,
  kPoolId,
  kState,
  kCpus,
  kMemoryMb,
  kCpuIdle,
  kFreeMemoryMb,
  kVcpuRatioLimit,
  kAllocatedVcpus,
  kAddress,
  kStorage,
  kAgentPort,
  kSpiceSubject
};

// Every hypervisor with its load. Allocated vCPUs count running desktops
// only: starts in flight are the Placer's to count, so none is counted twice.
constexpr const char* kHostCandidates =
    "SELECT h.id, h.name, h.pool_id, h.state, h.cpus, h.memory_mb, h.cpu_idle, h.free_memory_mb, "
    "COALESCE(h.vcpu_ratio_limit, 0), (SELECT CAST(COALESCE(SUM(d.vcpus), 0) AS BIGINT) FROM "
    "desktops d WHERE d.host_id = h.id AND d.state = 'running'), h.address, h.storage, "
    "h.agent_port, h.spice_subject FROM hosts h WHERE h.kind = 'hypervisor'";

struct Hosts {
  std::vector<HostCandidate> candidates;
  std::map<std::int64_t, HostAddress> addresses;
};

Hosts hostsOf(const std::vector<db::Row>& rows) {
  Hosts out;
  for (const auto& h : rows) {
    const auto id = h.integer(CandidateCol::kId);
    out.candidates.push_back(
        HostCandidate{.id = id,
                      .name = h.text(CandidateCol::kName),
                      .poolId = h.integer(CandidateCol::kPoolId),
                      .online = h.text(CandidateCol::kState) == "online",
                      .cpus = h.integer(CandidateCol::kCpus),
                      .memoryMb = h.integer(CandidateCol::kMemoryMb),
                      .cpuIdle = h.real(CandidateCol::kCpuIdle),
                      .freeMemoryMb = h.integer(CandidateCol::kFreeMemoryMb),
                      .allocatedVcpus = h.integer(CandidateCol::kAllocatedVcpus),
                      .vcpuRatioLimit = h.real(CandidateCol::kVcpuRatioLimit)});
    // Free space per named storage, as the host's last heartbeat reported it.
    auto storage = json::parse(h.text(CandidateCol::kStorage));
    if (storage && storage->is_object()) {
      for (const auto& [name, free] : storage->items()) {
        if (free.is_number())
          out.candidates.back().freeStorageGb[name] = free.get<std::int64_t>();
      }
    }
    out.addresses[id] =
        HostAddress{.id = id,
                    .name = h.text(CandidateCol::kName),
                    .address = h.text(CandidateCol::kAddress),
                    .agentPort = h.integer(CandidateCol::kAgentPort),
                    .spiceSubject = h.optText(CandidateCol::kSpiceSubject).value_or("")};
  }
  return out;
}

}  // namespace

// One desktop's part of a batch of starts.
struct DesktopService::StartPlan {
  std::int64_t id = 0;
  Status outcome;  // an error: this desktop does not start
  bool alreadyRunning = false;
  DesktopRow desktop;
  HostAddress host;
  PlacementRequest request;
  StateRow state;
  bool reserved = false;  // the Placer holds `request` on `host`
};

void DesktopService::giveBack(StartPlan& plan) {
  if (plan.reserved)
    placer_.release(plan.host.id, plan.request);
  plan.reserved = false;
}

// Plans every start in one exclusive transaction: starts on several brokers
// queue for the placement instead of failing each other's serializable
// transactions and retrying, and a deployment pays for one transaction and
// a few round trips, not a dozen per desktop.
Result<std::vector<DesktopService::StartPlan>> DesktopService::planStarts(
    const Actor& actor, const StartSelection& select, bool authorized) {
  auto now = unixNow(ctx_.clock);
  const auto timing = stateTiming(ctx_.settings);
  // The Placer's reservations. A PostgreSQL retry runs the body below again,
  // and a failed COMMIT passes none of its error paths: each run gives back
  // the last run's, and the ones left are given back once the desktops'
  // states in the database count them instead.
  std::vector<StartPlan> plans;
  auto giveBackAll = [&] {
    for (auto& p : plans)
      giveBack(p);
  };
  auto planned = ctx_.db.transact(db::TxMode::kExclusive, [&](db::Transaction& tx) -> Status {
    giveBackAll();
    plans.clear();
    const auto ids = AULA_TRY(select(tx));
    if (ids.empty())
      return {};
    // What every start needs, in one round trip on PostgreSQL: the desktops,
    // their states, their templates' pools and their owners' totals.
    auto in = db::inIds(tx.dialect(), ids);
    auto ofDesktops = [&](std::string_view column) {
      return fmt::format("IN (SELECT {} FROM desktops WHERE id {})", column, in.sql);
    };
    auto read = AULA_TRY(
        tx.queryAll({{std::string(kDesktopSelect) + " WHERE d.id " + in.sql, in.params},
                     statesQuery(tx.dialect(), ids),
                     {"SELECT template_id, pool_id FROM template_pools WHERE template_id " +
                          ofDesktops("template_id"),
                      in.params},
                     totalLimitsQuery(ofDesktops("owner_id"), in.params)}));
    const auto& rows = read[0];
    std::map<std::int64_t, const db::Row*> byId;
    std::vector<std::int64_t> owners;
    for (const auto& r : rows) {
      byId[r.integer(DesktopCol::kId)] = &r;
      owners.push_back(r.integer(DesktopCol::kOwnerId));
    }
    auto states = AULA_TRY(statesOf(read[1]));
    std::map<std::int64_t, std::vector<std::int64_t>> templatePools;
    for (const auto& r : read[2])
      templatePools[r.integer(0)].push_back(r.integer(1));
    StartAdmission admission(tx);
    admission.prefetched(totalLimitsByUser(read[3]), owners);
    // Then, if any of them is to start, what placing them needs: the usage
    // under their owners' totals and every host's load, in one more.
    std::vector<std::int64_t> starters;
    for (auto id : ids) {
      auto found = byId.find(id);
      auto state = states.find(id);
      if (found != byId.end() && state != states.end() &&
          decide(state->second.record, Observation{.what = Happening::kStartRequested, .at = now},
                 timing)
              .changed()) {
        starters.push_back(found->second->integer(DesktopCol::kOwnerId));
      }
    }
    std::optional<Hosts> hosts;
    if (!starters.empty()) {
      auto reads = admission.usageQueries(starters);
      reads.push_back({kHostCandidates, {}});
      auto placing = AULA_TRY(tx.queryAll(reads));
      hosts = hostsOf(placing.back());
      placing.pop_back();
      admission.usagesRead(placing);
    }
    std::vector<std::pair<StateRow, Transition>> transitions;
    std::vector<std::pair<std::string, Json>> audits;
    for (auto id : ids) {
      auto& p = plans.emplace_back(StartPlan{.id = id});
      auto found = byId.find(id);
      // Someone else's desktop is "not found", not "forbidden": ids are not probed.
      if (found == byId.end() || !states.contains(id) ||
          (!authorized && !AULA_TRY(mayActOnUser(
                              tx, actor, found->second->integer(DesktopCol::kOwnerId), true)))) {
        p.outcome = makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
        continue;
      }
      const auto& row = *found->second;
      p.desktop = desktopOf(row);
      p.state = states.at(id);
      auto asked = decide(p.state.record,
                          Observation{.what = Happening::kStartRequested, .at = now}, timing);
      if (asked.verdict == Verdict::kRefused) {
        p.outcome = makeError(Errc::kConflict,
                              "The desktop '{}' is stopping; start it again when it has stopped.",
                              p.desktop.name);
        continue;
      }
      if (!asked.changed()) {
        p.alreadyRunning = true;
        continue;
      }
      if (copying(id)) {
        p.outcome = makeError(Errc::kConflict,
                              "The desktop '{}' is being made into a template; start it when "
                              "that is done.",
                              p.desktop.name);
        continue;
      }
      // Teacher deployments are handed out, not asked for: the student's own
      // limits do not block them, the group's and category's totals do.
      auto deployment = row.optInteger(DesktopCol::kDeploymentId);
      if (auto fits = admission.admit(p.desktop.ownerId, p.desktop.spec.vcpus,
                                      p.desktop.spec.memoryMb, deployment.has_value());
          !fits) {
        p.outcome = std::move(fits).error();
        continue;
      }
      p.request.vcpus = p.desktop.spec.vcpus;
      p.request.memoryMb = p.desktop.spec.memoryMb;
      // A desktop without a disk on a host yet (first start, or any start of
      // a non-persistent one) needs room for its overlay to grow to full size.
      if (!p.desktop.spec.persistent || !p.desktop.hostId) {
        p.request.storage = "desktops";
        p.request.diskGb = row.integer(DesktopCol::kDiskGb);
      }
      if (auto pools = templatePools.find(p.desktop.templateId); pools != templatePools.end())
        p.request.pools = pools->second;
      if (!hosts)
        hosts = hostsOf(AULA_TRY(tx.query(kHostCandidates)));
      std::vector<HostCandidate> candidates;
      for (const auto& c : hosts->candidates) {
        // A persistent desktop's disk lives on the host that made it.
        if (!(p.desktop.spec.persistent && p.desktop.hostId && c.id != *p.desktop.hostId))
          candidates.push_back(c);
      }
      auto hostId = placer_.place(std::move(candidates), p.request);
      if (!hostId) {
        p.outcome = std::move(hostId).error();
        continue;
      }
      p.reserved = true;
      p.host = hosts->addresses.at(*hostId);
      auto starting = decide(
          p.state.record,
          Observation{.what = Happening::kStartRequested, .at = now, .hostId = *hostId}, timing);
      transitions.emplace_back(p.state, starting);
      p.state.record = starting.record;
      audits.emplace_back(fmt::format("desktop:{}", id), Json{{"host", p.host.name}});
    }
    AULA_TRY_STATUS(storeTransitions(tx, transitions));
    return auditEach(tx, actor, now, "desktop.start", audits);
  });
  if (!planned) {
    giveBackAll();
    return planned.error();
  }
  return plans;
}

// Asks the agents to start the planned desktops, a few at a time, and
// records what each agent answered.
void DesktopService::runStarts(std::vector<StartPlan>& plans) {
  const StateTiming timing = stateTiming(ctx_.settings);
  std::vector<StartPlan*> go;
  std::vector<StateChange> starting;
  for (auto& p : plans) {
    if (!p.outcome || p.alreadyRunning)
      continue;
    go.push_back(&p);
    starting.push_back(StateChange{.id = p.id,
                                   .state = DesktopState::kStarting,
                                   .hostId = p.host.id,
                                   .ownerId = p.desktop.ownerId,
                                   .categoryId = p.desktop.ownerCategory});
  }
  publishChanges(ctx_.events, starting, "a start");
  if (go.empty())
    return;
  // A few agents' calls at a time; the answers are recorded as they come,
  // all that came meanwhile in one transaction, so that a slow host holds
  // up nobody else's desktop and a quick crowd costs few transactions.
  constexpr std::size_t kParallel = 8;
  std::vector<std::optional<Result<Observed>>> answers(go.size());
  std::mutex mutex;
  std::condition_variable arrived;
  std::vector<std::size_t> ready;
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next++; i < go.size(); i = next++) {
      ctx_.counters.desktopStarts++;
      auto answer = ctx_.hosts.startDesktop(go[i]->host, go[i]->desktop.spec);
      std::lock_guard lock(mutex);
      answers[i] = std::move(answer);
      ready.push_back(i);
      arrived.notify_one();
    }
  };
  std::vector<std::jthread> workers;
  for (std::size_t w = 0; w < std::min(kParallel, go.size()); ++w)
    workers.emplace_back(worker);
  for (std::size_t done = 0; done < go.size();) {
    std::vector<std::size_t> batch;
    {
      std::unique_lock lock(mutex);
      arrived.wait(lock, [&] { return !ready.empty(); });
      batch.swap(ready);
    }
    done += batch.size();
    recordStarts(go, answers, batch, timing);
  }
}

// Records the agents' answers to the starts `batch` (indexes into `go`).
void DesktopService::recordStarts(const std::vector<StartPlan*>& go,
                                  const std::vector<std::optional<Result<Observed>>>& answers,
                                  const std::vector<std::size_t>& batch,
                                  const StateTiming& timing) {
  auto after = unixNow(ctx_.clock);
  std::vector<StateChange> changes;
  // Exclusive, as the plans are: the Placer lets go of the starts' room
  // inside it, so a plan sees each start counted once, by the Placer until
  // this commits and by the 'running' rows after. (Let go after the commit,
  // a plan in between counted it twice and refused a start that fitted.)
  auto recorded = ctx_.db.transact(db::TxMode::kExclusive, [&](db::Transaction& tx) -> Status {
    changes.clear();
    std::vector<std::int64_t> ids;
    ids.reserve(batch.size());
    for (auto i : batch)
      ids.push_back(go[i]->id);
    auto rows = AULA_TRY(loadStates(tx, ids));
    std::vector<std::pair<StateRow, Transition>> transitions;
    for (auto i : batch) {
      auto row = rows.find(go[i]->id);
      if (row == rows.end())
        continue;  // deleted meanwhile
      const auto& started = *answers[i];
      Observation answer{.what = started ? Happening::kStartSucceeded : Happening::kStartFailed,
                         .at = after,
                         .hostId = go[i]->host.id,
                         .seq = started ? started->seq : 0};
      auto t = decide(row->second.record, answer, timing);
      if (t.changed())
        changes.push_back(changeOf(row->second, t));
      transitions.emplace_back(row->second, t);
    }
    AULA_TRY_STATUS(storeTransitions(tx, transitions));
    for (auto i : batch)
      giveBack(*go[i]);
    return {};
  });
  // A failed record gives the room back all the same: the next heartbeat
  // says what runs.
  for (auto i : batch)
    giveBack(*go[i]);
  if (!recorded) {
    for (auto i : batch)
      go[i]->outcome = recorded.error();
    return;
  }
  publishChanges(ctx_.events, changes, "the agents' answers to starts");
  for (auto i : batch) {
    const auto& started = *answers[i];
    if (started)
      continue;
    auto& p = *go[i];
    ctx_.counters.desktopStartFailures++;
    log::warn("Desktop {} did not start on host '{}': {}", p.id, p.host.name,
              started.error().message());
    p.outcome =
        Error(Errc::kUnavailable, fmt::format("The desktop could not start on host '{}': {}",
                                              p.host.name, started.error().message()));
  }
}

std::vector<Status> DesktopService::startMany(const Actor& actor,
                                              const std::vector<std::int64_t>& ids,
                                              bool authorized) {
  if (ids.empty())
    return {};
  auto outcomes = startSelected(
      actor, [&](db::Transaction&) -> Result<std::vector<std::int64_t>> { return ids; },
      authorized);
  if (!outcomes)
    return std::vector<Status>(ids.size(), outcomes.error());
  std::vector<Status> out;
  out.reserve(outcomes->size());
  for (auto& o : *outcomes)
    out.push_back(std::move(o.status));
  return out;
}

Result<std::vector<DesktopService::StartOutcome>> DesktopService::startSelected(
    const Actor& actor, const StartSelection& select, bool authorized) {
  auto plans = AULA_TRY(planStarts(actor, select, authorized));
  runStarts(plans);
  std::vector<StartOutcome> out;
  out.reserve(plans.size());
  for (auto& p : plans)
    out.push_back(StartOutcome{.id = p.id, .status = std::move(p.outcome)});
  return out;
}

Result<Json> DesktopService::start(const Actor& actor, std::int64_t id) {
  auto outcome = startMany(actor, {id}, false);
  AULA_TRY_STATUS(std::move(outcome.front()));
  return get(actor, id);
}

Result<Json> DesktopService::stop(const Actor& actor, std::int64_t id, bool force) {
  auto now = unixNow(ctx_.clock);
  const auto timing = stateTiming(ctx_.settings);
  struct Plan {
    DesktopRow desktop;
    bool stopping = false;  // false: stopped already
  };
  auto plan =
      ctx_.db.transactValue<Plan>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Plan> {
        auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
        if (rows.empty() ||
            !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(DesktopCol::kOwnerId), true))) {
          return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
        }
        Plan p{desktopOf(rows[0]), false};
        auto row = AULA_TRY(loadState(tx, id)).value();
        auto t = decide(
            row.record,
            Observation{.what = force ? Happening::kForceStopRequested : Happening::kStopRequested,
                        .at = now},
            timing);
        if (t.verdict == Verdict::kRefused)
          return makeError(Errc::kConflict, "The desktop '{}' is already stopping.",
                           p.desktop.name);
        if (!t.changed())
          return p;
        AULA_TRY_STATUS(storeTransition(tx, row, t));
        AULA_TRY_STATUS(audit(tx, actor, now, force ? "desktop.poweroff" : "desktop.stop",
                              fmt::format("desktop:{}", id)));
        p.stopping = true;
        return p;
      });
  if (!plan)
    return plan.error();
  auto& d = plan->desktop;
  if (!plan->stopping)
    return get(actor, id);
  publishChanges(ctx_.events,
                 {StateChange{.id = id,
                              .state = DesktopState::kStopping,
                              .hostId = d.hostId,
                              .ownerId = d.ownerId,
                              .categoryId = d.ownerCategory}},
                 force ? "a power-off" : "a stop");
  Result<Observed> stopped = Observed{};
  if (d.hostId)
    stopped = ctx_.hosts.stopDesktop(hostOf(d), d.spec, force);
  std::vector<StateChange> changes;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    changes.clear();
    auto row = AULA_TRY(loadState(tx, id));
    if (!row)
      return {};
    // Unconfirmed, the desktop may still run: the state machine says what
    // it is until the next heartbeat knows.
    Observation answer{.what = stopped ? Happening::kStopSucceeded : Happening::kStopFailed,
                       .at = unixNow(ctx_.clock),
                       .hostId = d.hostId,
                       .seq = stopped ? stopped->seq : 0};
    auto t = decide(row->record, answer, timing);
    AULA_TRY_STATUS(storeTransition(tx, *row, t));
    if (t.changed())
      changes.push_back(changeOf(*row, t));
    return {};
  }));
  publishChanges(ctx_.events, changes, stopped ? "the agent's stop" : "an unconfirmed stop");
  if (!stopped)
    return stopped.error().context("The desktop could not be stopped.");
  return get(actor, id);
}

Status DesktopService::remove(const Actor& actor, std::int64_t id) {
  auto current = get(actor, id);
  if (!current)
    return current.error();
  if ((*current)["state"] != "stopped")
    AULA_TRY(stop(actor, id, true));
  auto now = unixNow(ctx_.clock);
  std::optional<DesktopRow> removed;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto d = AULA_TRY(loadDesktop(tx, id));
    if (d.state != "stopped") {
      return makeError(Errc::kConflict,
                       "The desktop '{}' started again while being deleted; try again.", d.name);
    }
    if (copying(id)) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is being made into a template; delete it when that is "
                       "done.",
                       d.name);
    }
    AULA_TRY(tx.exec("DELETE FROM desktops WHERE id = ?", {id}));
    AULA_TRY_STATUS(audit(tx, actor, now, "desktop.delete", fmt::format("desktop:{}", id),
                          Json{{"name", d.name}}));
    removed = d;
    return {};
  }));
  if (removed && removed->hostId) {
    auto gone = ctx_.hosts.deleteDesktop(hostOf(*removed), removed->spec);
    if (!gone) {
      log::warn("The disk of deleted desktop {} stays on host '{}': {}", id, removed->hostName,
                gone.error().message());
    }
  }
  ctx_.events.publish(Event{.type = "desktop.deleted",
                            .data = Json{{"id", id}},
                            .ownerId = removed ? std::optional(removed->ownerId) : std::nullopt,
                            .categoryId = removed ? removed->ownerCategory : std::nullopt});
  return {};
}

Result<Json> DesktopService::console(const Actor& actor, std::int64_t id) {
  auto desktop = AULA_TRY(start(actor, id));
  // Another request may be starting it: wait for that start to end, woken by
  // the desktop's state events. The database is read again only when one
  // comes, or every kRecheck in case another broker finished the start.
  constexpr std::chrono::seconds kRecheck(5);
  Result<DesktopRow> row = Error(Errc::kInternal, "unreached");
  for (auto deadline = std::chrono::steady_clock::now() + ctx_.settings.consoleStartWait;;) {
    auto seen = ctx_.events.lastId();
    row = ctx_.db.transactValue<DesktopRow>(
        db::TxMode::kRead, [&](db::Transaction& tx) { return loadDesktop(tx, id); });
    if (!row)
      return row.error();
    auto left = deadline - std::chrono::steady_clock::now();
    if (row->state != "starting" || left <= std::chrono::seconds(0))
      break;
    while (!ctx_.events.closed()) {
      auto wait = std::min<std::chrono::steady_clock::duration>(left, kRecheck);
      auto events =
          ctx_.events.waitAfter(seen, std::chrono::duration_cast<std::chrono::milliseconds>(wait));
      bool ours = events.empty();  // timed out: look again
      for (const auto& e : events) {
        seen = std::max<std::uint64_t>(seen, e.id);
        ours = ours || (e.type == "desktop.state" && e.data.value("id", std::int64_t{0}) == id);
      }
      if (ours)
        break;
      left = deadline - std::chrono::steady_clock::now();
    }
    if (ctx_.events.closed())
      break;
  }
  if (row->state != "running" || !row->hostId) {
    return makeError(Errc::kConflict, "The desktop '{}' is {}; try again in a moment.", row->name,
                     row->state);
  }
  desktop = AULA_TRY(get(actor, id));
  auto ticket =
      AULA_TRY(ctx_.hosts.setTicket(hostOf(*row), row->spec, ctx_.settings.ticketValidity));
  auto now = unixNow(ctx_.clock);
  std::int64_t number = 0;
  std::string usb = "none";
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    AULA_TRY(tx.exec("UPDATE desktops SET consoles = consoles + 1 WHERE id = ?", {id}));
    auto rows =
        AULA_TRY(tx.query("SELECT d.consoles, t.usb FROM desktops d JOIN templates t ON t.id = "
                          "d.template_id WHERE d.id = ?",
                          {id}));
    number = rows.empty() ? 0 : rows[0].integer(0);
    usb = rows.empty() ? "none" : rows[0].text(1);
    return audit(tx, actor, now, "desktop.console", fmt::format("desktop:{}", id));
  }));
  desktop["consoles"] = number;
  return Json{
      {"desktop", desktop},
      {"console_number", number},
      {"host", ticket.host},
      {"tls_port", ticket.tlsPort > 0 ? Json(ticket.tlsPort) : Json()},
      {"port", ticket.plainPort > 0 ? Json(ticket.plainPort) : Json()},
      {"ticket", ticket.ticket},
      {"expires_at",
       std::chrono::duration_cast<std::chrono::seconds>(ticket.expires.time_since_epoch()).count()},
      {"host_subject", ticket.hostSubject.empty() ? row->hostSubject : ticket.hostSubject},
      {"usb", usb}};
}

// ---- templates from desktops ----

bool DesktopService::copying(std::int64_t desktopId) {
  std::lock_guard lock(copyingMutex_);
  return copying_.contains(desktopId);
}
}  // namespace aula::broker
