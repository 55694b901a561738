// Desktop overlays inside the agent's storage folders (see disks.hpp).
#include "aula/agent/disks.hpp"

#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace aula::agent {
namespace fs = std::filesystem;
namespace {

// Whether `path` (normal, absolute) is `folder` itself or lies below it.
bool isInside(const fs::path& path, const fs::path& folder) {
  fs::path rel = path.lexically_relative(folder);
  // The folder itself ("." or "dir/.") is not a file inside it.
  if (rel.empty() || rel == ".") {
    return false;
  }
  return *rel.begin() != ".." && !rel.is_absolute();
}

}  // namespace

Disks::Disks(std::map<std::string, fs::path> storages, process::Runner& runner)
    : storages_(std::move(storages)), runner_(runner) {}

Result<fs::path> Disks::resolve(const std::string& storage, const std::string& relPath) const {
  auto it = storages_.find(storage);
  if (it == storages_.end()) {
    return makeError(Errc::kNotFound, "The agent has no storage named '{}'.", storage);
  }
  const fs::path folder = it->second.lexically_normal();
  fs::path rel(relPath);
  if (relPath.empty() || rel.is_absolute()) {
    return makeError(Errc::kInvalidArgument,
                     "The path '{}' in storage '{}' must be relative to the storage folder.",
                     relPath, storage);
  }
  for (const auto& part : rel) {
    if (part == "..") {
      return makeError(Errc::kInvalidArgument,
                       "The path '{}' in storage '{}' must not contain '..'.", relPath, storage);
    }
  }
  fs::path full = (folder / rel).lexically_normal();
  if (!isInside(full, folder)) {
    return makeError(Errc::kInvalidArgument,
                     "The path '{}' in storage '{}' does not name a file inside {}.", relPath,
                     storage, folder.native());
  }
  // A symbolic link inside the folder could still point out of it.
  std::error_code ec;
  fs::path realFolder = fs::weakly_canonical(folder, ec);
  fs::path realFull = ec ? fs::path() : fs::weakly_canonical(full, ec);
  if (ec) {
    return Error(Errc::kIo,
                 fmt::format("Cannot resolve the path '{}' in storage '{}': {}.", relPath, storage,
                             ec.message()),
                 ec.value());
  }
  if (!isInside(realFull, realFolder)) {
    return makeError(Errc::kInvalidArgument,
                     "The path '{}' in storage '{}' leads out of {} through a symbolic link.",
                     relPath, storage, folder.native());
  }
  return full;
}

Result<fs::path> Disks::createOverlay(const std::string& baseStorage, const std::string& baseRel,
                                      const std::string& desktopStorage,
                                      const std::string& desktopRel) {
  fs::path base = AULA_TRY(resolve(baseStorage, baseRel));
  fs::path overlay = AULA_TRY(resolve(desktopStorage, desktopRel));
  std::error_code ec;
  if (!fs::is_regular_file(base, ec)) {
    return makeError(Errc::kNotFound, "There is no base image {} in storage '{}'.", base.native(),
                     baseStorage);
  }
  if (fs::exists(fs::symlink_status(overlay, ec))) {
    return makeError(Errc::kAlreadyExists, "The overlay {} in storage '{}' already exists.",
                     overlay.native(), desktopStorage);
  }
  fs::create_directories(overlay.parent_path(), ec);
  if (ec) {
    return Error(Errc::kIo,
                 fmt::format("Cannot create the folder {} in storage '{}': {}.",
                             overlay.parent_path().native(), desktopStorage, ec.message()),
                 ec.value());
  }
  process::Command command{.argv = {"qemu-img", "create", "-q", "-f", "qcow2", "-b", base.native(),
                                    "-F", "qcow2", overlay.native()}};
  auto outcome = process::runChecked(runner_, command);
  if (!outcome.ok()) {
    return outcome.error().context(fmt::format("Cannot create the overlay {} in storage '{}'.",
                                               overlay.native(), desktopStorage));
  }
  return overlay;
}

Status Disks::deleteOverlay(const std::string& desktopStorage, const std::string& desktopRel) {
  fs::path overlay = AULA_TRY(resolve(desktopStorage, desktopRel));
  std::error_code ec;
  fs::remove(overlay, ec);
  if (ec) {
    return Error(Errc::kIo,
                 fmt::format("Cannot delete the overlay {} in storage '{}': {}.", overlay.native(),
                             desktopStorage, ec.message()),
                 ec.value());
  }
  return okStatus();
}

Result<fs::path> Disks::resetOverlay(const std::string& baseStorage, const std::string& baseRel,
                                     const std::string& desktopStorage,
                                     const std::string& desktopRel) {
  AULA_TRY_STATUS(deleteOverlay(desktopStorage, desktopRel));
  return createOverlay(baseStorage, baseRel, desktopStorage, desktopRel);
}

}  // namespace aula::agent
