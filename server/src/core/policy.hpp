// Helpers every broker service shares (not a public header): the clock in
// Unix seconds, name checks, rights checks, the audit entry, typed fields of
// JSON bodies, and users' limits.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "aula/broker/context.hpp"

namespace aula::broker::detail {

std::int64_t unixNow(const Clock& clock);

// Validation of names that become database keys, file names or libvirt names.
// Messages say what is allowed.
Status checkName(std::string_view what, std::string_view name);
Status checkUsername(std::string_view name);
Result<std::string> normalizeMac(std::string_view mac);
Status checkHostName(std::string_view name);
Status checkHostAddress(std::string_view address);

Error forbidden();  // the one sentence for "not allowed"

// Tells the event streams of this user, on every broker, that one of the
// user's sessions ended or the account changed: they check their session
// and close if it no longer holds. Call after the change committed.
void publishSessionEnded(EventBus& events, std::int64_t userId);
Status requireAdmin(const Actor& actor);
Status requireManager(const Actor& actor);  // manager or admin
bool managesCategory(const Actor& actor, std::optional<std::int64_t> categoryId);

// The audit entry for a change, written in the change's transaction (queued
// with Transaction::execLater: it goes with the next statement or the COMMIT).
Status audit(db::Transaction& tx, const Actor& actor, std::int64_t at, std::string_view action,
             std::string_view object, const Json& detail = Json::object());
// The same action on many objects ({object, detail} each), in one round trip.
Status auditEach(db::Transaction& tx, const Actor& actor, std::int64_t at, std::string_view action,
                 const std::vector<std::pair<std::string, Json>>& entries);

// Optional typed fields of a JSON body; absent is nullopt, wrong type an error.
Result<std::optional<std::string>> optString(const Json& body, std::string_view field);
Result<std::optional<std::int64_t>> optInt(const Json& body, std::string_view field);
Result<std::optional<bool>> optBool(const Json& body, std::string_view field);
Result<std::int64_t> intInRange(const Json& body, std::string_view field, std::int64_t min,
                                std::int64_t max);

db::Value textOrNull(const std::optional<std::string>& v);
db::Value intOrNull(const std::optional<std::int64_t>& v);
Json nullableInt(const db::Row& row, std::size_t i);
Json nullableText(const db::Row& row, std::size_t i);

// Whether an access list (rows of `table` whose `keyColumn` is `key`, each
// a subject: everyone, user:<id>, group:<id>, category:<id>) names user
// `userId` of `categoryId`, directly or through a group. `table` and
// `keyColumn` are the code's own names, never input.
Result<bool> accessListNames(db::Transaction& tx, std::string_view table,
                             std::string_view keyColumn, std::int64_t key, std::int64_t userId,
                             std::optional<std::int64_t> categoryId);

// Loads the category of a user (or nullopt), kNotFound when no such user.
Result<std::optional<std::int64_t>> userCategory(db::Transaction& tx, std::int64_t userId);
// Group ids the user is a member of.
Result<std::vector<std::int64_t>> userGroups(db::Transaction& tx, std::int64_t userId);

// Whether `actor` may manage the desktops, groups and quotas of user `userId`:
// admins always; managers for users of their category; users themselves for
// their own desktops (when `selfAllowed`).
Result<bool> mayActOnUser(db::Transaction& tx, const Actor& actor, std::int64_t userId,
                          bool selfAllowed);

// The users columns every query that returns a user selects, and their JSON.
extern const char* const kUserColumns;
// Columns of kUserColumns, in its order.
struct UserCol {
  enum : std::size_t {
    kId,
    kUsername,
    kDisplayName,
    kEmail,
    kRole,
    kCategoryId,
    kAuthSource,
    kDisabled,
    kCreatedAt,
    kLastLoginAt
  };
};
Json userRowJson(const db::Row& row);

// Effective limits for one user or one total; nullopt is "no limit".
struct Limits {
  std::optional<std::int64_t> desktops, running, vcpus, memoryMb, diskGb, templates;
};
Result<Limits> perUserLimits(db::Transaction& tx, std::int64_t userId);
Result<Limits> totalLimits(db::Transaction& tx, std::string_view subject);

// A total that applies to one user's desktops: of a group they are in, or of
// their category.
struct TotalLimit {
  enum class Of { kGroup, kCategory } of = Of::kGroup;
  std::int64_t id = 0;
  std::string groupName;  // for kGroup
  Limits limits;
};
// Every total set for the user's groups (by group id) and then their
// category, in one query: a start's placement holds a lock while it runs.
Result<std::vector<TotalLimit>> totalLimitsOfUser(db::Transaction& tx, std::int64_t userId);
// The same for many users, by user id, in one round trip.
Result<std::map<std::int64_t, std::vector<TotalLimit>>> totalLimitsOfUsers(
    db::Transaction& tx, const std::vector<std::int64_t>& userIds);

// The same as a statement to send with other reads (Transaction::queryAll),
// for the users `userCondition` matches (SQL to follow a user id: "= ?",
// "IN (SELECT ...)") with its `params`; then its rows by user (a user with no
// total has no entry).
db::Statement totalLimitsQuery(std::string_view userCondition, const db::Params& params);
std::map<std::int64_t, std::vector<TotalLimit>> totalLimitsByUser(const std::vector<db::Row>& rows);

// "<who> reached the limit of <n> <what>; ..." for kQuotaExceeded.
std::string limitMessage(std::string_view who, std::string_view what, std::int64_t limit);

}  // namespace aula::broker::detail
