// The quota rules (not a public header): what a set of owners has in use, and
// whether one more desktop fits the owner's own limits and the totals of
// their groups and category. Desktops and deployments obey them; the org
// service reports the usage.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/policy.hpp"

namespace aula::broker::detail {

struct Usage {
  std::int64_t desktops = 0, running = 0, vcpus = 0, memoryMb = 0, diskGb = 0, templates = 0;
};

// Usage of the desktops whose owner matches `ownerCondition` (SQL over users u).
Result<Usage> usageWhere(db::Transaction& tx, const std::string& ownerCondition,
                         const db::Params& params);

enum class QuotaCheck { kCreate, kStart };

// Checks the owner's own limits (unless `skipPerUser`) and the totals of their
// groups and category, for one more desktop of this size.
Status checkQuotas(db::Transaction& tx, std::int64_t ownerId, QuotaCheck check, std::int64_t vcpus,
                   std::int64_t memoryMb, std::int64_t diskGb, bool skipPerUser);

// Admits desktop starts one after another inside one transaction (a
// deployment's, planned together): each is checked against the limits as
// the starts admitted before it left them, though none of them is stored
// yet. Reads each limit and each total's usage once.
class StartAdmission {
 public:
  explicit StartAdmission(db::Transaction& tx) : tx_(tx) {}

  // Reads the group and category totals of these owners in one round trip.
  Status prefetch(const std::vector<std::int64_t>& owners);
  // The same, read elsewhere (totalLimitsQuery sent with other reads):
  // every owner in `owners` gets an entry, empty if it has no total.
  void prefetched(std::map<std::int64_t, std::vector<TotalLimit>> totals,
                  const std::vector<std::int64_t>& owners);
  // The usage reads that these owners' totals need and that were not read
  // yet, to send with other reads (Transaction::queryAll); then their rows,
  // in the same order. Any usage not read this way is read when needed.
  std::vector<db::Statement> usageQueries(const std::vector<std::int64_t>& owners);
  void usagesRead(const std::vector<std::vector<db::Row>>& results);
  // Checks one more running desktop of this size for the owner (their own
  // limits too, unless `skipPerUser`) and counts it when it fits.
  Status admit(std::int64_t ownerId, std::int64_t vcpus, std::int64_t memoryMb, bool skipPerUser);

 private:
  struct Own {
    Limits limits;
    Usage used;
  };
  db::Transaction& tx_;
  std::map<std::int64_t, std::vector<TotalLimit>> totals_;  // by owner
  std::map<std::int64_t, Own> own_;                         // by owner
  std::map<std::pair<TotalLimit::Of, std::int64_t>, Usage> used_;
  std::vector<std::pair<TotalLimit::Of, std::int64_t>> reading_;  // usageQueries' order
};

}  // namespace aula::broker::detail
