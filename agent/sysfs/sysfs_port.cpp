// Binding's writes to sysfs (see sysfs_port.hpp).
#include "sysfs_port.hpp"

#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include "aula/common/file.hpp"

namespace aula::agent {

namespace fs = std::filesystem;

Result<std::string> RealSysfs::driverOf(std::string_view address) {
  const fs::path link = sys() / "bus/pci/devices" / address / "driver";
  std::error_code ec;
  if (!fs::exists(sys() / "bus/pci/devices" / address, ec))
    return makeError(Errc::kNotFound, "There is no PCI device {} on this host.", address);
  const auto target = fs::read_symlink(link, ec);
  return ec ? std::string() : target.filename().string();
}

Result<std::string> RealSysfs::overrideOf(std::string_view address) {
  std::ifstream in(sys() / "bus/pci/devices" / address / "driver_override");
  std::string value;
  std::getline(in, value);
  return value == "(null)" ? std::string() : value;  // the kernel's word for none
}

Status RealSysfs::write(std::string_view path, std::string_view value) {
  const fs::path target = sys() / path;
  // One write(2) of the whole value, as sysfs attributes want it.
  file::UniqueFd fd(::open(target.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0 ||
      ::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    const int error = errno;
    return Error(Errc::kIo,
                 fmt::format("Writing '{}' to {} failed: {}.", value, target.string(),
                             std::error_code(error, std::generic_category()).message()),
                 error);
  }
  return okStatus();
}

}  // namespace aula::agent
