// Pools, hosts, heartbeats, enrolment tokens, boot hosts, the audit log, and
// what the live stream and /metrics show.
#include <algorithm>
#include <cctype>

#include "aula/broker/agent_link.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"

#include "broker_internal.hpp"

namespace aula::broker {

using namespace detail;

namespace {

constexpr const char* kHostSelect =
    "SELECT h.id, h.name, h.kind, h.pool_id, p.name, h.address, h.agent_port, h.state, h.cpus, "
    "h.memory_mb, "
    "h.vcpu_ratio_limit, h.cpu_idle, h.free_memory_mb, h.allocated_vcpus, h.running_guests, "
    "h.storage, "
    "h.cert_fingerprint, h.last_heartbeat, h.created_at, h.spice_subject, h.unknown_guests FROM "
    "hosts h JOIN pools p ON p.id = h.pool_id";

Json hostJson(const db::Row& r) {
  Json storage = json::parse(r.text(15)).valueOr(Json::object());
  return Json{{"id", r.integer(0)},
              {"name", r.text(1)},
              {"kind", r.text(2)},
              {"pool_id", r.integer(3)},
              {"pool", r.text(4)},
              {"address", r.text(5)},
              {"agent_port", r.integer(6)},
              {"state", r.text(7)},
              {"cpus", r.integer(8)},
              {"memory_mb", r.integer(9)},
              {"vcpu_ratio_limit", r.isNull(10) ? Json() : Json(r.real(10))},
              {"cpu_idle", r.real(11)},
              {"free_memory_mb", r.integer(12)},
              {"allocated_vcpus", r.integer(13)},
              {"running_guests", r.integer(14)},
              {"storage_free_gb", storage},
              {"cert_fingerprint", nullableText(r, 16)},
              {"last_heartbeat", nullableInt(r, 17)},
              {"created_at", r.integer(18)},
              {"spice_subject", nullableText(r, 19)},
              {"unknown_guests", json::parse(r.text(20)).valueOr(Json::array())}};
}

Status checkHostName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 63 && name.front() != '-' && name.back() != '-';
  for (unsigned char c : name)
    ok = ok && (std::islower(c) || std::isdigit(c) || c == '-' || c == '.');
  if (!ok) {
    return makeError(
        Errc::kInvalidArgument,
        "The host name '{}' is not allowed: use 1 to 63 lower-case letters, digits, '-' or '.'.",
        name.substr(0, 80));
  }
  // Agents take commands from the certificate with this CN only.
  if (name == kBrokerClientName) {
    return makeError(Errc::kInvalidArgument,
                     "The host name '{}' is reserved for the broker's own certificate; choose "
                     "another.",
                     name);
  }
  return {};
}

// A host's address is where the broker reaches its agent and viewers its
// SPICE ports: a host name or an IP address, without a port (the agent's
// port is agent_port).
Status checkHostAddress(std::string_view address) {
  if (address.size() > 255)
    return Error(Errc::kInvalidArgument, "The field 'address' is longer than 255 characters.");
  bool ok = true;
  for (unsigned char c : address)
    ok = ok && (std::isalnum(c) || c == '.' || c == '-' || c == ':');
  // One colon is "host:port"; an IPv6 address has at least two.
  if (!ok || std::count(address.begin(), address.end(), ':') == 1) {
    return makeError(Errc::kInvalidArgument,
                     "The address '{}' is not a host name or an IP address; give the host only "
                     "(the agent's port is the field 'agent_port').",
                     address.substr(0, 80));
  }
  return {};
}

}  // namespace

Result<Json> Broker::listPools(const Actor& actor) {
  AULA_TRY_STATUS(requireManager(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows =
        AULA_TRY(tx.query("SELECT p.id, p.name, p.description, p.created_at, (SELECT COUNT(*) FROM "
                          "hosts h WHERE h.pool_id = p.id) "
                          "FROM pools p ORDER BY p.name"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(0)},
                     {"name", r.text(1)},
                     {"description", r.text(2)},
                     {"created_at", r.integer(3)},
                     {"hosts", r.integer(4)}});
    }
    return out;
  });
}

Result<Json> Broker::createPool(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "description"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("pool", name));
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto now = unixNow(clock_);
  return db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
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

Status Broker::deletePool(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(clock_);
  return db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
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

Result<Json> Broker::listHosts(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kHostSelect) + " ORDER BY h.name"));
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(hostJson(r));
    return out;
  });
}

Result<Json> Broker::getHost(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id},
                                    fmt::format("There is no host with id {}.", id)));
    return hostJson(row);
  });
}

Result<Json> Broker::createHost(const Actor& actor, const Json& body) {
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
  auto now = unixNow(clock_);
  return db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
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

Result<Json> Broker::updateHost(const Actor& actor, std::int64_t id, const Json& body) {
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
  auto now = unixNow(clock_);
  auto updated = db_.transactValue<
      Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id},
                                    fmt::format("There is no host with id {}.", id)));
    if (pool)
      AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {*pool},
                           fmt::format("There is no pool with id {}.", *pool)));
    db::Value ratio = row.at(10);
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
        {state.value_or(row.text(7)), pool.value_or(row.integer(3)), ratio,
         address.value_or(row.text(5)), id}));
    AULA_TRY_STATUS(
        audit(tx, actor, now, "host.update", fmt::format("host:{}", row.text(1)), body));
    auto after = AULA_TRY(tx.queryOne(std::string(kHostSelect) + " WHERE h.id = ?", {id}, "gone"));
    return hostJson(after);
  });
  if (updated && state) {
    events_.publish(Event{
        .type = "host.state", .data = Json{{"id", id}, {"state", *state}}, .adminOnly = true});
  }
  return updated;
}

Status Broker::deleteHost(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(clock_);
  return db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto row = AULA_TRY(tx.queryOne("SELECT name FROM hosts WHERE id = ?", {id},
                                    fmt::format("There is no host with id {}.", id)));
    auto desktops = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM desktops WHERE host_id = ?", {id}));
    if (desktops > 0) {
      return makeError(Errc::kConflict,
                       "The host '{}' still holds {} desktop(s); move or delete them first.",
                       row.text(0), desktops);
    }
    AULA_TRY(tx.exec("UPDATE boot_hosts SET host_id = NULL WHERE host_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM hosts WHERE id = ?", {id}));
    return audit(tx, actor, now, "host.delete", fmt::format("host:{}", row.text(0)));
  });
}

namespace {

// A desktop the broker saw change on a host, to publish after the commit.
struct DesktopChange {
  std::int64_t id;
  std::string state;
  std::optional<std::int64_t> hostId;
  std::int64_t ownerId;
  std::optional<std::int64_t> categoryId;
};

// Tells the event stream (and the log) what the host's account changed.
void publishChanges(EventBus& events, const std::vector<DesktopChange>& changes,
                    std::string_view source) {
  for (const auto& c : changes) {
    log::info("Desktop {} is {} on host {}, by {}.", c.id, c.state, c.hostId.value_or(0), source);
    events.publish(Event{.type = "desktop.state",
                         .data = Json{{"id", c.id},
                                      {"state", c.state},
                                      {"host_id", c.hostId ? Json(*c.hostId) : Json()}},
                         .ownerId = c.ownerId,
                         .categoryId = c.categoryId});
  }
}

// Marks a desktop stopped on its host: a non-persistent one lets go of the
// host, since its overlay is gone.
Status markStopped(db::Transaction& tx, std::int64_t id, std::int64_t now) {
  AULA_TRY(
      tx.exec("UPDATE desktops SET state = 'stopped', connected = 0, stopped_at = ?, host_id = "
              "CASE WHEN persistent = 1 THEN host_id ELSE NULL END WHERE id = ?",
              {now, id}));
  return {};
}

}  // namespace

Status Broker::recordHeartbeat(std::int64_t hostId, const Json& load) {
  AULA_TRY_STATUS(
      json::checkFields(load, {"cpu_idle", "free_memory_mb", "allocated_vcpus", "cpus", "memory_mb",
                               "running_guests", "storage_free_gb", "guests", "seq"}));
  double cpuIdle = 0;
  if (auto it = load.find("cpu_idle"); it != load.end()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 1) {
      return Error(Errc::kInvalidArgument, "The field 'cpu_idle' must be a number from 0 to 1.");
    }
    cpuIdle = it->get<double>();
  }
  auto freeMemory = AULA_TRY(json::getInt(load, "free_memory_mb"));
  auto cpus = AULA_TRY(json::getInt(load, "cpus"));
  auto memory = AULA_TRY(json::getInt(load, "memory_mb"));
  auto allocated = AULA_TRY(optInt(load, "allocated_vcpus")).value_or(0);
  auto guests = AULA_TRY(optInt(load, "running_guests")).value_or(0);
  Json storage = load.value("storage_free_gb", Json::object());
  if (!storage.is_object())
    return Error(Errc::kInvalidArgument, "The field 'storage_free_gb' must be an object.");
  // The guests libvirt knows on the host (agents before the reconciling
  // protocol send none, and nothing is reconciled).
  struct Guest {
    std::string name;
    std::optional<std::int64_t> desktopId;
    std::string state;
    bool running = false;
  };
  std::optional<std::vector<Guest>> guestList;
  if (auto it = load.find("guests"); it != load.end()) {
    if (!it->is_array())
      return Error(Errc::kInvalidArgument, "The field 'guests' must be an array.");
    guestList.emplace();
    for (const auto& g : *it) {
      if (!g.is_object() || !g.contains("name") || !g["name"].is_string()) {
        return Error(Errc::kInvalidArgument, "Each of 'guests' must be an object with a 'name'.");
      }
      Guest guest{g["name"].get<std::string>(), std::nullopt, g.value("state", ""),
                  g.value("running", false)};
      if (g.contains("desktop_id") && g["desktop_id"].is_number_integer())
        guest.desktopId = g["desktop_id"].get<std::int64_t>();
      guestList->push_back(std::move(guest));
    }
  }
  auto now = unixNow(clock_);
  std::string before;
  std::vector<DesktopChange> changes;
  std::string unknownBefore;
  Json unknown = Json::array();
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
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
                {state, cpuIdle, freeMemory, allocated, cpus, memory, guests, storage.dump(), now,
                 hostId}));
    if (!guestList)
      return {};
    // Reconcile: libvirt's view on the host is the truth about what runs.
    std::map<std::int64_t, const Guest*> byDesktop;
    for (const auto& g : *guestList) {
      if (g.desktopId)
        byDesktop[*g.desktopId] = &g;
    }
    auto mine = AULA_TRY(tx.query(
        "SELECT d.id, d.state, d.started_at, d.owner_id, u.category_id FROM desktops d JOIN "
        "users u ON u.id = d.owner_id WHERE d.host_id = ?",
        {hostId}));
    for (const auto& d : mine) {
      auto it = byDesktop.find(d.integer(0));
      bool runs = it != byDesktop.end() && it->second->running;
      if (d.text(1) == "stopping" && !runs) {
        // A stop that the broker did not see end (it restarted meanwhile).
        AULA_TRY_STATUS(markStopped(tx, d.integer(0), now));
        changes.push_back({d.integer(0), "stopped", hostId, d.integer(3), d.optInteger(4)});
        continue;
      }
      if (d.text(1) == "starting" && runs) {
        // A start that the broker did not see end.
        AULA_TRY(tx.exec("UPDATE desktops SET state = 'running', started_at = ? WHERE id = ?",
                         {now, d.integer(0)}));
        changes.push_back({d.integer(0), "running", hostId, d.integer(3), d.optInteger(4)});
        continue;
      }
      if (d.text(1) == "running" && !runs &&
          d.optInteger(2).value_or(0) <= now - settings_.reconcileGrace.count()) {
        AULA_TRY_STATUS(markStopped(tx, d.integer(0), now));
        changes.push_back({d.integer(0), "stopped", hostId, d.integer(3), d.optInteger(4)});
      }
    }
    for (const auto& g : *guestList) {
      std::optional<db::Row> desktop;
      if (g.desktopId) {
        auto rows = AULA_TRY(tx.query(
            "SELECT d.id, d.state, d.host_id, d.owner_id, u.category_id, d.stopped_at FROM "
            "desktops d JOIN "
            "users u ON u.id = d.owner_id WHERE d.id = ?",
            {*g.desktopId}));
        if (!rows.empty())
          desktop = rows[0];
      }
      bool ours = desktop && (desktop->isNull(2) || desktop->integer(2) == hostId);
      if (!ours) {
        // Not the broker's to judge: a running one is reported, never
        // stopped; a definition that does not run costs nothing.
        if (g.running)
          unknown.push_back(Json{{"name", g.name}, {"state", g.state}});
        continue;
      }
      // Started while the broker was away (or it lost track of a start) —
      // unless it stopped within the grace: then this heartbeat was
      // sampled before the stop.
      if (g.running && desktop->text(1) == "stopped" &&
          desktop->optInteger(5).value_or(0) <= now - settings_.reconcileGrace.count()) {
        AULA_TRY(
            tx.exec("UPDATE desktops SET state = 'running', host_id = ?, started_at = ? "
                    "WHERE id = ?",
                    {hostId, now, desktop->integer(0)}));
        changes.push_back(
            {desktop->integer(0), "running", hostId, desktop->integer(3), desktop->optInteger(4)});
      }
    }
    AULA_TRY(tx.exec("UPDATE hosts SET unknown_guests = ? WHERE id = ?", {unknown.dump(), hostId}));
    return {};
  }));
  if (before == "new" || before == "lost") {
    events_.publish(Event{.type = "host.state",
                          .data = Json{{"id", hostId}, {"state", "online"}},
                          .adminOnly = true});
  }
  publishChanges(events_, changes, "the host's heartbeat");
  if (guestList && unknown.dump() != unknownBefore && !unknown.empty()) {
    log::warn("Host {} runs guests the broker does not know: {}; they are left alone.", hostId,
              unknown.dump());
  }
  return {};
}

Status Broker::recordAgentEvents(std::int64_t hostId, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"events"}));
  auto it = body.find("events");
  if (it == body.end() || !it->is_array())
    return Error(Errc::kInvalidArgument, "The field 'events' must be an array.");
  if (it->size() > 1000)
    return Error(Errc::kInvalidArgument, "Send at most 1000 events at a time.");
  auto now = unixNow(clock_);
  std::vector<DesktopChange> changes;
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    changes.clear();
    auto host = AULA_TRY(tx.queryOne("SELECT name FROM hosts WHERE id = ?", {hostId},
                                     fmt::format("There is no host with id {}.", hostId)));
    Actor agent{.username = fmt::format("agent:{}", host.text(0))};
    for (const auto& e : *it) {
      if (!e.is_object() || !e.contains("event") || !e["event"].is_string())
        return Error(Errc::kInvalidArgument, "Each event must be an object with an 'event'.");
      if (!e.contains("desktop_id") || !e["desktop_id"].is_number_integer())
        continue;  // not an Aula desktop: the heartbeat reports it
      auto id = e["desktop_id"].get<std::int64_t>();
      auto kind = e["event"].get<std::string>();
      auto rows = AULA_TRY(
          tx.query("SELECT d.state, d.owner_id, u.category_id FROM desktops d JOIN users u ON "
                   "u.id = d.owner_id WHERE d.id = ? AND d.host_id = ?",
                   {id, hostId}));
      if (rows.empty())
        continue;
      const auto& d = rows[0];
      if (kind == "started" && d.text(0) == "stopped") {
        AULA_TRY(tx.exec("UPDATE desktops SET state = 'running', started_at = ? WHERE id = ?",
                         {now, id}));
        changes.push_back({id, "running", hostId, d.integer(1), d.optInteger(2)});
      } else if ((kind == "shutdown" || kind == "stopped" || kind == "crashed") &&
                 d.text(0) == "running") {
        AULA_TRY_STATUS(markStopped(tx, id, now));
        changes.push_back({id, "stopped", hostId, d.integer(1), d.optInteger(2)});
        if (kind == "crashed") {
          AULA_TRY_STATUS(audit(tx, agent, now, "desktop.crashed", fmt::format("desktop:{}", id),
                                Json{{"detail", e.value("detail", "")}}));
        }
      }
    }
    return {};
  }));
  publishChanges(events_, changes, "the host's lifecycle events");
  return {};
}

Result<int> Broker::markLostHosts() {
  auto now = unixNow(clock_);
  std::vector<std::int64_t> lost;
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    lost.clear();
    auto rows =
        AULA_TRY(tx.query("SELECT id FROM hosts WHERE state = 'online' AND (last_heartbeat IS NULL "
                          "OR last_heartbeat < ?)",
                          {now - settings_.hostLostAfter.count()}));
    for (const auto& r : rows) {
      lost.push_back(r.integer(0));
      AULA_TRY(tx.exec("UPDATE hosts SET state = 'lost' WHERE id = ?", {r.integer(0)}));
    }
    return {};
  }));
  for (auto id : lost) {
    events_.publish(Event{
        .type = "host.state", .data = Json{{"id", id}, {"state", "lost"}}, .adminOnly = true});
  }
  return static_cast<int>(lost.size());
}

Result<Json> Broker::listEnrolmentTokens(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows =
        AULA_TRY(tx.query("SELECT id, host_name, kind, pool_id, created_at, expires_at, used_at "
                          "FROM enrolment_tokens ORDER BY id"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(0)},
                     {"host_name", r.text(1)},
                     {"kind", r.text(2)},
                     {"pool_id", r.integer(3)},
                     {"created_at", r.integer(4)},
                     {"expires_at", r.integer(5)},
                     {"used_at", nullableInt(r, 6)}});
    }
    return out;
  });
}

Result<Json> Broker::createEnrolmentToken(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"host_name", "kind", "pool_id", "valid_minutes"}));
  auto hostName = AULA_TRY(json::getString(body, "host_name"));
  AULA_TRY_STATUS(checkHostName(hostName));
  auto kind = AULA_TRY(optString(body, "kind")).value_or("hypervisor");
  if (kind != "hypervisor" && kind != "workstation") {
    return Error(Errc::kInvalidArgument, "The field 'kind' must be 'hypervisor' or 'workstation'.");
  }
  auto poolId = AULA_TRY(json::getInt(body, "pool_id"));
  auto minutes = AULA_TRY(optInt(body, "valid_minutes")).value_or(60);
  if (minutes < 1 || minutes > 7 * 24 * 60) {
    return Error(Errc::kInvalidArgument,
                 "The field 'valid_minutes' must be between 1 and 10080 (a week).");
  }
  auto token = fmt::format("aula_j_{}", AULA_TRY(crypto::randomToken(24)));
  auto now = unixNow(clock_);
  return db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {poolId},
                         fmt::format("There is no pool with id {}.", poolId)));
    auto rows = AULA_TRY(tx.query(
        "INSERT INTO enrolment_tokens (token_hash, host_name, kind, pool_id, created_by, "
        "created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        {crypto::sha256Hex(token), hostName, kind, poolId, actor.userId, now, now + minutes * 60}));
    auto id = rows[0].integer(0);
    AULA_TRY_STATUS(
        audit(tx, actor, now, "enrolment_token.create", fmt::format("host:{}", hostName)));
    return Json{{"id", id},     {"token", token},    {"host_name", hostName},
                {"kind", kind}, {"pool_id", poolId}, {"expires_at", now + minutes * 60}};
  });
}

Status Broker::deleteEnrolmentToken(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(clock_);
  return db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(tx.exec("DELETE FROM enrolment_tokens WHERE id = ?", {id}));
    if (n == 0)
      return makeError(Errc::kNotFound, "There is no enrolment token with id {}.", id);
    return audit(tx, actor, now, "enrolment_token.delete", fmt::format("token:{}", id));
  });
}

Result<Json> Broker::listBootHosts(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows =
        AULA_TRY(tx.query("SELECT mac, kind, channel, hostname, host_id, first_seen, last_seen "
                          "FROM boot_hosts ORDER BY mac"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"mac", r.text(0)},
                     {"kind", r.text(1)},
                     {"channel", r.text(2)},
                     {"hostname", r.text(3)},
                     {"host_id", nullableInt(r, 4)},
                     {"first_seen", r.integer(5)},
                     {"last_seen", nullableInt(r, 6)}});
    }
    return out;
  });
}

Result<Json> Broker::putBootHost(const Actor& actor, std::string_view macText, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto mac = AULA_TRY(normalizeMac(macText));
  AULA_TRY_STATUS(json::checkFields(body, {"kind", "channel", "hostname", "host_id"}));
  auto kind = AULA_TRY(json::getString(body, "kind"));
  if (kind != "thin_client" && kind != "workstation" && kind != "unknown") {
    return Error(Errc::kInvalidArgument,
                 "The field 'kind' must be 'thin_client', 'workstation' or 'unknown'.");
  }
  auto channel = AULA_TRY(optString(body, "channel")).value_or("stable");
  AULA_TRY_STATUS(checkName("channel", channel));
  auto hostname = AULA_TRY(optString(body, "hostname")).value_or("");
  if (!hostname.empty())
    AULA_TRY_STATUS(checkHostName(hostname));
  auto hostId = AULA_TRY(optInt(body, "host_id"));
  auto now = unixNow(clock_);
  return db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    if (hostId)
      AULA_TRY(tx.queryOne("SELECT id FROM hosts WHERE id = ?", {*hostId},
                           fmt::format("There is no host with id {}.", *hostId)));
    auto existing =
        AULA_TRY(tx.query("SELECT first_seen, last_seen FROM boot_hosts WHERE mac = ?", {mac}));
    std::int64_t firstSeen = existing.empty() ? now : existing[0].integer(0);
    AULA_TRY(tx.exec("DELETE FROM boot_hosts WHERE mac = ?", {mac}));
    AULA_TRY(
        tx.exec("INSERT INTO boot_hosts (mac, kind, channel, hostname, host_id, first_seen, "
                "last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
                {mac, kind, channel, hostname, intOrNull(hostId), firstSeen,
                 existing.empty() ? db::Value() : existing[0].at(1)}));
    AULA_TRY_STATUS(audit(tx, actor, now, "boot_host.set", fmt::format("mac:{}", mac), body));
    return Json{{"mac", mac},
                {"kind", kind},
                {"channel", channel},
                {"hostname", hostname},
                {"host_id", hostId ? Json(*hostId) : Json()},
                {"first_seen", firstSeen}};
  });
}

Status Broker::deleteBootHost(const Actor& actor, std::string_view macText) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto mac = AULA_TRY(normalizeMac(macText));
  auto now = unixNow(clock_);
  return db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(tx.exec("DELETE FROM boot_hosts WHERE mac = ?", {mac}));
    if (n == 0)
      return makeError(Errc::kNotFound, "There is no boot host with MAC {}.", mac);
    return audit(tx, actor, now, "boot_host.delete", fmt::format("mac:{}", mac));
  });
}

Result<Json> Broker::listAudit(const Actor& actor,
                               const std::map<std::string, std::string>& filter) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    std::string sql =
        "SELECT id, at, actor_id, actor, address, action, object, detail FROM audit_log WHERE 1 = "
        "1";
    db::Params params;
    if (auto it = filter.find("actor"); it != filter.end()) {
      sql += " AND actor = ?";
      params.push_back(it->second);
    }
    if (auto it = filter.find("action"); it != filter.end()) {
      sql += " AND action LIKE ?";
      params.push_back(it->second + "%");
    }
    if (auto it = filter.find("since"); it != filter.end()) {
      sql += " AND at >= ?";
      params.push_back(std::int64_t{std::atoll(it->second.c_str())});
    }
    std::int64_t limit = 200;
    if (auto it = filter.find("limit"); it != filter.end())
      limit = std::clamp<std::int64_t>(std::atoll(it->second.c_str()), 1, 10000);
    sql += " ORDER BY id DESC LIMIT ?";
    params.push_back(limit);
    auto rows = AULA_TRY(tx.query(sql, params));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(0)},
                     {"at", r.integer(1)},
                     {"actor_id", nullableInt(r, 2)},
                     {"actor", r.text(3)},
                     {"address", r.text(4)},
                     {"action", r.text(5)},
                     {"object", r.text(6)},
                     {"detail", json::parse(r.text(7)).valueOr(Json())}});
    }
    return out;
  });
}

bool Broker::canSee(const Actor& actor, const Event& event) const {
  if (actor.role == Role::kAdmin)
    return true;
  if (event.adminOnly)
    return false;
  if (event.ownerId && *event.ownerId == actor.userId)
    return true;
  return actor.role == Role::kManager && actor.categoryId && event.categoryId &&
         *event.categoryId == *actor.categoryId;
}

Result<Json> Broker::gauges() {
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    Json out{{"desktops", Json::object()}, {"hosts", Json::object()}};
    for (const auto& r :
         AULA_TRY(tx.query("SELECT state, COUNT(*) FROM desktops GROUP BY state"))) {
      out["desktops"][r.text(0)] = r.integer(1);
    }
    for (const auto& r : AULA_TRY(tx.query("SELECT state, COUNT(*) FROM hosts GROUP BY state"))) {
      out["hosts"][r.text(0)] = r.integer(1);
    }
    out["users"] = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM users"));
    out["sessions"] = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM sessions WHERE kind = 'session'"));
    return out;
  });
}

}  // namespace aula::broker
