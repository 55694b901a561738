// Boot hosts: MAC addresses and what they network-boot.
#include "aula/broker/boot_host_service.hpp"

#include "core/policy.hpp"

namespace aula::broker {

using namespace detail;

Result<Json> BootHostService::list(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Columns of the query below, in its order.
    enum BootHostCol : std::size_t {
      kMac,
      kKind,
      kChannel,
      kHostname,
      kHostId,
      kFirstSeen,
      kLastSeen
    };
    auto rows =
        AULA_TRY(tx.query("SELECT mac, kind, channel, hostname, host_id, first_seen, last_seen "
                          "FROM boot_hosts ORDER BY mac"));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"mac", r.text(kMac)},
                     {"kind", r.text(kKind)},
                     {"channel", r.text(kChannel)},
                     {"hostname", r.text(kHostname)},
                     {"host_id", nullableInt(r, kHostId)},
                     {"first_seen", r.integer(kFirstSeen)},
                     {"last_seen", nullableInt(r, kLastSeen)}});
    }
    return out;
  });
}

Result<Json> BootHostService::put(const Actor& actor, std::string_view macText, const Json& body) {
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
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
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

Status BootHostService::remove(const Actor& actor, std::string_view macText) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto mac = AULA_TRY(normalizeMac(macText));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(tx.exec("DELETE FROM boot_hosts WHERE mac = ?", {mac}));
    if (n == 0)
      return makeError(Errc::kNotFound, "There is no boot host with MAC {}.", mac);
    return audit(tx, actor, now, "boot_host.delete", fmt::format("mac:{}", mac));
  });
}

}  // namespace aula::broker
