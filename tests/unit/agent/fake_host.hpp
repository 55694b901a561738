// Fixture hosts for the agent's passthrough tests: a root folder with the
// sysfs and /proc files the kernel would show (FakeHost), and the machines
// an admin meets (fixtureMachines), each with what its workstation takes.
// Shared by the preflight, binding and workstation XML tests.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/agent/passthrough.hpp"

#include "sysfs_port.hpp"

namespace aula::test {

// A file with its folders made first.
void writeFileMakingDirs(const std::filesystem::path& path, std::string_view content);

struct Dev {
  std::string address;
  std::uint32_t classCode;
  std::uint16_t vendor;
  std::uint16_t device;
  std::string driver;
  std::optional<int> group;
  std::string resetMethods = "flr bus";  // "" writes no reset files at all
  bool bootVga = false;
};

// A host as sysfs and /proc show it: an Intel CPU with VT-x, KVM, VT-d on
// with interrupt remapping, vfio-pci loaded; then the devices given.
class FakeHost {
 public:
  explicit FakeHost(const std::filesystem::path& root);

  FakeHost& add(const Dev& d);
  FakeHost& iomem(const std::string& text);
  FakeHost& cmdline(const std::string& text);
  // The IOMMU as the kernel leaves it without intel_iommu=on: the table is
  // there, the groups are not.
  FakeHost& iommuOff();

  // Read back by the real sysfs adapter; throws when it cannot.
  agent::HostFacts facts(const std::filesystem::path& resetFailed = {}) const;

 private:
  std::filesystem::path root_;
};

// The real sysfs adapter's writes, then what Linux does about them on
// driver_override, unbind and drivers_probe, on a fixture tree.
class FakeKernel : public agent::RealSysfs {
 public:
  explicit FakeKernel(const std::filesystem::path& root);

  // A device bound to its native driver, as after boot.
  void device(const std::string& address, const std::string& native);
  // Every device a FakeHost made under the same root, with the driver it
  // has, and vfio-pci loaded.
  void adoptDevices();
  // A module loaded: its driver folder with unbind.
  void loadDriver(const std::string& driver);

  Status write(std::string_view path, std::string_view value) override;

  // The firmware's console as on a PC booted by UEFI: a text console on the
  // framebuffer (vtcon1) and efifb bound to efi-framebuffer.0.
  void firmwareConsole();

  // The next unbind of `address` blocks, as Linux's does while a process
  // holds the device, until releaseUnbind().
  void hangUnbindOf(const std::string& address);
  void releaseUnbind();

  std::vector<std::string> writes;  // "path=value", in order

 private:
  void setOverride(const std::string& address, const std::string& value);
  void bindTo(const std::string& address, const std::string& driver);

  std::map<std::string, std::string> native_;
  std::mutex hangMutex_;
  std::condition_variable released_;
  std::string hanging_;  // the address whose unbind blocks; "" for none
};

// A desktop's usual neighbours: the root port and the iGPU; and a GPU with
// its HDMI audio.
extern const Dev kRootPort;
extern const Dev kIgpu;
extern const Dev kGpu;
extern const Dev kGpuAudio;

struct FixtureMachine {
  std::string name;  // "clean_desktop": golden files are named after it
  std::function<void(FakeHost&)> build;
  std::vector<std::string> passed;  // the devices its workstation takes
};

// A clean desktop, a GPU sharing its group with an NVMe drive, onboard
// audio grouped with the LPC bridge and SMBus, the boot GPU held by efifb,
// a USB controller with no reset method, twin GPUs, and the IOMMU off.
const std::vector<FixtureMachine>& fixtureMachines();
// One of them by name; throws for a name that is not there.
const FixtureMachine& fixtureMachine(std::string_view name);

}  // namespace aula::test
