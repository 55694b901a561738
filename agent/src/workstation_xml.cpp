// Renders a workstation's passthrough domain XML (see workstation_xml.hpp).
#include "aula/agent/workstation_xml.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>

#include "aula/agent/domain_xml.hpp"

#include "xml_checks.hpp"

namespace aula::agent {
namespace {

using namespace xml;  // NOLINT(google-build-using-namespace): the shared checks

constexpr int kMaxVcpus = 128;
constexpr int kMaxHostCpu = 4095;
constexpr std::int64_t kMinMemoryMb = 1024;
constexpr std::size_t kMaxVendorIdLength = 12;  // Hyper-V's vendor id is 12 bytes
constexpr std::string_view kEvdevDir = "/dev/input/";

// "0000:01:00.0" split into its numbers.
struct PciAddress {
  unsigned domain = 0;
  unsigned bus = 0;
  unsigned slot = 0;
  unsigned function = 0;
};

PciAddress splitAddress(const std::string& address) {
  // Checked canonical by then: DDDD:BB:SS.F.
  auto hex = [&](std::size_t at, std::size_t length) {
    return static_cast<unsigned>(std::stoul(address.substr(at, length), nullptr, 16));
  };
  return {hex(0, 4), hex(5, 2), hex(8, 2), hex(11, 1)};
}

Status checkTopology(const WorkstationSpec& spec) {
  for (auto [field, value] : {std::pair<std::string_view, int>{"sockets", spec.sockets},
                              {"cores", spec.cores},
                              {"threads", spec.threads}}) {
    if (value < 1 || value > kMaxVcpus) {
      return fieldError(field,
                        fmt::format("is {}; it must be between 1 and {}.", value, kMaxVcpus));
    }
  }
  const int vcpus = spec.sockets * spec.cores * spec.threads;
  if (vcpus > kMaxVcpus) {
    return fieldError("cores",
                      fmt::format("makes {} vCPUs ({} sockets x {} cores x {} threads); "
                                  "at most {} are allowed.",
                                  vcpus, spec.sockets, spec.cores, spec.threads, kMaxVcpus));
  }
  if (!spec.vcpuPins.empty() && static_cast<int>(spec.vcpuPins.size()) != vcpus) {
    return fieldError("vcpuPins", fmt::format("names {} host CPUs for {} vCPUs; give one per vCPU "
                                              "or none.",
                                              spec.vcpuPins.size(), vcpus));
  }
  for (int cpu : spec.vcpuPins) {
    if (cpu < 0 || cpu > kMaxHostCpu) {
      return fieldError("vcpuPins", fmt::format("holds {}, which is not a host CPU number.", cpu));
    }
  }
  if (!allOf(spec.emulatorCpus, [](char c) { return isDigit(c) || c == ',' || c == '-'; }) ||
      spec.emulatorCpus.starts_with('-') || spec.emulatorCpus.starts_with(',')) {
    return fieldError(
        "emulatorCpus",
        fmt::format("must be empty or a cpuset like '0-1,8', not '{}'.", spec.emulatorCpus));
  }
  return okStatus();
}

Status checkDevices(const WorkstationSpec& spec, const HostFacts& host) {
  if (spec.devices.empty()) {
    return fieldError("devices", "is empty; a workstation takes at least its GPU.");
  }
  std::set<std::string> seen;
  std::string usbController;
  bool gpu = false;
  for (const auto& passed : spec.devices) {
    auto parsed = parseChosenDevice(passed.address);
    if (!parsed || parsed->address != passed.address) {
      return fieldError("devices", fmt::format("holds '{}', which is not a PCI address written "
                                               "like 0000:01:00.0.",
                                               passed.address));
    }
    if (!seen.insert(passed.address).second) {
      return fieldError("devices", fmt::format("names {} twice.", passed.address));
    }
    const PciDevice* device = host.find(passed.address);
    if (device == nullptr) {
      return fieldError("devices", fmt::format("names {}, which this host does not have; run "
                                               "'aula-agent devices' to see what it has.",
                                               passed.address));
    }
    if (!passed.romFile.empty()) {
      AULA_TRY_STATUS(checkAbsolutePath("devices.romFile", passed.romFile));
    }
    gpu = gpu || deviceKind(*device) == "GPU";
    if (deviceKind(*device) == "USB controller" && usbController.empty()) {
      usbController = passed.address;
    }
  }
  if (!gpu) {
    return fieldError("devices",
                      "holds no GPU, so nothing would show the VM; add the GPU "
                      "that drives the researcher's monitor.");
  }
  if (!usbController.empty() && !spec.evdevInputs.empty()) {
    return fieldError("evdevInputs",
                      fmt::format("names input devices, but the USB controller {} is passed and "
                                  "brings the keyboard and mouse itself; leave evdevInputs empty.",
                                  usbController));
  }
  if (usbController.empty() && spec.evdevInputs.empty()) {
    return fieldError("evdevInputs",
                      "is empty and no USB controller is passed, so the VM would "
                      "have no keyboard or mouse; pass a USB controller or name "
                      "the host's /dev/input/by-id/*-event-kbd and -event-mouse.");
  }
  for (const auto& input : spec.evdevInputs) {
    AULA_TRY_STATUS(checkAbsolutePath("evdevInputs", input));
    if (!input.native().starts_with(kEvdevDir)) {
      return fieldError("evdevInputs", fmt::format("holds '{}', which is not under {}.",
                                                   input.native(), kEvdevDir));
    }
  }
  return okStatus();
}

Status checkSpec(const WorkstationSpec& spec, const HostFacts& host) {
  AULA_TRY_STATUS(checkName(spec.name));
  AULA_TRY_STATUS(checkUuid(spec.uuid));
  AULA_TRY_STATUS(checkOwnership(spec.desktopId, spec.owner));
  AULA_TRY_STATUS(checkOneOf("domainType", spec.domainType, {"kvm", "qemu"}));
  AULA_TRY_STATUS(checkMachine(spec.machine));
  AULA_TRY_STATUS(checkTopology(spec));
  if (spec.memoryMb < kMinMemoryMb) {
    return fieldError(
        "memoryMb", fmt::format("is {}; it must be at least {} MiB.", spec.memoryMb, kMinMemoryMb));
  }
  AULA_TRY_STATUS(checkAbsolutePath("firmwareCode", spec.firmwareCode));
  AULA_TRY_STATUS(checkAbsolutePath("firmwareVars", spec.firmwareVars));
  AULA_TRY_STATUS(checkAbsolutePath("nvramPath", spec.nvramPath));
  AULA_TRY_STATUS(checkDevices(spec, host));
  if (spec.hypervVendorId.size() > kMaxVendorIdLength ||
      !allOf(spec.hypervVendorId, [](char c) { return isAlnum(c); })) {
    return fieldError("hypervVendorId",
                      fmt::format("must be empty or 1 to {} letters and digits, not '{}'.",
                                  kMaxVendorIdLength, spec.hypervVendorId));
  }
  AULA_TRY_STATUS(checkAbsolutePath("diskPath", spec.diskPath));
  AULA_TRY_STATUS(checkOneOf("diskBus", spec.diskBus, {"virtio", "sata"}));
  AULA_TRY_STATUS(checkNetwork(spec.network));
  AULA_TRY_STATUS(checkOneOf("nicModel", spec.nicModel, {"virtio", "e1000e"}));
  AULA_TRY_STATUS(checkMacAddress(spec.macAddress));
  return okStatus();
}

// Where each passed device sits in the guest: one PCIe root port per host
// slot, in the order the slots first appear, and the slot's functions in
// their host order from function 0, so a GPU stays at 0 with its HDMI
// audio at 1 (the guest driver expects them together).
struct GuestSlot {
  std::vector<const PassedDevice*> functions;
};

std::vector<GuestSlot> guestSlots(const std::vector<PassedDevice>& devices) {
  std::vector<GuestSlot> slots;
  std::map<std::string, std::size_t> bySlot;  // "DDDD:BB:SS" -> index in slots
  for (const auto& device : devices) {
    const std::string hostSlot = device.address.substr(0, device.address.rfind('.'));
    auto [at, added] = bySlot.try_emplace(hostSlot, slots.size());
    if (added) {
      slots.emplace_back();
    }
    slots[at->second].functions.push_back(&device);
  }
  for (auto& slot : slots) {
    std::sort(slot.functions.begin(), slot.functions.end(),
              [](const PassedDevice* a, const PassedDevice* b) { return a->address < b->address; });
  }
  return slots;
}

void writeHostdevs(Writer& w, const std::vector<PassedDevice>& devices) {
  const auto slots = guestSlots(devices);
  // The root ports first, index 1 upwards; libvirt gives each its own
  // address on the root bus and adds more for the disk and NIC.
  for (std::size_t i = 0; i < slots.size(); ++i) {
    w.line(2, "<controller type='pci' index='{}' model='pcie-root-port'/>", i + 1);
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const auto& functions = slots[i].functions;
    for (std::size_t f = 0; f < functions.size(); ++f) {
      const PassedDevice& device = *functions[f];
      const PciAddress host = splitAddress(device.address);
      w.line(2, "<hostdev mode='subsystem' type='pci' managed='no'>");
      w.line(3, "<source>");
      w.line(4, "<address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{:x}'/>",
             host.domain, host.bus, host.slot, host.function);
      w.line(3, "</source>");
      if (!device.romFile.empty()) {
        w.line(3, "<rom file='{}'/>", xmlEscape(device.romFile.native()));
      }
      w.line(3,
             "<address type='pci' domain='0x0000' bus='0x{:02x}' slot='0x00' function='0x{:x}'{}/>",
             i + 1, f, f == 0 && functions.size() > 1 ? " multifunction='on'" : "");
      w.line(2, "</hostdev>");
    }
  }
}

void writeCpu(Writer& w, const WorkstationSpec& spec) {
  if (!spec.vcpuPins.empty() || !spec.emulatorCpus.empty()) {
    w.line(1, "<cputune>");
    for (std::size_t i = 0; i < spec.vcpuPins.size(); ++i) {
      w.line(2, "<vcpupin vcpu='{}' cpuset='{}'/>", i, spec.vcpuPins[i]);
    }
    if (!spec.emulatorCpus.empty()) {
      w.line(2, "<emulatorpin cpuset='{}'/>", xmlEscape(spec.emulatorCpus));
    }
    w.line(1, "</cputune>");
  }
}

}  // namespace

Result<std::string> renderWorkstationXml(const WorkstationSpec& spec, const HostFacts& host) {
  AULA_TRY_STATUS(checkSpec(spec, host));
  const int vcpus = spec.sockets * spec.cores * spec.threads;
  Writer w;
  writeIdentity(w, {spec.domainType, spec.name, spec.uuid, spec.desktopId, spec.owner, true});
  w.line(1, "<memory unit='MiB'>{}</memory>", spec.memoryMb);
  if (spec.hugePages) {
    w.line(1, "<memoryBacking>");
    w.line(2, "<hugepages/>");
    w.line(1, "</memoryBacking>");
  }
  w.line(1, "<vcpu placement='static'>{}</vcpu>", vcpus);
  writeCpu(w, spec);
  w.line(1, "<os>");
  w.line(2, "<type arch='x86_64' machine='{}'>hvm</type>", xmlEscape(spec.machine));
  w.line(2, "<loader readonly='yes' type='pflash'>{}</loader>",
         xmlEscape(spec.firmwareCode.native()));
  w.line(2, "<nvram template='{}'>{}</nvram>", xmlEscape(spec.firmwareVars.native()),
         xmlEscape(spec.nvramPath.native()));
  w.line(2, "<boot dev='hd'/>");
  w.line(1, "</os>");
  w.line(1, "<features>");
  w.line(2, "<acpi/>");
  w.line(2, "<apic/>");
  if (!spec.hypervVendorId.empty()) {
    w.line(2, "<hyperv mode='custom'>");
    w.line(3, "<vendor_id state='on' value='{}'/>", xmlEscape(spec.hypervVendorId));
    w.line(2, "</hyperv>");
  }
  if (spec.hideKvm) {
    w.line(2, "<kvm>");
    w.line(3, "<hidden state='on'/>");
    w.line(2, "</kvm>");
  }
  w.line(1, "</features>");
  // The guest sees the host's own CPU: a workstation never migrates.
  w.line(1, "<cpu mode='host-passthrough' check='none' migratable='off'>");
  w.line(2, "<topology sockets='{}' dies='1' cores='{}' threads='{}'/>", spec.sockets, spec.cores,
         spec.threads);
  w.line(1, "</cpu>");
  w.line(1, "<clock offset='utc'/>");
  w.line(1, "<on_poweroff>destroy</on_poweroff>");
  w.line(1, "<on_reboot>restart</on_reboot>");
  w.line(1, "<on_crash>destroy</on_crash>");
  w.line(1, "<devices>");
  writeDiskStart(w, spec.diskPath, spec.diskBus);
  writeDiskEnd(w);
  writeHostdevs(w, spec.devices);
  writeInterface(w, spec.network, spec.macAddress, spec.nicModel);
  for (std::size_t i = 0; i < spec.evdevInputs.size(); ++i) {
    w.line(2, "<input type='evdev'>");
    if (i == 0) {
      w.line(3, "<source dev='{}' grab='all' grabToggle='ctrl-ctrl' repeat='on'/>",
             xmlEscape(spec.evdevInputs[i].native()));
    } else {
      w.line(3, "<source dev='{}'/>", xmlEscape(spec.evdevInputs[i].native()));
    }
    w.line(2, "</input>");
  }
  // The passed GPU is the screen: no emulated one, no SPICE.
  w.line(2, "<video>");
  w.line(3, "<model type='none'/>");
  w.line(2, "</video>");
  // All guest memory is pinned for DMA, so a balloon could not free any.
  w.line(2, "<memballoon model='none'/>");
  w.line(1, "</devices>");
  w.line(0, "</domain>");
  return w.take();
}

}  // namespace aula::agent
