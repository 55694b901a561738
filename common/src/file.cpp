// Files and descriptors (see file.hpp).
#include "aula/common/file.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace aula::file {

namespace fs = std::filesystem;

void UniqueFd::reset(int fd) {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = fd;
}

namespace {

Error ioError(std::string_view verb, const fs::path& path, int err) {
  return Error(err == ENOENT ? Errc::kNotFound : Errc::kIo,
               fmt::format("Cannot {} '{}': {}.", verb, path.string(), std::strerror(err)), err);
}

}  // namespace

Result<std::string> readFile(const fs::path& path, std::string_view what) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    if (what.empty())
      return ioError("read", path, err);
    return Error(
        err == ENOENT ? Errc::kNotFound : Errc::kIo,
        fmt::format("Cannot read the {} '{}': {}.", what, path.string(), std::strerror(err)), err);
  }
  std::string out;
  char buffer[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return ioError("read", path, errno);
    if (n == 0)
      return out;
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

Status writeAll(int fd, std::string_view data, const fs::path& path) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return ioError("write", path, n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status writeFileAtomic(const fs::path& path, std::string_view content, WriteOptions options) {
  fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  static std::atomic<unsigned> serial{0};
  fs::path temp =
      dir / fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(), serial.fetch_add(1));
  // O_EXCL: never write through a file or link someone placed there.
  UniqueFd fd(
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, options.mode));
  if (!fd)
    return ioError("write", path, errno);
  auto fail = [&](int err) {
    fd.reset();
    ::unlink(temp.c_str());
    return ioError("write", path, err);
  };
  // The umask may have taken bits away: the mode is what the caller said,
  // set before any content is in the file.
  if (::fchmod(fd.get(), options.mode) != 0)
    return fail(errno);
  if (options.group != static_cast<gid_t>(-1) &&
      ::fchown(fd.get(), static_cast<uid_t>(-1), options.group) != 0) {
    return fail(errno);
  }
  if (auto written = writeAll(fd.get(), content, path); !written)
    return fail(written.error().native());
  if (::fsync(fd.get()) != 0)
    return fail(errno);
  if (int fdNumber = fd.release(); ::close(fdNumber) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return ioError("write", path, err);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp.c_str());
    return ioError("put in place", path, err);
  }
  // The rename is durable once the folder is.
  if (UniqueFd dirFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); dirFd)
    ::fsync(dirFd.get());
  return {};
}

}  // namespace aula::file
