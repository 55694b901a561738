// Validation, rights and audit helpers shared by the broker's services.
#include "core/policy.hpp"

#include <algorithm>
#include <cctype>

namespace aula::broker::detail {

std::int64_t unixNow(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count();
}

Status checkName(std::string_view what, std::string_view name) {
  bool ok = !name.empty() && name.size() <= 64 && name.front() != ' ' && name.back() != ' ' &&
            name.front() != '.';
  for (unsigned char c : name) {
    // Letters of any script (UTF-8 bytes >= 0x80), digits, space, '.', '_', '-'.
    ok = ok && (c >= 0x80 || std::isalnum(c) || c == ' ' || c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return makeError(Errc::kInvalidArgument,
                     "The {} name '{}' is not allowed: use 1 to 64 letters, digits, spaces, '.', "
                     "'_' or '-', not starting with '.' or a space.",
                     what, name.substr(0, 80));
  }
  return {};
}

Status checkUsername(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 64 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (unsigned char c : name) {
    ok = ok && (std::islower(c) || std::isdigit(c) || c == '.' || c == '_' || c == '-' || c == '@');
  }
  if (!ok) {
    return makeError(Errc::kInvalidArgument,
                     "The user name '{}' is not allowed: use 1 to 64 lower-case letters, digits, "
                     "'.', '_', '-' or '@', starting with a letter or digit.",
                     name.substr(0, 80));
  }
  return {};
}

Result<std::string> normalizeMac(std::string_view mac) {
  std::string hex;
  for (char c : mac) {
    if (std::isxdigit(static_cast<unsigned char>(c))) {
      hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    } else if (c != ':' && c != '-') {
      hex = "x";
      break;
    }
  }
  if (hex.size() != 12) {
    return makeError(
        Errc::kInvalidArgument,
        "'{}' is not a MAC address; write it as six hex pairs, like 52:54:00:12:34:56.",
        mac.substr(0, 40));
  }
  std::string out;
  for (std::size_t i = 0; i < 12; i += 2) {
    if (!out.empty())
      out.push_back(':');
    out += hex.substr(i, 2);
  }
  return out;
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

void publishSessionEnded(EventBus& events, std::int64_t userId) {
  events.publish(Event{.type = "session.ended",
                       .data = Json{{"user_id", userId}},
                       .ownerId = userId,
                       .internal = true});
}

Error forbidden() {
  return Error(Errc::kPermissionDenied, "You are not allowed to do this.");
}

Status requireAdmin(const Actor& actor) {
  if (actor.role != Role::kAdmin) {
    return Error(Errc::kPermissionDenied, "Only an admin may do this.");
  }
  return {};
}

Status requireManager(const Actor& actor) {
  if (actor.role != Role::kAdmin && actor.role != Role::kManager) {
    return Error(Errc::kPermissionDenied, "Only a teacher (manager) or an admin may do this.");
  }
  return {};
}

bool managesCategory(const Actor& actor, std::optional<std::int64_t> categoryId) {
  if (actor.role == Role::kAdmin)
    return true;
  return actor.role == Role::kManager && actor.categoryId && categoryId &&
         *actor.categoryId == *categoryId;
}

namespace {

constexpr const char* kAuditInsert =
    "INSERT INTO audit_log (at, actor_id, actor, address, action, object, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)";

db::Params auditParams(const Actor& actor, std::int64_t at, std::string_view action,
                       std::string_view object, const Json& detail) {
  return {at,
          actor.userId > 0 ? db::Value(actor.userId) : db::Value(),
          actor.username,
          actor.address,
          std::string(action),
          std::string(object),
          detail.dump()};
}

}  // namespace

Status audit(db::Transaction& tx, const Actor& actor, std::int64_t at, std::string_view action,
             std::string_view object, const Json& detail) {
  // Nobody reads the row back in the same transaction: it goes with the
  // next statement or the COMMIT.
  tx.execLater(kAuditInsert, auditParams(actor, at, action, object, detail));
  return {};
}

Status auditEach(db::Transaction& tx, const Actor& actor, std::int64_t at, std::string_view action,
                 const std::vector<std::pair<std::string, Json>>& entries) {
  static const std::vector<db::Column> kColumns{
      {"at", "BIGINT"},   {"actor_id", "BIGINT"}, {"actor", "TEXT"}, {"address", "TEXT"},
      {"action", "TEXT"}, {"object", "TEXT"},     {"detail", "TEXT"}};
  std::vector<db::Params> rows;
  rows.reserve(entries.size());
  for (const auto& [object, detail] : entries)
    rows.push_back(auditParams(actor, at, action, object, detail));
  return db::insertRows(tx, "audit_log", kColumns, rows, db::Send::kLater);
}

Result<std::optional<std::string>> optString(const Json& body, std::string_view field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null())
    return std::optional<std::string>();
  if (!it->is_string()) {
    return makeError(Errc::kInvalidArgument, "The field '{}' must be a string.", field);
  }
  return std::optional<std::string>(it->get<std::string>());
}

Result<std::optional<std::int64_t>> optInt(const Json& body, std::string_view field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null())
    return std::optional<std::int64_t>();
  if (!it->is_number_integer()) {
    return makeError(Errc::kInvalidArgument, "The field '{}' must be an integer.", field);
  }
  return std::optional<std::int64_t>(it->get<std::int64_t>());
}

Result<std::optional<bool>> optBool(const Json& body, std::string_view field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null())
    return std::optional<bool>();
  if (!it->is_boolean()) {
    return makeError(Errc::kInvalidArgument, "The field '{}' must be true or false.", field);
  }
  return std::optional<bool>(it->get<bool>());
}

Result<std::int64_t> intInRange(const Json& body, std::string_view field, std::int64_t min,
                                std::int64_t max) {
  auto v = AULA_TRY(json::getInt(body, field));
  if (v < min || v > max) {
    return makeError(Errc::kInvalidArgument, "The field '{}' must be between {} and {}.", field,
                     min, max);
  }
  return v;
}

db::Value textOrNull(const std::optional<std::string>& v) {
  return v ? db::Value(*v) : db::Value();
}
db::Value intOrNull(const std::optional<std::int64_t>& v) {
  return v ? db::Value(*v) : db::Value();
}
Json nullableInt(const db::Row& row, std::size_t i) {
  return row.isNull(i) ? Json(nullptr) : Json(row.integer(i));
}
Json nullableText(const db::Row& row, std::size_t i) {
  return row.isNull(i) ? Json(nullptr) : Json(row.text(i));
}

Result<std::optional<std::int64_t>> userCategory(db::Transaction& tx, std::int64_t userId) {
  auto row = AULA_TRY(tx.queryOne("SELECT category_id FROM users WHERE id = ?", {userId},
                                  fmt::format("There is no user with id {}.", userId)));
  return row.optInteger(0);
}

Result<std::vector<std::int64_t>> userGroups(db::Transaction& tx, std::int64_t userId) {
  auto rows = AULA_TRY(tx.query("SELECT group_id FROM group_members WHERE user_id = ?", {userId}));
  std::vector<std::int64_t> out;
  out.reserve(rows.size());
  for (const auto& r : rows)
    out.push_back(r.integer(0));
  return out;
}

Result<bool> mayActOnUser(db::Transaction& tx, const Actor& actor, std::int64_t userId,
                          bool selfAllowed) {
  if (actor.role == Role::kAdmin)
    return true;
  if (selfAllowed && actor.userId == userId)
    return true;
  if (actor.role != Role::kManager || !actor.categoryId)
    return false;
  auto category = AULA_TRY(userCategory(tx, userId));
  if (category && *category == *actor.categoryId)
    return true;
  // A user without a category of their own is in reach through a group of
  // the manager's category.
  auto rows =
      AULA_TRY(tx.query("SELECT 1 FROM group_members m JOIN groups_ g ON g.id = m.group_id "
                        "WHERE m.user_id = ? AND g.category_id = ?",
                        {userId, *actor.categoryId}));
  return !rows.empty();
}

const char* const kUserColumns =
    "id, username, display_name, email, role, category_id, auth_source, disabled, created_at, "
    "last_login_at";

Json userRowJson(const db::Row& r) {
  return Json{{"id", r.integer(UserCol::kId)},
              {"username", r.text(UserCol::kUsername)},
              {"display_name", r.text(UserCol::kDisplayName)},
              {"email", r.text(UserCol::kEmail)},
              {"role", r.text(UserCol::kRole)},
              {"category_id", nullableInt(r, UserCol::kCategoryId)},
              {"auth_source", r.text(UserCol::kAuthSource)},
              {"disabled", r.integer(UserCol::kDisabled) != 0},
              {"created_at", r.integer(UserCol::kCreatedAt)},
              {"last_login_at", nullableInt(r, UserCol::kLastLoginAt)}};
}

namespace {

constexpr const char* kLimitColumns = "desktops, running, vcpus, memory_mb, disk_gb, templates";

// Columns of kLimitColumns, in its order.
enum LimitCol : std::size_t { kDesktops, kRunning, kVcpus, kMemoryMb, kDiskGb, kTemplates };

Limits limitsOf(const db::Row& r) {
  return Limits{r.optInteger(kDesktops), r.optInteger(kRunning), r.optInteger(kVcpus),
                r.optInteger(kMemoryMb), r.optInteger(kDiskGb),  r.optInteger(kTemplates)};
}

// The more generous of two limits; no limit beats any number.
std::optional<std::int64_t> generous(std::optional<std::int64_t> a, std::optional<std::int64_t> b) {
  if (!a || !b)
    return std::nullopt;
  return std::max(*a, *b);
}

}  // namespace

Result<Limits> perUserLimits(db::Transaction& tx, std::int64_t userId) {
  // An explicit per-user quota wins; else the most generous per-member quota
  // of the user's groups; else the default of the user's role.
  auto own =
      AULA_TRY(tx.query(fmt::format("SELECT {} FROM quotas WHERE subject = ?", kLimitColumns),
                        {fmt::format("user:{}", userId)}));
  if (!own.empty())
    return limitsOf(own[0]);
  auto groups = AULA_TRY(
      tx.query(fmt::format("SELECT {} FROM quotas WHERE subject IN (SELECT 'group-member:' || "
                           "CAST(group_id AS TEXT) FROM group_members WHERE user_id = ?)",
                           kLimitColumns),
               {userId}));
  if (!groups.empty()) {
    Limits l = limitsOf(groups[0]);
    for (std::size_t i = 1; i < groups.size(); ++i) {
      Limits o = limitsOf(groups[i]);
      l.desktops = generous(l.desktops, o.desktops);
      l.running = generous(l.running, o.running);
      l.vcpus = generous(l.vcpus, o.vcpus);
      l.memoryMb = generous(l.memoryMb, o.memoryMb);
      l.diskGb = generous(l.diskGb, o.diskGb);
      l.templates = generous(l.templates, o.templates);
    }
    return l;
  }
  auto role = AULA_TRY(tx.queryOne("SELECT role FROM users WHERE id = ?", {userId},
                                   fmt::format("There is no user with id {}.", userId)));
  auto byRole =
      AULA_TRY(tx.query(fmt::format("SELECT {} FROM quotas WHERE subject = ?", kLimitColumns),
                        {"role:" + role.text(0)}));
  if (!byRole.empty())
    return limitsOf(byRole[0]);
  return Limits{};
}

Result<Limits> totalLimits(db::Transaction& tx, std::string_view subject) {
  auto rows =
      AULA_TRY(tx.query(fmt::format("SELECT {} FROM quotas WHERE subject = ?", kLimitColumns),
                        {std::string(subject)}));
  if (rows.empty())
    return Limits{};
  return limitsOf(rows[0]);
}

namespace {

// Columns: kLimitColumns, then these.
enum : std::size_t { kTotalOf = kTemplates + 1, kTotalSubjectId, kTotalGroupName, kTotalUserId };

// The totals of the users in `userCondition` (SQL over u, the user, and
// m.user_id), and the user each is of, as the last column.
std::string totalLimitsSql(std::string_view userCondition) {
  const std::string limits = "q.desktops, q.running, q.vcpus, q.memory_mb, q.disk_gb, q.templates";
  return fmt::format(
      "SELECT {0}, 0, g.id, g.name, m.user_id FROM group_members m JOIN groups_ g ON g.id = "
      "m.group_id JOIN quotas q ON q.subject = 'group:' || CAST(g.id AS TEXT) "
      "WHERE m.user_id {1} "
      "UNION ALL SELECT {0}, 1, u.category_id, '', u.id FROM users u JOIN quotas q ON "
      "q.subject = 'category:' || CAST(u.category_id AS TEXT) WHERE u.id {1} "
      "ORDER BY 7, 8",
      limits, userCondition);
}

std::vector<TotalLimit> totalLimitsOf(const std::vector<db::Row>& rows) {
  std::vector<TotalLimit> out;
  out.reserve(rows.size());
  for (const auto& r : rows) {
    out.push_back(TotalLimit{
        .of = r.integer(kTotalOf) == 0 ? TotalLimit::Of::kGroup : TotalLimit::Of::kCategory,
        .id = r.integer(kTotalSubjectId),
        .groupName = r.text(kTotalGroupName),
        .limits = limitsOf(r)});
  }
  return out;
}

}  // namespace

Result<std::vector<TotalLimit>> totalLimitsOfUser(db::Transaction& tx, std::int64_t userId) {
  return totalLimitsOf(AULA_TRY(tx.query(totalLimitsSql("= ?"), {userId, userId})));
}

db::Statement totalLimitsQuery(std::string_view userCondition, const db::Params& params) {
  db::Params both = params;
  both.insert(both.end(), params.begin(), params.end());
  return {totalLimitsSql(userCondition), std::move(both)};
}

std::map<std::int64_t, std::vector<TotalLimit>> totalLimitsByUser(
    const std::vector<db::Row>& rows) {
  // Rows come ordered by kind and subject, so each user's list keeps that order.
  std::map<std::int64_t, std::vector<TotalLimit>> out;
  for (const auto& r : rows)
    out[r.integer(kTotalUserId)].push_back(totalLimitsOf({r}).front());
  return out;
}

Result<std::map<std::int64_t, std::vector<TotalLimit>>> totalLimitsOfUsers(
    db::Transaction& tx, const std::vector<std::int64_t>& userIds) {
  if (userIds.empty())
    return std::map<std::int64_t, std::vector<TotalLimit>>();
  auto list = db::inIds(tx.dialect(), userIds);
  auto q = totalLimitsQuery(list.sql, list.params);
  auto out = totalLimitsByUser(AULA_TRY(tx.query(q.sql, q.params)));
  for (auto id : userIds)
    out[id];
  return out;
}

std::string limitMessage(std::string_view who, std::string_view what, std::int64_t limit) {
  return fmt::format("{} reached the limit of {} {}; {}", who, limit, what,
                     who == "You have" ? "free some up first or ask your teacher."
                                       : "ask a teacher or an admin to raise it.");
}

Result<bool> accessListNames(db::Transaction& tx, std::string_view table,
                             std::string_view keyColumn, std::int64_t key, std::int64_t userId,
                             std::optional<std::int64_t> categoryId) {
  auto rows = AULA_TRY(tx.query(
      fmt::format(
          "SELECT 1 FROM {0} a WHERE a.{1} = ? AND (a.subject = 'everyone' OR a.subject = ? OR "
          "a.subject = ? OR a.subject IN (SELECT 'group:' || CAST(m.group_id AS TEXT) FROM "
          "group_members m WHERE m.user_id = ?) OR a.subject IN (SELECT 'category:' || "
          "CAST(g.category_id AS TEXT) FROM group_members m JOIN groups_ g ON g.id = m.group_id "
          "WHERE m.user_id = ?))",
          table, keyColumn),
      {key, fmt::format("user:{}", userId),
       categoryId ? fmt::format("category:{}", *categoryId) : std::string("-"), userId, userId}));
  return !rows.empty();
}

}  // namespace aula::broker::detail
