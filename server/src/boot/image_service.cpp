// Network-boot images: uploads, the image list, channels and pins.
#include "aula/broker/image_service.hpp"

#include <algorithm>
#include <cctype>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"
#include "aula/common/file.hpp"
#include "aula/common/log.hpp"

#include "core/policy.hpp"

namespace aula::broker {

using namespace detail;
namespace fs = std::filesystem;

namespace {

// Letters, digits, '.', '_' and '-', not starting with '.' or '-': safe in
// a path, a URL and an iPXE script without quoting.
bool isSafeName(std::string_view s, std::size_t max) {
  if (s.empty() || s.size() > max || s.front() == '.' || s.front() == '-')
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

bool isImageFile(std::string_view file) {
  return std::find(std::begin(kImageFiles), std::end(kImageFiles), file) != std::end(kImageFiles);
}

Status checkImageFile(std::string_view file) {
  if (!isImageFile(file)) {
    return makeError(Errc::kInvalidArgument,
                     "'{}' is not a file of an image; an image is 'vmlinuz' and 'initrd.img'.",
                     file.substr(0, 40));
  }
  return {};
}

// The staging folder of one upload, beside the images (same file system,
// so add() renames instead of copying).
fs::path stagingDir(const fs::path& images, std::string_view flavour, std::string_view version) {
  return images / ".upload" / fmt::format("{}-{}", flavour, version);
}

Json imageRow(const db::Row& r) {
  // id, flavour, version, bytes, added_at, added_by
  return Json{{"id", r.integer(0)},    {"flavour", r.text(1)},     {"version", r.text(2)},
              {"bytes", r.integer(3)}, {"added_at", r.integer(4)}, {"added_by", r.text(5)}};
}

// The current release of a channel for a flavour: its row id and image id.
struct Release {
  std::int64_t id = 0;
  std::int64_t imageId = 0;
};

Result<std::optional<Release>> currentRelease(db::Transaction& tx, std::string_view channel,
                                              std::string_view flavour) {
  auto rows = AULA_TRY(
      tx.query("SELECT id, image_id FROM image_releases WHERE channel = ? AND flavour = ? AND "
               "withdrawn_at IS NULL ORDER BY id DESC LIMIT 1",
               {std::string(channel), std::string(flavour)}));
  if (rows.empty())
    return std::optional<Release>();
  return std::optional<Release>(Release{rows[0].integer(0), rows[0].integer(1)});
}

Result<std::int64_t> imageId(db::Transaction& tx, std::string_view flavour,
                             std::string_view version) {
  auto row = AULA_TRY(
      tx.queryOne("SELECT id FROM images WHERE flavour = ? AND version = ?",
                  {std::string(flavour), std::string(version)},
                  fmt::format("There is no {} image {}; 'aulactl images list' shows the images.",
                              flavour, version)));
  return row.integer(0);
}

}  // namespace

Status checkFlavour(std::string_view flavour) {
  if (flavour != "thin" && flavour != "workstation") {
    return makeError(Errc::kInvalidArgument,
                     "'{}' is not an image flavour; the flavours are 'thin' and 'workstation'.",
                     flavour.substr(0, 40));
  }
  return {};
}

Status checkImageVersion(std::string_view version) {
  if (!isSafeName(version, 64)) {
    return makeError(Errc::kInvalidArgument,
                     "'{}' is not an image version: use 1 to 64 letters, digits, '.', '_' or "
                     "'-', like image/build.sh's 20261203-0123456789ab.",
                     version.substr(0, 80));
  }
  return {};
}

Status checkChannel(std::string_view channel) {
  if (!isSafeName(channel, 32)) {
    return makeError(Errc::kInvalidArgument,
                     "'{}' is not a channel name: use 1 to 32 letters, digits, '.', '_' or '-', "
                     "like 'stable', 'testing' or 'room-12'.",
                     channel.substr(0, 80));
  }
  return {};
}

Result<fs::path> ImageService::imageDir() const {
  const auto& dir = ctx_.settings.boot.imageDir;
  if (dir.empty()) {
    return Error(Errc::kUnavailable,
                 "This broker keeps no images: set boot.image_dir in its configuration.");
  }
  return fs::path(dir);
}

Result<Json> ImageService::upload(const Actor& actor, std::string_view flavour,
                                  std::string_view version, std::string_view file,
                                  std::uint64_t offset, std::string_view bytes) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(checkFlavour(flavour));
  AULA_TRY_STATUS(checkImageVersion(version));
  AULA_TRY_STATUS(checkImageFile(file));
  const fs::path images = AULA_TRY(imageDir());
  if (fs::exists(images / flavour / version)) {
    return makeError(Errc::kAlreadyExists,
                     "The {} image {} is already on this broker; a version is never replaced.",
                     flavour, version);
  }
  const fs::path dir = stagingDir(images, flavour, version);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return makeError(Errc::kIo, "Cannot make the upload folder '{}': {}.", dir.string(),
                     ec.message());
  }
  const fs::path path = dir / file;
  // One writer at a time per file would need a lock; an admin's single
  // aulactl is the writer, and a second one sending the same offset gets
  // kConflict from the size check below instead of interleaved bytes.
  file::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
  if (!fd)
    return makeError(Errc::kIo, "Cannot open '{}': {}.", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    return makeError(Errc::kIo, "Cannot read '{}': {}.", path.string(), std::strerror(errno));
  const auto have = static_cast<std::uint64_t>(st.st_size);
  if (offset == 0) {
    if (::ftruncate(fd.get(), 0) != 0)
      return makeError(Errc::kIo, "Cannot empty '{}': {}.", path.string(), std::strerror(errno));
  } else if (offset != have) {
    return makeError(Errc::kConflict,
                     "The upload of {} has {} bytes; send the next chunk from offset {} (or from "
                     "0 to start over).",
                     file, have, have);
  }
  if (::lseek(fd.get(), static_cast<off_t>(offset), SEEK_SET) < 0)
    return makeError(Errc::kIo, "Cannot seek in '{}': {}.", path.string(), std::strerror(errno));
  AULA_TRY_STATUS(file::writeAll(fd.get(), bytes, path));
  return Json{{"file", std::string(file)}, {"bytes", offset + bytes.size()}};
}

Result<Json> ImageService::add(const Actor& actor, const Json& manifest) {
  AULA_TRY_STATUS(requireAdmin(actor));
  const auto flavour = AULA_TRY(json::getString(manifest, "flavour"));
  const auto version = AULA_TRY(json::getString(manifest, "version"));
  AULA_TRY_STATUS(checkFlavour(flavour));
  AULA_TRY_STATUS(checkImageVersion(version));
  if (!manifest.contains("artefacts") || !manifest["artefacts"].is_array()) {
    return Error(Errc::kInvalidArgument,
                 "The manifest has no 'artefacts' list; send image/build.sh's manifest.json.");
  }
  const fs::path images = AULA_TRY(imageDir());
  const fs::path staged = stagingDir(images, flavour, version);
  const fs::path target = images / flavour / version;
  if (fs::exists(target)) {
    return makeError(Errc::kAlreadyExists,
                     "The {} image {} is already on this broker; a version is never replaced.",
                     flavour, version);
  }
  // Each file as the manifest says, byte for byte.
  std::int64_t total = 0;
  for (std::string_view file : kImageFiles) {
    const auto artefact =
        std::find_if(manifest["artefacts"].begin(), manifest["artefacts"].end(),
                     [&](const Json& a) { return a.is_object() && a.value("file", "") == file; });
    if (artefact == manifest["artefacts"].end()) {
      return makeError(Errc::kInvalidArgument, "The manifest lists no '{}'; an image needs it.",
                       file);
    }
    const auto bytes = artefact->value("bytes", std::int64_t{-1});
    const auto sha = artefact->value("sha256", std::string());
    std::error_code ec;
    const auto size = fs::file_size(staged / file, ec);
    if (ec) {
      return makeError(Errc::kConflict,
                       "'{}' of the {} image {} was not uploaded; 'aulactl images add' uploads "
                       "it.",
                       file, flavour, version);
    }
    if (static_cast<std::int64_t>(size) != bytes) {
      return makeError(Errc::kConflict,
                       "'{}' has {} bytes here but {} in the manifest; upload it again.", file,
                       size, bytes);
    }
    const auto hashed = AULA_TRY(crypto::sha256HexOfFile(staged / file));
    if (hashed != sha) {
      return makeError(Errc::kConflict,
                       "'{}' does not match the manifest's SHA-256 (got {}); upload it again.",
                       file, hashed);
    }
    total += bytes;
  }
  AULA_TRY_STATUS(
      file::writeFileAtomic(staged / "manifest.json", manifest.dump(2) + "\n", {.mode = 0644}));
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  fs::rename(staged, target, ec);
  if (ec) {
    return makeError(Errc::kIo, "Cannot move the image into '{}': {}.", target.string(),
                     ec.message());
  }
  // Files are in place before the row that lists them; a failed insert
  // takes them away again.
  auto now = unixNow(ctx_.clock);
  auto added =
      ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
        AULA_TRY(tx.exec(
            "INSERT INTO images (flavour, version, bytes, manifest, added_at, added_by) VALUES "
            "(?, ?, ?, ?, ?, ?)",
            {flavour, version, total, manifest.dump(), now, actor.username}));
        auto row = AULA_TRY(tx.queryOne(
            "SELECT id, flavour, version, bytes, added_at, added_by FROM images WHERE flavour = "
            "? AND version = ?",
            {flavour, version}, "The image just added is gone."));
        AULA_TRY_STATUS(audit(tx, actor, now, "image.add",
                              fmt::format("image:{}/{}", flavour, version),
                              Json{{"bytes", total}}));
        return imageRow(row);
      });
  if (!added) {
    fs::remove_all(target, ec);
    return added;
  }
  log::info("{} added the {} image {} ({} bytes).", actor.username, flavour, version, total);
  return added;
}

Result<Json> ImageService::list(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(
        tx.query("SELECT id, flavour, version, bytes, added_at, added_by FROM images ORDER BY "
                 "flavour, added_at DESC, id DESC"));
    auto current = AULA_TRY(tx.query(
        "SELECT r.image_id, r.channel FROM image_releases r WHERE r.withdrawn_at IS NULL AND "
        "r.id = (SELECT MAX(id) FROM image_releases o WHERE o.channel = r.channel AND o.flavour "
        "= r.flavour AND o.withdrawn_at IS NULL) ORDER BY r.channel"));
    auto pins = AULA_TRY(
        tx.query("SELECT b.image_version, k.flavour, COUNT(*) FROM boot_hosts b JOIN (SELECT "
                 "'thin_client' AS kind, 'thin' AS flavour UNION ALL SELECT 'workstation', "
                 "'workstation') k ON k.kind = b.kind WHERE b.image_version IS NOT NULL GROUP BY "
                 "b.image_version, k.flavour"));
    Json out = Json::array();
    for (const auto& r : rows) {
      Json image = imageRow(r);
      Json channels = Json::array();
      for (const auto& c : current) {
        if (c.integer(0) == r.integer(0))
          channels.push_back(c.text(1));
      }
      image["channels"] = channels;
      std::int64_t pinned = 0;
      for (const auto& p : pins) {
        if (p.text(0) == r.text(2) && p.text(1) == r.text(1))
          pinned += p.integer(2);
      }
      image["pinned_hosts"] = pinned;
      out.push_back(image);
    }
    return out;
  });
}

Status ImageService::remove(const Actor& actor, std::string_view flavour,
                            std::string_view version) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(checkFlavour(flavour));
  AULA_TRY_STATUS(checkImageVersion(version));
  const fs::path images = AULA_TRY(imageDir());
  auto now = unixNow(ctx_.clock);
  AULA_TRY_STATUS(ctx_.db.transact(db::TxMode::kWrite, [&](db::Transaction& tx) -> Status {
    const auto id = AULA_TRY(imageId(tx, flavour, version));
    auto current = AULA_TRY(tx.query(
        "SELECT r.channel FROM image_releases r WHERE r.image_id = ? AND r.withdrawn_at IS NULL "
        "AND r.id = (SELECT MAX(id) FROM image_releases o WHERE o.channel = r.channel AND "
        "o.flavour = r.flavour AND o.withdrawn_at IS NULL)",
        {id}));
    if (!current.empty()) {
      return makeError(Errc::kConflict,
                       "The {} image {} is current on the channel '{}'; promote another image "
                       "there first.",
                       flavour, version, current[0].text(0));
    }
    const auto pinned = AULA_TRY(
        tx.queryInt("SELECT COUNT(*) FROM boot_hosts WHERE image_version = ? AND kind = ?",
                    {std::string(version), flavour == "thin" ? "thin_client" : "workstation"}));
    if (pinned > 0) {
      return makeError(Errc::kConflict,
                       "{} PC(s) are pinned to the {} image {}; pin them elsewhere first.", pinned,
                       flavour, version);
    }
    // Its withdrawn releases go with it: a rollback cannot reach it any more.
    AULA_TRY(tx.exec("DELETE FROM image_releases WHERE image_id = ?", {id}));
    AULA_TRY(tx.exec("DELETE FROM images WHERE id = ?", {id}));
    return audit(tx, actor, now, "image.delete", fmt::format("image:{}/{}", flavour, version));
  }));
  std::error_code ec;
  fs::remove_all(images / flavour / version, ec);
  if (ec) {
    log::warn("The {} image {} is deleted, but its files in '{}' are not: {}.", flavour, version,
              (images / flavour / version).string(), ec.message());
  }
  return {};
}

Result<Json> ImageService::channels(const Actor& actor) {
  AULA_TRY_STATUS(requireAdmin(actor));
  return ctx_.db.transactValue<Json>(db::TxMode::kRead, [&](db::Transaction& tx) -> Result<Json> {
    // Every release not withdrawn, newest first per channel and flavour: the
    // first is current, the second is where a rollback goes.
    auto rows = AULA_TRY(
        tx.query("SELECT r.channel, r.flavour, i.version, r.released_at, r.released_by FROM "
                 "image_releases r JOIN images i ON i.id = r.image_id WHERE r.withdrawn_at IS "
                 "NULL ORDER BY r.channel, r.flavour, r.id DESC"));
    Json out = Json::array();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      if (i > 0 && rows[i - 1].text(0) == r.text(0) && rows[i - 1].text(1) == r.text(1))
        continue;
      Json previous = nullptr;
      if (i + 1 < rows.size() && rows[i + 1].text(0) == r.text(0) &&
          rows[i + 1].text(1) == r.text(1)) {
        previous = rows[i + 1].text(2);
      }
      out.push_back({{"channel", r.text(0)},
                     {"flavour", r.text(1)},
                     {"version", r.text(2)},
                     {"released_at", r.integer(3)},
                     {"released_by", r.text(4)},
                     {"previous", previous}});
    }
    return out;
  });
}

Result<Json> ImageService::promote(const Actor& actor, std::string_view channel, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(checkChannel(channel));
  AULA_TRY_STATUS(json::checkFields(body, {"flavour", "version"}));
  const auto flavour = AULA_TRY(optString(body, "flavour")).value_or("thin");
  const auto version = AULA_TRY(json::getString(body, "version"));
  AULA_TRY_STATUS(checkFlavour(flavour));
  AULA_TRY_STATUS(checkImageVersion(version));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    const auto id = AULA_TRY(imageId(tx, flavour, version));
    auto current = AULA_TRY(currentRelease(tx, channel, flavour));
    if (current && current->imageId == id) {
      return makeError(Errc::kConflict, "The {} image {} is already current on '{}'.", flavour,
                       version, channel);
    }
    AULA_TRY(
        tx.exec("INSERT INTO image_releases (channel, flavour, image_id, released_at, released_by) "
                "VALUES (?, ?, ?, ?, ?)",
                {std::string(channel), flavour, id, now, actor.username}));
    AULA_TRY_STATUS(audit(tx, actor, now, "image.promote", fmt::format("channel:{}", channel),
                          Json{{"flavour", flavour}, {"version", version}}));
    return Json{{"channel", channel}, {"flavour", flavour}, {"version", version}};
  });
}

Result<Json> ImageService::rollback(const Actor& actor, std::string_view channel,
                                    const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(checkChannel(channel));
  AULA_TRY_STATUS(json::checkFields(body, {"flavour"}));
  const auto flavour = AULA_TRY(optString(body, "flavour")).value_or("thin");
  AULA_TRY_STATUS(checkFlavour(flavour));
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    auto rows = AULA_TRY(tx.query(
        "SELECT r.id, i.version FROM image_releases r JOIN images i ON i.id = r.image_id WHERE "
        "r.channel = ? AND r.flavour = ? AND r.withdrawn_at IS NULL ORDER BY r.id DESC LIMIT 2",
        {std::string(channel), flavour}));
    if (rows.empty()) {
      return makeError(Errc::kNotFound, "No {} image is released on the channel '{}'.", flavour,
                       channel);
    }
    if (rows.size() < 2) {
      return makeError(Errc::kConflict,
                       "The {} image {} is the only one ever released on '{}', so there is none "
                       "to go back to; promote another image instead.",
                       flavour, rows[0].text(1), channel);
    }
    AULA_TRY(tx.exec("UPDATE image_releases SET withdrawn_at = ? WHERE id = ?",
                     {now, rows[0].integer(0)}));
    AULA_TRY_STATUS(audit(
        tx, actor, now, "image.rollback", fmt::format("channel:{}", channel),
        Json{{"flavour", flavour}, {"withdrawn", rows[0].text(1)}, {"current", rows[1].text(1)}}));
    return Json{{"channel", channel},
                {"flavour", flavour},
                {"version", rows[1].text(1)},
                {"withdrawn", rows[0].text(1)}};
  });
}

Result<Json> ImageService::pin(const Actor& actor, const Json& body) {
  AULA_TRY_STATUS(requireAdmin(actor));
  AULA_TRY_STATUS(json::checkFields(body, {"macs", "channel", "version"}));
  if (!body.contains("macs") || !body["macs"].is_array() || body["macs"].empty()) {
    return Error(Errc::kInvalidArgument,
                 "The field 'macs' must list the MAC addresses of the PCs to pin.");
  }
  std::vector<std::string> macs;
  for (const auto& m : body["macs"]) {
    if (!m.is_string())
      return Error(Errc::kInvalidArgument, "Each of 'macs' must be a string.");
    macs.push_back(AULA_TRY(normalizeMac(m.get<std::string>())));
  }
  const auto channel = AULA_TRY(optString(body, "channel"));
  if (channel)
    AULA_TRY_STATUS(checkChannel(*channel));
  const bool setsVersion = body.contains("version");
  std::optional<std::string> version;
  if (setsVersion && !body["version"].is_null()) {
    version = AULA_TRY(json::getString(body, "version"));
    AULA_TRY_STATUS(checkImageVersion(*version));
  }
  if (!channel && !setsVersion) {
    return Error(Errc::kInvalidArgument,
                 "Say what to pin to: 'channel', or 'version' (null to follow the channel again).");
  }
  auto now = unixNow(ctx_.clock);
  return ctx_.db.transactValue<Json>(db::TxMode::kWrite, [&](db::Transaction& tx) -> Result<Json> {
    Json out = Json::array();
    for (const auto& mac : macs) {
      auto row = AULA_TRY(tx.queryOne(
          "SELECT kind, channel, image_version FROM boot_hosts WHERE mac = ?", {mac},
          fmt::format("There is no boot host with MAC {}; add it with 'aulactl boot-hosts set'.",
                      mac)));
      const std::string& kind = row.text(0);
      if (version) {
        if (kind == "unknown") {
          return makeError(Errc::kConflict,
                           "The PC {} is not adopted yet (kind unknown), so no flavour says which "
                           "image {} is; set its kind first.",
                           mac, *version);
        }
        AULA_TRY(imageId(tx, kind == "workstation" ? "workstation" : "thin", *version));
      }
      AULA_TRY(tx.exec(
          "UPDATE boot_hosts SET channel = ?, image_version = ? WHERE mac = ?",
          {channel.value_or(row.text(1)), setsVersion ? textOrNull(version) : row.at(2), mac}));
      out.push_back({{"mac", mac},
                     {"channel", channel.value_or(row.text(1))},
                     {"image_version",
                      setsVersion ? (version ? Json(*version) : Json()) : nullableText(row, 2)}});
    }
    AULA_TRY_STATUS(
        audit(tx, actor, now, "boot_host.pin", fmt::format("macs:{}", macs.size()), body));
    return out;
  });
}

Result<BootImage> ImageService::resolve(db::Transaction& tx, std::string_view flavour,
                                        std::string_view channel,
                                        const std::optional<std::string>& pinnedVersion) {
  if (pinnedVersion) {
    auto rows = AULA_TRY(tx.query("SELECT version FROM images WHERE flavour = ? AND version = ?",
                                  {std::string(flavour), *pinnedVersion}));
    if (rows.empty()) {
      return makeError(Errc::kNotFound,
                       "This PC is pinned to the {} image {}, which is not on this server.",
                       flavour, *pinnedVersion);
    }
    return BootImage{std::string(flavour), *pinnedVersion, ""};
  }
  auto rows = AULA_TRY(
      tx.query("SELECT i.version FROM image_releases r JOIN images i ON i.id = r.image_id WHERE "
               "r.channel = ? AND r.flavour = ? AND r.withdrawn_at IS NULL ORDER BY r.id DESC "
               "LIMIT 1",
               {std::string(channel), std::string(flavour)}));
  if (rows.empty()) {
    return makeError(Errc::kNotFound,
                     "No {} image is released on the channel '{}'. An admin adds one with "
                     "'aulactl images add' and 'aulactl images promote'.",
                     flavour, channel);
  }
  return BootImage{std::string(flavour), rows[0].text(0), std::string(channel)};
}

Result<ImageService::ServedFile> ImageService::servedFile(std::string_view flavour,
                                                          std::string_view version,
                                                          std::string_view file) {
  auto notFound = [&] {
    return makeError(Errc::kNotFound, "There is no file {} in a {} image {} here.",
                     file.substr(0, 40), flavour.substr(0, 40), version.substr(0, 64));
  };
  if (!checkFlavour(flavour) || !checkImageVersion(version) || !isImageFile(file))
    return notFound();
  const fs::path images = AULA_TRY(imageDir());
  auto manifest = AULA_TRY(ctx_.db.transactValue<std::string>(
      db::TxMode::kRead, [&](db::Transaction& tx) -> Result<std::string> {
        auto rows =
            AULA_TRY(tx.query("SELECT manifest FROM images WHERE flavour = ? AND version = ?",
                              {std::string(flavour), std::string(version)}));
        if (rows.empty())
          return notFound();
        return rows[0].text(0);
      }));
  auto parsed = json::parse(manifest);
  std::string sha;
  if (parsed && parsed->contains("artefacts")) {
    for (const auto& a : (*parsed)["artefacts"]) {
      if (a.is_object() && a.value("file", "") == file)
        sha = a.value("sha256", "");
    }
  }
  return ServedFile{images / flavour / version / file, sha};
}

}  // namespace aula::broker
