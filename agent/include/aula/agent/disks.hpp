// A desktop's disk: a qcow2 overlay over its template's base image. The
// broker names files as (storage, path relative to that storage's folder);
// every such path is checked to stay inside its folder before anything
// touches it, so a wrong or hostile name cannot reach other files.
//
// Templates are made from desktops here too (flattened into a standalone
// image, or as an overlay of their own on the same base), and a base is
// deleted only while no image in any storage still uses it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "aula/common/agent_protocol.hpp"
#include "aula/common/process.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

// How templateFromDesktop() makes the template's image: the protocol's.
using proto::TemplateMode;

class Disks {
 public:
  // `storages`: storage name -> its folder (absolute). `runner` runs qemu-img
  // and must outlive this object.
  Disks(std::map<std::string, std::filesystem::path> storages, process::Runner& runner);

  // The absolute path of `relPath` inside `storage`. Errors: kNotFound (no such
  // storage), kInvalidArgument (empty, absolute, "..", or the path leaves the
  // folder, also through a symbolic link).
  Result<std::filesystem::path> resolve(const std::string& storage,
                                        const std::string& relPath) const;

  // Creates the overlay `desktopRel` in `desktopStorage` over the base image
  // `baseRel` in `baseStorage`, with its parent folders. Errors: those of
  // resolve(), kNotFound (no base image), kAlreadyExists (the overlay
  // exists), kIo (qemu-img failed, or a folder could not be created).
  Result<std::filesystem::path> createOverlay(const std::string& baseStorage,
                                              const std::string& baseRel,
                                              const std::string& desktopStorage,
                                              const std::string& desktopRel);
  // Removes the overlay; one that does not exist is not an error.
  Status deleteOverlay(const std::string& desktopStorage, const std::string& desktopRel);
  // Deletes and re-creates the overlay: a non-persistent desktop starts clean.
  Result<std::filesystem::path> resetOverlay(const std::string& baseStorage,
                                             const std::string& baseRel,
                                             const std::string& desktopStorage,
                                             const std::string& desktopRel);

  // The backing file named in the qcow2 header of `image`, or nullopt when it
  // has none. Reads the header itself (no qemu-img); a relative name is
  // returned resolved against the image's folder, as QEMU resolves it.
  // Errors: kNotFound (no such file), kIo (cannot read it), kParse (not a
  // qcow2 image, a truncated header, a name size out of range).
  static Result<std::optional<std::filesystem::path>> backingFile(
      const std::filesystem::path& image);

  // Every qcow2 image below any storage folder whose backing file is the
  // base `baseRel` in `baseStorage` (same file after resolving links), sorted.
  // Only headers are read. Files that are not qcow2 are passed over, and so,
  // with a warning in the log, are qcow2 files whose header cannot be read.
  // Errors: those of resolve(), kNotFound (no base image), kIo (a storage
  // folder cannot be listed).
  Result<std::vector<std::filesystem::path>> imagesUsing(const std::string& baseStorage,
                                                         const std::string& baseRel) const;

  // Deletes the base image `rel` in `storage`. Errors: those of resolve(),
  // kNotFound (no such file), kConflict (images still use it; the message
  // names up to 5 and gives their number), kIo.
  Status deleteBase(const std::string& storage, const std::string& rel);

  // Makes the template image `templateRel` in `templateStorage` from the
  // desktop's overlay (see TemplateMode), with its parent folders. The image
  // is written under a temporary name in the target folder, flushed to disk
  // and renamed into place only when whole; on failure nothing is left
  // behind. The desktop's overlay is only read, and must not be in use by a
  // running VM (qemu-img's lock refuses it). Errors: those of resolve(),
  // kNotFound (no desktop disk, or its base is gone), kAlreadyExists (the
  // target exists; checked before any work), kInvalidArgument (kRebase on a
  // disk without a backing file), kParse (its header), kIo (qemu-img or the
  // file system failed).
  Result<std::filesystem::path> templateFromDesktop(const std::string& desktopStorage,
                                                    const std::string& desktopRel,
                                                    const std::string& templateStorage,
                                                    const std::string& templateRel,
                                                    TemplateMode mode);

  // Free space per storage name in GiB (rounded down) for unprivileged
  // writers (statvfs f_bavail), as the heartbeat reports it. A storage whose
  // folder cannot be queried is left out, with a warning in the log.
  std::map<std::string, std::int64_t> freeSpaceGb() const;

 private:
  std::map<std::string, std::filesystem::path> storages_;
  process::Runner& runner_;
  // Keeps deleteBase()'s check-then-delete and createOverlay()'s
  // check-then-create from interleaving: no overlay is made on a base that is
  // being deleted.
  std::mutex baseMutex_;
};

}  // namespace aula::agent
