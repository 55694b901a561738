// How templates are read and shared: their row, their JSON, who may use
// them, and the access lists that say so.
#include "templates/template_rows.hpp"

#include <cstdlib>

namespace aula::broker::detail {

TemplateRow templateOf(const db::Row& r) {
  return TemplateRow{r.integer(TemplateCol::kId),
                     r.text(TemplateCol::kName),
                     r.optInteger(TemplateCol::kOwnerId),
                     r.optInteger(TemplateCol::kCategoryId),
                     r.text(TemplateCol::kStorage),
                     r.text(TemplateCol::kBaseDisk),
                     r.integer(TemplateCol::kDiskGb),
                     r.integer(TemplateCol::kVcpus),
                     r.integer(TemplateCol::kMemoryMb),
                     r.text(TemplateCol::kVideo),
                     r.integer(TemplateCol::kEnabled) != 0,
                     r.integer(TemplateCol::kVersion),
                     r.optInteger(TemplateCol::kFromDesktopId),
                     r.optInteger(TemplateCol::kOriginHostId),
                     r.optText(TemplateCol::kBackingStorage),
                     r.optText(TemplateCol::kBackingDisk),
                     r.text(TemplateCol::kUsb)};
}

Result<Json> templateJson(db::Transaction& tx, const db::Row& r) {
  Json t{{"id", r.integer(TemplateCol::kId)},
         {"name", r.text(TemplateCol::kName)},
         {"description", r.text(TemplateCol::kDescription)},
         {"owner_id", nullableInt(r, TemplateCol::kOwnerId)},
         {"category_id", nullableInt(r, TemplateCol::kCategoryId)},
         {"storage", r.text(TemplateCol::kStorage)},
         {"base_disk", r.text(TemplateCol::kBaseDisk)},
         {"disk_gb", r.integer(TemplateCol::kDiskGb)},
         {"vcpus", r.integer(TemplateCol::kVcpus)},
         {"memory_mb", r.integer(TemplateCol::kMemoryMb)},
         {"video", r.text(TemplateCol::kVideo)},
         {"usb", r.text(TemplateCol::kUsb)},
         {"version", r.integer(TemplateCol::kVersion)},
         {"enabled", r.integer(TemplateCol::kEnabled) != 0},
         {"created_at", r.integer(TemplateCol::kCreatedAt)},
         {"updated_at", r.integer(TemplateCol::kUpdatedAt)},
         {"from_desktop_id", nullableInt(r, TemplateCol::kFromDesktopId)},
         {"origin_host_id", nullableInt(r, TemplateCol::kOriginHostId)},
         {"backing", r.optText(TemplateCol::kBackingStorage) && r.optText(TemplateCol::kBackingDisk)
                         ? Json{{"storage", *r.optText(TemplateCol::kBackingStorage)},
                                {"disk", *r.optText(TemplateCol::kBackingDisk)}}
                         : Json()}};
  auto access = AULA_TRY(
      tx.query("SELECT subject FROM template_access WHERE template_id = ? ORDER BY subject",
               {r.integer(TemplateCol::kId)}));
  Json a = Json::array();
  for (const auto& row : access)
    a.push_back(row.text(0));
  t["access"] = a;
  auto pools =
      AULA_TRY(tx.query("SELECT pool_id FROM template_pools WHERE template_id = ? ORDER BY pool_id",
                        {r.integer(TemplateCol::kId)}));
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
  if (AULA_TRY(accessListNames(tx, "template_access", "template_id", t.id, userId, categoryId)))
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

// Whether the template's image is one Aula made from a desktop. Only such
// files are ever deleted: the images an admin placed are the admin's.
bool imageMadeByAula(const TemplateRow& t) {
  return t.fromDesktopId && t.storage == kTemplateStorage &&
         t.baseDisk.starts_with(kFromDesktopFolder);
}

// Columns of imageHosts()'s query, in its order.
struct ImageHostCol {
  enum : std::size_t { kHostId, kHostName, kHostAddress, kHostAgentPort, kHostSpiceSubject };
};

HostAddress hostAddressOf(const db::Row& h) {
  return HostAddress{.id = h.integer(ImageHostCol::kHostId),
                     .name = h.text(ImageHostCol::kHostName),
                     .address = h.text(ImageHostCol::kHostAddress),
                     .agentPort = h.integer(ImageHostCol::kHostAgentPort),
                     .spiceSubject = h.optText(ImageHostCol::kHostSpiceSubject).value_or("")};
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
  hosts.reserve(rows.size());
  for (const auto& h : rows)
    hosts.push_back(hostAddressOf(h));
  return hosts;
}
}  // namespace aula::broker::detail
