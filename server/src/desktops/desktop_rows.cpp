// How desktops are read: their row (with their host and template), their
// JSON, and the data of their state events.
#include "desktops/desktop_rows.hpp"

namespace aula::broker::detail {

Json desktopJson(const db::Row& r) {
  return Json{{"id", r.integer(DesktopCol::kId)},
              {"name", r.text(DesktopCol::kName)},
              {"owner_id", r.integer(DesktopCol::kOwnerId)},
              {"owner", r.text(DesktopCol::kOwner)},
              {"template_id", r.integer(DesktopCol::kTemplateId)},
              {"template", r.text(DesktopCol::kTemplate)},
              {"deployment_id", nullableInt(r, DesktopCol::kDeploymentId)},
              {"persistent", r.integer(DesktopCol::kPersistent) != 0},
              {"state", r.text(DesktopCol::kState)},
              {"host_id", nullableInt(r, DesktopCol::kHostId)},
              {"host", nullableText(r, DesktopCol::kHost)},
              {"vcpus", r.integer(DesktopCol::kVcpus)},
              {"memory_mb", r.integer(DesktopCol::kMemoryMb)},
              {"disk_gb", r.integer(DesktopCol::kDiskGb)},
              {"connected", r.integer(DesktopCol::kConnected) != 0},
              {"created_at", r.integer(DesktopCol::kCreatedAt)},
              {"started_at", nullableInt(r, DesktopCol::kStartedAt)},
              {"consoles", r.integer(DesktopCol::kConsoles)}};
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
