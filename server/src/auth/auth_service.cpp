// Sessions, API tokens, passwords, and LDAP sign-in.
#include "aula/broker/auth_service.hpp"

#include <algorithm>
#include <set>

#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"

#include "core/policy.hpp"

namespace aula::broker {

using namespace detail;

namespace {

constexpr std::string_view kWrongCredentials = "The user name or password is wrong.";
constexpr std::string_view kSessionPrefix = "aula_s_";
constexpr std::string_view kApiTokenPrefix = "aula_t_";

// A directory that could not answer a login, as the user hears it (below).
Error directoryUnavailable(const Error& error);

}  // namespace

AuthService::AuthService(BrokerContext& ctx)
    : ctx_(ctx), throttle_(ctx.clock, ctx.settings.throttle) {}

Status AuthService::bootstrap(std::string_view adminName, std::string_view adminPassword) {
  AULA_TRY_STATUS(checkUsername(adminName));
  AULA_TRY_STATUS(checkPasswordPolicy(adminPassword));
  auto hash = AULA_TRY(hashPassword(adminPassword, ctx_.settings.argon2));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto users = AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM users"));
    if (users > 0) {
      return Error(Errc::kConflict, "The broker already has users; the first admin exists.");
    }
    AULA_TRY(tx.exec(
        "INSERT INTO users (username, display_name, role, auth_source, password_hash, created_at) "
        "VALUES (?, ?, 'admin', 'local', ?, ?)",
        {std::string(adminName), std::string("Administrator"), hash, now}));
    // Defaults a school can start with; admins change them with aulactl.
    AULA_TRY(tx.exec(
        "INSERT INTO quotas (subject, desktops, running, vcpus, memory_mb, disk_gb, templates) "
        "VALUES ('role:user', 3, 1, 4, 8192, 100, 0), ('role:advanced', 5, 2, 8, 16384, 200, 5), "
        "('role:manager', 10, 3, 16, 32768, 500, 50)"));
    Actor system{.username = "aula-broker init"};
    return audit(tx, system, now, "bootstrap", fmt::format("user:{}", adminName));
  });
}

Result<Json> AuthService::login(std::string_view username, std::string_view password,
                                const std::string& address) {
  std::string name(username);
  if (auto block = throttle_.check(name, address)) {
    ctx_.counters.loginsThrottled++;
    if (block->byAddress) {
      return makeError(Errc::kRateLimited,
                       "Too many failed logins from this address; try again in {} s.",
                       block->retryAfter.count());
    }
    return makeError(Errc::kRateLimited, "Too many failed logins for this user; try again in {} s.",
                     block->retryAfter.count());
  }
  auto fail = [&]() -> Error {
    ctx_.counters.loginFailures++;
    throttle_.recordFailure(name, address);
    return Error(Errc::kUnauthenticated, std::string(kWrongCredentials));
  };
  if (username.empty() || username.size() > 256 || password.empty() || password.size() > 1024) {
    return fail();
  }

  struct Found {
    std::int64_t id;
    std::string source;
    std::optional<std::string> hash;
    bool disabled;
  };
  std::optional<Found> found;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kRead, [&](db::Transaction& tx) -> Status {
    // Columns of the query below, in its order.
    enum LoginCol : std::size_t { kLoginId, kLoginSource, kLoginHash, kLoginDisabled };
    auto rows = AULA_TRY(tx.query(
        "SELECT id, auth_source, password_hash, disabled FROM users WHERE username = ?", {name}));
    if (!rows.empty()) {
      found = Found{rows[0].integer(kLoginId), rows[0].text(kLoginSource),
                    rows[0].optText(kLoginHash), rows[0].integer(kLoginDisabled) != 0};
    }
    return {};
  }));

  std::int64_t userId = 0;
  if (found && found->source == "local") {
    if (!found->hash)
      return fail();
    auto ok = AULA_TRY(verifyPassword(password, *found->hash));
    if (!ok)
      return fail();
    userId = found->id;
  } else if (ctx_.directory != nullptr && (!found || found->source == "ldap")) {
    auto entry = ctx_.directory->authenticate(username, password);
    if (!entry) {
      if (entry.error().code() == Errc::kUnauthenticated)
        return fail();
      return directoryUnavailable(entry.error());
    }
    userId = AULA_TRY(syncDirectoryUser(*entry));
  } else {
    // Spend the time a hash check would, so a missing name is not told apart
    // by the answer's speed.
    (void)hashPassword(password, ctx_.settings.argon2);
    return fail();
  }
  if (found && found->disabled) {
    return Error(Errc::kPermissionDenied,
                 "This account is disabled; ask your teacher or an admin.");
  }

  auto token = fmt::format("{}{}", kSessionPrefix, AULA_TRY(crypto::randomToken(32)));
  auto now = unixNow(ctx_.clock);
  auto expires = now + ctx_.settings.sessionMax.count();
  Json out;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    AULA_TRY(tx.exec(
        "INSERT INTO sessions (token_hash, user_id, kind, address, created_at, last_used_at, "
        "expires_at) VALUES (?, ?, 'session', ?, ?, ?, ?)",
        {crypto::sha256Hex(token), userId, address, now, now, expires}));
    AULA_TRY(tx.exec("UPDATE users SET last_login_at = ? WHERE id = ?", {now, userId}));
    auto row = AULA_TRY(tx.queryOne(fmt::format("SELECT {} FROM users WHERE id = ?", kUserColumns),
                                    {userId}, "The user vanished while logging in."));
    out = Json{{"token", token},
               {"expires_at", expires},
               {"idle_timeout", ctx_.settings.sessionIdle.count()},
               {"user", userRowJson(row)}};
    return {};
  }));
  throttle_.recordSuccess(name);
  ctx_.counters.logins++;
  return out;
}

namespace {

// What the directory mapping makes of a directory user.
struct DirectoryOutcome {
  Role role = Role::kUser;
  std::string roleFrom;                                     // the group that gave it; "": default
  std::vector<std::pair<std::string, std::string>> groups;  // category, group
  std::vector<std::string> groupFrom;                       // the directory group of each
  std::string category;
};

Error directoryUnavailable(const Error& error) {
  if (error.code() == Errc::kUnavailable) {
    return Error(Errc::kUnavailable,
                 fmt::format("Directory logins are not possible right now: {} Local accounts can "
                             "still log in.",
                             error.message()));
  }
  // A setting that the directory rejects (the broker's bind, a base or a
  // filter): not the user's fault, and not an internal error either.
  log::error("A directory login failed on the broker's directory settings: {}", error.message());
  return Error(Errc::kUnavailable,
               fmt::format("Directory logins do not work with the broker's directory settings: "
                           "{} An admin must change them (aulactl directory check USER shows "
                           "what the broker sees).",
                           error.message()));
}

DirectoryOutcome mapDirectoryUser(const DirectoryMapping& mapping, const DirectoryUser& entry) {
  DirectoryOutcome out;
  out.role = parseRole(mapping.defaultRole).value_or(Role::kUser);
  for (const auto& dn : entry.groupDns) {
    if (auto r = mapping.groupRoles.find(dn); r != mapping.groupRoles.end()) {
      if (auto mapped = parseRole(r->second); mapped && *mapped > out.role) {
        out.role = *mapped;
        out.roleFrom = dn;
      }
    }
    if (auto g = mapping.groupMap.find(dn); g != mapping.groupMap.end()) {
      auto slash = g->second.find('/');
      if (slash != std::string::npos) {
        out.groups.emplace_back(g->second.substr(0, slash), g->second.substr(slash + 1));
        out.groupFrom.push_back(dn);
      }
    }
  }
  out.category = !out.groups.empty() ? out.groups.front().first : mapping.defaultCategory;
  return out;
}

std::string lowerName(std::string_view name) {
  std::string out(name);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The groups from a direct one up to `dn`, as DirectoryUser::via records them.
Json groupPath(const DirectoryUser& entry, const std::string& dn) {
  Json path = Json::array({dn});
  for (auto at = entry.via.find(dn); at != entry.via.end(); at = entry.via.find(at->second))
    path.insert(path.begin(), at->second);
  return path;
}

}  // namespace

Result<std::int64_t> AuthService::syncDirectoryUser(const DirectoryUser& entry) {
  const auto& mapping = ctx_.settings.directoryMapping;
  auto outcome = mapDirectoryUser(mapping, entry);
  const Role role = outcome.role;
  const auto& groups = outcome.groups;
  const std::string& category = outcome.category;
  auto now = unixNow(ctx_.clock);
  std::string username = entry.username;
  std::transform(username.begin(), username.end(), username.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  AULA_TRY_STATUS(checkUsername(username));
  return ctx_.db.transactValue<
      std::int64_t>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<std::int64_t> {
    auto ensureCategory = [&](const std::string& name) -> Result<std::int64_t> {
      auto rows = AULA_TRY(tx.query("SELECT id FROM categories WHERE name = ?", {name}));
      if (!rows.empty())
        return rows[0].integer(0);
      auto ins = AULA_TRY(tx.query(
          "INSERT INTO categories (name, created_at) VALUES (?, ?) RETURNING id", {name, now}));
      return ins[0].integer(0);
    };
    std::optional<std::int64_t> categoryId;
    if (!category.empty())
      categoryId = AULA_TRY(ensureCategory(category));
    auto rows =
        AULA_TRY(tx.query("SELECT id, auth_source FROM users WHERE username = ?", {username}));
    std::int64_t id = 0;
    if (rows.empty()) {
      auto ins = AULA_TRY(tx.query(
          "INSERT INTO users (username, display_name, email, role, category_id, auth_source, "
          "created_at) VALUES (?, ?, ?, ?, ?, 'ldap', ?) RETURNING id",
          {username, entry.displayName, entry.email, std::string(roleName(role)),
           intOrNull(categoryId), now}));
      id = ins[0].integer(0);
      Actor system{.username = "ldap"};
      AULA_TRY_STATUS(audit(tx, system, now, "user.create", fmt::format("user:{}", username),
                            Json{{"source", "ldap"}, {"dn", entry.dn}}));
    } else {
      id = rows[0].integer(0);
      if (rows[0].text(1) != "ldap") {
        return Error(Errc::kUnauthenticated, std::string(kWrongCredentials));
      }
      // The directory is the truth for directory users: role, name and
      // groups follow it at every login.
      AULA_TRY(tx.exec(
          "UPDATE users SET display_name = ?, email = ?, role = ?, category_id = ? WHERE id = ?",
          {entry.displayName, entry.email, std::string(roleName(role)), intOrNull(categoryId),
           id}));
    }
    std::set<std::int64_t> current;
    for (const auto& [cat, group] : groups) {
      auto catId = AULA_TRY(ensureCategory(cat));
      auto g = AULA_TRY(
          tx.query("SELECT id FROM groups_ WHERE category_id = ? AND name = ?", {catId, group}));
      std::int64_t gid = 0;
      if (g.empty()) {
        auto ins = AULA_TRY(tx.query(
            "INSERT INTO groups_ (category_id, name, created_at) VALUES (?, ?, ?) RETURNING id",
            {catId, group, now}));
        gid = ins[0].integer(0);
      } else {
        gid = g[0].integer(0);
      }
      auto member = AULA_TRY(
          tx.query("SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?", {gid, id}));
      if (member.empty()) {
        AULA_TRY(tx.exec("INSERT INTO group_members (group_id, user_id) VALUES (?, ?)", {gid, id}));
      }
      current.insert(gid);
    }
    // Memberships of directory-mapped groups follow the directory: a student
    // who left a class in LDAP leaves it here. Groups a teacher made by hand
    // are not touched.
    for (const auto& [dn, target] : mapping.groupMap) {
      auto slash = target.find('/');
      if (slash == std::string::npos)
        continue;
      auto g =
          AULA_TRY(tx.query("SELECT g.id FROM groups_ g JOIN categories c ON c.id = g.category_id "
                            "WHERE c.name = ? AND g.name = ?",
                            {target.substr(0, slash), target.substr(slash + 1)}));
      if (!g.empty() && !current.contains(g[0].integer(0))) {
        AULA_TRY(tx.exec("DELETE FROM group_members WHERE group_id = ? AND user_id = ?",
                         {g[0].integer(0), id}));
      }
    }
    return id;
  });
}

Result<AuthService::Session> AuthService::findSession(db::Transaction& tx, std::string_view token,
                                                      const std::string& address) {
  if (!token.starts_with(kSessionPrefix) && !token.starts_with(kApiTokenPrefix)) {
    return Error(Errc::kUnauthenticated, "The session token is not valid; log in again.");
  }
  auto now = unixNow(ctx_.clock);
  // Columns of the query below, in its order.
  enum SessionCol : std::size_t {
    kSessionId,
    kSessionKind,
    kSessionLastUsed,
    kSessionExpires,
    kSessionUserId,
    kSessionUsername,
    kSessionRole,
    kSessionCategory,
    kSessionDisabled
  };
  auto rows = AULA_TRY(
      tx.query("SELECT s.id, s.kind, s.last_used_at, s.expires_at, u.id, u.username, u.role, "
               "u.category_id, u.disabled FROM sessions s JOIN users u ON u.id = s.user_id "
               "WHERE s.token_hash = ?",
               {crypto::sha256Hex(token)}));
  auto ended = [] {
    return Error(Errc::kUnauthenticated, "The session has expired or was ended; log in again.");
  };
  if (rows.empty())
    return ended();
  const auto& r = rows[0];
  const auto lastUsed = r.integer(kSessionLastUsed);
  const bool idleExpired =
      r.text(kSessionKind) == "session" && now - lastUsed > ctx_.settings.sessionIdle.count();
  if (r.integer(kSessionExpires) <= now || idleExpired || r.integer(kSessionDisabled) != 0)
    return ended();
  // Touch the idle clock at most once a minute: one write per minute per
  // session instead of one per request.
  return Session{.actor = Actor{.userId = r.integer(kSessionUserId),
                                .username = r.text(kSessionUsername),
                                .role = parseRole(r.text(kSessionRole)).value_or(Role::kUser),
                                .categoryId = r.optInteger(kSessionCategory),
                                .address = address,
                                .sessionId = r.integer(kSessionId)},
                 .touch = now - lastUsed >= 60};
}

Status AuthService::touch(const Session& session) {
  if (!session.touch)
    return {};
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    AULA_TRY(tx.exec("UPDATE sessions SET last_used_at = ? WHERE id = ?",
                     {unixNow(ctx_.clock), session.actor.sessionId}));
    return {};
  });
}

Result<Actor> AuthService::authenticate(std::string_view token, const std::string& address) {
  auto session = AULA_TRY(ctx_.db.transactValue<Session>(
      db::TxMode::kRead, [&](db::Transaction& tx) { return findSession(tx, token, address); }));
  AULA_TRY_STATUS(touch(session));
  return std::move(session.actor);
}

Status AuthService::checkSession(const Actor& actor) {
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kRead, [&](db::Transaction& tx) -> Status {
    enum : std::size_t { kDisabled, kKind, kLastUsed, kExpires };
    // The account first: disabling or deleting it also ends its sessions,
    // and the stream should say which.
    auto rows =
        AULA_TRY(tx.query("SELECT u.disabled, s.kind, s.last_used_at, s.expires_at FROM users u "
                          "LEFT JOIN sessions s ON s.id = ? AND s.user_id = u.id WHERE u.id = ?",
                          {actor.sessionId, actor.userId}));
    if (rows.empty())
      return Error(Errc::kUnauthenticated, "The account was deleted.");
    const auto& r = rows[0];
    if (r.integer(kDisabled) != 0)
      return Error(Errc::kUnauthenticated, "The account was disabled.");
    if (r.isNull(kKind))
      return Error(Errc::kUnauthenticated, "The session was ended; log in again.");
    const bool idle = r.text(kKind) == "session" &&
                      now - r.integer(kLastUsed) > ctx_.settings.sessionIdle.count();
    if (r.integer(kExpires) <= now || idle)
      return Error(Errc::kUnauthenticated, "The session has expired; log in again.");
    return {};
  });
}

Status AuthService::logout(const Actor& actor) {
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(
        tx.exec("DELETE FROM sessions WHERE id = ? AND kind = 'session'", {actor.sessionId}));
    if (n == 0) {
      return Error(Errc::kInvalidArgument,
                   "This is an API token, not a session; delete it with DELETE "
                   "/api/v1/api-tokens/{id}.");
    }
    return {};
  }));
  publishSessionEnded(ctx_.events, actor.userId);
  return {};
}

Result<Json> AuthService::me(const Actor& actor) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(fmt::format("SELECT {} FROM users WHERE id = ?", kUserColumns),
                                    {actor.userId}, "Your account no longer exists."));
    Json out = userRowJson(row);
    Json groups = Json::array();
    auto rows = AULA_TRY(tx.query(
        "SELECT g.id, g.name, c.name FROM group_members m JOIN groups_ g ON g.id = m.group_id "
        "JOIN categories c ON c.id = g.category_id WHERE m.user_id = ? ORDER BY g.name",
        {actor.userId}));
    for (const auto& r : rows) {
      groups.push_back({{"id", r.integer(0)}, {"name", r.text(1)}, {"category", r.text(2)}});
    }
    out["groups"] = groups;
    return out;
  });
}

Result<Json> AuthService::changePassword(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"current_password", "new_password"}));
  auto current = AULA_TRY(json::getString(body, "current_password"));
  auto next = AULA_TRY(json::getString(body, "new_password"));
  AULA_TRY_STATUS(checkPasswordPolicy(next));
  std::optional<std::string> stored;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kRead, [&](db::Transaction& tx) -> Status {
    auto row = AULA_TRY(tx.queryOne("SELECT auth_source, password_hash FROM users WHERE id = ?",
                                    {actor.userId}, "Your account no longer exists."));
    if (row.text(0) != "local") {
      return Error(Errc::kConflict,
                   "Your password is kept by the school directory (LDAP); change it there.");
    }
    stored = row.optText(1);
    return {};
  }));
  // A wrong current password counts as a failed login: a stolen session must
  // not become a free password-guessing oracle. 403, not 401: the session is fine.
  if (auto block = throttle_.check(actor.username, actor.address)) {
    return makeError(Errc::kRateLimited, "Too many wrong passwords; try again in {} s.",
                     block->retryAfter.count());
  }
  if (!stored || !AULA_TRY(verifyPassword(current, *stored))) {
    throttle_.recordFailure(actor.username, actor.address);
    return Error(Errc::kPermissionDenied, "The current password is wrong.");
  }
  auto hash = AULA_TRY(hashPassword(next, ctx_.settings.argon2));
  auto now = unixNow(ctx_.clock);
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    AULA_TRY(tx.exec("UPDATE users SET password_hash = ? WHERE id = ?", {hash, actor.userId}));
    // Other sessions end: a changed password is often a reaction to a leak.
    AULA_TRY(tx.exec("DELETE FROM sessions WHERE user_id = ? AND kind = 'session' AND id <> ?",
                     {actor.userId, actor.sessionId}));
    return audit(tx, actor, now, "user.password", fmt::format("user:{}", actor.username));
  }));
  return Json{{"changed", true}};
}

Result<Json> AuthService::listTokens(const Actor& actor) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Columns of the query below, in its order.
    enum TokenCol : std::size_t {
      kTokenId,
      kTokenName,
      kTokenCreated,
      kTokenLastUsed,
      kTokenExpires
    };
    auto rows =
        AULA_TRY(tx.query("SELECT id, name, created_at, last_used_at, expires_at FROM sessions "
                          "WHERE user_id = ? AND kind = 'api' ORDER BY id",
                          {actor.userId}));
    Json out = Json::array();
    for (const auto& r : rows) {
      out.push_back({{"id", r.integer(kTokenId)},
                     {"name", r.text(kTokenName)},
                     {"created_at", r.integer(kTokenCreated)},
                     {"last_used_at", r.integer(kTokenLastUsed)},
                     {"expires_at", r.integer(kTokenExpires)}});
    }
    return out;
  });
}

Result<Json> AuthService::createToken(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"name", "valid_days"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("token", name));
  auto days = AULA_TRY(optInt(body, "valid_days")).value_or(365);
  if (days < 1 || days > 3650) {
    return Error(Errc::kInvalidArgument, "The field 'valid_days' must be between 1 and 3650.");
  }
  auto token = fmt::format("{}{}", kApiTokenPrefix, AULA_TRY(crypto::randomToken(32)));
  auto now = unixNow(ctx_.clock);
  auto expires = now + days * 86400;
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(
        tx.query("INSERT INTO sessions (token_hash, user_id, kind, name, address, created_at, "
                 "last_used_at, expires_at) VALUES (?, ?, 'api', ?, ?, ?, ?, ?) RETURNING id",
                 {crypto::sha256Hex(token), actor.userId, name, actor.address, now, now, expires}));
    AULA_TRY_STATUS(audit(tx, actor, now, "token.create", fmt::format("token:{}", name)));
    return Json{
        {"id", rows[0].integer(0)}, {"name", name}, {"token", token}, {"expires_at", expires}};
  });
}

Status AuthService::deleteToken(const Actor& actor, std::int64_t id) {
  auto now = unixNow(ctx_.clock);
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto n = AULA_TRY(tx.exec("DELETE FROM sessions WHERE id = ? AND user_id = ? AND kind = 'api'",
                              {id, actor.userId}));
    if (n == 0)
      return makeError(Errc::kNotFound, "You have no API token with id {}.", id);
    return audit(tx, actor, now, "token.delete", fmt::format("token:{}", id));
  }));
  publishSessionEnded(ctx_.events, actor.userId);
  return {};
}

Result<Json> AuthService::checkDirectoryUser(const Actor& actor, std::string_view username) {
  AULA_TRY_STATUS(requireAdmin(actor));
  if (ctx_.directory == nullptr) {
    return Error(Errc::kConflict,
                 "This broker has no directory: set ldap.enabled and the ldap settings in "
                 "broker.toml.");
  }
  auto entry = ctx_.directory->lookup(username);
  if (!entry) {
    if (entry.error().code() == Errc::kNotFound || entry.error().code() == Errc::kInvalidArgument)
      return entry.error();
    return directoryUnavailable(entry.error());
  }
  auto outcome = mapDirectoryUser(ctx_.settings.directoryMapping, *entry);
  Json groups = Json::array();
  for (const auto& dn : entry->groupDns) {
    Json g{{"dn", dn}, {"path", groupPath(*entry, dn)}};
    if (auto r = ctx_.settings.directoryMapping.groupRoles.find(dn);
        r != ctx_.settings.directoryMapping.groupRoles.end())
      g["role"] = r->second;
    if (auto m = ctx_.settings.directoryMapping.groupMap.find(dn);
        m != ctx_.settings.directoryMapping.groupMap.end())
      g["aula_group"] = m->second;
    groups.push_back(std::move(g));
  }
  Json aulaGroups = Json::array();
  for (const auto& [category, group] : outcome.groups)
    aulaGroups.push_back(fmt::format("{}/{}", category, group));
  Json out{{"username", entry->username},
           {"dn", entry->dn},
           {"uid", entry->uid},
           {"display_name", entry->displayName},
           {"email", entry->email},
           {"nesting", entry->nesting.empty() ? "off" : entry->nesting},
           {"groups", groups},
           {"role", roleName(outcome.role)},
           {"role_from", outcome.roleFrom.empty() ? Json() : Json(outcome.roleFrom)},
           {"category", outcome.category.empty() ? Json() : Json(outcome.category)},
           {"aula_groups", aulaGroups},
           {"aula_user", Json()}};
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kRead, [&](db::Transaction& tx) -> Status {
    auto rows = AULA_TRY(tx.query("SELECT id, auth_source, disabled FROM users WHERE username = ?",
                                  {lowerName(username)}));
    if (!rows.empty()) {
      out["aula_user"] = Json{{"id", rows[0].integer(0)},
                              {"auth_source", rows[0].text(1)},
                              {"disabled", rows[0].integer(2) != 0}};
    }
    return {};
  }));
  return out;
}

Result<Json> AuthService::syncDirectoryUsers(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  if (ctx_.directory == nullptr) {
    return Error(Errc::kConflict,
                 "This broker has no directory: set ldap.enabled and the ldap settings in "
                 "broker.toml.");
  }
  std::vector<std::pair<std::int64_t, std::string>> users;
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kRead, [&](db::Transaction& tx) -> Status {
    users.clear();
    for (const auto& r : AULA_TRY(tx.query("SELECT id, username FROM users WHERE auth_source = "
                                           "'ldap' AND disabled = 0 ORDER BY id")))
      users.emplace_back(r.integer(0), r.text(1));
    return {};
  }));
  std::size_t kept = 0;
  Json disabled = Json::array();
  for (const auto& user : users) {
    const std::int64_t id = user.first;
    const std::string& name = user.second;
    auto entry = ctx_.directory->lookup(name);
    if (entry) {
      AULA_TRY(syncDirectoryUser(*entry));
      ++kept;
      continue;
    }
    if (entry.error().code() != Errc::kNotFound) {
      // The directory is away or refuses: nobody is disabled on that.
      return directoryUnavailable(entry.error());
    }
    // Gone from the directory: disabled, never deleted; their desktops stay.
    auto now = unixNow(ctx_.clock);
    AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
      AULA_TRY(tx.exec("UPDATE users SET disabled = 1 WHERE id = ?", {id}));
      AULA_TRY(tx.exec("DELETE FROM sessions WHERE user_id = ?", {id}));
      return audit(tx, actor, now, "user.disable", fmt::format("user:{}", id),
                   Json{{"reason", "gone from the directory"}, {"username", name}});
    }));
    publishSessionEnded(ctx_.events, id);
    log::info("The directory user '{}' is gone from the directory and was disabled.", name);
    disabled.push_back(name);
  }
  return Json{{"checked", users.size()}, {"kept", kept}, {"disabled", disabled}};
}

}  // namespace aula::broker
