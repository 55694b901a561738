// Templates: listing, creation with checked disks, updates, deletion.
#include "aula/broker/template_service.hpp"

#include <filesystem>

#include "aula/common/log.hpp"

#include "core/policy.hpp"
#include "templates/template_rows.hpp"

namespace aula::broker {

using namespace detail;

Result<Json> TemplateService::list(const Actor& actor) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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

Result<Json> TemplateService::get(const Actor& actor, std::int64_t id) {
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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
    names.reserve(storage.size());
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

// The template's USB policy ("usb"): what a lab PC's greeter hands to its
// desktops.
Result<std::string> checkedUsb(const Json& body, const std::string& fallback) {
  auto usb = AULA_TRY(optString(body, "usb")).value_or(fallback);
  if (usb != "none" && usb != "storage" && usb != "all") {
    return makeError(Errc::kInvalidArgument,
                     "The field 'usb' must be 'none', 'storage' (USB sticks and disks only) or "
                     "'all', not '{}'.",
                     usb);
  }
  return usb;
}

}  // namespace

Result<Json> TemplateService::create(const Actor& actor, const Json& body) {
  if (actor.role == Role::kUser) {
    return Error(Errc::kPermissionDenied, "Students may not create templates; ask your teacher.");
  }
  AULA_TRY_STATUS(json::checkFields(
      body, {"name", "description", "storage", "base_disk", "disk_gb", "vcpus", "memory_mb",
             "video", "usb", "access", "pools", "category_id", "enabled"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("template", name));
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto storageName = AULA_TRY(optString(body, "storage")).value_or("templates");
  auto baseDisk = AULA_TRY(checkedBaseDisk(ctx_.settings.storage, storageName,
                                           AULA_TRY(json::getString(body, "base_disk"))));
  auto diskGb = AULA_TRY(intInRange(body, "disk_gb", 1, 16384));
  auto vcpus = AULA_TRY(intInRange(body, "vcpus", 1, 128));
  auto memoryMb = AULA_TRY(intInRange(body, "memory_mb", 128, 1048576));
  auto video = AULA_TRY(optString(body, "video")).value_or("qxl");
  if (video != "qxl" && video != "virtio") {
    return Error(Errc::kInvalidArgument, "The field 'video' must be 'qxl' or 'virtio'.");
  }
  auto usb = AULA_TRY(checkedUsb(body, "storage"));
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
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
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
        "vcpus, memory_mb, video, usb, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, "
        "?, "
        "?, ?, ?, ?, ?, ?, ?) "
        "RETURNING id",
        {name, description, actor.userId, intOrNull(category), storageName, baseDisk, diskGb, vcpus,
         memoryMb, video, usb, std::int64_t{enabled ? 1 : 0}, now, now});
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

Result<Json> TemplateService::update(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(
      json::checkFields(body, {"name", "description", "base_disk", "storage", "disk_gb", "vcpus",
                               "memory_mb", "video", "usb", "access", "pools", "enabled"}));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kTemplateSelect) + " WHERE t.id = ?", {id},
                                    fmt::format("There is no template with id {}.", id)));
    auto t = templateOf(row);
    bool owner = t.ownerId && *t.ownerId == actor.userId && actor.role != Role::kUser;
    if (!owner && !managesCategory(actor, t.categoryId))
      return forbidden();
    auto name = AULA_TRY(optString(body, "name")).value_or(t.name);
    AULA_TRY_STATUS(checkName("template", name));
    auto description =
        AULA_TRY(optString(body, "description")).value_or(row.text(TemplateCol::kDescription));
    auto storageName = AULA_TRY(optString(body, "storage")).value_or(t.storage);
    auto baseInput = AULA_TRY(optString(body, "base_disk"));
    std::string baseDisk = t.baseDisk;
    bool newBase = baseInput || storageName != t.storage;
    if (newBase)
      baseDisk = AULA_TRY(
          checkedBaseDisk(ctx_.settings.storage, storageName, baseInput.value_or(t.baseDisk)));
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
    auto usb = AULA_TRY(checkedUsb(body, t.usb));
    auto enabled = AULA_TRY(optBool(body, "enabled")).value_or(t.enabled);
    // A new base is a new version: desktops made from the old one keep
    // theirs (each desktop records its base) until they are recreated.
    std::int64_t version = row.integer(TemplateCol::kVersion) + (newBase ? 1 : 0);
    auto r = tx.exec(
        "UPDATE templates SET name = ?, description = ?, storage = ?, base_disk = ?, disk_gb = ?, "
        "vcpus = ?, "
        "memory_mb = ?, video = ?, usb = ?, enabled = ?, version = ?, updated_at = ? WHERE id = ?",
        {name, description, storageName, baseDisk, diskGb, vcpus, memoryMb, video, usb,
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

Status TemplateService::remove(const Actor& actor, std::int64_t id) {
  auto now = unixNow(ctx_.clock);
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
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
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
    auto workstations =
        AULA_TRY(tx.query("SELECT h.name FROM workstations w JOIN hosts h ON h.id = w.host_id "
                          "WHERE w.template_id = ? ORDER BY h.name",
                          {id}));
    if (!workstations.empty()) {
      return makeError(Errc::kConflict,
                       "The template '{}' is the disk of the workstation '{}'{}; give it another "
                       "template first.",
                       t.name, workstations[0].text(0),
                       workstations.size() > 1
                           ? fmt::format(" and {} more", workstations.size() - 1)
                           : std::string());
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

void TemplateService::deleteTemplateImage(const Actor& actor, std::int64_t templateId,
                                          const std::string& storage, const std::string& disk,
                                          const std::vector<HostAddress>& hosts) {
  // With a shared templates storage the first host deletes the file; a host
  // without it says so, and the next is asked.
  Json detail{{"storage", storage}, {"disk", disk}, {"result", "absent"}};
  for (const auto& host : hosts) {
    auto gone = ctx_.hosts.deleteBase(host, storage, disk);
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
  auto now = unixNow(ctx_.clock);
  auto recorded = ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    return audit(tx, actor, now, "template.image_delete", fmt::format("template:{}", templateId),
                 detail);
  });
  if (!recorded)
    log::warn("Cannot record the deletion of template {}'s image: {}", templateId,
              recorded.error().message());
}
}  // namespace aula::broker
