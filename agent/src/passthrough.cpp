// Workstation passthrough: device kinds and preflight (see passthrough.hpp).
#include "aula/agent/passthrough.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>

#include "aula/common/pci_address.hpp"

namespace aula::agent {

namespace {

// AMD GPUs whose reset leaves them unusable until the host reboots (the
// "AMD reset bug"): Polaris 10/11/12, Vega 10 and 20, Navi 10 and 14.
constexpr std::uint16_t kAmdResetBug[] = {0x67df, 0x67ef, 0x67ff, 0x699f,
                                          0x687f, 0x66af, 0x731f, 0x7340};

bool hasWord(std::string_view text, std::string_view word) {
  std::size_t at = 0;
  while ((at = text.find(word, at)) != std::string_view::npos) {
    const bool startOk = at == 0 || text[at - 1] == ' ';
    const std::size_t end = at + word.size();
    const bool endOk = end == text.size() || text[end] == ' ' || text[end] == '=';
    if (startOk && endOk)
      return true;
    at = end;
  }
  return false;
}

std::string ids(const PciDevice& d) {
  return fmt::format("{:04x}:{:04x}", d.vendor, d.device);
}

std::string named(const PciDevice& d) {
  return fmt::format("{} ({} {})", d.address, deviceKind(d), ids(d));
}

}  // namespace

bool isBridge(const PciDevice& device) {
  // Host and PCI-to-PCI bridges route; an LPC (ISA) bridge is an endpoint
  // the host needs.
  const auto cls = device.classCode >> 8;
  return cls == 0x0600 || cls == 0x0604;
}

std::string deviceKind(const PciDevice& device) {
  const auto base = device.classCode >> 16;
  const auto sub = (device.classCode >> 8) & 0xff;
  if (base == 0x03)
    return "GPU";
  if (base == 0x04)
    return "audio";
  if (base == 0x0c && sub == 0x03)
    return "USB controller";
  if (base == 0x0c && sub == 0x05)
    return "SMBus";
  if (base == 0x06 && sub == 0x01)
    return "LPC bridge";
  if (base == 0x02)
    return "network";
  if (base == 0x06)
    return "bridge";
  if (base == 0x01)
    return "storage";
  return "other";
}

const PciDevice* HostFacts::find(std::string_view address) const {
  auto it = std::ranges::find(devices, address, &PciDevice::address);
  return it == devices.end() ? nullptr : &*it;
}

Result<ChosenDevice> parseChosenDevice(std::string_view text) {
  auto bad = [&] {
    return makeError(Errc::kInvalidArgument,
                     "'{}' is not a PCI device: write DOMAIN:BUS:SLOT.FUNCTION such as "
                     "0000:01:00.0, optionally with the IDs it must have, =10de:2484.",
                     text.substr(0, 60));
  };
  ChosenDevice chosen;
  auto address = canonicalPciAddress(text.substr(0, text.find('=')));
  if (!address)
    return bad();
  chosen.address = *address;
  if (const auto eq = text.find('='); eq != std::string_view::npos) {
    const std::string_view idText = text.substr(eq + 1);
    std::uint16_t vendor = 0;
    std::uint16_t device = 0;
    if (idText.size() != 9 || idText[4] != ':' ||
        std::from_chars(idText.data(), idText.data() + 4, vendor, 16).ptr != idText.data() + 4 ||
        std::from_chars(idText.data() + 5, idText.data() + 9, device, 16).ptr != idText.data() + 9)
      return bad();
    chosen.vendor = vendor;
    chosen.device = device;
  }
  return chosen;
}

std::vector<Finding> preflight(const HostFacts& host, const std::vector<ChosenDevice>& chosen) {
  std::vector<Finding> out;
  auto pass = [&](std::string text) { out.push_back({Verdict::kPass, std::move(text), {}}); };
  auto warn = [&](std::string text, std::string fix) {
    out.push_back({Verdict::kWarn, std::move(text), std::move(fix)});
  };
  auto fail = [&](std::string text, std::string fix) {
    out.push_back({Verdict::kFail, std::move(text), std::move(fix)});
  };
  const bool amd = host.cpuVendor == "amd";
  const std::string iommuParam = amd ? "amd_iommu=on iommu=pt" : "intel_iommu=on iommu=pt";

  // The CPU and KVM.
  if (host.cpuVirtualization)
    pass(fmt::format("The CPU offers virtualisation ({}).", amd ? "AMD-V" : "VT-x"));
  else
    fail("The CPU does not offer virtualisation (no vmx or svm flag).",
         "Turn on Intel VT-x or AMD-V (SVM) in the firmware's settings.");
  if (host.kvmDevice)
    pass("/dev/kvm is there.");
  else
    fail("/dev/kvm is missing: KVM is not loaded.",
         fmt::format("Load the module (modprobe {}), after turning on virtualisation in the "
                     "firmware.",
                     amd ? "kvm_amd" : "kvm_intel"));

  // The IOMMU.
  const bool table = host.acpiDmar || host.acpiIvrs;
  if (table && host.iommuGroups > 0) {
    pass(fmt::format("The IOMMU is on ({} groups).", host.iommuGroups));
  } else if (table) {
    fail(fmt::format("The firmware has an IOMMU ({}), but the kernel does not use it (no IOMMU "
                     "groups).",
                     host.acpiDmar ? "DMAR" : "IVRS"),
         fmt::format("Add {} to the kernel command line and reboot.", iommuParam));
  } else {
    fail("The firmware reports no IOMMU (no DMAR or IVRS table).",
         fmt::format("Turn on {} in the firmware's settings, then add {} to the kernel command "
                     "line.",
                     amd ? "AMD-Vi (IOMMU)" : "VT-d", iommuParam));
  }
  if (host.interruptRemapping) {
    pass("Interrupt remapping is on.");
  } else if (hasWord(host.cmdline, "vfio_iommu_type1.allow_unsafe_interrupts")) {
    warn(
        "Interrupt remapping is off and allow_unsafe_interrupts is set: a guest could inject "
        "interrupts into the host.",
        "Use a platform with interrupt remapping for anything but a trusted guest.");
  } else if (host.iommuGroups > 0) {
    fail("Interrupt remapping is off: vfio refuses to assign devices.",
         "Turn on interrupt remapping (x2APIC) in the firmware, or accept the risk with "
         "vfio_iommu_type1.allow_unsafe_interrupts=1 on the kernel command line.");
  }
  if (hasWord(host.cmdline, "pcie_acs_override"))
    warn(
        "pcie_acs_override is on the kernel command line: the IOMMU groups it splits are not "
        "isolated by the hardware, so a passed device can reach its neighbours' memory.",
        "Remove it and pass whole groups, or move the card to a slot with its own group.");
  const bool vfioLoaded = std::ranges::find(host.modules, "vfio_pci") != host.modules.end();
  if (vfioLoaded)
    pass("The vfio-pci module is loaded.");
  else
    warn("The vfio-pci module is not loaded.",
         "The agent loads it when it binds a device; to have it at boot, add vfio-pci to "
         "/etc/modules.");

  // Each chosen device.
  for (const auto& c : chosen) {
    const PciDevice* d = host.find(c.address);
    if (d == nullptr) {
      fail(fmt::format("There is no PCI device {} on this host.", c.address),
           "Choose the device again with 'aula-agent devices' (the card may have moved or been "
           "removed).");
      continue;
    }
    const std::string name = named(*d);
    if ((c.vendor && *c.vendor != d->vendor) || (c.device && *c.device != d->device)) {
      fail(fmt::format("{} is now {}, not the {:04x}:{:04x} the admin chose: the hardware "
                       "changed.",
                       c.address, ids(*d), c.vendor.value_or(0), c.device.value_or(0)),
           "Check the machine, then choose its devices again.");
      continue;
    }
    if (std::ranges::find(host.resetFailed, d->address) != host.resetFailed.end()) {
      fail(fmt::format("{} did not reset when its VM last stopped; it cannot be used again "
                       "safely.",
                       name),
           "Reboot the host.");
    }
    if (!d->iommuGroup) {
      if (host.iommuGroups > 0)
        fail(fmt::format("{} is in no IOMMU group.", name), "Check the IOMMU in the firmware.");
    } else {
      std::vector<std::string> blocking;
      for (const auto& other : host.devices) {
        if (other.address == d->address || other.iommuGroup != d->iommuGroup || isBridge(other))
          continue;
        const bool alsoChosen =
            std::ranges::find(chosen, other.address, &ChosenDevice::address) != chosen.end();
        if (!alsoChosen && other.driver != "vfio-pci")
          blocking.push_back(named(other) +
                             (other.driver.empty() ? "" : ", driver " + other.driver));
      }
      if (blocking.empty()) {
        pass(fmt::format("{}: its IOMMU group {} holds nothing else the host uses.", name,
                         *d->iommuGroup));
      } else {
        std::string list;
        for (const auto& b : blocking)
          list += (list.empty() ? "" : "; ") + b;
        fail(fmt::format("{} shares IOMMU group {} with {}.", name, *d->iommuGroup, list),
             "Pass those devices too, or move the card to a slot whose group it has alone "
             "(a CPU-attached slot usually is).");
      }
    }
    if (!d->heldBy.empty()) {
      fail(fmt::format("{} is the boot GPU and {} holds its memory, so vfio-pci cannot reserve "
                       "it.",
                       name, d->heldBy),
           d->heldBy == "efifb" || d->heldBy == "vesafb"
               ? fmt::format("Add video={}:off to the kernel command line (or "
                             "initcall_blacklist=sysfb_init), or make another GPU the boot GPU "
                             "in the firmware.",
                             d->heldBy)
               : std::string("Add initcall_blacklist=sysfb_init to the kernel command line, or "
                             "make another GPU the boot GPU in the firmware."));
    } else if (d->bootVga) {
      warn(fmt::format("{} is the boot GPU: the host's console is on it until the agent takes it.",
                       name),
           "The greeter moves to the host's other display first; without one the host has no "
           "screen while the VM runs.");
    }
    if (d->resetMethods.empty()) {
      warn(fmt::format("{} has no reset method: after its VM stops it may not work again.", name),
           "Expect to reboot the host after the VM stops; prefer a device with FLR.");
    } else {
      std::string methods;
      for (const auto& m : d->resetMethods)
        methods += (methods.empty() ? "" : ", ") + m;
      pass(fmt::format("{} resets by {}.", name, methods));
    }
    if (d->vendor == 0x1002 && std::ranges::find(kAmdResetBug, d->device) != std::end(kAmdResetBug))
      warn(fmt::format("{} is an AMD GPU with the known reset bug: it works once per host boot.",
                       name),
           "Reboot the host after each VM stop (the agent refuses to start the VM again until "
           "then), or use a different GPU.");
    // A twin the host keeps: binding by driver_override, never new_id, takes only this one.
    for (const auto& other : host.devices) {
      if (other.address != d->address && other.vendor == d->vendor && other.device == d->device &&
          std::ranges::find(chosen, other.address, &ChosenDevice::address) == chosen.end()) {
        pass(
            fmt::format("{} has a twin at {} that stays with the host (binding is by address, "
                        "not by ID).",
                        d->address, other.address));
      }
    }
  }
  return out;
}

bool anyFailed(const std::vector<Finding>& findings) {
  return std::ranges::any_of(findings,
                             [](const Finding& f) { return f.verdict == Verdict::kFail; });
}

std::string_view verdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kPass:
      return "PASS";
    case Verdict::kWarn:
      return "WARN";
    case Verdict::kFail:
      return "FAIL";
  }
  return "FAIL";
}

std::string formatFindings(const std::vector<Finding>& findings) {
  std::string out;
  for (const auto& f : findings) {
    const std::string_view word = verdictName(f.verdict);
    out += fmt::format("{}  {}\n", word, f.text);
    if (!f.fix.empty())
      out += fmt::format("      fix: {}\n", f.fix);
  }
  return out;
}

json::Json inventoryJson(const HostFacts& host) {
  json::Json devices = json::Json::array();
  for (const auto& d : host.devices) {
    devices.push_back({{"address", d.address},
                       {"kind", deviceKind(d)},
                       {"class", fmt::format("{:06x}", d.classCode)},
                       {"vendor", fmt::format("{:04x}", d.vendor)},
                       {"device", fmt::format("{:04x}", d.device)},
                       {"subsystem_vendor", fmt::format("{:04x}", d.subsystemVendor)},
                       {"subsystem_device", fmt::format("{:04x}", d.subsystemDevice)},
                       {"driver", d.driver},
                       {"iommu_group", d.iommuGroup ? json::Json(*d.iommuGroup) : json::Json()},
                       {"boot_vga", d.bootVga},
                       {"reset_methods", d.resetMethods},
                       {"held_by", d.heldBy.empty() ? json::Json() : json::Json(d.heldBy)}});
  }
  return {{"iommu_groups", host.iommuGroups}, {"devices", devices}};
}

std::string formatInventory(const HostFacts& host) {
  std::string out = fmt::format("{:<13} {:<15} {:<10} {:<12} {:>5}  {:<10} {}\n", "ADDRESS", "KIND",
                                "IDS", "DRIVER", "GROUP", "RESET", "NOTES");
  for (const auto& d : host.devices) {
    std::string reset = d.resetMethods.empty() ? "none" : d.resetMethods.front();
    std::string notes;
    if (d.bootVga)
      notes += "boot GPU";
    if (!d.heldBy.empty())
      notes += (notes.empty() ? "" : ", ") + ("held by " + d.heldBy);
    out += fmt::format("{:<13} {:<15} {:<10} {:<12} {:>5}  {:<10} {}\n", d.address, deviceKind(d),
                       ids(d), d.driver.empty() ? "-" : d.driver,
                       d.iommuGroup ? std::to_string(*d.iommuGroup) : "-", reset, notes);
  }
  return out;
}

}  // namespace aula::agent
