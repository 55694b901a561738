// The quota rules (not a public header): what a set of owners has in use, and
// whether one more desktop fits the owner's own limits and the totals of
// their groups and category. Desktops and deployments obey them; the org
// service reports the usage.
#pragma once

#include <cstdint>
#include <string>

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

}  // namespace aula::broker::detail
