// Workstation records, and the claims of workstations' agents.
#include "aula/broker/workstation_service.hpp"

#include <algorithm>
#include <set>

#include "aula/common/agent_protocol.hpp"
#include "aula/common/pci_address.hpp"

#include "core/policy.hpp"
#include "templates/template_rows.hpp"

namespace aula::broker {

using namespace detail;

namespace {

constexpr const char* kSelect =
    "SELECT w.host_id, h.name, h.state, w.devices, w.template_id, t.name, w.vcpus, w.memory_mb, "
    "w.huge_pages, w.hide_kvm, w.hyperv_vendor_id, w.claimed_by, u.username, w.claimed_at, "
    "w.updated_at, h.devices FROM workstations w JOIN hosts h ON h.id = w.host_id JOIN templates t "
    "ON t.id = w.template_id LEFT JOIN users u ON u.id = w.claimed_by";

// Columns of kSelect, in its order.
struct Col {
  enum : std::size_t {
    kHostId,
    kHost,
    kHostState,
    kDevices,
    kTemplateId,
    kTemplate,
    kVcpus,
    kMemoryMb,
    kHugePages,
    kHideKvm,
    kVendorId,
    kClaimedBy,
    kClaimedByName,
    kClaimedAt,
    kUpdatedAt,
    kReported
  };
};

// The host's last report, by address.
std::map<std::string, Json> reportedDevices(const std::string& text) {
  std::map<std::string, Json> out;
  if (text.empty())
    return out;
  auto parsed = json::parse(text);
  if (!parsed || !parsed->is_object())
    return out;
  for (const auto& d : parsed->value("devices", Json::array())) {
    if (d.is_object() && d.contains("address") && d["address"].is_string())
      out[d["address"].get<std::string>()] = d;
  }
  return out;
}

Result<Json> recordJson(db::Transaction& tx, const db::Row& r) {
  auto reported = reportedDevices(r.text(Col::kReported));
  Json devices = json::parse(r.text(Col::kDevices)).valueOr(Json::array());
  for (auto& d : devices) {
    auto it = reported.find(d.value("address", ""));
    if (it == reported.end()) {
      d["inventory"] = "missing";
    } else if (it->second.value("vendor", "") != d.value("vendor", "") ||
               it->second.value("device", "") != d.value("device", "")) {
      d["inventory"] = "changed";
    } else {
      d["inventory"] = "present";
    }
  }
  auto access =
      AULA_TRY(tx.query("SELECT subject FROM workstation_access WHERE host_id = ? ORDER BY subject",
                        {r.integer(Col::kHostId)}));
  Json a = Json::array();
  for (const auto& row : access)
    a.push_back(row.text(0));
  return Json{
      {"host_id", r.integer(Col::kHostId)},
      {"host", r.text(Col::kHost)},
      {"host_state", r.text(Col::kHostState)},
      {"devices", devices},
      {"template_id", r.integer(Col::kTemplateId)},
      {"template", r.text(Col::kTemplate)},
      {"vcpus", r.integer(Col::kVcpus)},
      {"memory_mb", r.integer(Col::kMemoryMb)},
      {"huge_pages", r.integer(Col::kHugePages) != 0},
      {"hide_kvm", r.integer(Col::kHideKvm) != 0},
      {"hyperv_vendor_id", r.text(Col::kVendorId)},
      {"access", a},
      {"claimed_by", r.isNull(Col::kClaimedBy) ? Json() : Json(r.text(Col::kClaimedByName))},
      {"claimed_at", nullableInt(r, Col::kClaimedAt)},
      {"updated_at", r.integer(Col::kUpdatedAt)}};
}

struct Choice {
  std::string address;
  std::string rom;
};

Result<std::vector<Choice>> parseDevices(const Json& body) {
  auto it = body.find("devices");
  if (it == body.end() || !it->is_array() || it->empty()) {
    return Error(Errc::kInvalidArgument,
                 "The field 'devices' must list the PCI addresses to pass through, at least the "
                 "GPU (see 'aulactl hosts devices ID').");
  }
  if (it->size() > 16)
    return Error(Errc::kInvalidArgument, "A workstation passes at most 16 devices.");
  std::vector<Choice> out;
  for (const auto& d : *it) {
    Choice c;
    if (d.is_string()) {
      c.address = d.get<std::string>();
    } else if (d.is_object()) {
      AULA_TRY_STATUS(json::checkFields(d, {"address", "rom"}));
      c.address = AULA_TRY(json::getString(d, "address"));
      c.rom = AULA_TRY(optString(d, "rom")).value_or("");
    } else {
      return Error(Errc::kInvalidArgument,
                   "Each of 'devices' is a PCI address (\"0000:01:00.0\") or {\"address\", "
                   "\"rom\"}.");
    }
    auto address = canonicalPciAddress(c.address);
    if (!address) {
      return makeError(Errc::kInvalidArgument,
                       "The device '{}' is not a PCI address such as 0000:01:00.0.",
                       c.address.substr(0, 40));
    }
    c.address = *address;
    if (!c.rom.empty() &&
        (c.rom.front() != '/' || c.rom.find("..") != std::string::npos || c.rom.size() > 255)) {
      return makeError(Errc::kInvalidArgument,
                       "The ROM file of {} must be an absolute path on the workstation without "
                       "'..', at most 255 characters.",
                       c.address);
    }
    if (std::ranges::any_of(out, [&](const Choice& o) { return o.address == c.address; }))
      return makeError(Errc::kInvalidArgument, "The device {} is listed twice.", c.address);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

Result<Json> WorkstationService::list(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kSelect) + " ORDER BY h.name"));
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(AULA_TRY(recordJson(tx, r)));
    return out;
  });
}

Result<Json> WorkstationService::get(const Actor& actor, std::int64_t hostId) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto host = AULA_TRY(tx.queryOne("SELECT name FROM hosts WHERE id = ?", {hostId},
                                     fmt::format("There is no host with id {}.", hostId)));
    auto rows = AULA_TRY(tx.query(std::string(kSelect) + " WHERE w.host_id = ?", {hostId}));
    if (rows.empty()) {
      return makeError(Errc::kNotFound,
                       "The host '{}' has no workstation set up; 'aulactl workstations set {}' "
                       "sets one.",
                       host.text(0), hostId);
    }
    return recordJson(tx, rows[0]);
  });
}

Result<Json> WorkstationService::set(const Actor& actor, std::int64_t hostId, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"devices", "template_id", "vcpus", "memory_mb", "access",
                                           "huge_pages", "hide_kvm", "hyperv_vendor_id"}));
  auto choices = AULA_TRY(parseDevices(body));
  auto templateId = AULA_TRY(json::getInt(body, "template_id"));
  auto vcpus = AULA_TRY(optInt(body, "vcpus"));
  auto memory = AULA_TRY(optInt(body, "memory_mb"));
  auto access = AULA_TRY(accessList(body));
  auto hugePages = AULA_TRY(optBool(body, "huge_pages")).value_or(false);
  auto hideKvm = AULA_TRY(optBool(body, "hide_kvm")).value_or(false);
  auto vendorId = AULA_TRY(optString(body, "hyperv_vendor_id")).value_or("");
  if (vendorId.size() > 12 ||
      !std::ranges::all_of(vendorId, [](unsigned char c) { return std::isalnum(c) != 0; })) {
    return Error(Errc::kInvalidArgument,
                 "The field 'hyperv_vendor_id' must be 1 to 12 letters and digits, or empty.");
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto host =
        AULA_TRY(tx.queryOne("SELECT name, kind, devices, cpus, memory_mb FROM hosts WHERE id = ?",
                             {hostId}, fmt::format("There is no host with id {}.", hostId)));
    const std::string& name = host.text(0);
    if (host.text(1) != "workstation") {
      return makeError(Errc::kConflict,
                       "The host '{}' is a {}; only a host of kind workstation runs a passthrough "
                       "VM.",
                       name, host.text(1));
    }
    auto reported = reportedDevices(host.text(2));
    if (reported.empty()) {
      return makeError(Errc::kConflict,
                       "The host '{}' has not reported its devices yet; start its agent (its "
                       "heartbeat carries them), then choose from 'aulactl hosts devices {}'.",
                       name, hostId);
    }
    Json devices = Json::array();
    bool gpu = false;
    for (const auto& c : choices) {
      auto it = reported.find(c.address);
      if (it == reported.end()) {
        return makeError(Errc::kInvalidArgument,
                         "The host '{}' has no device {}; 'aulactl hosts devices {}' lists what "
                         "it reported.",
                         name, c.address, hostId);
      }
      const auto kind = it->second.value("kind", "");
      if (kind == "bridge") {
        return makeError(Errc::kInvalidArgument,
                         "The device {} is a bridge, which the host needs; choose the devices "
                         "behind it.",
                         c.address);
      }
      gpu = gpu || kind == "GPU";
      devices.push_back({{"address", c.address},
                         {"kind", kind},
                         {"vendor", it->second.value("vendor", "")},
                         {"device", it->second.value("device", "")},
                         {"rom", c.rom.empty() ? Json() : Json(c.rom)}});
    }
    if (!gpu) {
      return Error(Errc::kInvalidArgument,
                   "A workstation's VM needs a GPU among its devices: it drives the monitor.");
    }
    auto t = AULA_TRY(
        tx.queryOne("SELECT vcpus, memory_mb, enabled, name FROM templates WHERE id "
                    "= ?",
                    {templateId}, fmt::format("There is no template with id {}.", templateId)));
    if (t.integer(2) == 0)
      return makeError(Errc::kConflict, "The template '{}' is disabled.", t.text(3));
    const auto cpus = vcpus.value_or(t.integer(0));
    const auto mem = memory.value_or(t.integer(1));
    const auto hostCpus = host.integer(3);
    const auto hostMemory = host.integer(4);
    if (cpus < 1 || cpus > 128 || (hostCpus > 0 && cpus > hostCpus)) {
      return makeError(
          Errc::kInvalidArgument, "The field 'vcpus' must be 1 to 128{}.",
          hostCpus > 0 ? fmt::format(" and at most the host's {} CPUs", hostCpus) : std::string());
    }
    if (mem < 1024 || (hostMemory > 0 && mem > hostMemory - 1024)) {
      return makeError(Errc::kInvalidArgument, "The field 'memory_mb' must be at least 1024{}.",
                       hostMemory > 0
                           ? fmt::format(" and leave the host 1024 of its {} MiB", hostMemory)
                           : std::string());
    }
    for (const auto& a : access)
      AULA_TRY_STATUS(checkAccessSubject(tx, actor, a));
    auto existing = AULA_TRY(tx.query("SELECT 1 FROM workstations WHERE host_id = ?", {hostId}));
    if (existing.empty()) {
      AULA_TRY(tx.exec(
          "INSERT INTO workstations (host_id, devices, template_id, vcpus, memory_mb, huge_pages, "
          "hide_kvm, hyperv_vendor_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
          {hostId, devices.dump(), templateId, cpus, mem, std::int64_t{hugePages ? 1 : 0},
           std::int64_t{hideKvm ? 1 : 0}, vendorId, now}));
    } else {
      AULA_TRY(tx.exec(
          "UPDATE workstations SET devices = ?, template_id = ?, vcpus = ?, memory_mb = ?, "
          "huge_pages = ?, hide_kvm = ?, hyperv_vendor_id = ?, updated_at = ? WHERE host_id = ?",
          {devices.dump(), templateId, cpus, mem, std::int64_t{hugePages ? 1 : 0},
           std::int64_t{hideKvm ? 1 : 0}, vendorId, now, hostId}));
      AULA_TRY(tx.exec("DELETE FROM workstation_access WHERE host_id = ?", {hostId}));
    }
    for (const auto& a : access) {
      AULA_TRY(
          tx.exec("INSERT INTO workstation_access (host_id, subject) VALUES (?, ?) ON "
                  "CONFLICT DO NOTHING",
                  {hostId, a}));
    }
    AULA_TRY_STATUS(audit(tx, actor, now, "workstation.set", fmt::format("host:{}", name), body));
    auto row =
        AULA_TRY(tx.queryOne(std::string(kSelect) + " WHERE w.host_id = ?", {hostId}, "gone"));
    return recordJson(tx, row);
  });
}

Status WorkstationService::remove(const Actor& actor, std::int64_t hostId) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto host = AULA_TRY(tx.queryOne("SELECT name FROM hosts WHERE id = ?", {hostId},
                                     fmt::format("There is no host with id {}.", hostId)));
    auto row = AULA_TRY(tx.queryOne(
        "SELECT u.username FROM workstations w LEFT JOIN users u ON u.id = w.claimed_by WHERE "
        "w.host_id = ?",
        {hostId}, fmt::format("The host '{}' has no workstation set up.", host.text(0))));
    if (!row.isNull(0)) {
      return makeError(Errc::kConflict,
                       "'{}' uses the workstation '{}' now; it can be removed once their VM has "
                       "stopped.",
                       row.text(0), host.text(0));
    }
    AULA_TRY(tx.exec("DELETE FROM workstation_access WHERE host_id = ?", {hostId}));
    AULA_TRY(tx.exec("DELETE FROM workstations WHERE host_id = ?", {hostId}));
    return audit(tx, actor, now, "workstation.remove", fmt::format("host:{}", host.text(0)));
  });
}

Result<Json> WorkstationService::claim(std::int64_t hostId, const Json& body,
                                       const std::string& address) {
  const auto asked = AULA_TRY(proto::parseWorkstationClaim(body));
  const std::string& user = asked.user;
  const std::string& session = asked.session;
  // The session the greeter got when the user logged in: proof that the
  // user is at the workstation now, not just named by its agent.
  auto actor = auth_.authenticate(session, address);
  if (!actor) {
    return Error(Errc::kUnauthenticated,
                 "The login has expired or ended; log in again at the workstation.");
  }
  if (actor->username != user) {
    return Error(Errc::kUnauthenticated,
                 "The login the workstation sent is not this user's; log in again.");
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kSelect) + " WHERE w.host_id = ?", {hostId}));
    if (rows.empty()) {
      return Error(Errc::kNotFound,
                   "This machine is not set up as a workstation yet; ask an admin to choose its "
                   "devices and users.");
    }
    const auto& r = rows[0];
    const std::string state = r.text(Col::kHostState);
    if (state == "maintenance" || state == "disabled") {
      return makeError(Errc::kPermissionDenied,
                       "The workstation is {} for now; ask an admin when it is back.",
                       state == "maintenance" ? "in maintenance" : "disabled");
    }
    const auto category = AULA_TRY(userCategory(tx, actor->userId));
    if (!AULA_TRY(accessListNames(tx, "workstation_access", "host_id", hostId, actor->userId,
                                  category))) {
      return makeError(Errc::kPermissionDenied,
                       "{} may not use this workstation; ask an admin to add you to it.",
                       actor->username);
    }
    auto t = AULA_TRY(tx.queryOne(
        "SELECT storage, base_disk, enabled, name FROM templates WHERE id = ?",
        {r.integer(Col::kTemplateId)}, "The workstation's template is gone; ask an admin."));
    if (t.integer(2) == 0) {
      return makeError(Errc::kPermissionDenied,
                       "The workstation's template '{}' is disabled; ask an admin.", t.text(3));
    }
    AULA_TRY(tx.exec("UPDATE workstations SET claimed_by = ?, claimed_at = ? WHERE host_id = ?",
                     {actor->userId, now, hostId}));
    AULA_TRY_STATUS(
        audit(tx, *actor, now, "workstation.claim", fmt::format("host:{}", r.text(Col::kHost))));
    proto::WorkstationGrantAnswer grant;
    grant.user = actor->username;
    grant.domain = fmt::format("aula-ws-{}", r.text(Col::kHost));
    for (const auto& d : json::parse(r.text(Col::kDevices)).valueOr(Json::array())) {
      grant.devices.push_back(
          proto::GrantedDevice{.address = d.value("address", ""),
                               .vendor = d.value("vendor", ""),
                               .device = d.value("device", ""),
                               .rom = d.contains("rom") && d["rom"].is_string()
                                          ? std::optional<std::string>(d["rom"].get<std::string>())
                                          : std::nullopt});
    }
    grant.vcpus = r.integer(Col::kVcpus);
    grant.memoryMb = r.integer(Col::kMemoryMb);
    grant.hugePages = r.integer(Col::kHugePages) != 0;
    grant.hideKvm = r.integer(Col::kHideKvm) != 0;
    grant.hypervVendorId = r.text(Col::kVendorId);
    // The user's own overlay on this workstation, over the template's
    // image: it stays between sessions, as a persistent desktop's does.
    grant.disk = proto::GrantedDisk{
        .baseStorage = t.text(0),
        .baseDisk = t.text(1),
        .storage = "desktops",
        .path = fmt::format("workstations/{}/{}.qcow2", r.text(Col::kHost), actor->userId)};
    return proto::toJson(grant);
  });
}

Status WorkstationService::release(std::int64_t hostId, const Json& body) {
  const auto released = AULA_TRY(proto::parseWorkstationRelease(body));
  const std::string& user = released.user;
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto rows = AULA_TRY(tx.query(
        "SELECT u.id, h.name FROM workstations w JOIN hosts h ON h.id = w.host_id JOIN users u ON "
        "u.id = w.claimed_by WHERE w.host_id = ? AND u.username = ?",
        {hostId, user}));
    if (rows.empty())
      return {};
    AULA_TRY(
        tx.exec("UPDATE workstations SET claimed_by = NULL, claimed_at = NULL WHERE host_id = ?",
                {hostId}));
    Actor who{.userId = rows[0].integer(0), .username = user};
    return audit(tx, who, now, "workstation.release", fmt::format("host:{}", rows[0].text(1)));
  });
}

}  // namespace aula::broker
