// The quota rules desktops obey: usage of a set of owners, and the check
// of one more desktop against the owner's, their groups' and their
// category's limits.
#include "org/quota_rules.hpp"

namespace aula::broker::detail {

// Usage of the desktops whose owner matches `ownerCondition` (SQL over users u).
Result<Usage> usageWhere(db::Transaction& tx, const std::string& ownerCondition,
                         const db::Params& params) {
  // Columns of the query below, in its order.
  enum UsageCol : std::size_t {
    kUsedDesktops,
    kUsedRunning,
    kUsedVcpus,
    kUsedMemoryMb,
    kUsedDiskGb
  };
  auto row = AULA_TRY(tx.queryOne(
      // PostgreSQL's SUM over BIGINT is NUMERIC; cast back, as Row::integer() wants an integer.
      "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN d.state IN ('starting', 'running') THEN 1 "
      "ELSE 0 END), 0) AS BIGINT), "
      "CAST(COALESCE(SUM(CASE WHEN d.state IN ('starting', 'running') THEN d.vcpus ELSE 0 END), "
      "0) AS BIGINT), "
      "CAST(COALESCE(SUM(CASE WHEN d.state IN ('starting', 'running') THEN d.memory_mb ELSE 0 "
      "END), 0) AS BIGINT), "
      "CAST(COALESCE(SUM(d.disk_gb), 0) AS BIGINT) FROM desktops d JOIN users u ON "
      "u.id = d.owner_id WHERE " +
          ownerCondition,
      params, "usage"));
  return Usage{row.integer(kUsedDesktops), row.integer(kUsedRunning), row.integer(kUsedVcpus),
               row.integer(kUsedMemoryMb), row.integer(kUsedDiskGb),  0};
}

// Checks the owner's own limits (unless `skipPerUser`) and the totals of their
// groups and category, for one more desktop of this size.
Status checkQuotas(db::Transaction& tx, std::int64_t ownerId, QuotaCheck check, std::int64_t vcpus,
                   std::int64_t memoryMb, std::int64_t diskGb, bool skipPerUser) {
  auto evaluate = [&](const Limits& l, const Usage& u, std::string_view who) -> Status {
    if (check == QuotaCheck::kCreate) {
      if (l.desktops && u.desktops + 1 > *l.desktops) {
        return Error(Errc::kQuotaExceeded, limitMessage(who, "desktops", *l.desktops));
      }
      if (l.diskGb && u.diskGb + diskGb > *l.diskGb) {
        return Error(Errc::kQuotaExceeded, limitMessage(who, "GiB of disk", *l.diskGb));
      }
    } else {
      if (l.running && u.running + 1 > *l.running) {
        return Error(Errc::kQuotaExceeded, limitMessage(who, "running desktops", *l.running));
      }
      if (l.vcpus && u.vcpus + vcpus > *l.vcpus) {
        return Error(Errc::kQuotaExceeded, limitMessage(who, "vCPUs in use", *l.vcpus));
      }
      if (l.memoryMb && u.memoryMb + memoryMb > *l.memoryMb) {
        return Error(Errc::kQuotaExceeded, limitMessage(who, "MiB of memory in use", *l.memoryMb));
      }
    }
    return {};
  };
  if (!skipPerUser) {
    auto limits = AULA_TRY(perUserLimits(tx, ownerId));
    auto used = AULA_TRY(usageWhere(tx, "u.id = ?", {ownerId}));
    AULA_TRY_STATUS(evaluate(limits, used, "You have"));
  }
  for (const auto& total : AULA_TRY(totalLimitsOfUser(tx, ownerId))) {
    const auto& l = total.limits;
    if (!l.desktops && !l.running && !l.vcpus && !l.memoryMb && !l.diskGb)
      continue;
    if (total.of == TotalLimit::Of::kGroup) {
      auto used = AULA_TRY(usageWhere(
          tx, "u.id IN (SELECT user_id FROM group_members WHERE group_id = ?)", {total.id}));
      AULA_TRY_STATUS(evaluate(l, used, fmt::format("The group '{}' has", total.groupName)));
    } else {
      auto used = AULA_TRY(usageWhere(tx, "u.category_id = ?", {total.id}));
      AULA_TRY_STATUS(evaluate(l, used, "Your category has"));
    }
  }
  return {};
}

}  // namespace aula::broker::detail
