// Host facts from sysfs and /proc (see sysfs_host.hpp).
#include "sysfs_host.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

namespace aula::agent {

namespace {

namespace fs = std::filesystem;

std::string readText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

// "0x10de" (sysfs's form) or "10de".
template <typename T>
T hexValue(const fs::path& path) {
  std::string text = readText(path);
  if (text.starts_with("0x"))
    text.erase(0, 2);
  T value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value, 16);
  return value;
}

// The last part of a symlink's target: a driver's or a group's name.
std::string linkName(const fs::path& link) {
  std::error_code ec;
  const auto target = fs::read_symlink(link, ec);
  return ec ? std::string() : target.filename().string();
}

// Which firmware framebuffer holds memory inside each device's ranges:
// /proc/iomem nests a driver's claim under the device's BAR, by indent.
void markFramebuffers(const fs::path& iomem, std::vector<PciDevice>& devices) {
  static constexpr std::string_view kFramebuffers[] = {"efifb", "simpledrm", "vesafb", "BOOTFB",
                                                       "simple-framebuffer"};
  std::ifstream in(iomem);
  std::string line;
  std::string owner;  // the device whose range we are inside
  std::size_t ownerIndent = 0;
  while (std::getline(in, line)) {
    const std::size_t indent = line.find_first_not_of(' ');
    const auto colon = line.find(" : ");
    if (indent == std::string::npos || colon == std::string::npos)
      continue;
    const std::string name = line.substr(colon + 3);
    if (!owner.empty() && indent <= ownerIndent)
      owner.clear();
    if (std::ranges::any_of(devices, [&](const PciDevice& d) { return d.address == name; })) {
      owner = name;
      ownerIndent = indent;
      continue;
    }
    if (!owner.empty()) {
      for (auto fb : kFramebuffers) {
        if (name.find(fb) != std::string::npos) {
          for (auto& d : devices) {
            if (d.address == owner && d.heldBy.empty())
              d.heldBy = std::string(fb);
          }
        }
      }
    }
  }
}

}  // namespace

Result<HostFacts> readHostFacts(const fs::path& root, const fs::path& resetFailedDir) {
  HostFacts host;
  std::error_code ec;
  const fs::path pciDir = root / "sys/bus/pci/devices";
  if (!fs::is_directory(pciDir, ec)) {
    return makeError(Errc::kNotFound, "{} is missing: no sysfs with PCI devices under {}.",
                     pciDir.string(), root.string());
  }
  const std::string cpuinfo = readText(root / "proc/cpuinfo");
  host.cpuVendor = cpuinfo.find("GenuineIntel") != std::string::npos   ? "intel"
                   : cpuinfo.find("AuthenticAMD") != std::string::npos ? "amd"
                                                                       : "";
  for (std::string_view flag : {" vmx", " svm"}) {
    const auto at = cpuinfo.find(flag);
    if (at != std::string::npos &&
        (at + flag.size() == cpuinfo.size() || cpuinfo[at + flag.size()] == ' ' ||
         cpuinfo[at + flag.size()] == '\n'))
      host.cpuVirtualization = true;
  }
  host.kvmDevice = fs::exists(root / "dev/kvm", ec);
  host.acpiDmar = fs::exists(root / "sys/firmware/acpi/tables/DMAR", ec);
  host.acpiIvrs = fs::exists(root / "sys/firmware/acpi/tables/IVRS", ec);
  for (auto it = fs::directory_iterator(root / "sys/kernel/iommu_groups", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec))
    ++host.iommuGroups;
  host.interruptRemapping = readText(root / "proc/interrupts").find("IR-") != std::string::npos;
  host.cmdline = readText(root / "proc/cmdline");
  for (const char* module : {"vfio", "vfio_pci", "vfio_iommu_type1"}) {
    if (fs::exists(root / "sys/module" / module, ec))
      host.modules.emplace_back(module);
  }

  for (const auto& entry : fs::directory_iterator(pciDir, ec)) {
    const fs::path& dir = entry.path();
    PciDevice d;
    d.address = dir.filename().string();
    d.classCode = hexValue<std::uint32_t>(dir / "class");
    d.vendor = hexValue<std::uint16_t>(dir / "vendor");
    d.device = hexValue<std::uint16_t>(dir / "device");
    d.subsystemVendor = hexValue<std::uint16_t>(dir / "subsystem_vendor");
    d.subsystemDevice = hexValue<std::uint16_t>(dir / "subsystem_device");
    d.driver = linkName(dir / "driver");
    if (const auto group = linkName(dir / "iommu_group"); !group.empty()) {
      int n = 0;
      if (std::from_chars(group.data(), group.data() + group.size(), n).ec == std::errc())
        d.iommuGroup = n;
    }
    d.bootVga = readText(dir / "boot_vga") == "1";
    // reset_method (Linux 5.15+) names the methods; without it a "reset"
    // file still means the kernel can reset the device somehow.
    std::istringstream methods(readText(dir / "reset_method"));
    for (std::string m; methods >> m;)
      d.resetMethods.push_back(m);
    if (d.resetMethods.empty() && fs::exists(dir / "reset", ec))
      d.resetMethods.emplace_back("unknown");
    host.devices.push_back(std::move(d));
  }
  std::ranges::sort(host.devices, {}, &PciDevice::address);
  markFramebuffers(root / "proc/iomem", host.devices);
  if (!resetFailedDir.empty()) {
    for (auto it = fs::directory_iterator(resetFailedDir, ec);
         !ec && it != fs::directory_iterator(); it.increment(ec))
      host.resetFailed.push_back(it->path().filename().string());
  }
  return host;
}

}  // namespace aula::agent
