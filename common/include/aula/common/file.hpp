// Files and descriptors: one owner of a file descriptor, reading a whole
// file, writing all of a buffer, and replacing a file atomically with its
// mode set when it is created (never readable by others for a moment).
// Every failure is an Error naming the path and the system's reason.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include <sys/types.h>

#include "aula/common/result.hpp"

namespace aula::file {

// Owns one open file descriptor and closes it when it goes.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other)
      reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// The whole file. kNotFound when it does not exist, kIo for any other
// failure; the sentence names the path and `what` it is ("the CA
// certificate"), or just the path when `what` is empty.
Result<std::string> readFile(const std::filesystem::path& path, std::string_view what = {});

// Writes all of `data` to `fd`, retrying short writes and EINTR; `path`
// names the file in the error.
Status writeAll(int fd, std::string_view data, const std::filesystem::path& path);

struct WriteOptions {
  mode_t mode = 0600;
  // Hands the file to this group (-1: ours), before it holds anything.
  gid_t group = static_cast<gid_t>(-1);
};

// Replaces `path` with `content` atomically: a temporary file beside it,
// created with the mode (and the umask cannot widen it; fchmod sets it
// exactly before the first byte), written, fsync-ed, renamed over `path`,
// and the folder fsync-ed. A reader sees the old file or the new one, never
// part of one, and no other user ever sees the content. On failure the old
// file is untouched and the temporary file is gone.
Status writeFileAtomic(const std::filesystem::path& path, std::string_view content,
                       WriteOptions options = {});

}  // namespace aula::file
