// Categories, groups, users and quotas.
#include "aula/broker/org_service.hpp"

#include "aula/common/crypto.hpp"

#include "core/policy.hpp"
#include "org/quota_rules.hpp"

namespace aula::broker {

using namespace detail;

namespace {

constexpr const char* kGroupSelect =
    "SELECT g.id, g.category_id, g.name, g.description, g.ldap_dn, g.created_at, "
    "(SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) FROM groups_ g";

// Columns of kGroupSelect, in its order.
struct GroupCol {
  enum : std::size_t { kId, kCategoryId, kName, kDescription, kLdapDn, kCreatedAt, kMembers };
};

Json groupRowJson(const db::Row& r) {
  return Json{{"id", r.integer(GroupCol::kId)},
              {"category_id", r.integer(GroupCol::kCategoryId)},
              {"name", r.text(GroupCol::kName)},
              {"description", r.text(GroupCol::kDescription)},
              {"ldap_dn", nullableText(r, GroupCol::kLdapDn)},
              {"created_at", r.integer(GroupCol::kCreatedAt)},
              {"members", r.integer(GroupCol::kMembers)}};
}

Result<std::int64_t> groupCategory(db::Transaction& tx, std::int64_t groupId) {
  auto row = AULA_TRY(tx.queryOne("SELECT category_id FROM groups_ WHERE id = ?", {groupId},
                                  fmt::format("There is no group with id {}.", groupId)));
  return row.integer(0);
}

const std::vector<std::string>& quotaColumns() {
  static const std::vector<std::string> kColumns = {"desktops",  "running", "vcpus",
                                                    "memory_mb", "disk_gb", "templates"};
  return kColumns;
}

}  // namespace

// ---- categories ----

Result<Json> OrgService::listCategories(const Actor& actor) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Columns of both queries below, in their order.
    enum CategoryCol : std::size_t {
      kCategoryId,
      kCategoryName,
      kCategoryDescription,
      kCategoryCreated
    };
    std::vector<db::Row> rows;
    if (actor.role == Role::kAdmin) {
      rows = AULA_TRY(
          tx.query("SELECT id, name, description, created_at FROM categories ORDER BY name"));
    } else if (actor.categoryId) {
      rows =
          AULA_TRY(tx.query("SELECT id, name, description, created_at FROM categories WHERE id = ?",
                            {*actor.categoryId}));
    }
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(kCategoryId)},
                     {"name", r.text(kCategoryName)},
                     {"description", r.text(kCategoryDescription)},
                     {"created_at", r.integer(kCategoryCreated)}});
    }
    return out;
  });
}

Result<Json> OrgService::createCategory(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "description"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("category", name));
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = tx.query(
        "INSERT INTO categories (name, description, created_at) VALUES (?, ?, ?) RETURNING id",
        {name, description, now});
    if (!rows && rows.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A category named '{}' exists already.", name);
    }
    auto id = AULA_TRY(std::move(rows))[0].integer(0);
    AULA_TRY_STATUS(audit(tx, actor, now, "category.create", fmt::format("category:{}", id),
                          Json{{"name", name}}));
    return Json{{"id", id}, {"name", name}, {"description", description}, {"created_at", now}};
  });
}

Result<Json> OrgService::updateCategory(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "description"}));
  auto name = AULA_TRY(optString(body, "name"));
  auto description = AULA_TRY(optString(body, "description"));
  if (name)
    AULA_TRY_STATUS(checkName("category", *name));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row =
        AULA_TRY(tx.queryOne("SELECT name, description, created_at FROM categories WHERE id = ?",
                             {id}, fmt::format("There is no category with id {}.", id)));
    std::string newName = name.value_or(row.text(0));
    std::string newDescription = description.value_or(row.text(1));
    auto r = tx.exec("UPDATE categories SET name = ?, description = ? WHERE id = ?",
                     {newName, newDescription, id});
    if (!r && r.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A category named '{}' exists already.", newName);
    }
    AULA_TRY(std::move(r));
    AULA_TRY_STATUS(audit(tx, actor, now, "category.update", fmt::format("category:{}", id), body));
    return Json{{"id", id},
                {"name", newName},
                {"description", newDescription},
                {"created_at", row.integer(2)}};
  });
}

Status OrgService::deleteCategory(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireAdmin(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {id},
                         fmt::format("There is no category with id {}.", id)));
    auto groups = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM groups_ WHERE category_id = ?", {id}));
    auto users = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM users WHERE category_id = ?", {id}));
    if (groups > 0 || users > 0) {
      return makeError(
          Errc::kConflict,
          "The category still has {} group(s) and {} user(s); move or delete them first.", groups,
          users);
    }
    AULA_TRY(tx.exec("DELETE FROM quotas WHERE subject = ?", {fmt::format("category:{}", id)}));
    AULA_TRY(
        tx.exec("DELETE FROM template_access WHERE subject = ?", {fmt::format("category:{}", id)}));
    AULA_TRY(tx.exec("DELETE FROM workstation_access WHERE subject = ?",
                     {fmt::format("category:{}", id)}));
    AULA_TRY(tx.exec("UPDATE templates SET category_id = NULL WHERE category_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM categories WHERE id = ?", {id}));
    return audit(tx, actor, now, "category.delete", fmt::format("category:{}", id));
  });
}

// ---- groups ----

Result<Json> OrgService::listGroups(const Actor& actor) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    std::vector<db::Row> rows;
    if (actor.role == Role::kAdmin) {
      rows = AULA_TRY(tx.query(std::string(kGroupSelect) + " ORDER BY g.name"));
    } else if (actor.role == Role::kManager && actor.categoryId) {
      rows =
          AULA_TRY(tx.query(std::string(kGroupSelect) + " WHERE g.category_id = ? ORDER BY g.name",
                            {*actor.categoryId}));
    } else {
      rows = AULA_TRY(tx.query(std::string(kGroupSelect) +
                                   " WHERE g.id IN (SELECT group_id FROM group_members WHERE "
                                   "user_id = ?) ORDER BY g.name",
                               {actor.userId}));
    }
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(groupRowJson(r));
    return out;
  });
}

Result<Json> OrgService::getGroup(const Actor& actor, std::int64_t id) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kGroupSelect) + " WHERE g.id = ?", {id},
                                    fmt::format("There is no group with id {}.", id)));
    Json out = groupRowJson(row);
    if (!managesCategory(actor, row.integer(GroupCol::kCategoryId))) {
      // Members see their own group, without the class list.
      auto member = AULA_TRY(tx.query(
          "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", {id, actor.userId}));
      if (member.empty())
        return makeError(Errc::kNotFound, "There is no group with id {}.", id);
      return out;
    }
    // Columns of the query below, in its order.
    enum MemberCol : std::size_t { kMemberId, kMemberUsername, kMemberDisplayName, kMemberRole };
    auto members = AULA_TRY(tx.query(
        "SELECT u.id, u.username, u.display_name, u.role FROM group_members m JOIN users u "
        "ON u.id = m.user_id WHERE m.group_id = ? ORDER BY u.username",
        {id}));
    Json list = Json::array();
    for (const auto& m : members) {
      list.push_back({{"id", m.integer(kMemberId)},
                      {"username", m.text(kMemberUsername)},
                      {"display_name", m.text(kMemberDisplayName)},
                      {"role", m.text(kMemberRole)}});
    }
    out["member_list"] = list;
    return out;
  });
}

Result<Json> OrgService::createGroup(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "category_id", "description", "ldap_dn"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("group", name));
  auto category = AULA_TRY(optInt(body, "category_id"));
  if (!category)
    category = actor.categoryId;
  if (!category) {
    return Error(Errc::kInvalidArgument,
                 "The field 'category_id' is missing: a group belongs to a category.");
  }
  if (!managesCategory(actor, category))
    return forbidden();
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto ldapDn = AULA_TRY(optString(body, "ldap_dn"));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {*category},
                         fmt::format("There is no category with id {}.", *category)));
    auto rows = tx.query(
        "INSERT INTO groups_ (category_id, name, description, ldap_dn, created_at) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        {*category, name, description, textOrNull(ldapDn), now});
    if (!rows && rows.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A group named '{}' exists already in this category.",
                       name);
    }
    auto id = AULA_TRY(std::move(rows))[0].integer(0);
    AULA_TRY_STATUS(audit(tx, actor, now, "group.create", fmt::format("group:{}", id),
                          Json{{"name", name}, {"category_id", *category}}));
    auto row = AULA_TRY(tx.queryOne(std::string(kGroupSelect) + " WHERE g.id = ?", {id}, "gone"));
    return groupRowJson(row);
  });
}

Result<Json> OrgService::updateGroup(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "description", "ldap_dn"}));
  auto name = AULA_TRY(optString(body, "name"));
  if (name)
    AULA_TRY_STATUS(checkName("group", *name));
  auto description = AULA_TRY(optString(body, "description"));
  auto ldapDn = AULA_TRY(optString(body, "ldap_dn"));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kGroupSelect) + " WHERE g.id = ?", {id},
                                    fmt::format("There is no group with id {}.", id)));
    if (!managesCategory(actor, row.integer(GroupCol::kCategoryId)))
      return forbidden();
    auto r = tx.exec("UPDATE groups_ SET name = ?, description = ?, ldap_dn = ? WHERE id = ?",
                     {name.value_or(row.text(GroupCol::kName)),
                      description.value_or(row.text(GroupCol::kDescription)),
                      ldapDn ? db::Value(*ldapDn) : row.at(GroupCol::kLdapDn), id});
    if (!r && r.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A group named '{}' exists already in this category.",
                       *name);
    }
    AULA_TRY(std::move(r));
    AULA_TRY_STATUS(audit(tx, actor, now, "group.update", fmt::format("group:{}", id), body));
    auto updated =
        AULA_TRY(tx.queryOne(std::string(kGroupSelect) + " WHERE g.id = ?", {id}, "gone"));
    return groupRowJson(updated);
  });
}

Status OrgService::deleteGroup(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto category = AULA_TRY(groupCategory(tx, id));
    if (!managesCategory(actor, category))
      return forbidden();
    auto deployments =
        AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM deployments WHERE group_id = ?", {id}));
    if (deployments > 0) {
      return makeError(Errc::kConflict,
                       "The group has {} deployment(s); delete them before the group.",
                       deployments);
    }
    AULA_TRY(tx.exec("DELETE FROM group_members WHERE group_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM quotas WHERE subject IN (?, ?)",
                     {fmt::format("group:{}", id), fmt::format("group-member:{}", id)}));
    AULA_TRY(
        tx.exec("DELETE FROM template_access WHERE subject = ?", {fmt::format("group:{}", id)}));
    AULA_TRY(
        tx.exec("DELETE FROM workstation_access WHERE subject = ?", {fmt::format("group:{}", id)}));
    AULA_TRY(tx.exec("DELETE FROM groups_ WHERE id = ?", {id}));
    return audit(tx, actor, now, "group.delete", fmt::format("group:{}", id));
  });
}

Result<Json> OrgService::addMembers(const Actor& actor, std::int64_t groupId, const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"user_ids", "usernames"}));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto category = AULA_TRY(groupCategory(tx, groupId));
    if (!managesCategory(actor, category))
      return forbidden();
    std::vector<std::int64_t> ids;
    if (auto it = body.find("user_ids"); it != body.end()) {
      if (!it->is_array())
        return Error(Errc::kInvalidArgument, "The field 'user_ids' must be an array of integers.");
      for (const auto& v : *it) {
        if (!v.is_number_integer()) {
          return Error(Errc::kInvalidArgument,
                       "The field 'user_ids' must be an array of integers.");
        }
        ids.push_back(v.get<std::int64_t>());
      }
    }
    if (auto it = body.find("usernames"); it != body.end()) {
      if (!it->is_array())
        return Error(Errc::kInvalidArgument, "The field 'usernames' must be an array of strings.");
      for (const auto& v : *it) {
        if (!v.is_string()) {
          return Error(Errc::kInvalidArgument,
                       "The field 'usernames' must be an array of strings.");
        }
        auto row = AULA_TRY(
            tx.queryOne("SELECT id FROM users WHERE username = ?", {v.get<std::string>()},
                        fmt::format("There is no user named '{}'.", v.get<std::string>())));
        ids.push_back(row.integer(0));
      }
    }
    if (ids.empty() || ids.size() > 5000) {
      return Error(Errc::kInvalidArgument,
                   "Give between 1 and 5000 users in 'user_ids' or 'usernames'.");
    }
    int added = 0;
    for (auto uid : ids) {
      auto userCat = AULA_TRY(userCategory(tx, uid));
      // A manager adds users of their own category (or without one).
      if (actor.role != Role::kAdmin && userCat && *userCat != category) {
        return makeError(Errc::kPermissionDenied,
                         "User {} belongs to another category; only an admin may add them here.",
                         uid);
      }
      auto exists = AULA_TRY(tx.query(
          "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", {groupId, uid}));
      if (!exists.empty())
        continue;
      AULA_TRY(
          tx.exec("INSERT INTO group_members (group_id, user_id) VALUES (?, ?)", {groupId, uid}));
      ++added;
    }
    AULA_TRY_STATUS(audit(tx, actor, now, "group.members.add", fmt::format("group:{}", groupId),
                          Json{{"user_ids", ids}}));
    return Json{{"added", added}};
  });
}

Status OrgService::removeMember(const Actor& actor, std::int64_t groupId, std::int64_t userId) {
  AULA_TRY_STATUS(requireManager(actor));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto category = AULA_TRY(groupCategory(tx, groupId));
    if (!managesCategory(actor, category))
      return forbidden();
    auto n = AULA_TRY(
        tx.exec("DELETE FROM group_members WHERE group_id = ? AND user_id = ?", {groupId, userId}));
    if (n == 0)
      return makeError(Errc::kNotFound, "User {} is not a member of group {}.", userId, groupId);
    return audit(tx, actor, now, "group.members.remove", fmt::format("group:{}", groupId),
                 Json{{"user_id", userId}});
  });
}

// ---- users ----

Result<Json> OrgService::listUsers(const Actor& actor,
                                   const std::map<std::string, std::string>& filter) {
  AULA_TRY_STATUS(requireManager(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    std::string sql = fmt::format("SELECT {} FROM users u WHERE 1 = 1", kUserColumns);
    db::Params params;
    if (actor.role != Role::kAdmin) {
      sql +=
          " AND (u.category_id = ? OR u.id IN (SELECT m.user_id FROM group_members m JOIN groups_ "
          "g "
          "ON g.id = m.group_id WHERE g.category_id = ?))";
      params.push_back(actor.categoryId.value_or(-1));
      params.push_back(actor.categoryId.value_or(-1));
    }
    if (auto it = filter.find("role"); it != filter.end()) {
      if (!parseRole(it->second)) {
        return makeError(Errc::kInvalidArgument,
                         "The role '{}' is not one of admin, manager, advanced, user.", it->second);
      }
      sql += " AND u.role = ?";
      params.push_back(it->second);
    }
    if (auto it = filter.find("group_id"); it != filter.end()) {
      sql += " AND u.id IN (SELECT user_id FROM group_members WHERE group_id = ?)";
      params.push_back(std::int64_t{std::atoll(it->second.c_str())});
    }
    if (auto it = filter.find("q"); it != filter.end()) {
      sql += " AND (u.username LIKE ? OR u.display_name LIKE ?)";
      params.push_back("%" + it->second + "%");
      params.push_back("%" + it->second + "%");
    }
    sql += " ORDER BY u.username";
    std::int64_t limit = 1000;
    std::int64_t offset = 0;
    if (auto it = filter.find("limit"); it != filter.end())
      limit = std::clamp<std::int64_t>(std::atoll(it->second.c_str()), 1, 10000);
    if (auto it = filter.find("offset"); it != filter.end())
      offset = std::max<std::int64_t>(std::atoll(it->second.c_str()), 0);
    sql += " LIMIT ? OFFSET ?";
    params.push_back(limit);
    params.push_back(offset);
    auto rows = AULA_TRY(tx.query(sql, params));
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(userRowJson(r));
    return out;
  });
}

Result<Json> OrgService::getUser(const Actor& actor, std::int64_t id) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(fmt::format("SELECT {} FROM users WHERE id = ?", kUserColumns),
                                    {id}, fmt::format("There is no user with id {}.", id)));
    if (actor.userId != id && actor.role != Role::kAdmin) {
      // "Not found", like a desktop: user ids are not probed.
      if (!AULA_TRY(mayActOnUser(tx, actor, id, false)))
        return makeError(Errc::kNotFound, "There is no user with id {}.", id);
    }
    Json out = userRowJson(row);
    auto groups = AULA_TRY(userGroups(tx, id));
    out["group_ids"] = groups;
    return out;
  });
}

Result<Json> OrgService::createUser(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  AULA_TRY_STATUS(json::checkFields(
      body, {"username", "display_name", "email", "role", "category_id", "password", "group_ids"}));
  auto username = AULA_TRY(json::getString(body, "username"));
  AULA_TRY_STATUS(checkUsername(username));
  auto roleText = AULA_TRY(optString(body, "role")).value_or("user");
  auto role = parseRole(roleText);
  if (!role) {
    return makeError(Errc::kInvalidArgument,
                     "The role '{}' is not one of admin, manager, advanced, user.", roleText);
  }
  auto category = AULA_TRY(optInt(body, "category_id"));
  if (actor.role == Role::kManager) {
    // Teachers create students (and advanced students) of their own category.
    if (*role != Role::kUser && *role != Role::kAdvanced) {
      return Error(Errc::kPermissionDenied,
                   "A teacher may create only users with the role 'user' or 'advanced'.");
    }
    if (!actor.categoryId) {
      return Error(Errc::kPermissionDenied,
                   "A teacher without a category cannot create users; ask an admin to place you "
                   "in one.");
    }
    if (category && category != actor.categoryId)
      return forbidden();
    category = actor.categoryId;
  }
  auto password = AULA_TRY(optString(body, "password"));
  std::optional<std::string> hash;
  if (password) {
    AULA_TRY_STATUS(checkPasswordPolicy(*password));
    hash = AULA_TRY(hashPassword(*password, ctx_.settings.argon2));
  }
  auto displayName = AULA_TRY(optString(body, "display_name")).value_or("");
  auto email = AULA_TRY(optString(body, "email")).value_or("");
  if (displayName.size() > 200 || email.size() > 200) {
    return Error(Errc::kInvalidArgument,
                 "The display name and email may have at most 200 characters each.");
  }
  std::vector<std::int64_t> groupIds;
  if (auto it = body.find("group_ids"); it != body.end()) {
    if (!it->is_array())
      return Error(Errc::kInvalidArgument, "The field 'group_ids' must be an array of integers.");
    for (const auto& g : *it) {
      if (!g.is_number_integer())
        return Error(Errc::kInvalidArgument, "The field 'group_ids' must be an array of integers.");
      groupIds.push_back(g.get<std::int64_t>());
    }
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    if (category) {
      AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {*category},
                           fmt::format("There is no category with id {}.", *category)));
    }
    auto rows = tx.query(
        "INSERT INTO users (username, display_name, email, role, category_id, auth_source, "
        "password_hash, created_at) VALUES (?, ?, ?, ?, ?, 'local', ?, ?) RETURNING id",
        {username, displayName, email, roleText, intOrNull(category), textOrNull(hash), now});
    if (!rows && rows.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A user named '{}' exists already.", username);
    }
    auto id = AULA_TRY(std::move(rows))[0].integer(0);
    for (auto gid : groupIds) {
      auto gcat = AULA_TRY(groupCategory(tx, gid));
      if (!managesCategory(actor, gcat))
        return forbidden();
      AULA_TRY(tx.exec("INSERT INTO group_members (group_id, user_id) VALUES (?, ?)", {gid, id}));
    }
    AULA_TRY_STATUS(
        audit(tx, actor, now, "user.create", fmt::format("user:{}", username),
              Json{{"role", roleText}, {"category_id", category ? Json(*category) : Json()}}));
    auto row = AULA_TRY(
        tx.queryOne(fmt::format("SELECT {} FROM users WHERE id = ?", kUserColumns), {id}, "gone"));
    Json out = userRowJson(row);
    out["group_ids"] = groupIds;
    return out;
  });
}

Result<Json> OrgService::updateUser(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(
      body, {"display_name", "email", "role", "category_id", "password", "disabled"}));
  bool self = actor.userId == id;
  auto displayName = AULA_TRY(optString(body, "display_name"));
  auto email = AULA_TRY(optString(body, "email"));
  auto roleText = AULA_TRY(optString(body, "role"));
  auto category = AULA_TRY(optInt(body, "category_id"));
  auto password = AULA_TRY(optString(body, "password"));
  auto disabled = AULA_TRY(optBool(body, "disabled"));
  if ((displayName && displayName->size() > 200) || (email && email->size() > 200)) {
    return Error(Errc::kInvalidArgument,
                 "The display name and email may have at most 200 characters each.");
  }
  if (self && actor.role != Role::kAdmin && (roleText || category || password || disabled)) {
    return Error(Errc::kPermissionDenied,
                 "You may change only your display name and email here; use the password endpoint "
                 "for your password.");
  }
  if (!self)
    AULA_TRY_STATUS(requireManager(actor));
  if (roleText && !parseRole(*roleText)) {
    return makeError(Errc::kInvalidArgument,
                     "The role '{}' is not one of admin, manager, advanced, user.", *roleText);
  }
  if (actor.role == Role::kManager && !self) {
    if (roleText && *roleText != "user" && *roleText != "advanced") {
      return Error(Errc::kPermissionDenied,
                   "A teacher may give only the roles 'user' and 'advanced'.");
    }
    if (category)
      return Error(Errc::kPermissionDenied, "Only an admin may move a user to another category.");
  }
  std::optional<std::string> hash;
  if (password) {
    AULA_TRY_STATUS(checkPasswordPolicy(*password));
    hash = AULA_TRY(hashPassword(*password, ctx_.settings.argon2));
  }
  auto now = unixNow(ctx_.clock);
  auto updated = ctx_.db.transactValue<
      Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(fmt::format("SELECT {} FROM users WHERE id = ?", kUserColumns),
                                    {id}, fmt::format("There is no user with id {}.", id)));
    if (!self) {
      if (!AULA_TRY(mayActOnUser(tx, actor, id, false)))
        return forbidden();
      if (actor.role == Role::kManager && row.text(UserCol::kRole) != "user" &&
          row.text(UserCol::kRole) != "advanced")
        return forbidden();
    }
    if (hash && row.text(UserCol::kAuthSource) != "local") {
      return Error(Errc::kConflict,
                   "This user's password is kept by the directory (LDAP); change it there.");
    }
    if (self && disabled.value_or(false)) {
      return Error(Errc::kConflict, "You cannot disable your own account.");
    }
    if (category) {
      AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {*category},
                           fmt::format("There is no category with id {}.", *category)));
    }
    AULA_TRY(tx.exec(
        "UPDATE users SET display_name = ?, email = ?, role = ?, category_id = ?, disabled = ?, "
        "password_hash = ? WHERE id = ?",
        {displayName.value_or(row.text(UserCol::kDisplayName)),
         email.value_or(row.text(UserCol::kEmail)), roleText.value_or(row.text(UserCol::kRole)),
         category ? db::Value(*category) : row.at(UserCol::kCategoryId),
         std::int64_t{disabled ? (*disabled ? 1 : 0) : row.integer(UserCol::kDisabled)},
         hash ? db::Value(*hash)
              : AULA_TRY(tx.queryOne("SELECT password_hash FROM users WHERE id = ?", {id}, "gone"))
                    .at(0),
         id}));
    if (disabled.value_or(false) || hash) {
      // The user's other sessions end; the caller's own stays.
      AULA_TRY(
          tx.exec("DELETE FROM sessions WHERE user_id = ? AND id <> ?", {id, actor.sessionId}));
    }
    Json detail = body;
    if (detail.contains("password"))
      detail["password"] = "(changed)";
    AULA_TRY_STATUS(audit(tx, actor, now, "user.update",
                          fmt::format("user:{}", row.text(UserCol::kUsername)), detail));
    auto stored = AULA_TRY(
        tx.queryOne(fmt::format("SELECT {} FROM users WHERE id = ?", kUserColumns), {id}, "gone"));
    return userRowJson(stored);
  });
  if (updated && (disabled.value_or(false) || hash))
    publishSessionEnded(ctx_.events, id);
  return updated;
}

Status OrgService::deleteUser(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  if (actor.userId == id)
    return Error(Errc::kConflict, "You cannot delete your own account.");
  auto now = unixNow(ctx_.clock);
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto row = AULA_TRY(tx.queryOne("SELECT username, role FROM users WHERE id = ?", {id},
                                    fmt::format("There is no user with id {}.", id)));
    if (!AULA_TRY(mayActOnUser(tx, actor, id, false)))
      return forbidden();
    if (actor.role == Role::kManager && row.text(1) != "user" && row.text(1) != "advanced")
      return forbidden();
    auto desktops = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM desktops WHERE owner_id = ?", {id}));
    if (desktops > 0) {
      return makeError(Errc::kConflict, "The user '{}' still has {} desktop(s); delete them first.",
                       row.text(0), desktops);
    }
    AULA_TRY(tx.exec("DELETE FROM quotas WHERE subject = ?", {fmt::format("user:{}", id)}));
    AULA_TRY(
        tx.exec("DELETE FROM template_access WHERE subject = ?", {fmt::format("user:{}", id)}));
    AULA_TRY(
        tx.exec("DELETE FROM workstation_access WHERE subject = ?", {fmt::format("user:{}", id)}));
    AULA_TRY(tx.exec("DELETE FROM users WHERE id = ?", {id}));
    return audit(tx, actor, now, "user.delete", fmt::format("user:{}", row.text(0)));
  }));
  publishSessionEnded(ctx_.events, id);
  return {};
}

// ---- quotas ----

namespace {

struct Subject {
  std::string kind;
  std::int64_t id = 0;
  std::string role;

  // "user:007" and "user:7" are one subject: store the canonical form.
  std::string text() const {
    return kind == "role" ? "role:" + role : fmt::format("{}:{}", kind, id);
  }
};

Result<Subject> parseSubject(std::string_view text) {
  auto colon = text.find(':');
  if (colon != std::string_view::npos) {
    Subject s{std::string(text.substr(0, colon))};
    std::string rest(text.substr(colon + 1));
    if (s.kind == "role" && parseRole(rest)) {
      s.role = rest;
      return s;
    }
    char* end = nullptr;
    long long id = std::strtoll(rest.c_str(), &end, 10);
    bool numeric = !rest.empty() && end == rest.c_str() + rest.size() && id > 0;
    if (numeric && (s.kind == "user" || s.kind == "group" || s.kind == "group-member" ||
                    s.kind == "category")) {
      s.id = id;
      return s;
    }
  }
  return makeError(
      Errc::kInvalidArgument,
      "The quota subject '{}' is not one of role:<role>, user:<id>, group-member:<id>, "
      "group:<id>, category:<id>.",
      text.substr(0, 80));
}

}  // namespace

Result<Json> OrgService::listQuotas(const Actor& actor) {
  AULA_TRY_STATUS(requireManager(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Teachers see the role defaults and the quotas of their own groups.
    std::string sql =
        "SELECT subject, desktops, running, vcpus, memory_mb, disk_gb, templates FROM quotas";
    db::Params params;
    if (actor.role != Role::kAdmin) {
      sql +=
          " WHERE subject LIKE 'role:%' OR subject IN (SELECT 'group:' || CAST(id AS TEXT) FROM "
          "groups_ WHERE category_id = ? UNION SELECT 'group-member:' || CAST(id AS TEXT) FROM "
          "groups_ WHERE category_id = ?)";
      params = {actor.categoryId.value_or(-1), actor.categoryId.value_or(-1)};
    }
    auto rows = AULA_TRY(tx.query(sql + " ORDER BY subject", params));
    Json out = Json::array();
    for (const auto& r : rows) {
      Json q{{"subject", r.text(0)}};
      for (std::size_t i = 0; i < quotaColumns().size(); ++i)
        q[quotaColumns()[i]] = nullableInt(r, i + 1);
      out.push_back(q);
    }
    return out;
  });
}

Result<Json> OrgService::setQuota(const Actor& actor, std::string_view subjectText,
                                  const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  auto subject = AULA_TRY(parseSubject(subjectText));
  AULA_TRY_STATUS(json::checkFields(
      body, {"desktops", "running", "vcpus", "memory_mb", "disk_gb", "templates"}));
  db::Params values;
  const std::string key = subject.text();
  Json out{{"subject", key}};
  for (const auto& column : quotaColumns()) {
    auto it = body.find(column);
    if ((it == body.end() || it->is_null()) && actor.role != Role::kAdmin) {
      // "No limit" is an admin's call; a teacher can only set numbers.
      return makeError(Errc::kPermissionDenied,
                       "A teacher cannot lift a limit; give a number for '{}'.", column);
    }
    if (it == body.end() || it->is_null()) {
      values.emplace_back();
      out[column] = nullptr;
      continue;
    }
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 ||
        it->get<std::int64_t>() > 1'000'000'000) {
      return makeError(Errc::kInvalidArgument,
                       "The limit '{}' must be a whole number from 0 up, or null for no limit.",
                       column);
    }
    values.emplace_back(it->get<std::int64_t>());
    out[column] = it->get<std::int64_t>();
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    if (actor.role != Role::kAdmin) {
      // Teachers set limits for their own groups only.
      if (subject.kind != "group" && subject.kind != "group-member") {
        return Error(Errc::kPermissionDenied,
                     "A teacher may set quotas only for their own groups.");
      }
      auto category = AULA_TRY(groupCategory(tx, subject.id));
      if (!managesCategory(actor, category))
        return forbidden();
    } else if (subject.kind == "user") {
      AULA_TRY(userCategory(tx, subject.id));
    } else if (subject.kind == "group" || subject.kind == "group-member") {
      AULA_TRY(groupCategory(tx, subject.id));
    } else if (subject.kind == "category") {
      AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {subject.id},
                           fmt::format("There is no category with id {}.", subject.id)));
    }
    AULA_TRY(tx.exec("DELETE FROM quotas WHERE subject = ?", {key}));
    db::Params params{key};
    params.insert(params.end(), values.begin(), values.end());
    AULA_TRY(tx.exec(
        "INSERT INTO quotas (subject, desktops, running, vcpus, memory_mb, disk_gb, templates) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        params));
    AULA_TRY_STATUS(audit(tx, actor, now, "quota.set", fmt::format("quota:{}", key), body));
    return out;
  });
}

Status OrgService::deleteQuota(const Actor& actor, std::string_view subjectText) {
  AULA_TRY_STATUS(requireManager(actor));
  auto subject = AULA_TRY(parseSubject(subjectText));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    if (actor.role != Role::kAdmin) {
      if (subject.kind != "group" && subject.kind != "group-member")
        return forbidden();
      if (!managesCategory(actor, AULA_TRY(groupCategory(tx, subject.id))))
        return forbidden();
    }
    auto n = AULA_TRY(tx.exec("DELETE FROM quotas WHERE subject = ?", {subject.text()}));
    if (n == 0)
      return makeError(Errc::kNotFound, "There is no quota for '{}'.", subjectText);
    return audit(tx, actor, now, "quota.delete", fmt::format("quota:{}", subject.text()));
  });
}

// ---- quotas in use ----

Result<Json> OrgService::usage(const Actor& actor, std::int64_t userId) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    if (!AULA_TRY(mayActOnUser(tx, actor, userId, true)))
      return forbidden();
    auto limits = AULA_TRY(perUserLimits(tx, userId));
    auto used = AULA_TRY(usageWhere(tx, "u.id = ?", {userId}));
    auto templates =
        AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM templates WHERE owner_id = ?", {userId}));
    auto lim = [](const std::optional<std::int64_t>& v) { return v ? Json(*v) : Json(); };
    return Json{{"used",
                 {{"desktops", used.desktops},
                  {"running", used.running},
                  {"vcpus", used.vcpus},
                  {"memory_mb", used.memoryMb},
                  {"disk_gb", used.diskGb},
                  {"templates", templates}}},
                {"limits",
                 {{"desktops", lim(limits.desktops)},
                  {"running", lim(limits.running)},
                  {"vcpus", lim(limits.vcpus)},
                  {"memory_mb", lim(limits.memoryMb)},
                  {"disk_gb", lim(limits.diskGb)},
                  {"templates", lim(limits.templates)}}}};
  });
}

}  // namespace aula::broker
