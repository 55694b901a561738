// How templates are read and shared (not a public header): the one SELECT
// template queries start from, its columns by name, the row it fills, the
// API's JSON, who may use a template, and its access lists.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/policy.hpp"

namespace aula::broker::detail {

// Columns of kTemplateSelect, in its order.
struct TemplateCol {
  enum : std::size_t {
    kId,
    kName,
    kDescription,
    kOwnerId,
    kCategoryId,
    kStorage,
    kBaseDisk,
    kDiskGb,
    kVcpus,
    kMemoryMb,
    kVideo,
    kVersion,
    kEnabled,
    kCreatedAt,
    kUpdatedAt,
    kFromDesktopId,
    kOriginHostId,
    kBackingStorage,
    kBackingDisk,
    kUsb
  };
};

inline constexpr const char* kTemplateSelect =
    "SELECT t.id, t.name, t.description, t.owner_id, t.category_id, t.storage, t.base_disk, "
    "t.disk_gb, t.vcpus, t.memory_mb, t.video, t.version, t.enabled, t.created_at, t.updated_at, "
    "t.from_desktop_id, t.origin_host_id, t.backing_storage, t.backing_disk, t.usb FROM templates "
    "t";

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
  std::string usb;                                         // the USB policy: none, storage, all
};

// Where templates made from desktops keep their images, inside kTemplateStorage.
inline constexpr std::string_view kFromDesktopFolder = "from-desktop/";

// A row of kTemplateSelect.
TemplateRow templateOf(const db::Row& r);
// The API's JSON of a row of kTemplateSelect, with its access list and pools.
Result<Json> templateJson(db::Transaction& tx, const db::Row& r);

// Whether user `userId` (of `categoryId`) may use the template: owner, or a
// subject of its access list matches them.
Result<bool> templateUsable(db::Transaction& tx, const Actor& actor, std::int64_t userId,
                            std::optional<std::int64_t> categoryId, const TemplateRow& t);
// Whether `actor` may share with `subject` ("everyone", "user:<id>",
// "group:<id>", "category:<id>").
Status checkAccessSubject(db::Transaction& tx, const Actor& actor, const std::string& subject);
// The optional field 'access' of a body: a list of subjects, checked later
// by checkAccessSubject().
Result<std::vector<std::string>> accessList(const Json& body);
// Non-admins may own as many templates as their per-user limit allows.
Status checkTemplateQuota(db::Transaction& tx, const Actor& actor);

// Whether the template's image is one Aula made from a desktop. Only such
// files are ever deleted: the images an admin placed are the admin's.
bool imageMadeByAula(const TemplateRow& t);
// The hosts whose agents can reach a made template's image.
Result<std::vector<HostAddress>> imageHosts(db::Transaction& tx, const TemplateRow& t);

}  // namespace aula::broker::detail
