// How desktops are read (not a public header): the one SELECT every desktop
// query starts from, its columns by name, the row it fills, and the JSON the
// API answers with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/policy.hpp"

namespace aula::broker::detail {

// Columns of kDesktopSelect, in its order.
struct DesktopCol {
  enum : std::size_t {
    kId,
    kName,
    kOwnerId,
    kOwner,
    kTemplateId,
    kTemplate,
    kDeploymentId,
    kPersistent,
    kState,
    kHostId,
    kHost,
    kVcpus,
    kMemoryMb,
    kDiskGb,
    kConnected,
    kCreatedAt,
    kStartedAt,
    kOwnerCategory,
    kDiskPath,
    kVideo,
    kBaseStorage,
    kBaseDisk,
    kHostAddress,
    kHostPort,
    kHostSubject,
    kConsoles
  };
};

inline constexpr const char* kDesktopSelect =
    "SELECT d.id, d.name, d.owner_id, u.username, d.template_id, t.name, d.deployment_id, "
    "d.persistent, d.state, d.host_id, h.name, d.vcpus, d.memory_mb, d.disk_gb, d.connected, "
    "d.created_at, d.started_at, u.category_id, d.disk_path, t.video, d.base_storage, d.base_disk, "
    "h.address, h.agent_port, h.spice_subject, d.consoles FROM desktops d JOIN users u ON u.id = "
    "d.owner_id "
    "JOIN templates t ON "
    "t.id = d.template_id LEFT JOIN hosts h ON h.id = d.host_id";

struct DesktopRow {
  std::int64_t id = 0;
  std::string name;
  std::int64_t ownerId = 0;
  std::string state;
  std::optional<std::int64_t> hostId;
  std::string hostName;
  std::string hostAddress;
  std::int64_t hostPort = 0;
  std::string hostSubject;
  std::optional<std::int64_t> ownerCategory;
  std::int64_t templateId = 0;
  DesktopSpec spec;
};

// A row of kDesktopSelect.
DesktopRow desktopOf(const db::Row& r);
// The API's JSON of a row of kDesktopSelect.
Json desktopJson(const db::Row& r);
// Where the desktop's host's agent is.
HostAddress hostOf(const DesktopRow& d);
// The desktop with this id, or kNotFound.
Result<DesktopRow> loadDesktop(db::Transaction& tx, std::int64_t id);
// The data of a "desktop.state" event.
Json desktopEventData(std::int64_t id, std::string_view state, std::optional<std::int64_t> hostId);

}  // namespace aula::broker::detail
