// Desktop overlays and template images inside the agent's storage folders
// (see disks.hpp).
#include "aula/agent/disks.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "aula/common/file.hpp"
#include "aula/common/log.hpp"

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

// The start of a qcow2 header (docs/interop/qcow2.txt in QEMU): magic,
// version, backing_file_offset, backing_file_size, cluster_bits. Version 2
// headers are 72 bytes long, version 3 headers at least 104.
constexpr unsigned char kQcow2Magic[4] = {'Q', 'F', 'I', 0xfb};
constexpr std::size_t kHeaderV2 = 72;
constexpr std::size_t kHeaderV3 = 104;
constexpr std::uint32_t kMaxBackingName = 1023;
// QEMU opens clusters of 512 bytes to 2 MiB.
constexpr std::uint32_t kMinClusterBits = 9;
constexpr std::uint32_t kMaxClusterBits = 21;
// Flattening a large template reads and writes all of it: allow hours, not
// the runner's default minute.
constexpr std::chrono::hours kConvertTimeout{6};

std::uint32_t bigEndian32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::uint64_t bigEndian64(const unsigned char* p) {
  return (std::uint64_t{bigEndian32(p)} << 32) | bigEndian32(p + 4);
}

using file::UniqueFd;

// Reads up to `size` bytes at `offset`; fewer only at the end of the file.
Result<std::size_t> readAt(int fd, unsigned char* buffer, std::size_t size, std::uint64_t offset,
                           const fs::path& path) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, buffer + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      return Error(Errc::kIo,
                   fmt::format("Cannot read the image {}: {}.", path.native(), std::strerror(e)),
                   e);
    }
    if (n == 0)
      break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

// Disks::backingFile(), and whether the file starts with the qcow2 magic at
// all, so a scan can pass over other files quietly.
Result<std::optional<fs::path>> readBackingFile(const fs::path& image, bool& isQcow2) {
  isQcow2 = false;
  UniqueFd file(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.get() < 0) {
    int e = errno;
    if (e == ENOENT)
      return Error(Errc::kNotFound, fmt::format("There is no image {}.", image.native()), e);
    return Error(Errc::kIo,
                 fmt::format("Cannot open the image {}: {}.", image.native(), std::strerror(e)), e);
  }
  unsigned char header[kHeaderV3] = {};
  std::size_t got = AULA_TRY(readAt(file.get(), header, sizeof header, 0, image));
  if (got < sizeof kQcow2Magic || std::memcmp(header, kQcow2Magic, sizeof kQcow2Magic) != 0) {
    return makeError(Errc::kParse,
                     "The file {} is not a qcow2 image: it does not begin with the qcow2 magic "
                     "\"QFI\\xfb\".",
                     image.native());
  }
  isQcow2 = true;
  if (got < 8) {
    return makeError(Errc::kParse, "The qcow2 image {} is truncated: it ends within its header.",
                     image.native());
  }
  std::uint32_t version = bigEndian32(header + 4);
  if (version != 2 && version != 3) {
    return makeError(Errc::kParse,
                     "The qcow2 image {} has version {}; only versions 2 and 3 are known.",
                     image.native(), version);
  }
  std::size_t headerSize = version == 2 ? kHeaderV2 : kHeaderV3;
  if (got < headerSize) {
    return makeError(Errc::kParse,
                     "The qcow2 image {} is truncated: its header needs {} bytes but the file "
                     "has {}.",
                     image.native(), headerSize, got);
  }
  std::uint64_t nameOffset = bigEndian64(header + 8);
  std::uint32_t nameSize = bigEndian32(header + 16);
  std::uint32_t clusterBits = bigEndian32(header + 20);
  // Offset 0 means no backing file; so does an empty name, for QEMU.
  if (nameOffset == 0 || nameSize == 0)
    return std::optional<fs::path>();
  if (nameSize > kMaxBackingName) {
    return makeError(Errc::kParse,
                     "The qcow2 image {} gives its backing file name a size of {} bytes; qcow2 "
                     "allows at most {}.",
                     image.native(), nameSize, kMaxBackingName);
  }
  if (clusterBits < kMinClusterBits || clusterBits > kMaxClusterBits) {
    return makeError(Errc::kParse,
                     "The qcow2 image {} has a cluster size of 2^{} bytes; QEMU opens 2^{} to "
                     "2^{}.",
                     image.native(), clusterBits, kMinClusterBits, kMaxClusterBits);
  }
  std::uint64_t clusterSize = std::uint64_t{1} << clusterBits;
  if (nameOffset < headerSize || nameOffset > clusterSize - nameSize) {
    return makeError(Errc::kParse,
                     "The qcow2 image {} puts its backing file name of {} bytes at offset {}, "
                     "outside the space after its header in its first cluster of {} bytes.",
                     image.native(), nameSize, nameOffset, clusterSize);
  }
  std::string name(nameSize, '\0');
  std::size_t nameGot = AULA_TRY(readAt(file.get(), reinterpret_cast<unsigned char*>(name.data()),
                                        nameSize, nameOffset, image));
  if (nameGot < nameSize) {
    return makeError(Errc::kParse,
                     "The qcow2 image {} is truncated: its backing file name runs past the end "
                     "of the file.",
                     image.native());
  }
  // QEMU reads the name as a C string: a NUL ends it there too.
  name.resize(std::strlen(name.c_str()));
  if (name.empty())
    return std::optional<fs::path>();
  fs::path backing(name);
  if (backing.is_relative())
    backing = image.parent_path() / backing;
  return std::optional<fs::path>(backing.lexically_normal());
}

Error ioError(int e, std::string message) {
  return Error(Errc::kIo, std::move(message), e);
}

// fsync of a file or folder.
Status syncPath(const fs::path& path, bool folder) {
  UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | (folder ? O_DIRECTORY : 0)));
  if (file.get() < 0 || ::fsync(file.get()) != 0) {
    int e = errno;
    return ioError(e, fmt::format("Cannot flush {} to disk: {}.", path.native(), std::strerror(e)));
  }
  return okStatus();
}

// Renames `from` to `to` unless `to` exists (then EEXIST), in one step.
int renameNoReplace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return errno;
  // A file system without RENAME_NOREPLACE: a hard link fails the same way.
  if (::link(from.c_str(), to.c_str()) != 0)
    return errno;
  ::unlink(from.c_str());
  return 0;
}

// Removes `path`, which `what` names in the error; a missing file is fine.
Status removeImage(const fs::path& path, std::string_view what, const std::string& storage) {
  std::error_code ec;
  fs::remove(path, ec);
  if (ec) {
    return Error(Errc::kIo,
                 fmt::format("Cannot delete the {} {} in storage '{}': {}.", what, path.native(),
                             storage, ec.message()),
                 ec.value());
  }
  return okStatus();
}

// "3 images use it (a, b, c)" with at most 5 names.
std::string describeUsers(const std::vector<fs::path>& users) {
  constexpr std::size_t kNamed = 5;
  std::string names;
  for (std::size_t i = 0; i < users.size() && i < kNamed; ++i) {
    if (i > 0)
      names += ", ";
    names += users[i].native();
  }
  if (users.size() > kNamed)
    names += fmt::format(" and {} more", users.size() - kNamed);
  return fmt::format("{} {} it ({})", users.size(), users.size() == 1 ? "image uses" : "images use",
                     names);
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
  std::lock_guard lock(baseMutex_);
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
  return removeImage(overlay, "overlay", desktopStorage);
}

Result<fs::path> Disks::resetOverlay(const std::string& baseStorage, const std::string& baseRel,
                                     const std::string& desktopStorage,
                                     const std::string& desktopRel) {
  AULA_TRY_STATUS(deleteOverlay(desktopStorage, desktopRel));
  return createOverlay(baseStorage, baseRel, desktopStorage, desktopRel);
}

Result<std::optional<fs::path>> Disks::backingFile(const fs::path& image) {
  bool isQcow2 = false;
  return readBackingFile(image, isQcow2);
}

Result<std::vector<fs::path>> Disks::imagesUsing(const std::string& baseStorage,
                                                 const std::string& baseRel) const {
  fs::path base = AULA_TRY(resolve(baseStorage, baseRel));
  std::error_code ec;
  fs::path realBase = fs::canonical(base, ec);
  if (ec == std::errc::no_such_file_or_directory) {
    return makeError(Errc::kNotFound, "There is no base image {} in storage '{}'.", base.native(),
                     baseStorage);
  }
  if (ec) {
    return Error(Errc::kIo,
                 fmt::format("Cannot resolve the base image {} in storage '{}': {}.", base.native(),
                             baseStorage, ec.message()),
                 ec.value());
  }
  // Storage folders may overlap; each file counts once.
  std::set<fs::path> seen;
  std::vector<fs::path> users;
  for (const auto& [name, folder] : storages_) {
    std::error_code listEc;
    if (!fs::is_directory(folder, listEc)) {
      log::warn("The folder {} of storage '{}' cannot be read; no images are looked for in it.",
                folder.native(), name);
      continue;
    }
    fs::recursive_directory_iterator it(folder, fs::directory_options::skip_permission_denied,
                                        listEc);
    for (; !listEc && it != fs::recursive_directory_iterator(); it.increment(listEc)) {
      std::error_code entryEc;
      if (it->symlink_status(entryEc).type() != fs::file_type::regular)
        continue;
      fs::path real = fs::canonical(it->path(), entryEc);
      if (entryEc || real == realBase || !seen.insert(real).second)
        continue;
      bool isQcow2 = false;
      auto backing = readBackingFile(it->path(), isQcow2);
      if (!backing) {
        if (isQcow2) {
          log::warn("{} It is not counted as a user of {}.", backing.error().message(),
                    base.native());
        }
        continue;
      }
      if (*backing && fs::weakly_canonical(**backing, entryEc) == realBase && !entryEc)
        users.push_back(it->path());
    }
    if (listEc) {
      return Error(Errc::kIo,
                   fmt::format("Cannot list the folder {} of storage '{}': {}.", folder.native(),
                               name, listEc.message()),
                   listEc.value());
    }
  }
  std::sort(users.begin(), users.end());
  return users;
}

Status Disks::deleteBase(const std::string& storage, const std::string& rel) {
  fs::path base = AULA_TRY(resolve(storage, rel));
  std::lock_guard lock(baseMutex_);
  std::error_code ec;
  auto type = fs::symlink_status(base, ec).type();
  if (type == fs::file_type::not_found) {
    return makeError(Errc::kNotFound, "There is no base image {} in storage '{}'.", base.native(),
                     storage);
  }
  if (type != fs::file_type::regular) {
    return makeError(Errc::kInvalidArgument, "{} in storage '{}' is not an image file.",
                     base.native(), storage);
  }
  auto users = AULA_TRY(imagesUsing(storage, rel));
  if (!users.empty()) {
    return makeError(Errc::kConflict,
                     "The base image {} in storage '{}' cannot be deleted while {}; delete those "
                     "first.",
                     base.native(), storage, describeUsers(users));
  }
  return removeImage(base, "base image", storage);
}

Result<fs::path> Disks::templateFromDesktop(const std::string& desktopStorage,
                                            const std::string& desktopRel,
                                            const std::string& templateStorage,
                                            const std::string& templateRel, TemplateMode mode) {
  fs::path overlay = AULA_TRY(resolve(desktopStorage, desktopRel));
  fs::path target = AULA_TRY(resolve(templateStorage, templateRel));
  std::error_code ec;
  if (!fs::is_regular_file(overlay, ec)) {
    return makeError(Errc::kNotFound, "There is no desktop disk {} in storage '{}'.",
                     overlay.native(), desktopStorage);
  }
  if (fs::exists(fs::symlink_status(target, ec))) {
    return makeError(Errc::kAlreadyExists, "The template image {} in storage '{}' already exists.",
                     target.native(), templateStorage);
  }
  // The source's format is given, never probed: a guest can write anything
  // into its disk.
  std::vector<std::string> argv = {"qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2"};
  if (mode == TemplateMode::kRebase) {
    auto backing = AULA_TRY(backingFile(overlay));
    if (!backing) {
      return makeError(Errc::kInvalidArgument,
                       "The desktop disk {} in storage '{}' has no backing file to keep; make the "
                       "template flattened instead.",
                       overlay.native(), desktopStorage);
    }
    fs::path base = fs::canonical(*backing, ec);
    if (ec) {
      return Error(Errc::kNotFound,
                   fmt::format("The base image {} of the desktop disk {} cannot be found: {}.",
                               backing->native(), overlay.native(), ec.message()),
                   ec.value());
    }
    // With -B, qemu-img copies only what the overlay itself holds and names
    // the base, by this absolute path, as the new image's backing file.
    argv.insert(argv.end(), {"-B", base.native(), "-F", "qcow2"});
  }
  fs::path folder = target.parent_path();
  fs::create_directories(folder, ec);
  if (ec) {
    return Error(Errc::kIo,
                 fmt::format("Cannot create the folder {} in storage '{}': {}.", folder.native(),
                             templateStorage, ec.message()),
                 ec.value());
  }
  static std::atomic<unsigned> sequence{0};
  fs::path temp = folder / fmt::format(".{}.tmp-{}-{}", target.filename().native(), ::getpid(),
                                       sequence.fetch_add(1));
  argv.push_back(overlay.native());
  argv.push_back(temp.native());
  auto fail = [&](const Error& error) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    return error.context(fmt::format("Cannot make the template image {} in storage '{}' from {}.",
                                     target.native(), templateStorage, overlay.native()));
  };
  process::Command command{
      .argv = std::move(argv),
      .timeout = std::chrono::duration_cast<std::chrono::milliseconds>(kConvertTimeout)};
  if (auto outcome = process::runChecked(runner_, command); !outcome)
    return fail(outcome.error());
  if (auto synced = syncPath(temp, false); !synced)
    return fail(synced.error());
  if (int e = renameNoReplace(temp, target); e != 0) {
    if (e == EEXIST) {
      return fail(
          makeError(Errc::kAlreadyExists, "A file of that name appeared while it was being made."));
    }
    return fail(ioError(
        e, fmt::format("Cannot rename {} into place: {}.", temp.native(), std::strerror(e))));
  }
  if (auto synced = syncPath(folder, true); !synced) {
    log::warn("{} The template image {} may not survive a power cut.", synced.error().message(),
              target.native());
  }
  return target;
}

std::map<std::string, std::int64_t> Disks::freeSpaceGb() const {
  constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;
  std::map<std::string, std::int64_t> free;
  for (const auto& [name, folder] : storages_) {
    struct statvfs info {};
    if (::statvfs(folder.c_str(), &info) != 0) {
      log::warn("Cannot read the free space of storage '{}' at {}: {}.", name, folder.native(),
                std::strerror(errno));
      continue;
    }
    free[name] = static_cast<std::int64_t>(std::uint64_t{info.f_bavail} * info.f_frsize / kGiB);
  }
  return free;
}

}  // namespace aula::agent
