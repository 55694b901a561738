// The host's passthrough facts from sysfs and /proc under a root: "/" in
// production, a fixture folder in tests (the same files, the same code).
#pragma once

#include <filesystem>

#include "aula/agent/passthrough.hpp"

namespace aula::agent {

// Reads the CPU's flags, /dev/kvm, the ACPI IOMMU tables, the IOMMU groups,
// interrupt remapping, the kernel command line, the vfio modules, and every
// PCI device under root/sys/bus/pci/devices with the firmware framebuffer
// holding its memory (root/proc/iomem). Devices in address order.
// `resetFailedDir` holds a file per device whose reset failed (the agent's
// record); it may not exist.
Result<HostFacts> readHostFacts(const std::filesystem::path& root,
                                const std::filesystem::path& resetFailedDir = {});

}  // namespace aula::agent
