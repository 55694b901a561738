// Workstation passthrough, the policy half: what a host is (its PCI devices,
// IOMMU groups, firmware and kernel settings, as facts an adapter reads from
// sysfs and /proc), and preflight, which says before anything starts whether
// VFIO passthrough of the chosen devices can work here and, for each thing
// that stops it, how to fix it. No sysfs here: agent/sysfs/ reads the facts
// from a root that is / in production and a fixture folder in tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/json.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

struct PciDevice {
  std::string address;          // "0000:01:00.0"
  std::uint32_t classCode = 0;  // 0x030000: VGA
  std::uint16_t vendor = 0;
  std::uint16_t device = 0;
  std::uint16_t subsystemVendor = 0;
  std::uint16_t subsystemDevice = 0;
  std::string driver;             // bound driver, "" when none
  std::optional<int> iommuGroup;  // none when the IOMMU is off
  bool bootVga = false;           // the firmware's console GPU
  // The kernel's reset methods in its order of use ("flr", "pm", "bus"...);
  // empty when the device cannot be reset at all.
  std::vector<std::string> resetMethods;
  // A firmware framebuffer (efifb, simpledrm, vesafb, BOOTFB) holding one
  // of its memory ranges, which vfio-pci then cannot reserve.
  std::string heldBy;
};

// "GPU", "audio", "USB controller", "SMBus", "LPC bridge", "network",
// "bridge", "storage" or "other".
std::string deviceKind(const PciDevice& device);
// A host or PCI-to-PCI bridge, which may share a group with a passed device.
bool isBridge(const PciDevice& device);

struct HostFacts {
  std::string cpuVendor;           // "intel", "amd" or ""
  bool cpuVirtualization = false;  // vmx or svm among the CPU's flags
  bool kvmDevice = false;          // /dev/kvm
  bool acpiDmar = false;           // Intel's IOMMU table
  bool acpiIvrs = false;           // AMD's
  int iommuGroups = 0;
  bool interruptRemapping = false;   // "IR-" interrupts in /proc/interrupts
  std::string cmdline;               // /proc/cmdline
  std::vector<std::string> modules;  // loaded vfio modules (vfio, vfio_pci, vfio_iommu_type1)
  std::vector<PciDevice> devices;
  // Devices whose reset failed after a VM stopped (the agent's own record):
  // unusable until the host reboots.
  std::vector<std::string> resetFailed;

  const PciDevice* find(std::string_view address) const;
};

// A device an admin chose for a workstation, with the IDs it had then.
struct ChosenDevice {
  std::string address;
  std::optional<std::uint16_t> vendor;
  std::optional<std::uint16_t> device;
};
// "0000:01:00.0" or "0000:01:00.0=10de:2484"; a short "01:00.0" gets domain 0000.
Result<ChosenDevice> parseChosenDevice(std::string_view text);

enum class Verdict { kPass, kWarn, kFail };
// "PASS", "WARN" or "FAIL", as preflight prints them and D-Bus sends them.
std::string_view verdictName(Verdict verdict);

struct Finding {
  Verdict verdict = Verdict::kPass;
  std::string text;  // what was found
  std::string fix;   // what to do; empty for a pass
};

// Every check, host first, then each chosen device in order.
std::vector<Finding> preflight(const HostFacts& host, const std::vector<ChosenDevice>& chosen);
bool anyFailed(const std::vector<Finding>& findings);
// "PASS  text" / "WARN  text\n      fix: ..." / "FAIL  ...", one finding after another.
std::string formatFindings(const std::vector<Finding>& findings);

// The devices as the broker and `aula-agent devices --json` show them.
json::Json inventoryJson(const HostFacts& host);
// A table: address, kind, IDs, driver, group, reset, notes.
std::string formatInventory(const HostFacts& host);

}  // namespace aula::agent
