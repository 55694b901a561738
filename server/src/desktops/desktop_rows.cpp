// How desktops are read: their row (with their host and template), their
// JSON, and the data of their state events.
#include "desktops/desktop_rows.hpp"

namespace aula::broker::detail {

// Built member by member: a list reads this for every desktop of every
// request, and nlohmann's initializer lists copy each value twice over.
Json desktopJson(const db::Row& r) {
  Json out = Json::object();
  auto& o = out.get_ref<Json::object_t&>();
  o.emplace("id", r.integer(DesktopCol::kId));
  o.emplace("name", r.text(DesktopCol::kName));
  o.emplace("owner_id", r.integer(DesktopCol::kOwnerId));
  o.emplace("owner", r.text(DesktopCol::kOwner));
  o.emplace("template_id", r.integer(DesktopCol::kTemplateId));
  o.emplace("template", r.text(DesktopCol::kTemplate));
  o.emplace("deployment_id", nullableInt(r, DesktopCol::kDeploymentId));
  o.emplace("persistent", r.integer(DesktopCol::kPersistent) != 0);
  o.emplace("state", r.text(DesktopCol::kState));
  o.emplace("host_id", nullableInt(r, DesktopCol::kHostId));
  o.emplace("host", nullableText(r, DesktopCol::kHost));
  o.emplace("vcpus", r.integer(DesktopCol::kVcpus));
  o.emplace("memory_mb", r.integer(DesktopCol::kMemoryMb));
  o.emplace("disk_gb", r.integer(DesktopCol::kDiskGb));
  o.emplace("connected", r.integer(DesktopCol::kConnected) != 0);
  o.emplace("created_at", r.integer(DesktopCol::kCreatedAt));
  o.emplace("started_at", nullableInt(r, DesktopCol::kStartedAt));
  o.emplace("consoles", r.integer(DesktopCol::kConsoles));
  return out;
}

DesktopRow desktopOf(const db::Row& r) {
  DesktopRow d{r.integer(DesktopCol::kId),
               r.text(DesktopCol::kName),
               r.integer(DesktopCol::kOwnerId),
               r.text(DesktopCol::kState),
               r.optInteger(DesktopCol::kHostId),
               r.optText(DesktopCol::kHost).value_or(""),
               r.optText(DesktopCol::kHostAddress).value_or(""),
               r.optInteger(DesktopCol::kHostPort).value_or(0),
               r.optText(DesktopCol::kHostSubject).value_or(""),
               r.optInteger(DesktopCol::kOwnerCategory),
               r.integer(DesktopCol::kTemplateId),
               {}};
  d.spec.owner = r.text(DesktopCol::kOwner);
  d.spec.id = d.id;
  d.spec.name = fmt::format("aula-{}", d.id);
  d.spec.vcpus = r.integer(DesktopCol::kVcpus);
  d.spec.memoryMb = r.integer(DesktopCol::kMemoryMb);
  d.spec.video = r.text(DesktopCol::kVideo);
  d.spec.templateStorage = r.text(DesktopCol::kBaseStorage);
  d.spec.baseDisk = r.text(DesktopCol::kBaseDisk);
  d.spec.diskPath =
      r.optText(DesktopCol::kDiskPath).value_or(fmt::format("{}/{}.qcow2", d.ownerId, d.id));
  d.spec.persistent = r.integer(DesktopCol::kPersistent) != 0;
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

}  // namespace aula::broker::detail
