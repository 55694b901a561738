// Deployments: a desktop per member of a group, and the bulk operations on
// them.
#include "aula/broker/deployment_service.hpp"

#include <functional>
#include <future>

#include "core/policy.hpp"
#include "desktops/desktop_rows.hpp"
#include "org/quota_rules.hpp"
#include "templates/template_rows.hpp"

namespace aula::broker {

using namespace detail;

namespace {

// Columns of kDeploymentSelect, in its order.
struct DeploymentCol {
  enum : std::size_t {
    kId,
    kName,
    kTemplateId,
    kTemplate,
    kGroupId,
    kGroup,
    kCategoryId,
    kOwnerId,
    kPersistent,
    kCreatedAt,
    kDesktops,
    kRunning,
    kConnected
  };
};

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
  return Json{{"id", r.integer(DeploymentCol::kId)},
              {"name", r.text(DeploymentCol::kName)},
              {"template_id", r.integer(DeploymentCol::kTemplateId)},
              {"template", r.text(DeploymentCol::kTemplate)},
              {"group_id", r.integer(DeploymentCol::kGroupId)},
              {"group", r.text(DeploymentCol::kGroup)},
              {"category_id", r.integer(DeploymentCol::kCategoryId)},
              {"owner_id", nullableInt(r, DeploymentCol::kOwnerId)},
              {"persistent", r.integer(DeploymentCol::kPersistent) != 0},
              {"created_at", r.integer(DeploymentCol::kCreatedAt)},
              {"desktops", r.integer(DeploymentCol::kDesktops)},
              {"running", r.integer(DeploymentCol::kRunning)},
              {"connected", r.integer(DeploymentCol::kConnected)}};
}

}  // namespace

Result<Json> DeploymentService::list(const Actor& actor) {
  AULA_TRY_STATUS(requireManager(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
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

Result<Json> DeploymentService::get(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto row = AULA_TRY(tx.queryOne(std::string(kDeploymentSelect) + " WHERE p.id = ?", {id},
                                    fmt::format("There is no deployment with id {}.", id)));
    if (!managesCategory(actor, row.integer(DeploymentCol::kCategoryId)))
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

Result<Json> DeploymentService::create(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireManager(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"name", "template_id", "group_id", "persistent"}));
  auto name = AULA_TRY(json::getString(body, "name"));
  AULA_TRY_STATUS(checkName("deployment", name));
  auto templateId = AULA_TRY(json::getInt(body, "template_id"));
  auto groupId = AULA_TRY(json::getInt(body, "group_id"));
  auto persistent = AULA_TRY(optBool(body, "persistent")).value_or(true);
  auto now = unixNow(ctx_.clock);
  // One transaction for the deployment and every desktop in it: a broker that
  // dies half-way leaves no half deployment behind.
  auto created =
      ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
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
          if (ctx_.settings.deploymentStepDelay.count() > 0)
            std::this_thread::sleep_for(ctx_.settings.deploymentStepDelay);
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
    ctx_.events.publish(Event{.type = "deployment.created",
                              .data = *created,
                              .categoryId = (*created)["category_id"].get<std::int64_t>()});
  }
  return created;
}

namespace {

// The deployment's desktops, if the actor manages its category.
Result<std::vector<std::int64_t>> deploymentDesktops(db::Transaction& tx, const Actor& actor,
                                                     std::int64_t id) {
  // Both in one round trip on PostgreSQL; the desktops count only if the
  // deployment is the actor's to manage.
  auto read = AULA_TRY(tx.queryAll(
      {{"SELECT g.category_id FROM deployments p JOIN groups_ g ON g.id = p.group_id WHERE p.id "
        "= ?",
        {id}},
       {"SELECT id FROM desktops WHERE deployment_id = ? ORDER BY id", {id}}}));
  if (read[0].empty() || !managesCategory(actor, read[0].front().optInteger(0))) {
    return makeError(Errc::kNotFound, "There is no deployment with id {}.", id);
  }
  std::vector<std::int64_t> ids;
  ids.reserve(read[1].size());
  for (const auto& r : read[1])
    ids.push_back(r.integer(0));
  return ids;
}

Result<std::vector<std::int64_t>> deploymentDesktops(db::Database& db, const Actor& actor,
                                                     std::int64_t id) {
  return db.transactValue<std::vector<std::int64_t>>(
      db::TxMode::kRead, [&](db::Transaction& tx) { return deploymentDesktops(tx, actor, id); });
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

Result<Json> DeploymentService::start(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  // The deployment is the manager's (checked in the planning transaction):
  // so is each desktop of it.
  auto outcomes = AULA_TRY(desktops_.startSelected(
      actor, [&](db::Transaction& tx) { return deploymentDesktops(tx, actor, id); }, true));
  Json failed = Json::array();
  std::size_t ok = 0;
  for (const auto& o : outcomes) {
    if (o.status) {
      ++ok;
    } else {
      failed.push_back({{"desktop_id", o.id}, {"error", o.status.error().message()}});
    }
  }
  return Json{{"succeeded", ok}, {"failed", failed}};
}

Result<Json> DeploymentService::stop(const Actor& actor, std::int64_t id, bool force) {
  AULA_TRY_STATUS(requireManager(actor));
  auto ids = AULA_TRY(deploymentDesktops(ctx_.db, actor, id));
  return forEachDesktop(ids, [&](std::int64_t did) -> Status {
    auto r = desktops_.stop(actor, did, force);
    if (!r)
      return r.error();
    return {};
  });
}

Status DeploymentService::remove(const Actor& actor, std::int64_t id) {
  AULA_TRY_STATUS(requireManager(actor));
  auto ids = AULA_TRY(deploymentDesktops(ctx_.db, actor, id));
  auto result = forEachDesktop(ids, [&](std::int64_t did) { return desktops_.remove(actor, did); });
  if (!result["failed"].empty()) {
    return makeError(Errc::kConflict,
                     "{} desktop(s) of the deployment could not be deleted; the first: {}",
                     result["failed"].size(), result["failed"][0]["error"].get<std::string>());
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
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
