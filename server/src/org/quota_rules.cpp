// The quota rules desktops obey: usage of a set of owners, and the check
// of one more desktop against the owner's, their groups' and their
// category's limits.
#include "org/quota_rules.hpp"

#include <algorithm>

namespace aula::broker::detail {

// Columns of usageQuery's statement, in its order.
enum UsageCol : std::size_t { kUsedDesktops, kUsedRunning, kUsedVcpus, kUsedMemoryMb, kUsedDiskGb };

db::Statement usageQuery(const std::string& ownerCondition, const db::Params& params) {
  // PostgreSQL's SUM over BIGINT is NUMERIC; cast back, as Row::integer() wants an integer.
  return {
      "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN d.state IN ('starting', 'running') THEN 1 "
      "ELSE 0 END), 0) AS BIGINT), "
      "CAST(COALESCE(SUM(CASE WHEN d.state IN ('starting', 'running') THEN d.vcpus ELSE 0 "
      "END), 0) AS BIGINT), "
      "CAST(COALESCE(SUM(CASE WHEN d.state IN ('starting', 'running') THEN d.memory_mb ELSE "
      "0 END), 0) AS BIGINT), "
      "CAST(COALESCE(SUM(d.disk_gb), 0) AS BIGINT) FROM desktops d JOIN users u ON "
      "u.id = d.owner_id WHERE " +
          ownerCondition,
      params};
}

Usage usageOf(const db::Row& row) {
  return Usage{row.integer(kUsedDesktops), row.integer(kUsedRunning), row.integer(kUsedVcpus),
               row.integer(kUsedMemoryMb), row.integer(kUsedDiskGb),  0};
}

Result<Usage> readUsage(db::Transaction& tx, const db::Statement& q) {
  return usageOf(AULA_TRY(tx.queryOne(q.sql, q.params, "usage")));
}

// Usage of the desktops whose owner matches `ownerCondition` (SQL over users u).
Result<Usage> usageWhere(db::Transaction& tx, const std::string& ownerCondition,
                         const db::Params& params) {
  return readUsage(tx, usageQuery(ownerCondition, params));
}

namespace {

// Whether one more desktop of this size fits the limits `l` over usage `u`.
Status evaluate(QuotaCheck check, const Limits& l, const Usage& u, std::int64_t vcpus,
                std::int64_t memoryMb, std::int64_t diskGb, std::string_view who) {
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
}

bool limitsAnything(const Limits& l) {
  return l.desktops || l.running || l.vcpus || l.memoryMb || l.diskGb;
}

// The usage read of the desktops a total counts.
db::Statement usageOfTotalQuery(const TotalLimit& total) {
  if (total.of == TotalLimit::Of::kGroup) {
    return usageQuery("u.id IN (SELECT user_id FROM group_members WHERE group_id = ?)", {total.id});
  }
  return usageQuery("u.category_id = ?", {total.id});
}

Result<Usage> usageOfTotal(db::Transaction& tx, const TotalLimit& total) {
  return readUsage(tx, usageOfTotalQuery(total));
}

std::string totalWho(const TotalLimit& total) {
  return total.of == TotalLimit::Of::kGroup ? fmt::format("The group '{}' has", total.groupName)
                                            : std::string("Your category has");
}

}  // namespace

// Checks the owner's own limits (unless `skipPerUser`) and the totals of their
// groups and category, for one more desktop of this size.
Status checkQuotas(db::Transaction& tx, std::int64_t ownerId, QuotaCheck check, std::int64_t vcpus,
                   std::int64_t memoryMb, std::int64_t diskGb, bool skipPerUser) {
  if (!skipPerUser) {
    auto limits = AULA_TRY(perUserLimits(tx, ownerId));
    auto used = AULA_TRY(usageWhere(tx, "u.id = ?", {ownerId}));
    AULA_TRY_STATUS(evaluate(check, limits, used, vcpus, memoryMb, diskGb, "You have"));
  }
  for (const auto& total : AULA_TRY(totalLimitsOfUser(tx, ownerId))) {
    if (!limitsAnything(total.limits))
      continue;
    auto used = AULA_TRY(usageOfTotal(tx, total));
    AULA_TRY_STATUS(evaluate(check, total.limits, used, vcpus, memoryMb, diskGb, totalWho(total)));
  }
  return {};
}

Status StartAdmission::prefetch(const std::vector<std::int64_t>& owners) {
  std::vector<std::int64_t> missing;
  for (auto owner : owners) {
    if (!totals_.contains(owner) &&
        std::find(missing.begin(), missing.end(), owner) == missing.end()) {
      missing.push_back(owner);
    }
  }
  totals_.merge(AULA_TRY(totalLimitsOfUsers(tx_, missing)));
  return {};
}

void StartAdmission::prefetched(std::map<std::int64_t, std::vector<TotalLimit>> totals,
                                const std::vector<std::int64_t>& owners) {
  totals_.merge(totals);
  for (auto owner : owners)
    totals_[owner];
}

std::vector<db::Statement> StartAdmission::usageQueries(const std::vector<std::int64_t>& owners) {
  std::vector<db::Statement> out;
  reading_.clear();
  for (auto owner : owners) {
    auto totals = totals_.find(owner);
    if (totals == totals_.end())
      continue;
    for (const auto& total : totals->second) {
      auto key = std::make_pair(total.of, total.id);
      if (!limitsAnything(total.limits) || used_.contains(key) ||
          std::find(reading_.begin(), reading_.end(), key) != reading_.end()) {
        continue;
      }
      reading_.push_back(key);
      out.push_back(usageOfTotalQuery(total));
    }
  }
  return out;
}

void StartAdmission::usagesRead(const std::vector<std::vector<db::Row>>& results) {
  for (std::size_t i = 0; i < reading_.size() && i < results.size(); ++i) {
    if (!results[i].empty())
      used_.emplace(reading_[i], usageOf(results[i].front()));
  }
  reading_.clear();
}

Status StartAdmission::admit(std::int64_t ownerId, std::int64_t vcpus, std::int64_t memoryMb,
                             bool skipPerUser) {
  Own* own = nullptr;
  if (!skipPerUser) {
    auto it = own_.find(ownerId);
    if (it == own_.end()) {
      Own loaded{AULA_TRY(perUserLimits(tx_, ownerId)),
                 AULA_TRY(usageWhere(tx_, "u.id = ?", {ownerId}))};
      it = own_.emplace(ownerId, loaded).first;
    }
    own = &it->second;
    AULA_TRY_STATUS(
        evaluate(QuotaCheck::kStart, own->limits, own->used, vcpus, memoryMb, 0, "You have"));
  }
  AULA_TRY_STATUS(prefetch({ownerId}));
  std::vector<Usage*> counted;
  for (const auto& total : totals_.at(ownerId)) {
    if (!limitsAnything(total.limits))
      continue;
    auto key = std::make_pair(total.of, total.id);
    auto it = used_.find(key);
    if (it == used_.end())
      it = used_.emplace(key, AULA_TRY(usageOfTotal(tx_, total))).first;
    AULA_TRY_STATUS(evaluate(QuotaCheck::kStart, total.limits, it->second, vcpus, memoryMb, 0,
                             totalWho(total)));
    counted.push_back(&it->second);
  }
  // It fits everywhere: count it.
  if (own != nullptr)
    counted.push_back(&own->used);
  for (Usage* u : counted) {
    u->running += 1;
    u->vcpus += vcpus;
    u->memoryMb += memoryMb;
  }
  return {};
}

}  // namespace aula::broker::detail
