// Fixture hosts for the agent's passthrough tests (see fake_host.hpp).
#include "fake_host.hpp"

#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

#include "support/temp_dir.hpp"
#include "sysfs_host.hpp"

namespace aula::test {

namespace fs = std::filesystem;

void writeFileMakingDirs(const fs::path& path, std::string_view content) {
  fs::create_directories(path.parent_path());
  writeFile(path, content);
}

FakeHost::FakeHost(const fs::path& root) : root_(root) {
  writeFileMakingDirs(root_ / "proc/cpuinfo",
                      "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse2\n");
  writeFileMakingDirs(root_ / "dev/kvm", "");
  writeFileMakingDirs(root_ / "sys/firmware/acpi/tables/DMAR", "DMAR");
  writeFileMakingDirs(root_ / "proc/interrupts", " 24: 0 IR-PCI-MSI 512000-edge ahci\n");
  writeFileMakingDirs(root_ / "proc/cmdline",
                      "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt");
  fs::create_directories(root_ / "sys/module/vfio_pci");
  fs::create_directories(root_ / "sys/bus/pci/devices");
  fs::create_directories(root_ / "sys/kernel/iommu_groups");
  writeFileMakingDirs(root_ / "proc/iomem", "00000000-00000fff : Reserved\n");
}

FakeHost& FakeHost::add(const Dev& d) {
  const fs::path dir = root_ / "sys/bus/pci/devices" / d.address;
  fs::create_directories(dir);
  writeFileMakingDirs(dir / "class", fmt::format("0x{:06x}\n", d.classCode));
  writeFileMakingDirs(dir / "vendor", fmt::format("0x{:04x}\n", d.vendor));
  writeFileMakingDirs(dir / "device", fmt::format("0x{:04x}\n", d.device));
  writeFileMakingDirs(dir / "subsystem_vendor", "0x1043\n");
  writeFileMakingDirs(dir / "subsystem_device", "0x8874\n");
  if (!d.driver.empty()) {
    fs::create_directories(root_ / "sys/bus/pci/drivers" / d.driver);
    fs::create_symlink("../../../../bus/pci/drivers/" + d.driver, dir / "driver");
  }
  if (d.group) {
    const fs::path group = root_ / "sys/kernel/iommu_groups" / std::to_string(*d.group);
    fs::create_directories(group / "devices");
    fs::create_symlink("../../../../kernel/iommu_groups/" + std::to_string(*d.group),
                       dir / "iommu_group");
    fs::create_symlink("../../../../bus/pci/devices/" + d.address, group / "devices" / d.address);
  }
  if ((d.classCode >> 16) == 0x03)
    writeFileMakingDirs(dir / "boot_vga", d.bootVga ? "1\n" : "0\n");
  if (!d.resetMethods.empty()) {
    writeFileMakingDirs(dir / "reset", "");
    writeFileMakingDirs(dir / "reset_method", d.resetMethods + "\n");
  }
  return *this;
}

FakeHost& FakeHost::iomem(const std::string& text) {
  writeFileMakingDirs(root_ / "proc/iomem", text);
  return *this;
}

FakeHost& FakeHost::cmdline(const std::string& text) {
  writeFileMakingDirs(root_ / "proc/cmdline", text);
  return *this;
}

FakeHost& FakeHost::iommuOff() {
  fs::remove_all(root_ / "sys/kernel/iommu_groups");
  for (const auto& e : fs::directory_iterator(root_ / "sys/bus/pci/devices"))
    fs::remove(e.path() / "iommu_group");
  writeFileMakingDirs(root_ / "proc/interrupts", " 24: 0 PCI-MSI 512000-edge ahci\n");
  return cmdline("BOOT_IMAGE=/vmlinuz root=/dev/sda1");
}

agent::HostFacts FakeHost::facts(const fs::path& resetFailed) const {
  auto read = agent::readHostFacts(root_, resetFailed);
  if (!read)
    throw std::runtime_error(read.error().message());
  return *read;
}

namespace {

void touch(const fs::path& path) {
  std::ofstream(path).flush();
}

}  // namespace

FakeKernel::FakeKernel(const fs::path& root) : RealSysfs(root) {
  fs::create_directories(sys() / "bus/pci/drivers");
  touch(sys() / "bus/pci/drivers_probe");
}

void FakeKernel::device(const std::string& address, const std::string& native) {
  native_[address] = native;
  fs::create_directories(sys() / "bus/pci/devices" / address);
  touch(sys() / "bus/pci/devices" / address / "driver_override");
  setOverride(address, "");
  loadDriver(native);
  bindTo(address, native);
}

void FakeKernel::adoptDevices() {
  for (const auto& entry : fs::directory_iterator(sys() / "bus/pci/devices")) {
    const std::string address = entry.path().filename();
    const std::string driver = driverOf(address).valueOr("");
    native_[address] = driver;
    setOverride(address, "");
    if (!driver.empty())
      loadDriver(driver);
  }
  loadDriver("vfio-pci");
}

void FakeKernel::loadDriver(const std::string& driver) {
  fs::create_directories(sys() / "bus/pci/drivers" / driver);
  touch(sys() / "bus/pci/drivers" / driver / "unbind");
}

Status FakeKernel::write(std::string_view path, std::string_view value) {
  AULA_TRY_STATUS(RealSysfs::write(path, value));
  writes.push_back(fmt::format("{}={}", path, value));
  const std::string p(path);
  const std::string v(value);
  if (p.starts_with("bus/platform/drivers/")) {
    const fs::path driverDir = sys() / fs::path(p).parent_path();
    if (p.ends_with("/unbind"))
      fs::remove(driverDir / v);
    else if (p.ends_with("/bind"))
      fs::create_symlink("../../../../devices/platform/" + v, driverDir / v);
  } else if (p.ends_with("/driver_override")) {
    // Stored whole, a lone newline clearing it.
    const auto address = fs::path(p).parent_path().filename().string();
    setOverride(address, v == "\n" ? "" : v);
  } else if (p.ends_with("/unbind")) {
    std::unique_lock lock(hangMutex_);
    released_.wait(lock, [&] { return hanging_ != v; });
    lock.unlock();
    const auto driver = fs::path(p).parent_path().filename().string();
    if (driverOf(v).valueOr("") != driver)
      return Error(Errc::kIo, "No such device (the kernel's ENODEV).");
    fs::remove(sys() / "bus/pci/devices" / v / "driver");
  } else if (p == "bus/pci/drivers_probe") {
    if (!driverOf(v).valueOr("").empty())
      return okStatus();
    const std::string wanted = overrideOf(v).valueOr("");
    const std::string driver = wanted.empty() ? native_[v] : wanted;
    // Only a loaded driver takes it; a driver_override of one that is not
    // loaded leaves the device with none.
    if (!driver.empty() && fs::exists(sys() / "bus/pci/drivers" / driver))
      bindTo(v, driver);
  }
  return okStatus();
}

void FakeKernel::firmwareConsole() {
  writeFileMakingDirs(sys() / "class/vtconsole/vtcon0/name", "(S) dummy device\n");
  writeFileMakingDirs(sys() / "class/vtconsole/vtcon0/bind", "0\n");
  writeFileMakingDirs(sys() / "class/vtconsole/vtcon1/name", "(M) frame buffer device\n");
  writeFileMakingDirs(sys() / "class/vtconsole/vtcon1/bind", "1\n");
  const fs::path driver = sys() / "bus/platform/drivers/efi-framebuffer";
  fs::create_directories(sys() / "devices/platform/efi-framebuffer.0");
  writeFileMakingDirs(driver / "bind", "");
  writeFileMakingDirs(driver / "unbind", "");
  fs::create_symlink("../../../../devices/platform/efi-framebuffer.0",
                     driver / "efi-framebuffer.0");
}

void FakeKernel::hangUnbindOf(const std::string& address) {
  std::lock_guard lock(hangMutex_);
  hanging_ = address;
}

void FakeKernel::releaseUnbind() {
  {
    std::lock_guard lock(hangMutex_);
    hanging_.clear();
  }
  released_.notify_all();
}

void FakeKernel::setOverride(const std::string& address, const std::string& value) {
  std::ofstream(sys() / "bus/pci/devices" / address / "driver_override", std::ios::trunc)
      << (value.empty() ? "(null)" : value) << "\n";
}

void FakeKernel::bindTo(const std::string& address, const std::string& driver) {
  fs::create_symlink("../../../../bus/pci/drivers/" + driver,
                     sys() / "bus/pci/devices" / address / "driver");
}

const Dev kRootPort{"0000:00:01.0", 0x060400, 0x8086, 0x1901, "pcieport", 1};
const Dev kIgpu{"0000:00:02.0", 0x030000, 0x8086, 0x3e92, "i915", 0, "flr", true};
const Dev kGpu{"0000:01:00.0", 0x030000, 0x10de, 0x2484, "nvidia", 1};
const Dev kGpuAudio{"0000:01:00.1", 0x040300, 0x10de, 0x228b, "snd_hda_intel", 1, "flr"};

namespace {

const Dev kNvmeInGpuGroup{"0000:02:00.0", 0x010802, 0x144d, 0xa808, "nvme", 1};
const Dev kLpc{"0000:00:1f.0", 0x060100, 0x8086, 0xa305, "", 12};
const Dev kOnboardAudio{"0000:00:1f.3", 0x040300, 0x8086, 0xa348, "snd_hda_intel", 12};
const Dev kSmbus{"0000:00:1f.4", 0x0c0500, 0x8086, 0xa323, "i801_smbus", 12};
const Dev kUsbNoReset{"0000:03:00.0", 0x0c0330, 0x1912, 0x0015, "xhci_hcd", 7, ""};

}  // namespace

const std::vector<FixtureMachine>& fixtureMachines() {
  static const std::vector<FixtureMachine> machines = {
      {"clean_desktop",
       [](FakeHost& h) { h.add(kRootPort).add(kIgpu).add(kGpu).add(kGpuAudio); },
       {"0000:01:00.0", "0000:01:00.1"}},
      {"gpu_shared_group",
       [](FakeHost& h) { h.add(kRootPort).add(kGpu).add(kGpuAudio).add(kNvmeInGpuGroup); },
       {"0000:01:00.0", "0000:01:00.1"}},
      {"onboard_audio_lpc",
       [](FakeHost& h) {
         h.add(kRootPort).add(kGpu).add(kGpuAudio).add(kLpc).add(kOnboardAudio).add(kSmbus);
       },
       {"0000:01:00.0", "0000:01:00.1", "0000:00:1f.3"}},
      {"boot_gpu_efifb",
       [](FakeHost& h) {
         Dev gpu = kGpu;
         gpu.bootVga = true;
         h.add(kRootPort).add(gpu).add(kGpuAudio).iomem(
             "00000000-00000fff : Reserved\n"
             "a0000000-b1ffffff : PCI Bus 0000:01\n"
             "  a0000000-afffffff : 0000:01:00.0\n"
             "    a0000000-a02fffff : efifb\n"
             "  b0000000-b1ffffff : 0000:01:00.0\n");
       },
       {"0000:01:00.0", "0000:01:00.1"}},
      {"usb_no_reset",
       [](FakeHost& h) { h.add(kRootPort).add(kGpu).add(kGpuAudio).add(kUsbNoReset); },
       {"0000:01:00.0", "0000:01:00.1", "0000:03:00.0"}},
      {"twin_gpus",
       [](FakeHost& h) {
         h.add({"0000:01:00.0", 0x030000, 0x10de, 0x1b80, "nvidia", 1})
             .add({"0000:02:00.0", 0x030000, 0x10de, 0x1b80, "nvidia", 2});
       },
       {"0000:02:00.0"}},
      {"iommu_off", [](FakeHost& h) { h.add(kRootPort).add(kGpu).iommuOff(); }, {"0000:01:00.0"}},
  };
  return machines;
}

const FixtureMachine& fixtureMachine(std::string_view name) {
  for (const auto& machine : fixtureMachines()) {
    if (machine.name == name)
      return machine;
  }
  throw std::runtime_error(fmt::format("There is no fixture machine '{}'.", name));
}

}  // namespace aula::test
