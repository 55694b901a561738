// Binding's writes to sysfs (see sysfs_port.hpp).
#include "sysfs_port.hpp"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <set>
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

Result<std::string> RealSysfs::read(std::string_view path) {
  std::ifstream in(sys() / path);
  if (!in)
    return makeError(Errc::kNotFound, "There is no {}.", (sys() / path).string());
  std::string line;
  std::getline(in, line);
  return line;
}

std::vector<std::string> RealSysfs::list(std::string_view dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sys() / dir, ec))
    names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

bool isPid(const std::string& name) {
  return !name.empty() &&
         std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The /dev nodes of a PCI device, from its sysfs folder: DRM (card*,
// renderD*), sound (controlC*, pcmC*, hwC*, midiC*) and its VFIO group.
std::set<std::string> nodesOf(const fs::path& device) {
  std::set<std::string> nodes;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(device / "drm", ec))
    nodes.insert("/dev/dri/" + e.path().filename().string());
  for (const auto& card : fs::directory_iterator(device / "sound", ec)) {
    std::error_code inner;
    for (const auto& e : fs::directory_iterator(card.path(), inner)) {
      const std::string name = e.path().filename();
      for (const char* prefix : {"controlC", "pcmC", "hwC", "midiC"}) {
        if (name.starts_with(prefix))
          nodes.insert("/dev/snd/" + name);
      }
    }
  }
  const auto group = fs::read_symlink(device / "iommu_group", ec);
  if (!ec)
    nodes.insert("/dev/vfio/" + group.filename().string());
  return nodes;
}

}  // namespace

std::vector<DeviceHolder> RealSysfs::holders(std::string_view address) {
  const std::set<std::string> nodes = nodesOf(sys() / "bus/pci/devices" / address);
  const std::string bar = fmt::format("/{}/resource", address);
  std::vector<DeviceHolder> found;
  std::error_code ec;
  for (const auto& process : fs::directory_iterator(root_ / "proc", ec)) {
    const std::string pid = process.path().filename();
    if (!isPid(pid))
      continue;
    std::string command;
    std::getline(std::ifstream(process.path() / "comm"), command);
    std::set<std::string> seen;
    std::error_code inner;
    for (const auto& fd : fs::directory_iterator(process.path() / "fd", inner)) {
      std::error_code link;
      const std::string target = fs::read_symlink(fd.path(), link).string();
      if (!link && nodes.contains(target) && seen.insert(target).second)
        found.push_back({std::stoi(pid), command, target});
    }
    std::ifstream maps(process.path() / "maps");
    for (std::string line; std::getline(maps, line);) {
      if (line.find(bar) != std::string::npos) {
        found.push_back({std::stoi(pid), command, "its memory (BAR) mapped"});
        break;
      }
    }
  }
  std::sort(found.begin(), found.end(),
            [](const DeviceHolder& a, const DeviceHolder& b) { return a.pid < b.pid; });
  return found;
}

}  // namespace aula::agent
