// The audit log, who sees which live event, and the gauges of /metrics.
#include "aula/broker/access_service.hpp"

#include <algorithm>
#include <cstdlib>

#include "core/policy.hpp"

namespace aula::broker {

using namespace detail;

// Columns of listAudit()'s query, in its order.
struct AuditCol {
  enum : std::size_t { kId, kAt, kActorId, kActor, kAddress, kAction, kObject, kDetail };
};

Result<Json> AccessService::listAudit(const Actor& actor,
                                      const std::map<std::string, std::string>& filter) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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
      out.push_back({{"id", r.integer(AuditCol::kId)},
                     {"at", r.integer(AuditCol::kAt)},
                     {"actor_id", nullableInt(r, AuditCol::kActorId)},
                     {"actor", r.text(AuditCol::kActor)},
                     {"address", r.text(AuditCol::kAddress)},
                     {"action", r.text(AuditCol::kAction)},
                     {"object", r.text(AuditCol::kObject)},
                     {"detail", json::parse(r.text(AuditCol::kDetail)).valueOr(Json())}});
    }
    return out;
  });
}

bool AccessService::canSee(const Actor& actor, const Event& event) const {
  if (actor.role == Role::kAdmin)
    return true;
  if (event.adminOnly)
    return false;
  if (event.ownerId && *event.ownerId == actor.userId)
    return true;
  return actor.role == Role::kManager && actor.categoryId && event.categoryId &&
         *event.categoryId == *actor.categoryId;
}

Result<Json> AccessService::gauges() {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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
