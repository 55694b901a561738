// A template made from a stopped desktop's disk by the agent of its host.
#include <thread>

#include "aula/broker/desktop_service.hpp"
#include "aula/common/log.hpp"

#include "core/policy.hpp"
#include "desktops/desktop_rows.hpp"
#include "org/quota_rules.hpp"
#include "templates/template_rows.hpp"

namespace aula::broker {

using namespace detail;

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

Result<Json> DesktopService::makeTemplate(const Actor& actor, std::int64_t id, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"name", "mode", "description", "access"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("template", name));
  auto modeName = AULA_TRY(optString(body, "mode")).value_or("flatten");
  const TemplateMode mode = AULA_TRY(proto::parseTemplateMode(modeName));
  auto description = AULA_TRY(optString(body, "description")).value_or("");
  auto access = AULA_TRY(accessList(body));
  if (actor.role == Role::kUser) {
    return Error(Errc::kPermissionDenied,
                 "Students may not make templates from their desktops; ask your teacher.");
  }
  if (!ctx_.settings.storage.contains(kTemplateStorage)) {
    return makeError(Errc::kUnavailable,
                     "The broker has no storage named '{}' in storage.paths, where templates made "
                     "from desktops are kept; an admin must add it.",
                     kTemplateStorage);
  }
  auto now = unixNow(ctx_.clock);

  struct Plan {
    DesktopRow desktop;
    HostAddress host;
    std::int64_t poolId = 0;
    std::optional<std::int64_t> categoryId;
    std::int64_t sourceId = 0;
    std::int64_t diskGb = 0, vcpus = 0, memoryMb = 0;
    std::string video;
    std::string usb;
    std::string baseDisk;
  };
  // Held until the template's row is in: the desktop may neither start nor
  // be deleted while its disk is read.
  CopyMark mark(copyingMutex_, copying_);
  auto plan =
      ctx_.db.transactValue<Plan>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Plan> {
        mark.release();  // a retried transaction takes it again
        auto rows = AULA_TRY(tx.query(std::string(kDesktopSelect) + " WHERE d.id = ?", {id}));
        if (rows.empty() ||
            !AULA_TRY(mayActOnUser(tx, actor, rows[0].integer(DesktopCol::kOwnerId), true))) {
          return makeError(Errc::kNotFound, "There is no desktop with id {}.", id);
        }
        Plan p;
        p.desktop = desktopOf(rows[0]);
        const auto& d = p.desktop;
        if (d.state != "stopped") {
          return makeError(
              Errc::kConflict,
              "The desktop '{}' is {}; stop it first, since the disk of a running guest "
              "is not consistent.",
              d.name, d.state);
        }
        if (!d.spec.persistent) {
          return makeError(
              Errc::kConflict,
              "The desktop '{}' is not persistent: its changes are thrown away when it "
              "stops, so there is nothing to make a template from.",
              d.name);
        }
        if (!d.hostId || !rows[0].optInteger(DesktopCol::kStartedAt)) {
          return makeError(
              Errc::kConflict,
              "The desktop '{}' has no disk yet: start it once, make your changes, stop "
              "it, then make the template.",
              d.name);
        }
        if (!mark.take(id)) {
          return makeError(
              Errc::kConflict,
              "A template is already being made from the desktop '{}'; wait until that "
              "is done.",
              d.name);
        }
        AULA_TRY_STATUS(checkTemplateQuota(tx, actor));
        if (!AULA_TRY(tx.query("SELECT id FROM templates WHERE name = ?", {name})).empty())
          return makeError(Errc::kAlreadyExists, "A template named '{}' exists already.", name);
        for (const auto& a : access)
          AULA_TRY_STATUS(checkAccessSubject(tx, actor, a));
        // Columns of the query below, in its order.
        enum SourceCol : std::size_t {
          kSourceDiskGb,
          kSourceVcpus,
          kSourceMemoryMb,
          kSourceVideo,
          kSourceUsb
        };
        auto source = AULA_TRY(
            tx.queryOne("SELECT disk_gb, vcpus, memory_mb, video, usb FROM templates WHERE id = ?",
                        {d.templateId}, "gone"));
        p.sourceId = d.templateId;
        p.diskGb = source.integer(kSourceDiskGb);
        p.vcpus = source.integer(kSourceVcpus);
        p.memoryMb = source.integer(kSourceMemoryMb);
        p.video = source.text(kSourceVideo);
        p.usb = source.text(kSourceUsb);
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
  auto made = ctx_.hosts.makeTemplate(p.host, p.desktop.spec, p.baseDisk, mode);
  if (!made) {
    log::warn("No template from desktop {} on host '{}': {}", id, p.host.name,
              made.error().message());
    return hostCouldNotMakeImage(made.error(), p.host.name);
  }

  // The image is whole; now its row. Should the row fail (the name was
  // taken meanwhile, the quota filled), nothing names the new image: it goes
  // again, so that nothing is left half-done.
  auto created =
      ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
        AULA_TRY_STATUS(checkTemplateQuota(tx, actor));
        std::optional<std::string> backingStorage, backingDisk;
        if (mode == TemplateMode::kRebase) {
          backingStorage = p.desktop.spec.templateStorage;
          backingDisk = p.desktop.spec.baseDisk;
        }
        auto rows = tx.query(
            "INSERT INTO templates (name, description, owner_id, category_id, storage, base_disk, "
            "disk_gb, vcpus, memory_mb, video, usb, enabled, created_at, updated_at, "
            "from_desktop_id, origin_host_id, backing_storage, backing_disk) VALUES (?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?) RETURNING id",
            {name, description, actor.userId, intOrNull(p.categoryId),
             std::string(kTemplateStorage), p.baseDisk, p.diskGb, p.vcpus, p.memoryMb, p.video,
             p.usb, now, now, id, p.host.id, textOrNull(backingStorage), textOrNull(backingDisk)});
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
    auto removed = ctx_.hosts.deleteBase(p.host, kTemplateStorage, p.baseDisk);
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
}  // namespace aula::broker
