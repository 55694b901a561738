// Pools and hosts, and what agents report: heartbeats, lifecycle events,
// and hosts that fell silent.
#include "aula/broker/host_service.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "aula/common/agent_protocol.hpp"
#include "aula/common/log.hpp"

#include "core/policy.hpp"
#include "core/state_store.hpp"

namespace aula::broker {

using namespace detail;

namespace {

// Columns of kHostSelect, in its order.
struct HostCol {
  enum : std::size_t {
    kId,
    kName,
    kKind,
    kPoolId,
    kPool,
    kAddress,
    kAgentPort,
    kState,
    kCpus,
    kMemoryMb,
    kVcpuRatioLimit,
    kCpuIdle,
    kFreeMemoryMb,
    kAllocatedVcpus,
    kRunningGuests,
    kStorage,
    kCertFingerprint,
    kLastHeartbeat,
    kCreatedAt,
    kSpiceSubject,
    kUnknownGuests
  };
};

constexpr const char* kHostSelect =
    "SELECT h.id, h.name, h.kind, h.pool_id, p.name, h.address, h.agent_port, h.state, h.cpus, "
    "h.memory_mb, "
    "h.vcpu_ratio_limit, h.cpu_idle, h.free_memory_mb, h.allocated_vcpus, h.running_guests, "
    "h.storage, "
    "h.cert_fingerprint, h.last_heartbeat, h.created_at, h.spice_subject, h.unknown_guests FROM "
    "hosts h JOIN pools p ON p.id = h.pool_id";

Json hostJson(const db::Row& r) {
  Json storage = json::parse(r.text(HostCol::kStorage)).valueOr(Json::object());
  return Json{
      {"id", r.integer(HostCol::kId)},
      {"name", r.text(HostCol::kName)},
      {"kind", r.text(HostCol::kKind)},
      {"pool_id", r.integer(HostCol::kPoolId)},
      {"pool", r.text(HostCol::kPool)},
      {"address", r.text(HostCol::kAddress)},
      {"agent_port", r.integer(HostCol::kAgentPort)},
      {"state", r.text(HostCol::kState)},
      {"cpus", r.integer(HostCol::kCpus)},
      {"memory_mb", r.integer(HostCol::kMemoryMb)},
      {"vcpu_ratio_limit",
       r.isNull(HostCol::kVcpuRatioLimit) ? Json() : Json(r.real(HostCol::kVcpuRatioLimit))},
      {"cpu_idle", r.real(HostCol::kCpuIdle)},
      {"free_memory_mb", r.integer(HostCol::kFreeMemoryMb)},
      {"allocated_vcpus", r.integer(HostCol::kAllocatedVcpus)},
      {"running_guests", r.integer(HostCol::kRunningGuests)},
      {"storage_free_gb", storage},
      {"cert_fingerprint", nullableText(r, HostCol::kCertFingerprint)},
      {"last_heartbeat", nullableInt(r, HostCol::kLastHeartbeat)},
      {"created_at", r.integer(HostCol::kCreatedAt)},
      {"spice_subject", nullableText(r, HostCol::kSpiceSubject)},
      {"unknown_guests", json::parse(r.text(HostCol::kUnknownGuests)).valueOr(Json::array())}};
}

}  // namespace

Result<Json> HostService::listPools(const Actor& actor) {
  AULA_TRY_STATUS(requireManager(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Columns of the query below, in its order.
    enum PoolCol : std::size_t { kPoolId, kPoolName, kPoolDescription, kPoolCreated, kPoolHosts };
    auto rows =
        AULA_TRY(tx.query("SELECT p.id, p.name, p.description, p.created_at, (SELECT COUNT(*) FROM "
                          "hosts h WHERE h.pool_id = p.id) "
                          "FROM pools p ORDER BY p.name"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(kPoolId)},
                     {"name", r.text(kPoolName)},
                     {"description", r.text(kPoolDescription)},
                     {"created_at", r.integer(kPoolCreated)},
                     {"hosts", r.integer(kPoolHosts)}});
    }
    return out;
  });
}

Result<Json> HostService::createPool(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "description"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("pool", name));
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto rows =
        tx.query("INSERT INTO pools (name, description, created_at) VALUES (?, ?, ?) RETURNING id",
                 {name, description, now});
    if (!rows && rows.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A pool named '{}' exists already.", name);
    }
    auto id = AULA_TRY(std::move(rows))[0].integer(0);
    AULA_TRY_STATUS(
        audit(tx, actor, now, "pool.create", fmt::format("pool:{}", id), Json{{"name", name}}));
    return Json{{"id", id},
                {"name", name},
                {"description", description},
                {"created_at", now},
                {"hosts", 0}};
  });
}

Status HostService::deletePool(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {id},
                         fmt::format("There is no pool with id {}.", id)));
    auto hosts = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM hosts WHERE pool_id = ?", {id}));
    if (hosts > 0)
      return makeError(Errc::kConflict, "The pool still has {} host(s); move or delete them first.",
                       hosts);
    // A template limited to this pool would silently run anywhere once the
    // pool is gone.
    auto templates =
        AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM template_pools WHERE pool_id = ?", {id}));
    if (templates > 0) {
      return makeError(Errc::kConflict,
                       "{} template(s) may run only in this pool; change their pools first.",
                       templates);
    }
    AULA_TRY(tx.exec("DELETE FROM enrolment_tokens WHERE pool_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM pools WHERE id = ?", {id}));
    return audit(tx, actor, now, "pool.delete", fmt::format("pool:{}", id));
  });
}

Result<Json> HostService::list(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kHostSelect) + " ORDER BY h.name"));
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(hostJson(r));
    return out;
  });
}

Result<Json> HostService::get(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id},
                                    fmt::format("There is no host with id {}.", id)));
    return hostJson(row);
  });
}

Result<Json> HostService::devices(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row =
        AULA_TRY(tx.queryOne("SELECT name, kind, devices, devices_at FROM hosts WHERE id = ?", {id},
                             fmt::format("There is no host with id {}.", id)));
    Json out{{"host_id", id},         {"host", row.text(0)}, {"kind", row.text(1)},
             {"reported_at", Json()}, {"iommu_groups", 0},   {"devices", Json::array()}};
    if (!row.text(2).empty()) {
      auto reported = AULA_TRY(json::parse(row.text(2)));
      out["reported_at"] = row.integer(3);
      out["iommu_groups"] = reported.value("iommu_groups", 0);
      out["devices"] = reported.value("devices", Json::array());
    }
    return out;
  });
}

Result<Json> HostService::create(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "kind", "pool_id", "address", "agent_port",
                                           "cpus", "memory_mb", "vcpu_ratio_limit"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkHostName(name));
  auto kind = AULA_TRY(optString(body, "kind")).value_or("hypervisor");
  if (kind != "hypervisor" && kind != "workstation") {
    return Error(Errc::kInvalidArgument, "The field 'kind' must be 'hypervisor' or 'workstation'.");
  }
  auto poolId = AULA_TRY(json::getInt(body, "pool_id"));
  auto address = AULA_TRY(optString(body, "address")).value_or("");
  AULA_TRY_STATUS(checkHostAddress(address));
  auto port = AULA_TRY(optInt(body, "agent_port")).value_or(0);
  auto cpus = AULA_TRY(optInt(body, "cpus")).value_or(0);
  auto memory = AULA_TRY(optInt(body, "memory_mb")).value_or(0);
  if (port < 0 || port > 65535 || cpus < 0 || cpus > 4096 || memory < 0) {
    return Error(Errc::kInvalidArgument,
                 "The port must be 0 to 65535, cpus 0 to 4096, and memory not negative.");
  }
  std::optional<double> ratio;
  if (auto it = body.find("vcpu_ratio_limit"); it != body.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 64) {
      return Error(Errc::kInvalidArgument,
                   "The field 'vcpu_ratio_limit' must be a number above 0 and at most 64.");
    }
    ratio = it->get<double>();
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {poolId},
                         fmt::format("There is no pool with id {}.", poolId)));
    auto rows = tx.query(
        "INSERT INTO hosts (name, kind, pool_id, address, agent_port, cpus, memory_mb, "
        "vcpu_ratio_limit, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        {name, kind, poolId, address, port, cpus, memory, ratio ? db::Value(*ratio) : db::Value(),
         now});
    if (!rows && rows.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A host named '{}' exists already.", name);
    }
    auto id = AULA_TRY(std::move(rows))[0].integer(0);
    AULA_TRY_STATUS(audit(tx, actor, now, "host.create", fmt::format("host:{}", name)));
    auto row = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id}, "gone"));
    return hostJson(row);
  });
}

Result<Json> HostService::update(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"state", "pool_id", "vcpu_ratio_limit", "address"}));
  auto state = AULA_TRY(optString(body, "state"));
  if (state && *state != "maintenance" && *state != "disabled" && *state != "online") {
    return Error(
        Errc::kInvalidArgument,
        "An admin may set a host's state to 'maintenance', 'disabled' or back to 'online'.");
  }
  auto pool = AULA_TRY(optInt(body, "pool_id"));
  auto address = AULA_TRY(optString(body, "address"));
  if (address)
    AULA_TRY_STATUS(checkHostAddress(*address));
  auto now = unixNow(ctx_.clock);
  auto updated = ctx_.db.transactValue<
      Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id},
                                    fmt::format("There is no host with id {}.", id)));
    if (pool)
      AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {*pool},
                           fmt::format("There is no pool with id {}.", *pool)));
    db::Value ratio = row.at(HostCol::kVcpuRatioLimit);
    if (auto it = body.find("vcpu_ratio_limit"); it != body.end()) {
      if (it->is_null()) {
        ratio = db::Value();
      } else if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 64) {
        return Error(Errc::kInvalidArgument,
                     "The field 'vcpu_ratio_limit' must be a number above 0 and at most 64.");
      } else {
        ratio = it->get<double>();
      }
    }
    AULA_TRY(tx.exec(
        "UPDATE hosts SET state = ?, pool_id = ?, vcpu_ratio_limit = ?, address = ? WHERE id = ?",
        {state.value_or(row.text(HostCol::kState)), pool.value_or(row.integer(HostCol::kPoolId)),
         ratio, address.value_or(row.text(HostCol::kAddress)), id}));
    AULA_TRY_STATUS(audit(tx, actor, now, "host.update",
                          fmt::format("host:{}", row.text(HostCol::kName)), body));
    auto after = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id}, "gone"));
    return hostJson(after);
  });
  if (updated && state) {
    ctx_.events.publish(Event{
        .type = "host.state", .data = Json{{"id", id}, {"state", *state}}, .adminOnly = true});
  }
  return updated;
}

Status HostService::remove(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto row = AULA_TRY(tx.queryOne("SELECT name FROM hosts WHERE id = ?", {id},
                                    fmt::format("There is no host with id {}.", id)));
    auto desktops = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM desktops WHERE host_id = ?", {id}));
    if (desktops > 0) {
      return makeError(Errc::kConflict,
                       "The host '{}' still holds {} desktop(s); move or delete them first.",
                       row.text(0), desktops);
    }
    AULA_TRY(tx.exec("UPDATE boot_hosts SET host_id = NULL WHERE host_id = ?", {id}));
    auto claimed = AULA_TRY(
        tx.query("SELECT u.username FROM workstations w JOIN users u ON u.id = w.claimed_by WHERE "
                 "w.host_id = ?",
                 {id}));
    if (!claimed.empty()) {
      return makeError(Errc::kConflict,
                       "'{}' uses the workstation '{}' now; it can be deleted once their VM has "
                       "stopped.",
                       claimed[0].text(0), row.text(0));
    }
    AULA_TRY(tx.exec("DELETE FROM workstation_access WHERE host_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM workstations WHERE host_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM hosts WHERE id = ?", {id}));
    return audit(tx, actor, now, "host.delete", fmt::format("host:{}", row.text(0)));
  });
}

Status HostService::recordHeartbeat(std::int64_t hostId, const Json& load) {
  const auto beat = AULA_TRY(proto::parseHeartbeat(load));
  Json storage = Json::object();
  for (const auto& [name, gb] : beat.storageFreeGb)
    storage[name] = gb;
  const auto timing = stateTiming(ctx_.settings);
  auto now = unixNow(ctx_.clock);
  std::string before;
  std::vector<StateChange> changes;
  std::string unknownBefore;
  Json unknown = Json::array();
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    changes.clear();
    unknown = Json::array();
    auto row = AULA_TRY(tx.queryOne("SELECT state, unknown_guests, name FROM hosts WHERE id = ?",
                                    {hostId}, fmt::format("There is no host with id {}.", hostId)));
    before = row.text(0);
    unknownBefore = row.text(1);
    // A heartbeat brings a new or lost host online; an admin's maintenance or
    // disabled state stays until an admin lifts it.
    std::string state = (before == "new" || before == "lost") ? "online" : before;
    AULA_TRY(
        tx.exec("UPDATE hosts SET state = ?, cpu_idle = ?, free_memory_mb = ?, allocated_vcpus = "
                "?, cpus = ?, memory_mb = ?, "
                "running_guests = ?, storage = ?, last_heartbeat = ? WHERE id = ?",
                {state, beat.cpuIdle, beat.freeMemoryMb, beat.allocatedVcpus, beat.cpus,
                 beat.memoryMb, beat.runningGuests, storage.dump(), now, hostId}));
    if (beat.devices) {
      AULA_TRY(tx.exec("UPDATE hosts SET devices = ?, devices_at = ? WHERE id = ?",
                       {beat.devices->dump(), now, hostId}));
    }
    if (!beat.guests)
      return {};  // an agent that does not reconcile
    // Reconcile: libvirt's view on the host is the truth about what runs,
    // and the state machine says what follows from it.
    std::map<std::int64_t, bool> runs;  // desktop id -> its guest runs here
    for (const auto& g : *beat.guests) {
      if (g.desktopId)
        runs[*g.desktopId] = runs[*g.desktopId] || g.running;
    }
    auto observe = [&](const StateRow& d, bool running) -> Status {
      Observation seen{.what = running ? Happening::kSeenRunning : Happening::kSeenStopped,
                       .source = Source::kHeartbeat,
                       .at = now,
                       .hostId = hostId,
                       .seq = beat.seq};
      auto t = decide(d.record, seen, timing);
      AULA_TRY_STATUS(storeTransition(tx, d, t));
      if (t.changed())
        changes.push_back(changeOf(d, t));
      return {};
    };
    std::set<std::int64_t> mine;
    for (const auto& d : AULA_TRY(loadStatesOnHost(tx, hostId))) {
      mine.insert(d.id);
      auto it = runs.find(d.id);
      AULA_TRY_STATUS(observe(d, it != runs.end() && it->second));
    }
    for (const auto& g : *beat.guests) {
      if (!g.running || (g.desktopId && mine.contains(*g.desktopId)))
        continue;  // seen above, or a definition that does not run
      std::optional<StateRow> d;
      if (g.desktopId)
        d = AULA_TRY(loadState(tx, *g.desktopId));
      if (d && !d->record.hostId) {
        // A desktop with no host yet: adopted where its guest runs.
        AULA_TRY_STATUS(observe(*d, true));
        continue;
      }
      // Not the broker's to judge (no desktop of ours, or one whose disk is
      // on another host): reported, never stopped.
      unknown.push_back(Json{{"name", g.name}, {"state", g.state}});
    }
    AULA_TRY(tx.exec("UPDATE hosts SET unknown_guests = ? WHERE id = ?", {unknown.dump(), hostId}));
    return {};
  }));
  if (before == "new" || before == "lost") {
    ctx_.events.publish(Event{.type = "host.state",
                              .data = Json{{"id", hostId}, {"state", "online"}},
                              .adminOnly = true});
  }
  publishChanges(ctx_.events, changes, "the host's heartbeat");
  if (beat.guests && unknown.dump() != unknownBefore && !unknown.empty()) {
    log::warn("Host {} runs guests the broker does not know: {}; they are left alone.", hostId,
              unknown.dump());
  }
  return {};
}

Status HostService::recordAgentEvents(std::int64_t hostId, const Json& body) {
  const auto batch = AULA_TRY(proto::parseEventBatch(body));
  const auto timing = stateTiming(ctx_.settings);
  auto now = unixNow(ctx_.clock);
  std::vector<StateChange> changes;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    changes.clear();
    auto host = AULA_TRY(tx.queryOne("SELECT name FROM hosts WHERE id = ?", {hostId},
                                     fmt::format("There is no host with id {}.", hostId)));
    Actor agent{.username = fmt::format("agent:{}", host.text(0))};
    for (const auto& e : batch.events) {
      if (!e.desktopId)
        continue;  // not an Aula desktop: the heartbeat reports it
      bool started = e.event == "started";
      if (!started && e.event != "shutdown" && e.event != "stopped" && e.event != "crashed")
        continue;  // a kind this broker does not act on
      auto d = AULA_TRY(loadState(tx, *e.desktopId));
      if (!d || d->record.hostId != hostId)
        continue;
      Observation seen{.what = started ? Happening::kSeenRunning : Happening::kSeenStopped,
                       .source = Source::kEvent,
                       .at = now,
                       .hostId = hostId,
                       .seq = e.seq};
      auto t = decide(d->record, seen, timing);
      AULA_TRY_STATUS(storeTransition(tx, *d, t));
      if (!t.changed())
        continue;
      changes.push_back(changeOf(*d, t));
      if (e.event == "crashed") {
        AULA_TRY_STATUS(audit(tx, agent, now, "desktop.crashed",
                              fmt::format("desktop:{}", *e.desktopId), Json{{"detail", e.detail}}));
      }
    }
    return {};
  }));
  publishChanges(ctx_.events, changes, "the host's lifecycle events");
  return {};
}

Result<int> HostService::markLost() {
  auto now = unixNow(ctx_.clock);
  std::vector<std::int64_t> lost;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    lost.clear();
    auto rows =
        AULA_TRY(tx.query("SELECT id FROM hosts WHERE state = 'online' AND (last_heartbeat IS NULL "
                          "OR last_heartbeat < ?)",
                          {now - ctx_.settings.hostLostAfter.count()}));
    for (const auto& r : rows) {
      lost.push_back(r.integer(0));
      AULA_TRY(tx.exec("UPDATE hosts SET state = 'lost' WHERE id = ?", {r.integer(0)}));
    }
    return {};
  }));
  for (auto id : lost) {
    ctx_.events.publish(Event{
        .type = "host.state", .data = Json{{"id", id}, {"state", "lost"}}, .adminOnly = true});
  }
  return static_cast<int>(lost.size());
}

}  // namespace aula::broker
