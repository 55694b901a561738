// A desktop's disk: a qcow2 overlay over its template's base image. The
// broker names files as (storage, path relative to that storage's folder);
// every such path is checked to stay inside its folder before anything
// touches it, so a wrong or hostile name cannot reach other files.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "aula/common/process.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

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

 private:
  std::map<std::string, std::filesystem::path> storages_;
  process::Runner& runner_;
};

}  // namespace aula::agent
