// Desktops: creation within quotas, start with placement, stop, deletion,
// the console descriptor.
#include "aula/broker/desktop_service.hpp"

#include <algorithm>

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
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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
  });
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

Result<Json> DesktopService::start(const Actor& actor, std::int64_t id) {
  auto now = unixNow(ctx_.clock);
  const auto timing = stateTiming(ctx_.settings);
  struct Plan {
    DesktopRow desktop;
    HostAddress host;
    PlacementRequest request;
    bool alreadyRunning = false;
    StateRow state;
  };
  // The Placer's reservation for this start. A PostgreSQL retry runs the body
  // below again, and a failed COMMIT passes none of its error paths: each run
  // gives back the last run's reservation, and the one left is given back once
  // the desktop's state in the database counts it instead.
  std::optional<std::pair<std::int64_t, PlacementRequest>> reserved;
  auto giveBack = [&] {
    if (reserved)
      placer_.release(reserved->first, reserved->second);
    reserved.reset();
  };
  // Exclusive: starts on several brokers queue for the placement instead of
  // failing each other's serializable transactions and retrying.
  auto plan = ctx_.db.transactValue<
      Plan>(db::TxMode::kExclusive, [&](db::Transaction& tx) -> Result<Plan> {
    giveBack();
    auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
    if (rows.empty() ||
        !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(DesktopCol::kOwnerId), true))) {
      return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
    }
    Plan p{desktopOf(rows[0]), {}, {}, false};
    p.state = AULA_TRY(loadState(tx, id)).value();
    auto asked =
        decide(p.state.record, Observation{.what = Happening::kStartRequested, .at = now}, timing);
    if (asked.verdict == Verdict::kRefused) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is stopping; start it again when it has stopped.",
                       p.desktop.name);
    }
    if (!asked.changed()) {
      p.alreadyRunning = true;
      return p;
    }
    if (copying(id)) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is being made into a template; start it when that is "
                       "done.",
                       p.desktop.name);
    }
    // Teacher deployments are handed out, not asked for: the student's own
    // limits do not block them, the group's and category's totals do.
    auto deployment = rows[0].optInteger(DesktopCol::kDeploymentId);
    AULA_TRY_STATUS(checkQuotas(tx, p.desktop.ownerId, QuotaCheck::kStart, p.desktop.spec.vcpus,
                                p.desktop.spec.memoryMb, 0, deployment.has_value()));
    p.request.vcpus = p.desktop.spec.vcpus;
    p.request.memoryMb = p.desktop.spec.memoryMb;
    // A desktop without a disk on a host yet (first start, or any start of a
    // non-persistent one) needs room for its overlay to grow to full size.
    if (!p.desktop.spec.persistent || !p.desktop.hostId) {
      p.request.storage = "desktops";
      p.request.diskGb = rows[0].integer(DesktopCol::kDiskGb);
    }
    auto pools = AULA_TRY(tx.query("SELECT pool_id FROM template_pools WHERE template_id = ?",
                                   {p.desktop.templateId}));
    for (const auto& r : pools)
      p.request.pools.push_back(r.integer(0));
    // Allocated vCPUs count running desktops only: starts in flight are the
    // Placer's to count, so none is counted twice.
    // Columns of hostSql, in its order.
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
    std::string hostSql =
        "SELECT h.id, h.name, h.pool_id, h.state, h.cpus, h.memory_mb, h.cpu_idle, "
        "h.free_memory_mb, "
        "COALESCE(h.vcpu_ratio_limit, 0), (SELECT CAST(COALESCE(SUM(d.vcpus), 0) AS BIGINT) "
        "FROM desktops d WHERE "
        "d.host_id = h.id "
        "AND d.state = 'running'), h.address, h.storage, h.agent_port, h.spice_subject FROM hosts "
        "h "
        "WHERE h.kind = "
        "'hypervisor'";
    db::Params hostParams;
    // A persistent desktop's disk lives on the host that made it.
    if (p.desktop.spec.persistent && p.desktop.hostId) {
      hostSql += " AND h.id = ?";
      hostParams.push_back(*p.desktop.hostId);
    }
    auto hostRows = AULA_TRY(tx.query(hostSql, hostParams));
    std::vector<HostCandidate> candidates;
    std::map<std::int64_t, HostAddress> addresses;
    for (const auto& h : hostRows) {
      candidates.push_back(HostCandidate{.id = h.integer(CandidateCol::kId),
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
            candidates.back().freeStorageGb[name] = free.get<std::int64_t>();
        }
      }
      addresses[h.integer(CandidateCol::kId)] =
          HostAddress{.id = h.integer(CandidateCol::kId),
                      .name = h.text(CandidateCol::kName),
                      .address = h.text(CandidateCol::kAddress),
                      .agentPort = h.integer(CandidateCol::kAgentPort),
                      .spiceSubject = h.optText(CandidateCol::kSpiceSubject).value_or("")};
    }
    auto hostId = AULA_TRY(placer_.place(std::move(candidates), p.request));
    reserved.emplace(hostId, p.request);
    p.host = addresses[hostId];
    auto starting = decide(
        p.state.record,
        Observation{.what = Happening::kStartRequested, .at = now, .hostId = hostId}, timing);
    AULA_TRY_STATUS(storeTransition(tx, p.state, starting));
    p.state.record = starting.record;
    AULA_TRY_STATUS(audit(tx, actor, now, "desktop.start", fmt::format("desktop:{}", id),
                          Json{{"host", p.host.name}}));
    return p;
  });
  if (!plan) {
    giveBack();
    return plan.error();
  }
  if (plan->alreadyRunning)
    return get(actor, id);

  auto& p = *plan;
  publishChanges(ctx_.events,
                 {StateChange{.id = id,
                              .state = DesktopState::kStarting,
                              .hostId = p.host.id,
                              .ownerId = p.desktop.ownerId,
                              .categoryId = p.desktop.ownerCategory}},
                 "a start");
  ctx_.counters.desktopStarts++;
  auto started = ctx_.hosts.startDesktop(p.host, p.desktop.spec);
  auto after = unixNow(ctx_.clock);
  std::vector<StateChange> changes;
  auto recorded = ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    changes.clear();
    auto row = AULA_TRY(loadState(tx, id));
    if (!row)
      return {};  // deleted meanwhile
    Observation answer{.what = started ? Happening::kStartSucceeded : Happening::kStartFailed,
                       .at = after,
                       .hostId = p.host.id,
                       .seq = started ? started->seq : 0};
    auto t = decide(row->record, answer, timing);
    AULA_TRY_STATUS(storeTransition(tx, *row, t));
    if (t.changed())
      changes.push_back(changeOf(*row, t));
    return {};
  });
  // Only now does the 'running' row count the desktop's vCPUs on its host.
  giveBack();
  AULA_TRY_STATUS(recorded);
  publishChanges(ctx_.events, changes, started ? "the agent's start" : "a failed start");
  if (!started) {
    ctx_.counters.desktopStartFailures++;
    log::warn("Desktop {} did not start on host '{}': {}", id, p.host.name,
              started.error().message());
    return Error(Errc::kUnavailable, fmt::format("The desktop could not start on host '{}': {}",
                                                 p.host.name, started.error().message()));
  }
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
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    return audit(tx, actor, now, "desktop.console", fmt::format("desktop:{}", id));
  }));
  return Json{
      {"desktop", desktop},
      {"host", ticket.host},
      {"tls_port", ticket.tlsPort > 0 ? Json(ticket.tlsPort) : Json()},
      {"port", ticket.plainPort > 0 ? Json(ticket.plainPort) : Json()},
      {"ticket", ticket.ticket},
      {"expires_at",
       std::chrono::duration_cast<std::chrono::seconds>(ticket.expires.time_since_epoch()).count()},
      {"host_subject", ticket.hostSubject.empty() ? row->hostSubject : ticket.hostSubject}};
}

// ---- templates from desktops ----

bool DesktopService::copying(std::int64_t desktopId) {
  std::lock_guard lock(copyingMutex_);
  return copying_.contains(desktopId);
}
}  // namespace aula::broker
