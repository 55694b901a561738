// The libvirt domain XML of a workstation: a local VM on a researcher's desk
// machine that owns the real GPU, USB controller and sound card through VFIO
// (see docs/workstation.md). Pure text like domain_xml.hpp: the spec is
// checked first against the host's facts (each error names the field), and
// the output is stable for golden files (tests/golden/agent/workstation_*).
//
// The agent binds the devices to vfio-pci itself, journal first
// (passthrough_binding.hpp), so every <hostdev> is managed='no': libvirt
// must not rebind them behind the journal's back.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aula/agent/passthrough.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

// A host PCI function the VM takes.
struct PassedDevice {
  std::string address;  // "0000:01:00.0", as the host names it
  // A ROM image shown to the guest instead of the card's own: for a boot
  // GPU whose ROM the firmware has shadowed, or a card whose ROM lacks UEFI
  // support. Empty: the card's own.
  std::filesystem::path romFile;
};

struct WorkstationSpec {
  std::string name;  // the libvirt domain name ("aula-ws-lab3")
  std::string uuid;
  std::int64_t desktopId = 0;  // kept in <metadata>; a workstation's VM: its host's id
  std::string owner;           // who uses it now, kept in <metadata>
  // "kvm". "qemu" only so that a machine without KVM can still have libvirt
  // check everything else; passthrough never runs under TCG.
  std::string domainType = "kvm";
  std::string machine = "q35";
  // The guest's CPU topology: vCPUs = sockets x cores x threads, at most 128.
  int sockets = 1;
  int cores = 4;
  int threads = 1;
  // Empty, or the host CPU for each vCPU in order (vCPU i on vcpuPins[i]).
  std::vector<int> vcpuPins;
  // Empty, or the host CPUs QEMU's own threads use, as a cpuset ("0-1,8").
  std::string emulatorCpus;
  std::int64_t memoryMb = 8192;  // at least 1024
  bool hugePages = false;        // back guest memory with the host's huge pages
  // OVMF: the code (read-only) and the variables the VM's own NVRAM copy
  // starts from; libvirt copies the template to nvramPath at first start.
  std::filesystem::path firmwareCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
  std::filesystem::path firmwareVars = "/usr/share/OVMF/OVMF_VARS_4M.fd";
  std::filesystem::path nvramPath;  // this VM's copy, in the agent's state folder
  // What the VM takes: at least one GPU. Functions of one slot (a GPU and
  // its HDMI audio) stay together in one guest slot, function 0 first,
  // marked multifunction.
  std::vector<PassedDevice> devices;
  // The host's keyboard and mouse (/dev/input/by-id/...-event-kbd first),
  // given to the guest through evdev when no USB controller is passed. The
  // first grabs the keyboard; Left Ctrl + Right Ctrl gives it back to the
  // host.
  std::vector<std::filesystem::path> evdevInputs;
  // For guest drivers that refuse to run in a VM: hide KVM's signature, and
  // give Hyper-V's vendor id (1 to 12 letters and digits) when not empty.
  bool hideKvm = false;
  std::string hypervVendorId;
  std::filesystem::path diskPath;  // its qcow2 overlay, from the broker like any desktop's
  std::string diskBus = "virtio";
  std::string network = "default";
  std::string nicModel = "virtio";
  std::string macAddress;
};

// The whole <domain> document, ending in a newline. Errors: kInvalidArgument,
// naming the field that is wrong, among them a device this host does not
// have and a VM that would have no keyboard.
Result<std::string> renderWorkstationXml(const WorkstationSpec& spec, const HostFacts& host);

}  // namespace aula::agent
