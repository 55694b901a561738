// Templates, desktops, deployments: rights, quotas and placement.
#include <filesystem>
#include <future>
#include <thread>

#include "aula/common/log.hpp"

#include "broker_internal.hpp"

namespace aula::broker {

using namespace detail;

namespace {

constexpr const char* kTemplateSelect =
    "SELECT t.id, t.name, t.description, t.owner_id, t.category_id, t.storage, t.base_disk, "
    "t.disk_gb, t.vcpus, t.memory_mb, t.video, t.version, t.enabled, t.created_at, t.updated_at, "
    "t.from_desktop_id, t.origin_host_id, t.backing_storage, t.backing_disk FROM templates t";

struct TemplateRow {
  std::int64_t id;
  std::string name;
  std::optional<std::int64_t> ownerId;
  std::optional<std::int64_t> categoryId;
  std::string storage;
  std::string baseDisk;
  std::int64_t diskGb, vcpus, memoryMb;
  std::string video;
  bool enabled;
  std::int64_t version;
  // Made from a desktop: its image is Aula's own (see schema.cpp, migration 3).
  std::optional<std::int64_t> fromDesktopId;
  std::optional<std::int64_t> originHostId;
  std::optional<std::string> backingStorage, backingDisk;  // re-based: the base it needs
};

TemplateRow templateOf(const db::Row& r) {
  return TemplateRow{r.integer(0),     r.text(1),        r.optInteger(3),    r.optInteger(4),
                     r.text(5),        r.text(6),        r.integer(7),       r.integer(8),
                     r.integer(9),     r.text(10),       r.integer(12) != 0, r.integer(11),
                     r.optInteger(15), r.optInteger(16), r.optText(17),      r.optText(18)};
}

Result<Json> templateJson(db::Transaction& tx, const db::Row& r) {
  Json t{{"id", r.integer(0)},
         {"name", r.text(1)},
         {"description", r.text(2)},
         {"owner_id", nullableInt(r, 3)},
         {"category_id", nullableInt(r, 4)},
         {"storage", r.text(5)},
         {"base_disk", r.text(6)},
         {"disk_gb", r.integer(7)},
         {"vcpus", r.integer(8)},
         {"memory_mb", r.integer(9)},
         {"video", r.text(10)},
         {"version", r.integer(11)},
         {"enabled", r.integer(12) != 0},
         {"created_at", r.integer(13)},
         {"updated_at", r.integer(14)},
         {"from_desktop_id", nullableInt(r, 15)},
         {"origin_host_id", nullableInt(r, 16)},
         {"backing", r.optText(17) && r.optText(18)
                         ? Json{{"storage", *r.optText(17)}, {"disk", *r.optText(18)}}
                         : Json()}};
  auto access = AULA_TRY(
      tx.query("SELECT subject FROM template_access WHERE template_id = ? ORDER BY subject",
               {r.integer(0)}));
  Json a = Json::array();
  for (const auto& row : access)
    a.push_back(row.text(0));
  t["access"] = a;
  auto pools = AULA_TRY(tx.query(
      "SELECT pool_id FROM template_pools WHERE template_id = ? ORDER BY pool_id", {r.integer(0)}));
  Json p = Json::array();
  for (const auto& row : pools)
    p.push_back(row.integer(0));
  t["pools"] = p;
  return t;
}

// Whether user `userId` (of `categoryId`) may use the template: owner, or a
// subject of its access list matches them.
Result<bool> templateUsable(db::Transaction& tx, const Actor& actor, std::int64_t userId,
                            std::optional<std::int64_t> categoryId, const TemplateRow& t) {
  if (actor.role == Role::kAdmin && actor.userId == userId)
    return true;
  if (t.ownerId && *t.ownerId == userId)
    return true;
  auto rows = AULA_TRY(tx.query(
      "SELECT 1 FROM template_access a WHERE a.template_id = ? AND (a.subject = 'everyone' OR "
      "a.subject = ? OR a.subject = ? OR a.subject IN (SELECT 'group:' || CAST(m.group_id AS TEXT) "
      "FROM group_members m WHERE m.user_id = ?) OR a.subject IN (SELECT 'category:' || "
      "CAST(g.category_id AS TEXT) FROM group_members m JOIN groups_ g ON g.id = m.group_id WHERE "
      "m.user_id = ?))",
      {t.id, fmt::format("user:{}", userId),
       categoryId ? fmt::format("category:{}", *categoryId) : std::string("-"), userId, userId}));
  if (!rows.empty())
    return true;
  // Teachers use every template of their category.
  return actor.userId == userId && actor.role == Role::kManager && t.categoryId &&
         actor.categoryId == t.categoryId;
}

Status checkAccessSubject(db::Transaction& tx, const Actor& actor, const std::string& subject) {
  if (subject == "everyone") {
    if (actor.role != Role::kAdmin) {
      return Error(Errc::kPermissionDenied, "Only an admin may share a template with everyone.");
    }
    return {};
  }
  auto colon = subject.find(':');
  std::string kind = colon == std::string::npos ? "" : subject.substr(0, colon);
  std::string rest = colon == std::string::npos ? "" : subject.substr(colon + 1);
  char* end = nullptr;
  long long id = std::strtoll(rest.c_str(), &end, 10);
  if ((kind != "user" && kind != "group" && kind != "category") || rest.empty() ||
      end != rest.c_str() + rest.size() || id <= 0) {
    return makeError(
        Errc::kInvalidArgument,
        "The access entry '{}' is not one of everyone, user:<id>, group:<id>, category:<id>.",
        subject.substr(0, 80));
  }
  if (kind == "user") {
    AULA_TRY(tx.queryOne("SELECT id FROM users WHERE id = ?", {std::int64_t{id}},
                         fmt::format("There is no user with id {}.", id)));
  } else if (kind == "group") {
    auto row =
        AULA_TRY(tx.queryOne("SELECT category_id FROM groups_ WHERE id = ?", {std::int64_t{id}},
                             fmt::format("There is no group with id {}.", id)));
    if (actor.role != Role::kAdmin && row.integer(0) != actor.categoryId.value_or(-1)) {
      return Error(Errc::kPermissionDenied,
                   "You may share templates only with groups of your category.");
    }
  } else {
    AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {std::int64_t{id}},
                         fmt::format("There is no category with id {}.", id)));
    if (actor.role != Role::kAdmin && id != actor.categoryId.value_or(-1)) {
      return Error(Errc::kPermissionDenied, "You may share templates only within your category.");
    }
  }
  return {};
}

// The optional field 'access' of a body: a list of subjects, checked later
// by checkAccessSubject().
Result<std::vector<std::string>> accessList(const Json& body) {
  std::vector<std::string> access;
  auto it = body.find("access");
  if (it == body.end() || it->is_null())
    return access;
  if (!it->is_array())
    return Error(Errc::kInvalidArgument, "The field 'access' must be an array of strings.");
  for (const auto& a : *it) {
    if (!a.is_string())
      return Error(Errc::kInvalidArgument, "The field 'access' must be an array of strings.");
    access.push_back(a.get<std::string>());
  }
  return access;
}

constexpr const char* kDesktopSelect =
    "SELECT d.id, d.name, d.owner_id, u.username, d.template_id, t.name, d.deployment_id, "
    "d.persistent, d.state, d.host_id, h.name, d.vcpus, d.memory_mb, d.disk_gb, d.connected, "
    "d.created_at, d.started_at, u.category_id, d.disk_path, t.video, d.base_storage, d.base_disk, "
    "h.address, h.agent_port, h.spice_subject FROM desktops d JOIN users u ON u.id = d.owner_id "
    "JOIN templates t ON "
    "t.id = d.template_id LEFT JOIN hosts h ON h.id = d.host_id";

Json desktopJson(const db::Row& r) {
  return Json{{"id", r.integer(0)},
              {"name", r.text(1)},
              {"owner_id", r.integer(2)},
              {"owner", r.text(3)},
              {"template_id", r.integer(4)},
              {"template", r.text(5)},
              {"deployment_id", nullableInt(r, 6)},
              {"persistent", r.integer(7) != 0},
              {"state", r.text(8)},
              {"host_id", nullableInt(r, 9)},
              {"host", nullableText(r, 10)},
              {"vcpus", r.integer(11)},
              {"memory_mb", r.integer(12)},
              {"disk_gb", r.integer(13)},
              {"connected", r.integer(14) != 0},
              {"created_at", r.integer(15)},
              {"started_at", nullableInt(r, 16)}};
}

struct DesktopRow {
  std::int64_t id;
  std::string name;
  std::int64_t ownerId;
  std::string state;
  std::optional<std::int64_t> hostId;
  std::string hostName;
  std::string hostAddress;
  std::int64_t hostPort = 0;
  std::string hostSubject;
  std::optional<std::int64_t> ownerCategory;
  std::int64_t templateId;
  DesktopSpec spec;
};

DesktopRow desktopOf(const db::Row& r) {
  DesktopRow d{r.integer(0),
               r.text(1),
               r.integer(2),
               r.text(8),
               r.optInteger(9),
               r.optText(10).value_or(""),
               r.optText(22).value_or(""),
               r.optInteger(23).value_or(0),
               r.optText(24).value_or(""),
               r.optInteger(17),
               r.integer(4),
               {}};
  d.spec.owner = r.text(3);
  d.spec.id = d.id;
  d.spec.name = fmt::format("aula-{}", d.id);
  d.spec.vcpus = r.integer(11);
  d.spec.memoryMb = r.integer(12);
  d.spec.video = r.text(19);
  d.spec.templateStorage = r.text(20);
  d.spec.baseDisk = r.text(21);
  d.spec.diskPath = r.optText(18).value_or(fmt::format("{}/{}.qcow2", d.ownerId, d.id));
  d.spec.persistent = r.integer(7) != 0;
  return d;
}

HostAddress hostOf(const DesktopRow& d) {
  return HostAddress{.id = d.hostId.value_or(0),
                     .name = d.hostName,
                     .address = d.hostAddress,
                     .agentPort = d.hostPort,
                     .spiceSubject = d.hostSubject};
}

Result<DesktopRow> loadDesktop(db::Transaction& tx, std::int64_t id) {
  auto row = AULA_TRY(tx.queryOne(std::string(kDesktopSelect) + " WHERE d.id = ?", {id},
                                  fmt::format("There is no desktop with id {}.", id)));
  return desktopOf(row);
}

Json desktopEventData(std::int64_t id, std::string_view state, std::optional<std::int64_t> hostId) {
  return Json{{"id", id}, {"state", state}, {"host_id", hostId ? Json(*hostId) : Json()}};
}

std::string limitMessage(std::string_view who, std::string_view what, std::int64_t limit) {
  return fmt::format("{} reached the limit of {} {}; {}", who, limit, what,
                     who == "You have" ? "free some up first or ask your teacher."
                                       : "ask a teacher or an admin to raise it.");
}

// Non-admins may own as many templates as their per-user limit allows.
Status checkTemplateQuota(db::Transaction& tx, const Actor& actor) {
  if (actor.role == Role::kAdmin)
    return {};
  auto limits = AULA_TRY(perUserLimits(tx, actor.userId));
  auto owned =
      AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM templates WHERE owner_id = ?", {actor.userId}));
  if (limits.templates && owned + 1 > *limits.templates)
    return Error(Errc::kQuotaExceeded, limitMessage("You have", "templates", *limits.templates));
  return {};
}

}  // namespace

// ---- quotas in use ----

namespace detail {

struct Usage {
  std::int64_t desktops = 0, running = 0, vcpus = 0, memoryMb = 0, diskGb = 0, templates = 0;
};

// Usage of the desktops whose owner matches `ownerCondition` (SQL over users u).
Result<Usage> usageWhere(db::Transaction& tx, const std::string& ownerCondition,
                         const db::Params& params) {
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
  return Usage{row.integer(0), row.integer(1), row.integer(2), row.integer(3), row.integer(4), 0};
}

enum class QuotaCheck { kCreate, kStart };

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
  for (auto gid : AULA_TRY(userGroups(tx, ownerId))) {
    auto limits = AULA_TRY(totalLimits(tx, fmt::format("group:{}", gid)));
    if (!limits.desktops && !limits.running && !limits.vcpus && !limits.memoryMb && !limits.diskGb)
      continue;
    auto used = AULA_TRY(
        usageWhere(tx, "u.id IN (SELECT user_id FROM group_members WHERE group_id = ?)", {gid}));
    auto name = AULA_TRY(tx.queryOne("SELECT name FROM groups_ WHERE id = ?", {gid}, "gone"));
    AULA_TRY_STATUS(evaluate(limits, used, fmt::format("The group '{}' has", name.text(0))));
  }
  if (auto category = AULA_TRY(userCategory(tx, ownerId))) {
    auto limits = AULA_TRY(totalLimits(tx, fmt::format("category:{}", *category)));
    if (limits.desktops || limits.running || limits.vcpus || limits.memoryMb || limits.diskGb) {
      auto used = AULA_TRY(usageWhere(tx, "u.category_id = ?", {*category}));
      AULA_TRY_STATUS(evaluate(limits, used, "Your category has"));
    }
  }
  return {};
}

}  // namespace detail

Result<Json> Broker::usage(const Actor& actor, std::int64_t userId) {
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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

// ---- templates ----

Result<Json> Broker::listTemplates(const Actor& actor) {
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kTemplateSelect) + " ORDER BY t.name"));
    Json out = Json::array();
    for (const auto& r : rows) {
      auto t = templateOf(r);
      bool visible =
          actor.role == Role::kAdmin || managesCategory(actor, t.categoryId) ||
          (t.enabled && AULA_TRY(templateUsable(tx, actor, actor.userId, actor.categoryId, t)));
      if (visible)
        out.push_back(AULA_TRY(templateJson(tx, r)));
    }
    return out;
  });
}

Result<Json> Broker::getTemplate(const Actor& actor, std::int64_t id) {
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {id},
                                    fmt::format("There is no template with id {}.", id)));
    auto t = templateOf(row);
    bool owner = t.ownerId && *t.ownerId == actor.userId;
    // As in the list: a disabled template is hidden from those who only use it.
    bool visible = managesCategory(actor, t.categoryId) ||
                   ((t.enabled || owner) &&
                    AULA_TRY(templateUsable(tx, actor, actor.userId, actor.categoryId, t)));
    if (!visible)
      return makeError(Errc::kNotFound, "There is no template with id {}.", id);
    return templateJson(tx, row);
  });
}

namespace {

// The base disk must lie inside the named storage path; returns it relative.
Result<std::string> checkedBaseDisk(const std::map<std::string, std::string>& storage,
                                    const std::string& storageName, const std::string& baseDisk) {
  // Desktop overlays live in "desktops": a template based on one would read
  // another user's disk.
  if (storageName == "desktops") {
    return Error(Errc::kInvalidArgument,
                 "Template disks cannot live in the 'desktops' storage, which holds users' own "
                 "disks; use 'templates' or another storage.");
  }
  auto it = storage.find(storageName);
  if (it == storage.end()) {
    std::vector<std::string> names;
    for (const auto& [k, v] : storage)
      names.push_back(k);
    return makeError(
        Errc::kInvalidArgument, "There is no storage named '{}'; configured: {}.", storageName,
        names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", ")));
  }
  namespace fs = std::filesystem;
  if (baseDisk.empty() || baseDisk.size() > 1024 || baseDisk.find('\0') != std::string::npos) {
    return Error(Errc::kInvalidArgument,
                 "The field 'base_disk' must be a path of 1 to 1024 characters.");
  }
  fs::path root = fs::path(it->second).lexically_normal();
  fs::path p = fs::path(baseDisk);
  fs::path full = (p.is_absolute() ? p : root / p).lexically_normal();
  auto rel = full.lexically_relative(root);
  if (rel.empty() || *rel.begin() == ".." || rel == ".") {
    return makeError(
        Errc::kInvalidArgument,
        "The base disk '{}' lies outside the storage '{}' ({}); put it inside that folder.",
        baseDisk.substr(0, 200), storageName, it->second);
  }
  return rel.string();
}

}  // namespace

Result<Json> Broker::createTemplate(const Actor& actor, const Json& body) {
  if (actor.role == Role::kUser) {
    return Error(Errc::kPermissionDenied, "Students may not create templates; ask your teacher.");
  }
  AULA_TRY_STATUS(
      json::checkFields(body, {"name", "description", "storage", "base_disk", "disk_gb", "vcpus",
                               "memory_mb", "video", "access", "pools", "category_id", "enabled"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("template", name));
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto storageName = AULA_TRY(optString(body, "storage")).value_or("templates");
  auto baseDisk = AULA_TRY(checkedBaseDisk(settings_.storage, storageName,
                                           AULA_TRY(json::getString(body, "base_disk"))));
  auto diskGb = AULA_TRY(intInRange(body, "disk_gb", 1, 16384));
  auto vcpus = AULA_TRY(intInRange(body, "vcpus", 1, 128));
  auto memoryMb = AULA_TRY(intInRange(body, "memory_mb", 128, 1048576));
  auto video = AULA_TRY(optString(body, "video")).value_or("qxl");
  if (video != "qxl" && video != "virtio") {
    return Error(Errc::kInvalidArgument, "The field 'video' must be 'qxl' or 'virtio'.");
  }
  auto enabled = AULA_TRY(optBool(body, "enabled")).value_or(true);
  auto category = AULA_TRY(optInt(body, "category_id"));
  if (actor.role != Role::kAdmin) {
    if (category && category != actor.categoryId)
      return forbidden();
    category = actor.categoryId;
  }
  auto access = AULA_TRY(accessList(body));
  std::vector<std::int64_t> pools;
  if (auto it = body.find("pools"); it != body.end()) {
    if (!it->is_array())
      return Error(Errc::kInvalidArgument, "The field 'pools' must be an array of pool ids.");
    for (const auto& p : *it) {
      if (!p.is_number_integer())
        return Error(Errc::kInvalidArgument, "The field 'pools' must be an array of pool ids.");
      pools.push_back(p.get<std::int64_t>());
    }
  }
  auto now = unixNow(clock_);
  return db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    AULA_TRY_STATUS(checkTemplateQuota(tx, actor));
    if (category) {
      AULA_TRY(tx.queryOne("SELECT id FROM categories WHERE id = ?", {*category},
                           fmt::format("There is no category with id {}.", *category)));
    }
    for (const auto& a : access)
      AULA_TRY_STATUS(checkAccessSubject(tx, actor, a));
    for (auto p : pools) {
      AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {p},
                           fmt::format("There is no pool with id {}.", p)));
    }
    auto rows = tx.query(
        "INSERT INTO templates (name, description, owner_id, category_id, storage, base_disk, "
        "disk_gb, "
        "vcpus, memory_mb, video, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?) "
        "RETURNING id",
        {name, description, actor.userId, intOrNull(category), storageName, baseDisk, diskGb, vcpus,
         memoryMb, video, std::int64_t{enabled ? 1 : 0}, now, now});
    if (!rows && rows.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A template named '{}' exists already.", name);
    }
    auto id = AULA_TRY(std::move(rows))[0].integer(0);
    for (const auto& a : access) {
      AULA_TRY(tx.exec(
          "INSERT INTO template_access (template_id, subject) VALUES (?, ?) ON CONFLICT DO NOTHING",
          {id, a}));
    }
    for (auto p : pools) {
      AULA_TRY(tx.exec(
          "INSERT INTO template_pools (template_id, pool_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
          {id, p}));
    }
    AULA_TRY_STATUS(audit(tx, actor, now, "template.create", fmt::format("template:{}", id),
                          Json{{"name", name}}));
    auto row =
        AULA_TRY(tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {id}, "gone"));
    return templateJson(tx, row);
  });
}

Result<Json> Broker::updateTemplate(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(
      json::checkFields(body, {"name", "description", "base_disk", "storage", "disk_gb", "vcpus",
                               "memory_mb", "video", "access", "pools", "enabled"}));
  auto now = unixNow(clock_);
  return db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {id},
                                    fmt::format("There is no template with id {}.", id)));
    auto t = templateOf(row);
    bool owner = t.ownerId && *t.ownerId == actor.userId && actor.role != Role::kUser;
    if (!owner && !managesCategory(actor, t.categoryId))
      return forbidden();
    auto name = AULA_TRY(optString(body, "name")).value_or(t.name);
    AULA_TRY_STATUS(checkName("template", name));
    auto description = AULA_TRY(optString(body, "description")).value_or(row.text(2));
    auto storageName = AULA_TRY(optString(body, "storage")).value_or(t.storage);
    auto baseInput = AULA_TRY(optString(body, "base_disk"));
    std::string baseDisk = t.baseDisk;
    bool newBase = baseInput || storageName != t.storage;
    if (newBase)
      baseDisk =
          AULA_TRY(checkedBaseDisk(settings_.storage, storageName, baseInput.value_or(t.baseDisk)));
    auto diskGb =
        body.contains("disk_gb") ? AULA_TRY(intInRange(body, "disk_gb", 1, 16384)) : t.diskGb;
    auto vcpus = body.contains("vcpus") ? AULA_TRY(intInRange(body, "vcpus", 1, 128)) : t.vcpus;
    auto memoryMb = body.contains("memory_mb")
                        ? AULA_TRY(intInRange(body, "memory_mb", 128, 1048576))
                        : t.memoryMb;
    auto video = AULA_TRY(optString(body, "video")).value_or(t.video);
    if (video != "qxl" && video != "virtio") {
      return Error(Errc::kInvalidArgument, "The field 'video' must be 'qxl' or 'virtio'.");
    }
    auto enabled = AULA_TRY(optBool(body, "enabled")).value_or(t.enabled);
    // A new base is a new version: desktops made from the old one keep
    // theirs (each desktop records its base) until they are recreated.
    std::int64_t version = row.integer(11) + (newBase ? 1 : 0);
    auto r = tx.exec(
        "UPDATE templates SET name = ?, description = ?, storage = ?, base_disk = ?, disk_gb = ?, "
        "vcpus = ?, "
        "memory_mb = ?, video = ?, enabled = ?, version = ?, updated_at = ? WHERE id = ?",
        {name, description, storageName, baseDisk, diskGb, vcpus, memoryMb, video,
         std::int64_t{enabled ? 1 : 0}, version, now, id});
    if (!r && r.error().code() == Errc::kAlreadyExists) {
      return makeError(Errc::kAlreadyExists, "A template named '{}' exists already.", name);
    }
    AULA_TRY(std::move(r));
    if (newBase) {
      // The new base is a file the admin placed: neither Aula's to delete nor
      // known to depend on another. The image made from a desktop stays on
      // its host for desktops still made from it.
      AULA_TRY(
          tx.exec("UPDATE templates SET from_desktop_id = NULL, origin_host_id = NULL, "
                  "backing_storage = NULL, backing_disk = NULL WHERE id = ?",
                  {id}));
    }
    if (auto it = body.find("access"); it != body.end()) {
      if (!it->is_array())
        return Error(Errc::kInvalidArgument, "The field 'access' must be an array of strings.");
      AULA_TRY(tx.exec("DELETE FROM template_access WHERE template_id = ?", {id}));
      for (const auto& a : *it) {
        if (!a.is_string())
          return Error(Errc::kInvalidArgument, "The field 'access' must be an array of strings.");
        AULA_TRY_STATUS(checkAccessSubject(tx, actor, a.get<std::string>()));
        AULA_TRY(
            tx.exec("INSERT INTO template_access (template_id, subject) VALUES (?, ?) ON CONFLICT "
                    "DO NOTHING",
                    {id, a.get<std::string>()}));
      }
    }
    if (auto it = body.find("pools"); it != body.end()) {
      if (!it->is_array())
        return Error(Errc::kInvalidArgument, "The field 'pools' must be an array of pool ids.");
      AULA_TRY(tx.exec("DELETE FROM template_pools WHERE template_id = ?", {id}));
      for (const auto& p : *it) {
        if (!p.is_number_integer())
          return Error(Errc::kInvalidArgument, "The field 'pools' must be an array of pool ids.");
        AULA_TRY(tx.queryOne("SELECT id FROM pools WHERE id = ?", {p.get<std::int64_t>()},
                             fmt::format("There is no pool with id {}.", p.get<std::int64_t>())));
        AULA_TRY(
            tx.exec("INSERT INTO template_pools (template_id, pool_id) VALUES (?, ?) ON CONFLICT "
                    "DO NOTHING",
                    {id, p.get<std::int64_t>()}));
      }
    }
    AULA_TRY_STATUS(audit(tx, actor, now, "template.update", fmt::format("template:{}", id), body));
    auto updated =
        AULA_TRY(tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {id}, "gone"));
    return templateJson(tx, updated);
  });
}

namespace {

// Where templates made from desktops keep their images, inside kTemplateStorage.
constexpr std::string_view kFromDesktopFolder = "from-desktop/";

// Whether the template's image is one Aula made from a desktop. Only such
// files are ever deleted: the images an admin placed are the admin's.
bool imageMadeByAula(const TemplateRow& t) {
  return t.fromDesktopId && t.storage == kTemplateStorage &&
         t.baseDisk.starts_with(kFromDesktopFolder);
}

HostAddress hostAddressOf(const db::Row& h) {
  return HostAddress{.id = h.integer(0),
                     .name = h.text(1),
                     .address = h.text(2),
                     .agentPort = h.integer(3),
                     .spiceSubject = h.optText(4).value_or("")};
}

// The hosts whose agents can reach a made template's image: the host that
// made it, or, once that host is deleted, the hypervisors of the template's
// pools (which share the templates storage).
Result<std::vector<HostAddress>> imageHosts(db::Transaction& tx, const TemplateRow& t) {
  constexpr const char* kColumns =
      "SELECT h.id, h.name, h.address, h.agent_port, h.spice_subject FROM hosts h WHERE ";
  std::vector<db::Row> rows;
  if (t.originHostId) {
    rows = AULA_TRY(tx.query(std::string(kColumns) + "h.id = ?", {*t.originHostId}));
  }
  if (rows.empty()) {
    rows = AULA_TRY(tx.query(std::string(kColumns) +
                                 "h.kind = 'hypervisor' AND h.pool_id IN (SELECT pool_id FROM "
                                 "template_pools WHERE template_id = ?) ORDER BY h.id",
                             {t.id}));
  }
  std::vector<HostAddress> hosts;
  for (const auto& h : rows)
    hosts.push_back(hostAddressOf(h));
  return hosts;
}

}  // namespace

Status Broker::deleteTemplate(const Actor& actor, std::int64_t id) {
  auto now = unixNow(clock_);
  // An image Aula made for the template, to delete once the row is gone.
  struct Image {
    std::string storage, disk;
    std::vector<HostAddress> hosts;
  };
  std::optional<Image> image;
  // The row goes first, the file after. One transaction checks every user of
  // the template and of its image and deletes the row; only after it commits
  // does an agent delete the file. So at every moment each row names a file
  // that exists: a broker that dies in between, or an agent that is away or
  // refuses (it still finds an image on the file, such as a desktop disk
  // that outlived its desktop), leaves at worst a file that nothing names,
  // which the log and the audit log point out to the admin. The other order
  // could delete the file and then fail to delete the row, leaving a
  // template whose desktops can no longer start.
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    image.reset();
    auto row = AULA_TRY(tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {id},
                                    fmt::format("There is no template with id {}.", id)));
    auto t = templateOf(row);
    bool owner = t.ownerId && *t.ownerId == actor.userId && actor.role != Role::kUser;
    if (!owner && !managesCategory(actor, t.categoryId))
      return forbidden();
    auto desktops =
        AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM desktops WHERE template_id = ?", {id}));
    auto deployments =
        AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM deployments WHERE template_id = ?", {id}));
    if (desktops > 0 || deployments > 0) {
      return makeError(
          Errc::kConflict,
          "The template '{}' is the base of {} desktop(s) and {} deployment(s); it is kept "
          "until they are deleted.",
          t.name, desktops, deployments);
    }
    // A re-based template holds only its changes on top of this one's image.
    auto rebased =
        AULA_TRY(tx.query("SELECT name FROM templates WHERE id <> ? AND backing_storage = ? AND "
                          "backing_disk = ? ORDER BY name",
                          {id, t.storage, t.baseDisk}));
    if (!rebased.empty()) {
      return makeError(
          Errc::kConflict,
          "The template '{}' is kept while the template '{}'{} is re-based on its "
          "image and needs it; delete {} first.",
          t.name, rebased[0].text(0),
          rebased.size() > 1 ? fmt::format(" (and {} more)", rebased.size() - 1) : std::string(),
          rebased.size() > 1 ? "them" : "that one");
    }
    Json detail{{"name", t.name}};
    if (imageMadeByAula(t)) {
      // Asked before the row goes: its pools go with it.
      auto hosts = AULA_TRY(imageHosts(tx, t));
      auto users = AULA_TRY(tx.queryInt(
          "SELECT (SELECT COUNT(*) FROM desktops WHERE base_storage = ? AND base_disk = ?) + "
          "(SELECT COUNT(*) FROM templates WHERE id <> ? AND ((storage = ? AND base_disk = ?) OR "
          "(backing_storage = ? AND backing_disk = ?)))",
          {t.storage, t.baseDisk, id, t.storage, t.baseDisk, t.storage, t.baseDisk}));
      detail["image"] = t.baseDisk;
      if (users > 0) {
        detail["image_kept"] = "other desktops or templates use it";
      } else {
        image = Image{t.storage, t.baseDisk, std::move(hosts)};
      }
    }
    AULA_TRY(tx.exec("DELETE FROM templates WHERE id = ?", {id}));
    return audit(tx, actor, now, "template.delete", fmt::format("template:{}", id), detail);
  }));
  if (image)
    deleteTemplateImage(actor, id, image->storage, image->disk, image->hosts);
  return {};
}

void Broker::deleteTemplateImage(const Actor& actor, std::int64_t templateId,
                                 const std::string& storage, const std::string& disk,
                                 const std::vector<HostAddress>& hosts) {
  // With a shared templates storage the first host deletes the file; a host
  // without it says so, and the next is asked.
  Json detail{{"storage", storage}, {"disk", disk}, {"result", "absent"}};
  for (const auto& host : hosts) {
    auto gone = hosts_.deleteBase(host, storage, disk);
    if (gone) {
      detail["result"] = "deleted";
      detail["host"] = host.name;
      break;
    }
    if (gone.error().code() == Errc::kNotFound)
      continue;
    detail["result"] = "kept";
    detail["host"] = host.name;
    detail["reason"] = gone.error().message();
    log::warn("The image {} of deleted template {} stays in storage '{}' on host '{}': {}", disk,
              templateId, storage, host.name, gone.error().message());
    break;
  }
  if (hosts.empty()) {
    detail["result"] = "kept";
    detail["reason"] = "No host is known to hold it.";
    log::warn(
        "The image {} of deleted template {} stays in storage '{}': no host is known to "
        "hold it.",
        disk, templateId, storage);
  }
  auto now = unixNow(clock_);
  auto recorded = db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    return audit(tx, actor, now, "template.image_delete", fmt::format("template:{}", templateId),
                 detail);
  });
  if (!recorded)
    log::warn("Cannot record the deletion of template {}'s image: {}", templateId,
              recorded.error().message());
}

// ---- desktops ----

Result<Json> Broker::listDesktops(const Actor& actor,
                                  const std::map<std::string, std::string>& filter) {
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    std::string sql = std::string(kDesktopSelect) + " WHERE ";
    db::Params params;
    auto scope = filter.contains("scope") ? filter.at("scope") : std::string("mine");
    if (scope == "mine") {
      sql += "d.owner_id = ?";
      params.push_back(actor.userId);
    } else if (scope == "all" && actor.role == Role::kAdmin) {
      sql += "1 = 1";
    } else if (scope == "all" && actor.role == Role::kManager) {
      sql +=
          "(u.category_id = ? OR d.owner_id IN (SELECT m.user_id FROM group_members m JOIN groups_ "
          "g ON "
          "g.id = m.group_id WHERE g.category_id = ?))";
      params.push_back(actor.categoryId.value_or(-1));
      params.push_back(actor.categoryId.value_or(-1));
    } else if (scope == "all") {
      return forbidden();
    } else {
      return makeError(Errc::kInvalidArgument, "The scope '{}' is not 'mine' or 'all'.",
                       scope.substr(0, 40));
    }
    if (auto it = filter.find("state"); it != filter.end()) {
      sql += " AND d.state = ?";
      params.push_back(it->second);
    }
    if (auto it = filter.find("deployment_id"); it != filter.end()) {
      sql += " AND d.deployment_id = ?";
      params.push_back(std::int64_t{std::atoll(it->second.c_str())});
    }
    if (auto it = filter.find("owner_id"); it != filter.end()) {
      sql += " AND d.owner_id = ?";
      params.push_back(std::int64_t{std::atoll(it->second.c_str())});
    }
    sql += " ORDER BY d.id";
    auto rows = AULA_TRY(tx.query(sql, params));
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(desktopJson(r));
    return out;
  });
}

Result<Json> Broker::getDesktop(const Actor& actor, std::int64_t id) {
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
    // Someone else's desktop is "not found", not "forbidden": ids are not probed.
    if (rows.empty() || !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(2), true))) {
      return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
    }
    return desktopJson(rows[0]);
  });
}

Result<Json> Broker::createDesktop(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"name", "template_id", "persistent", "owner_id"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("desktop", name));
  auto templateId = AULA_TRY(json::getInt(body, "template_id"));
  auto persistent = AULA_TRY(optBool(body, "persistent")).value_or(true);
  auto ownerId = AULA_TRY(optInt(body, "owner_id")).value_or(actor.userId);
  auto now = unixNow(clock_);
  std::optional<std::int64_t> createdCategory;
  auto created =
      db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
        if (!AULA_TRY(mayActOnUser(tx, actor, ownerId, true)))
          return forbidden();
        auto ownerCategory = AULA_TRY(userCategory(tx, ownerId));
        createdCategory = ownerCategory;
        auto trows =
            AULA_TRY(tx.query(std::string(kTemplateSelect) + " WHERE t.id = ?", {templateId}));
        Actor ownerView = actor;
        if (ownerId != actor.userId) {
          auto o = AULA_TRY(
              tx.queryOne("SELECT role, username FROM users WHERE id = ?", {ownerId}, "gone"));
          ownerView = Actor{.userId = ownerId,
                            .username = o.text(1),
                            .role = parseRole(o.text(0)).value_or(Role::kUser),
                            .categoryId = ownerCategory};
        }
        if (trows.empty() || !AULA_TRY(templateUsable(tx, ownerView, ownerId, ownerCategory,
                                                      templateOf(trows[0])))) {
          return makeError(Errc::kNotFound,
                           "There is no template with id {} that this user may use.", templateId);
        }
        auto t = templateOf(trows[0]);
        if (!t.enabled)
          return makeError(Errc::kConflict, "The template '{}' is disabled.", t.name);
        AULA_TRY_STATUS(
            checkQuotas(tx, ownerId, QuotaCheck::kCreate, t.vcpus, t.memoryMb, t.diskGb, false));
        auto rows = tx.query(
            "INSERT INTO desktops (name, owner_id, template_id, persistent, vcpus, memory_mb, "
            "disk_gb, base_storage, base_disk, template_version, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            {name, ownerId, templateId, std::int64_t{persistent ? 1 : 0}, t.vcpus, t.memoryMb,
             t.diskGb, t.storage, t.baseDisk, t.version, now});
        if (!rows && rows.error().code() == Errc::kAlreadyExists) {
          return makeError(Errc::kAlreadyExists,
                           "A desktop named '{}' exists already for this user.", name);
        }
        auto id = AULA_TRY(std::move(rows))[0].integer(0);
        AULA_TRY(tx.exec("UPDATE desktops SET disk_path = ? WHERE id = ?",
                         {fmt::format("{}/{}.qcow2", ownerId, id), id}));
        AULA_TRY_STATUS(
            audit(tx, actor, now, "desktop.create", fmt::format("desktop:{}", id),
                  Json{{"name", name}, {"owner_id", ownerId}, {"template_id", templateId}}));
        auto row =
            AULA_TRY(tx.queryOne(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}, "gone"));
        return desktopJson(row);
      });
  if (created) {
    events_.publish(Event{.type = "desktop.created",
                          .data = *created,
                          .ownerId = ownerId,
                          .categoryId = createdCategory});
  }
  return created;
}

Result<Json> Broker::startDesktop(const Actor& actor, std::int64_t id) {
  auto now = unixNow(clock_);
  struct Plan {
    DesktopRow desktop;
    HostAddress host;
    PlacementRequest request;
    bool alreadyRunning = false;
  };
  // The Placer's reservation for this start. A PostgreSQL retry runs the body
  // below again, and a failed COMMIT passes none of its error paths: each run
  // gives back the last run's reservation, and the one left is given back once
  // the desktop's state in the database counts it instead.
  std::optional<std::pair<std::int64_t, PlacementRequest>> reserved;
  auto giveBack = [&] {
    if (reserved)
      placer_.release(reserved->first, reserved->second);
    reserved.reset();
  };
  auto plan = db_.transactValue<Plan>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Plan> {
    giveBack();
    auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
    if (rows.empty() || !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(2), true))) {
      return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
    }
    Plan p{desktopOf(rows[0]), {}, {}, false};
    if (p.desktop.state == "running" || p.desktop.state == "starting") {
      p.alreadyRunning = true;
      return p;
    }
    if (p.desktop.state == "stopping") {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is stopping; start it again when it has stopped.",
                       p.desktop.name);
    }
    if (copying(id)) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is being made into a template; start it when that is "
                       "done.",
                       p.desktop.name);
    }
    // Teacher deployments are handed out, not asked for: the student's own
    // limits do not block them, the group's and category's totals do.
    auto deployment = rows[0].optInteger(6);
    AULA_TRY_STATUS(checkQuotas(tx, p.desktop.ownerId, QuotaCheck::kStart, p.desktop.spec.vcpus,
                                p.desktop.spec.memoryMb, 0, deployment.has_value()));
    p.request.vcpus = p.desktop.spec.vcpus;
    p.request.memoryMb = p.desktop.spec.memoryMb;
    // A desktop without a disk on a host yet (first start, or any start of a
    // non-persistent one) needs room for its overlay to grow to full size.
    if (!p.desktop.spec.persistent || !p.desktop.hostId) {
      p.request.storage = "desktops";
      p.request.diskGb = rows[0].integer(13);
    }
    auto pools = AULA_TRY(tx.query("SELECT pool_id FROM template_pools WHERE template_id = ?",
                                   {p.desktop.templateId}));
    for (const auto& r : pools)
      p.request.pools.push_back(r.integer(0));
    // Allocated vCPUs count running desktops only: starts in flight are the
    // Placer's to count, so none is counted twice.
    std::string hostSql =
        "SELECT h.id, h.name, h.pool_id, h.state, h.cpus, h.memory_mb, h.cpu_idle, "
        "h.free_memory_mb, "
        "COALESCE(h.vcpu_ratio_limit, 0), (SELECT CAST(COALESCE(SUM(d.vcpus), 0) AS BIGINT) "
        "FROM desktops d WHERE "
        "d.host_id = h.id "
        "AND d.state = 'running'), h.address, h.storage, h.agent_port, h.spice_subject FROM hosts "
        "h "
        "WHERE h.kind = "
        "'hypervisor'";
    db::Params hostParams;
    // A persistent desktop's disk lives on the host that made it.
    if (p.desktop.spec.persistent && p.desktop.hostId) {
      hostSql += " AND h.id = ?";
      hostParams.push_back(*p.desktop.hostId);
    }
    auto hostRows = AULA_TRY(tx.query(hostSql, hostParams));
    std::vector<HostCandidate> candidates;
    std::map<std::int64_t, HostAddress> addresses;
    for (const auto& h : hostRows) {
      candidates.push_back(HostCandidate{.id = h.integer(0),
                                         .name = h.text(1),
                                         .poolId = h.integer(2),
                                         .online = h.text(3) == "online",
                                         .cpus = h.integer(4),
                                         .memoryMb = h.integer(5),
                                         .cpuIdle = h.real(6),
                                         .freeMemoryMb = h.integer(7),
                                         .allocatedVcpus = h.integer(9),
                                         .vcpuRatioLimit = h.real(8)});
      // Free space per named storage, as the host's last heartbeat reported it.
      auto storage = json::parse(h.text(11));
      if (storage && storage->is_object()) {
        for (const auto& [name, free] : storage->items()) {
          if (free.is_number())
            candidates.back().freeStorageGb[name] = free.get<std::int64_t>();
        }
      }
      addresses[h.integer(0)] = HostAddress{.id = h.integer(0),
                                            .name = h.text(1),
                                            .address = h.text(10),
                                            .agentPort = h.integer(12),
                                            .spiceSubject = h.optText(13).value_or("")};
    }
    auto hostId = AULA_TRY(placer_.place(std::move(candidates), p.request));
    reserved.emplace(hostId, p.request);
    p.host = addresses[hostId];
    AULA_TRY(
        tx.exec("UPDATE desktops SET state = 'starting', host_id = ? WHERE id = ?", {hostId, id}));
    AULA_TRY_STATUS(audit(tx, actor, now, "desktop.start", fmt::format("desktop:{}", id),
                          Json{{"host", p.host.name}}));
    return p;
  });
  if (!plan) {
    giveBack();
    return plan.error();
  }
  if (plan->alreadyRunning)
    return getDesktop(actor, id);

  auto& p = *plan;
  events_.publish(Event{.type = "desktop.state",
                        .data = desktopEventData(id, "starting", p.host.id),
                        .ownerId = p.desktop.ownerId,
                        .categoryId = p.desktop.ownerCategory});
  counters_.desktopStarts++;
  auto started = hosts_.startDesktop(p.host, p.desktop.spec);
  std::string state = started ? "running" : "stopped";
  auto after = unixNow(clock_);
  auto recorded = db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    if (started) {
      AULA_TRY(tx.exec("UPDATE desktops SET state = 'running', started_at = ? WHERE id = ?",
                       {after, id}));
    } else {
      // Nothing runs: forget the host unless the desktop's disk lives there.
      AULA_TRY(
          tx.exec("UPDATE desktops SET state = 'stopped', stopped_at = ?, host_id = CASE WHEN "
                  "persistent = 1 AND started_at IS NOT NULL "
                  "THEN host_id ELSE NULL END WHERE id = ?",
                  {after, id}));
    }
    return {};
  });
  // Only now does the 'running' row count the desktop's vCPUs on its host.
  giveBack();
  AULA_TRY_STATUS(recorded);
  events_.publish(
      Event{.type = "desktop.state",
            .data = desktopEventData(id, state, started ? std::optional(p.host.id) : std::nullopt),
            .ownerId = p.desktop.ownerId,
            .categoryId = p.desktop.ownerCategory});
  if (!started) {
    counters_.desktopStartFailures++;
    log::warn("Desktop {} did not start on host '{}': {}", id, p.host.name,
              started.error().message());
    return Error(Errc::kUnavailable, fmt::format("The desktop could not start on host '{}': {}",
                                                 p.host.name, started.error().message()));
  }
  return getDesktop(actor, id);
}

Result<Json> Broker::stopDesktop(const Actor& actor, std::int64_t id, bool force) {
  auto now = unixNow(clock_);
  auto desktop = db_.transactValue<DesktopRow>(
      db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<DesktopRow> {
        auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
        if (rows.empty() || !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(2), true))) {
          return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
        }
        auto d = desktopOf(rows[0]);
        if (d.state == "stopped")
          return d;
        if (d.state == "stopping" && !force) {
          return makeError(Errc::kConflict, "The desktop '{}' is already stopping.", d.name);
        }
        AULA_TRY(tx.exec("UPDATE desktops SET state = 'stopping' WHERE id = ?", {id}));
        AULA_TRY_STATUS(audit(tx, actor, now, force ? "desktop.poweroff" : "desktop.stop",
                              fmt::format("desktop:{}", id)));
        return d;
      });
  if (!desktop)
    return desktop.error();
  auto& d = *desktop;
  if (d.state == "stopped")
    return getDesktop(actor, id);
  events_.publish(Event{.type = "desktop.state",
                        .data = desktopEventData(id, "stopping", d.hostId),
                        .ownerId = d.ownerId,
                        .categoryId = d.ownerCategory});
  Status stopped;
  if (d.hostId) {
    stopped = hosts_.stopDesktop(hostOf(d), d.spec, force);
  }
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    if (!stopped) {
      // The agent did not confirm: the desktop may still run. Keep it as it was.
      AULA_TRY(tx.exec("UPDATE desktops SET state = ? WHERE id = ?", {d.state, id}));
      return {};
    }
    // A non-persistent desktop's overlay is gone with the stop; so is its tie to the host.
    AULA_TRY(
        tx.exec("UPDATE desktops SET state = 'stopped', connected = 0, stopped_at = ?, host_id = "
                "CASE WHEN persistent = 1 THEN host_id ELSE NULL END WHERE id = ?",
                {unixNow(clock_), id}));
    return {};
  }));
  events_.publish(Event{.type = "desktop.state",
                        .data = desktopEventData(id, stopped ? "stopped" : d.state, d.hostId),
                        .ownerId = d.ownerId,
                        .categoryId = d.ownerCategory});
  if (!stopped)
    return stopped.error().context("The desktop could not be stopped.");
  return getDesktop(actor, id);
}

Status Broker::deleteDesktop(const Actor& actor, std::int64_t id) {
  auto current = getDesktop(actor, id);
  if (!current)
    return current.error();
  if ((*current)["state"] != "stopped")
    AULA_TRY(stopDesktop(actor, id, true));
  auto now = unixNow(clock_);
  std::optional<DesktopRow> removed;
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto d = AULA_TRY(loadDesktop(tx, id));
    if (d.state != "stopped") {
      return makeError(Errc::kConflict,
                       "The desktop '{}' started again while being deleted; try again.", d.name);
    }
    if (copying(id)) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is being made into a template; delete it when that is "
                       "done.",
                       d.name);
    }
    AULA_TRY(tx.exec("DELETE FROM desktops WHERE id = ?", {id}));
    AULA_TRY_STATUS(audit(tx, actor, now, "desktop.delete", fmt::format("desktop:{}", id),
                          Json{{"name", d.name}}));
    removed = d;
    return {};
  }));
  if (removed && removed->hostId) {
    auto gone = hosts_.deleteDesktop(hostOf(*removed), removed->spec);
    if (!gone) {
      log::warn("The disk of deleted desktop {} stays on host '{}': {}", id, removed->hostName,
                gone.error().message());
    }
  }
  events_.publish(Event{.type = "desktop.deleted",
                        .data = Json{{"id", id}},
                        .ownerId = removed ? std::optional(removed->ownerId) : std::nullopt,
                        .categoryId = removed ? removed->ownerCategory : std::nullopt});
  return {};
}

Result<Json> Broker::console(const Actor& actor, std::int64_t id) {
  auto desktop = AULA_TRY(startDesktop(actor, id));
  // Another request may be starting it: wait for that start to end.
  Result<DesktopRow> row = Error(Errc::kInternal, "unreached");
  for (auto deadline = std::chrono::steady_clock::now() + settings_.consoleStartWait;;) {
    row = db_.transactValue<DesktopRow>(db::TxMode::kRead,
                                        [&](db::Transaction& tx) { return loadDesktop(tx, id); });
    if (!row)
      return row.error();
    if (row->state != "starting" || std::chrono::steady_clock::now() >= deadline)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (row->state != "running" || !row->hostId) {
    return makeError(Errc::kConflict, "The desktop '{}' is {}; try again in a moment.", row->name,
                     row->state);
  }
  desktop = AULA_TRY(getDesktop(actor, id));
  auto ticket = AULA_TRY(hosts_.setTicket(hostOf(*row), row->spec, settings_.ticketValidity));
  auto now = unixNow(clock_);
  AULA_TRY_STATUS(db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    return audit(tx, actor, now, "desktop.console", fmt::format("desktop:{}", id));
  }));
  return Json{
      {"desktop", desktop},
      {"host", ticket.host},
      {"tls_port", ticket.tlsPort > 0 ? Json(ticket.tlsPort) : Json()},
      {"port", ticket.plainPort > 0 ? Json(ticket.plainPort) : Json()},
      {"ticket", ticket.ticket},
      {"expires_at",
       std::chrono::duration_cast<std::chrono::seconds>(ticket.expires.time_since_epoch()).count()},
      {"host_subject", ticket.hostSubject.empty() ? row->hostSubject : ticket.hostSubject}};
}

// ---- templates from desktops ----

bool Broker::copying(std::int64_t desktopId) {
  std::lock_guard lock(copyingMutex_);
  return copying_.contains(desktopId);
}

namespace {

// Marks a desktop as being copied into a template for as long as it lives.
class CopyMark {
 public:
  CopyMark(std::mutex& mutex, std::set<std::int64_t>& marked) : mutex_(mutex), marked_(marked) {}
  ~CopyMark() { release(); }
  CopyMark(const CopyMark&) = delete;
  CopyMark& operator=(const CopyMark&) = delete;

  bool take(std::int64_t id) {
    std::lock_guard lock(mutex_);
    if (!marked_.insert(id).second)
      return false;
    id_ = id;
    return true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    if (id_)
      marked_.erase(*id_);
    id_.reset();
  }

 private:
  std::mutex& mutex_;
  std::set<std::int64_t>& marked_;
  std::optional<std::int64_t> id_;
};

// Failures of the host are the host's (503); the rest say what stands in the
// way (409), with the host's own sentence.
Error hostCouldNotMakeImage(const Error& error, const std::string& host) {
  switch (error.code()) {
    case Errc::kConflict:
    case Errc::kAlreadyExists:
    case Errc::kNotFound:
    case Errc::kInvalidArgument:
      return Error(Errc::kConflict,
                   fmt::format("The host '{}' could not make the template's image: {}", host,
                               error.message()));
    default:
      return Error(Errc::kUnavailable,
                   fmt::format("The host '{}' could not make the template's image: {}", host,
                               error.message()));
  }
}

}  // namespace

Result<Json> Broker::makeTemplateFromDesktop(const Actor& actor, std::int64_t id,
                                             const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"name", "mode", "description", "access"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("template", name));
  auto modeName = AULA_TRY(optString(body, "mode")).value_or("flatten");
  TemplateMode mode = TemplateMode::kFlatten;
  if (modeName == "rebase") {
    mode = TemplateMode::kRebase;
  } else if (modeName != "flatten") {
    return makeError(Errc::kInvalidArgument,
                     "The field 'mode' must be 'flatten' or 'rebase', not '{}'.",
                     modeName.substr(0, 40));
  }
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto access = AULA_TRY(accessList(body));
  if (actor.role == Role::kUser) {
    return Error(Errc::kPermissionDenied,
                 "Students may not make templates from their desktops; ask your teacher.");
  }
  if (!settings_.storage.contains(kTemplateStorage)) {
    return makeError(Errc::kUnavailable,
                     "The broker has no storage named '{}' in storage.paths, where templates made "
                     "from desktops are kept; an admin must add it.",
                     kTemplateStorage);
  }
  auto now = unixNow(clock_);

  struct Plan {
    DesktopRow desktop;
    HostAddress host;
    std::int64_t poolId = 0;
    std::optional<std::int64_t> categoryId;
    std::int64_t sourceId = 0;
    std::int64_t diskGb = 0, vcpus = 0, memoryMb = 0;
    std::string video;
    std::string baseDisk;
  };
  // Held until the template's row is in: the desktop may neither start nor
  // be deleted while its disk is read.
  CopyMark mark(copyingMutex_, copying_);
  auto plan = db_.transactValue<Plan>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Plan> {
    mark.release();  // a retried transaction takes it again
    auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
    if (rows.empty() || !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(2), true))) {
      return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
    }
    Plan p;
    p.desktop = desktopOf(rows[0]);
    const auto& d = p.desktop;
    if (d.state != "stopped") {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is {}; stop it first, since the disk of a running guest "
                       "is not consistent.",
                       d.name, d.state);
    }
    if (!d.spec.persistent) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' is not persistent: its changes are thrown away when it "
                       "stops, so there is nothing to make a template from.",
                       d.name);
    }
    if (!d.hostId || !rows[0].optInteger(16)) {
      return makeError(Errc::kConflict,
                       "The desktop '{}' has no disk yet: start it once, make your changes, stop "
                       "it, then make the template.",
                       d.name);
    }
    if (!mark.take(id)) {
      return makeError(Errc::kConflict,
                       "A template is already being made from the desktop '{}'; wait until that "
                       "is done.",
                       d.name);
    }
    AULA_TRY_STATUS(checkTemplateQuota(tx, actor));
    if (!AULA_TRY(tx.query("SELECT id FROM templates WHERE name = ?", {name})).empty())
      return makeError(Errc::kAlreadyExists, "A template named '{}' exists already.", name);
    for (const auto& a : access)
      AULA_TRY_STATUS(checkAccessSubject(tx, actor, a));
    auto source =
        AULA_TRY(tx.queryOne("SELECT disk_gb, vcpus, memory_mb, video FROM templates WHERE id = ?",
                             {d.templateId}, "gone"));
    p.sourceId = d.templateId;
    p.diskGb = source.integer(0);
    p.vcpus = source.integer(1);
    p.memoryMb = source.integer(2);
    p.video = source.text(3);
    p.poolId = AULA_TRY(tx.queryInt("SELECT pool_id FROM hosts WHERE id = ?", {*d.hostId}));
    p.host = hostOf(d);
    // As createTemplate: a template belongs to its maker's category; an
    // admin's, made for someone, to the desktop owner's.
    p.categoryId = actor.role == Role::kAdmin ? d.ownerCategory : actor.categoryId;
    // One new file per template; a second template of the same desktop in
    // the same second gets a suffix.
    p.baseDisk = fmt::format("{}{}-{}.qcow2", kFromDesktopFolder, id, now);
    for (int n = 2; !AULA_TRY(tx.query("SELECT id FROM templates WHERE storage = ? AND "
                                       "base_disk = ?",
                                       {std::string(kTemplateStorage), p.baseDisk}))
                         .empty();
         ++n) {
      p.baseDisk = fmt::format("{}{}-{}-{}.qcow2", kFromDesktopFolder, id, now, n);
    }
    return p;
  });
  if (!plan)
    return plan.error();
  auto& p = *plan;

  // The copy, without a transaction open: a flattened image takes as long as
  // the whole disk takes to copy.
  auto made = hosts_.makeTemplate(p.host, p.desktop.spec, p.baseDisk, mode);
  if (!made) {
    log::warn("No template from desktop {} on host '{}': {}", id, p.host.name,
              made.error().message());
    return hostCouldNotMakeImage(made.error(), p.host.name);
  }

  // The image is whole; now its row. Should the row fail (the name was
  // taken meanwhile, the quota filled), nothing names the new image: it goes
  // again, so that nothing is left half-done.
  auto created =
      db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
        AULA_TRY_STATUS(checkTemplateQuota(tx, actor));
        std::optional<std::string> backingStorage, backingDisk;
        if (mode == TemplateMode::kRebase) {
          backingStorage = p.desktop.spec.templateStorage;
          backingDisk = p.desktop.spec.baseDisk;
        }
        auto rows = tx.query(
            "INSERT INTO templates (name, description, owner_id, category_id, storage, base_disk, "
            "disk_gb, vcpus, memory_mb, video, enabled, created_at, updated_at, from_desktop_id, "
            "origin_host_id, backing_storage, backing_disk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "1, ?, ?, ?, ?, ?, ?) RETURNING id",
            {name, description, actor.userId, intOrNull(p.categoryId),
             std::string(kTemplateStorage), p.baseDisk, p.diskGb, p.vcpus, p.memoryMb, p.video, now,
             now, id, p.host.id, textOrNull(backingStorage), textOrNull(backingDisk)});
        if (!rows && rows.error().code() == Errc::kAlreadyExists) {
          return makeError(Errc::kAlreadyExists, "A template named '{}' exists already.", name);
        }
        auto templateId = AULA_TRY(std::move(rows))[0].integer(0);
        for (const auto& a : access) {
          AULA_TRY(tx.exec(
              "INSERT INTO template_access (template_id, subject) VALUES (?, ?) ON CONFLICT DO "
              "NOTHING",
              {templateId, a}));
        }
        // Other hosts reach the image only where they share the templates
        // storage: the pool's hosts, by the admin guide's set-up.
        AULA_TRY(tx.exec("INSERT INTO template_pools (template_id, pool_id) VALUES (?, ?)",
                         {templateId, p.poolId}));
        AULA_TRY_STATUS(audit(tx, actor, now, "template.from_desktop",
                              fmt::format("template:{}", templateId),
                              Json{{"name", name},
                                   {"desktop_id", id},
                                   {"source_template_id", p.sourceId},
                                   {"mode", templateModeName(mode)},
                                   {"host", p.host.name},
                                   {"base_disk", p.baseDisk},
                                   {"size_bytes", made->sizeBytes}}));
        auto row = AULA_TRY(
            tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {templateId}, "gone"));
        return templateJson(tx, row);
      });
  if (!created) {
    auto removed = hosts_.deleteBase(p.host, kTemplateStorage, p.baseDisk);
    if (!removed) {
      log::warn("The image {} made for template '{}' stays in storage '{}' on host '{}': {}",
                p.baseDisk, name, kTemplateStorage, p.host.name, removed.error().message());
    }
    return created.error();
  }
  log::info("Template '{}' made from desktop {} on host '{}' ({}).", name, id, p.host.name,
            templateModeName(mode));
  return created;
}

// ---- deployments ----

namespace {

constexpr const char* kDeploymentSelect =
    "SELECT p.id, p.name, p.template_id, t.name, p.group_id, g.name, g.category_id, p.owner_id, "
    "p.persistent, "
    "p.created_at, (SELECT COUNT(*) FROM desktops d WHERE d.deployment_id = p.id), (SELECT "
    "COUNT(*) FROM "
    "desktops d WHERE d.deployment_id = p.id AND d.state = 'running'), (SELECT COUNT(*) FROM "
    "desktops d WHERE "
    "d.deployment_id = p.id AND d.connected = 1) FROM deployments p JOIN templates t ON t.id = "
    "p.template_id "
    "JOIN groups_ g ON g.id = p.group_id";

Json deploymentJson(const db::Row& r) {
  return Json{{"id", r.integer(0)},
              {"name", r.text(1)},
              {"template_id", r.integer(2)},
              {"template", r.text(3)},
              {"group_id", r.integer(4)},
              {"group", r.text(5)},
              {"category_id", r.integer(6)},
              {"owner_id", nullableInt(r, 7)},
              {"persistent", r.integer(8) != 0},
              {"created_at", r.integer(9)},
              {"desktops", r.integer(10)},
              {"running", r.integer(11)},
              {"connected", r.integer(12)}};
}

}  // namespace

Result<Json> Broker::listDeployments(const Actor& actor) {
  AULA_TRY_STATUS(requireManager(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    std::vector<db::Row> rows;
    if (actor.role == Role::kAdmin) {
      rows = AULA_TRY(tx.query(std::string(kDeploymentSelect) + " ORDER BY p.name"));
    } else {
      rows = AULA_TRY(
          tx.query(std::string(kDeploymentSelect) + " WHERE g.category_id = ? ORDER BY p.name",
                   {actor.categoryId.value_or(-1)}));
    }
    Json out = Json::array();
    for (const auto& r : rows)
      out.push_back(deploymentJson(r));
    return out;
  });
}

Result<Json> Broker::getDeployment(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  return db_.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kDeploymentSelect) + " WHERE p.id = ?", {id},
                                    fmt::format("There is no deployment with id {}.", id)));
    if (!managesCategory(actor, row.integer(6)))
      return makeError(Errc::kNotFound, "There is no deployment with id {}.", id);
    Json out = deploymentJson(row);
    auto desktops = AULA_TRY(tx.query(
        std::string(kDesktopSelect) + " WHERE d.deployment_id = ? ORDER BY u.username", {id}));
    Json list = Json::array();
    for (const auto& d : desktops)
      list.push_back(desktopJson(d));
    out["desktop_list"] = list;
    return out;
  });
}

Result<Json> Broker::createDeployment(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "template_id", "group_id", "persistent"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("deployment", name));
  auto templateId = AULA_TRY(json::getInt(body, "template_id"));
  auto groupId = AULA_TRY(json::getInt(body, "group_id"));
  auto persistent = AULA_TRY(optBool(body, "persistent")).value_or(true);
  auto now = unixNow(clock_);
  // One transaction for the deployment and every desktop in it: a broker that
  // dies half-way leaves no half deployment behind.
  auto created =
      db_.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
        auto g =
            AULA_TRY(tx.queryOne("SELECT category_id, name FROM groups_ WHERE id = ?", {groupId},
                                 fmt::format("There is no group with id {}.", groupId)));
        if (!managesCategory(actor, g.integer(0)))
          return forbidden();
        auto trows =
            AULA_TRY(tx.query(std::string(kTemplateSelect) + " WHERE t.id = ?", {templateId}));
        if (trows.empty())
          return makeError(Errc::kNotFound, "There is no template with id {}.", templateId);
        auto t = templateOf(trows[0]);
        if (!managesCategory(actor, t.categoryId) &&
            !AULA_TRY(templateUsable(tx, actor, actor.userId, actor.categoryId, t))) {
          return makeError(Errc::kNotFound, "There is no template with id {} that you may use.",
                           templateId);
        }
        if (!t.enabled)
          return makeError(Errc::kConflict, "The template '{}' is disabled.", t.name);
        auto ins = tx.query(
            "INSERT INTO deployments (name, template_id, group_id, owner_id, persistent, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            {name, templateId, groupId, actor.userId, std::int64_t{persistent ? 1 : 0}, now});
        if (!ins && ins.error().code() == Errc::kAlreadyExists) {
          return makeError(Errc::kAlreadyExists, "A deployment named '{}' exists already.", name);
        }
        auto id = AULA_TRY(std::move(ins))[0].integer(0);
        auto members =
            AULA_TRY(tx.query("SELECT u.id, u.username FROM group_members m JOIN users u ON u.id = "
                              "m.user_id WHERE m.group_id = ? "
                              "ORDER BY u.username",
                              {groupId}));
        for (const auto& m : members) {
          auto owner = m.integer(0);
          AULA_TRY_STATUS(
              checkQuotas(tx, owner, QuotaCheck::kCreate, t.vcpus, t.memoryMb, t.diskGb, true));
          auto d = tx.query(
              "INSERT INTO desktops (name, owner_id, template_id, deployment_id, persistent, "
              "vcpus, memory_mb, disk_gb, base_storage, base_disk, template_version, "
              "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
              {name, owner, templateId, id, std::int64_t{persistent ? 1 : 0}, t.vcpus, t.memoryMb,
               t.diskGb, t.storage, t.baseDisk, t.version, now});
          if (!d && d.error().code() == Errc::kAlreadyExists) {
            return makeError(Errc::kAlreadyExists,
                             "The user '{}' already has a desktop named '{}'; choose another name.",
                             m.text(1), name);
          }
          auto did = AULA_TRY(std::move(d))[0].integer(0);
          AULA_TRY(tx.exec("UPDATE desktops SET disk_path = ? WHERE id = ?",
                           {fmt::format("{}/{}.qcow2", owner, did), did}));
          if (settings_.deploymentStepDelay.count() > 0)
            std::this_thread::sleep_for(settings_.deploymentStepDelay);
        }
        AULA_TRY_STATUS(audit(tx, actor, now, "deployment.create", fmt::format("deployment:{}", id),
                              Json{{"name", name},
                                   {"group_id", groupId},
                                   {"template_id", templateId},
                                   {"desktops", members.size()}}));
        auto row =
            AULA_TRY(tx.queryOne(std::string(kDeploymentSelect) + " WHERE p.id = ?", {id}, "gone"));
        return deploymentJson(row);
      });
  if (created) {
    events_.publish(Event{.type = "deployment.created",
                          .data = *created,
                          .categoryId = (*created)["category_id"].get<std::int64_t>()});
  }
  return created;
}

namespace {

Result<std::vector<std::int64_t>> deploymentDesktops(db::Database& db, const Actor& actor,
                                                     std::int64_t id) {
  return db.transactValue<std::vector<std::int64_t>>(
      db::TxMode::kRead, [&](db::Transaction& tx) -> Result<std::vector<std::int64_t>> {
        auto row = AULA_TRY(tx.queryOne(std::string(kDeploymentSelect) + " WHERE p.id = ?", {id},
                                        fmt::format("There is no deployment with id {}.", id)));
        if (!managesCategory(actor, row.integer(6))) {
          return makeError(Errc::kNotFound, "There is no deployment with id {}.", id);
        }
        auto rows =
            AULA_TRY(tx.query("SELECT id FROM desktops WHERE deployment_id = ? ORDER BY id", {id}));
        std::vector<std::int64_t> ids;
        for (const auto& r : rows)
          ids.push_back(r.integer(0));
        return ids;
      });
}

// Runs `op` on each desktop, a few at a time, and sums up.
Json forEachDesktop(const std::vector<std::int64_t>& ids,
                    const std::function<Status(std::int64_t)>& op) {
  constexpr std::size_t kParallel = 8;
  Json failed = Json::array();
  std::size_t ok = 0;
  for (std::size_t i = 0; i < ids.size(); i += kParallel) {
    std::vector<std::future<Status>> batch;
    for (std::size_t j = i; j < std::min(ids.size(), i + kParallel); ++j) {
      batch.push_back(std::async(std::launch::async, op, ids[j]));
    }
    for (std::size_t j = 0; j < batch.size(); ++j) {
      auto s = batch[j].get();
      if (s) {
        ++ok;
      } else {
        failed.push_back({{"desktop_id", ids[i + j]}, {"error", s.error().message()}});
      }
    }
  }
  return Json{{"succeeded", ok}, {"failed", failed}};
}

}  // namespace

Result<Json> Broker::startDeployment(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  auto ids = AULA_TRY(deploymentDesktops(db_, actor, id));
  return forEachDesktop(ids, [&](std::int64_t did) -> Status {
    auto r = startDesktop(actor, did);
    if (!r)
      return r.error();
    return {};
  });
}

Result<Json> Broker::stopDeployment(const Actor& actor, std::int64_t id, bool force) {
  AULA_TRY_STATUS(requireManager(actor));
  auto ids = AULA_TRY(deploymentDesktops(db_, actor, id));
  return forEachDesktop(ids, [&](std::int64_t did) -> Status {
    auto r = stopDesktop(actor, did, force);
    if (!r)
      return r.error();
    return {};
  });
}

Status Broker::deleteDeployment(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  auto ids = AULA_TRY(deploymentDesktops(db_, actor, id));
  auto result = forEachDesktop(ids, [&](std::int64_t did) { return deleteDesktop(actor, did); });
  if (!result["failed"].empty()) {
    return makeError(Errc::kConflict,
                     "{} desktop(s) of the deployment could not be deleted; the first: {}",
                     result["failed"].size(), result["failed"][0]["error"].get<std::string>());
  }
  auto now = unixNow(clock_);
  return db_.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    auto left =
        AULA_TRY(tx.queryInt("SELECT COUNT(*) FROM desktops WHERE deployment_id = ?", {id}));
    if (left > 0)
      return Error(Errc::kConflict,
                   "Desktops were added to the deployment while deleting it; try again.");
    AULA_TRY(tx.exec("DELETE FROM deployments WHERE id = ?", {id}));
    return audit(tx, actor, now, "deployment.delete", fmt::format("deployment:{}", id));
  });
}

}  // namespace aula::broker
