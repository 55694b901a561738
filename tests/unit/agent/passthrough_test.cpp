// Workstation passthrough: the host's facts read from fixture sysfs trees
// (the files the kernel has, under a root folder) and preflight's verdicts
// and fixes for the machines an admin meets: a clean desktop, a GPU sharing
// its group, onboard audio grouped with the LPC bridge and SMBus, the boot
// GPU held by efifb, a USB controller with no reset, twin GPUs, the IOMMU
// off, and the rest (changed hardware, a failed reset, AMD's reset bug,
// pcie_acs_override, no interrupt remapping).
#include "aula/agent/passthrough.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/temp_dir.hpp"
#include "sysfs_host.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A file with its folders made first.
void writeFile(const fs::path& path, std::string_view content) {
  fs::create_directories(path.parent_path());
  test::writeFile(path, content);
}

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
  explicit FakeHost(const fs::path& root) : root_(root) {
    writeFile(root_ / "proc/cpuinfo",
              "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse2\n");
    writeFile(root_ / "dev/kvm", "");
    writeFile(root_ / "sys/firmware/acpi/tables/DMAR", "DMAR");
    writeFile(root_ / "proc/interrupts", " 24: 0 IR-PCI-MSI 512000-edge ahci\n");
    writeFile(root_ / "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt");
    fs::create_directories(root_ / "sys/module/vfio_pci");
    fs::create_directories(root_ / "sys/bus/pci/devices");
    fs::create_directories(root_ / "sys/kernel/iommu_groups");
    writeFile(root_ / "proc/iomem", "00000000-00000fff : Reserved\n");
  }

  FakeHost& add(const Dev& d) {
    const fs::path dir = root_ / "sys/bus/pci/devices" / d.address;
    fs::create_directories(dir);
    writeFile(dir / "class", fmt::format("0x{:06x}\n", d.classCode));
    writeFile(dir / "vendor", fmt::format("0x{:04x}\n", d.vendor));
    writeFile(dir / "device", fmt::format("0x{:04x}\n", d.device));
    writeFile(dir / "subsystem_vendor", "0x1043\n");
    writeFile(dir / "subsystem_device", "0x8874\n");
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
      writeFile(dir / "boot_vga", d.bootVga ? "1\n" : "0\n");
    if (!d.resetMethods.empty()) {
      writeFile(dir / "reset", "");
      writeFile(dir / "reset_method", d.resetMethods + "\n");
    }
    return *this;
  }

  FakeHost& iomem(const std::string& text) {
    writeFile(root_ / "proc/iomem", text);
    return *this;
  }
  FakeHost& cmdline(const std::string& text) {
    writeFile(root_ / "proc/cmdline", text);
    return *this;
  }
  // The IOMMU as the kernel leaves it without intel_iommu=on: the table is
  // there, the groups are not.
  FakeHost& iommuOff() {
    fs::remove_all(root_ / "sys/kernel/iommu_groups");
    for (const auto& e : fs::directory_iterator(root_ / "sys/bus/pci/devices"))
      fs::remove(e.path() / "iommu_group");
    writeFile(root_ / "proc/interrupts", " 24: 0 PCI-MSI 512000-edge ahci\n");
    return cmdline("BOOT_IMAGE=/vmlinuz root=/dev/sda1");
  }

  HostFacts facts(const fs::path& resetFailed = {}) const {
    auto read = readHostFacts(root_, resetFailed);
    if (!read)
      throw std::runtime_error(read.error().message());
    return *read;
  }

 private:
  fs::path root_;
};

// A desktop's usual neighbours: the root port and the iGPU.
const Dev kRootPort{"0000:00:01.0", 0x060400, 0x8086, 0x1901, "pcieport", 1};
const Dev kIgpu{"0000:00:02.0", 0x030000, 0x8086, 0x3e92, "i915", 0, "flr", true};
const Dev kGpu{"0000:01:00.0", 0x030000, 0x10de, 0x2484, "nvidia", 1};
const Dev kGpuAudio{"0000:01:00.1", 0x040300, 0x10de, 0x228b, "snd_hda_intel", 1, "flr"};

std::vector<ChosenDevice> choose(std::initializer_list<std::string_view> texts) {
  std::vector<ChosenDevice> out;
  for (auto t : texts)
    out.push_back(*parseChosenDevice(t));
  return out;
}

const Finding* findingWith(const std::vector<Finding>& findings, std::string_view text) {
  for (const auto& f : findings) {
    if (f.text.find(text) != std::string::npos)
      return &f;
  }
  return nullptr;
}

class PassthroughTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
  FakeHost host_{dir_.path() / "root"};
};

TEST_F(PassthroughTest, ReadsEveryDeviceWithItsIdsDriverGroupAndReset) {
  host_.add(kRootPort).add(kIgpu).add(kGpu).add(kGpuAudio);
  const HostFacts facts = host_.facts();
  EXPECT_EQ(facts.cpuVendor, "intel");
  EXPECT_TRUE(facts.cpuVirtualization);
  EXPECT_TRUE(facts.kvmDevice);
  EXPECT_TRUE(facts.interruptRemapping);
  EXPECT_EQ(facts.iommuGroups, 2);
  ASSERT_EQ(facts.devices.size(), 4U);
  const PciDevice* gpu = facts.find("0000:01:00.0");
  ASSERT_NE(gpu, nullptr);
  EXPECT_EQ(gpu->vendor, 0x10de);
  EXPECT_EQ(gpu->device, 0x2484);
  EXPECT_EQ(gpu->subsystemVendor, 0x1043);
  EXPECT_EQ(gpu->driver, "nvidia");
  EXPECT_EQ(gpu->iommuGroup, 1);
  EXPECT_EQ(gpu->resetMethods, (std::vector<std::string>{"flr", "bus"}));
  EXPECT_EQ(deviceKind(*gpu), "GPU");
  EXPECT_TRUE(facts.find("0000:00:02.0")->bootVga);
  EXPECT_EQ(deviceKind(*facts.find("0000:01:00.1")), "audio");
  const auto table = formatInventory(facts);
  EXPECT_THAT(table, HasSubstr("0000:01:00.0  GPU             10de:2484  nvidia           1  flr"));
  EXPECT_THAT(table, HasSubstr("boot GPU"));
  const auto json = inventoryJson(facts);
  EXPECT_EQ(json["devices"][2]["vendor"], "10de");
  EXPECT_EQ(json["devices"][2]["iommu_group"], 1);
}

TEST_F(PassthroughTest, ACleanDesktopPassesItsGpuAndHdmiAudio) {
  host_.add(kRootPort).add(kIgpu).add(kGpu).add(kGpuAudio);
  const auto findings = preflight(host_.facts(), choose({"0000:01:00.0=10de:2484", "01:00.1"}));
  EXPECT_FALSE(anyFailed(findings)) << formatFindings(findings);
  EXPECT_NE(findingWith(findings, "its IOMMU group 1 holds nothing else the host uses"), nullptr)
      << formatFindings(findings);
  EXPECT_NE(findingWith(findings, "resets by flr, bus"), nullptr);
  EXPECT_THAT(formatFindings(findings), HasSubstr("PASS  The IOMMU is on (2 groups)."));
}

TEST_F(PassthroughTest, AGpuSharingItsGroupWithAnotherEndpointFailsNamingIt) {
  host_.add(kRootPort).add(kGpu).add(kGpuAudio).add(
      {"0000:02:00.0", 0x010802, 0x144d, 0xa808, "nvme", 1});
  const auto findings = preflight(host_.facts(), choose({"0000:01:00.0", "0000:01:00.1"}));
  ASSERT_TRUE(anyFailed(findings));
  const Finding* f = findingWith(findings,
                                 "shares IOMMU group 1 with 0000:02:00.0 (storage "
                                 "144d:a808), driver nvme");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kFail);
  EXPECT_THAT(f->fix, HasSubstr("move the card to a slot"));
  // The GPU alone, without its own audio function, is blocked by it too.
  const auto alone = preflight(host_.facts(), choose({"0000:01:00.0"}));
  EXPECT_NE(findingWith(alone, "0000:01:00.1 (audio 10de:228b), driver snd_hda_intel"), nullptr)
      << formatFindings(alone);
}

TEST_F(PassthroughTest, OnboardAudioGroupedWithTheLpcBridgeAndSmbusFails) {
  host_.add({"0000:00:1f.0", 0x060100, 0x8086, 0xa305, "", 12})
      .add({"0000:00:1f.3", 0x040300, 0x8086, 0xa348, "snd_hda_intel", 12})
      .add({"0000:00:1f.4", 0x0c0500, 0x8086, 0xa323, "i801_smbus", 12});
  const auto findings = preflight(host_.facts(), choose({"0000:00:1f.3"}));
  const Finding* f = findingWith(findings,
                                 "shares IOMMU group 12 with 0000:00:1f.0 (LPC bridge "
                                 "8086:a305); 0000:00:1f.4 (SMBus 8086:a323), driver "
                                 "i801_smbus");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kFail);
}

TEST_F(PassthroughTest, TheBootGpuHeldByEfifbFailsWithTheKernelParameter) {
  Dev gpu = kGpu;
  gpu.bootVga = true;
  host_.add(kRootPort).add(gpu).add(kGpuAudio).iomem(
      "00000000-00000fff : Reserved\n"
      "a0000000-b1ffffff : PCI Bus 0000:01\n"
      "  a0000000-afffffff : 0000:01:00.0\n"
      "    a0000000-a02fffff : efifb\n"
      "  b0000000-b1ffffff : 0000:01:00.0\n");
  const HostFacts facts = host_.facts();
  EXPECT_EQ(facts.find("0000:01:00.0")->heldBy, "efifb");
  EXPECT_EQ(facts.find("0000:01:00.1")->heldBy, "");
  const auto findings = preflight(facts, choose({"0000:01:00.0", "0000:01:00.1"}));
  const Finding* f = findingWith(findings, "is the boot GPU and efifb holds its memory");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kFail);
  EXPECT_THAT(f->fix, HasSubstr("video=efifb:off"));
  EXPECT_THAT(f->fix, HasSubstr("initcall_blacklist=sysfb_init"));
}

TEST_F(PassthroughTest, AUsbControllerWithNoResetIsAWarning) {
  host_.add({"0000:03:00.0", 0x0c0330, 0x1912, 0x0015, "xhci_hcd", 7, ""});
  const auto findings = preflight(host_.facts(), choose({"0000:03:00.0"}));
  EXPECT_FALSE(anyFailed(findings)) << formatFindings(findings);
  const Finding* f = findingWith(findings, "(USB controller 1912:0015) has no reset method");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kWarn);
}

TEST_F(PassthroughTest, OfTwinGpusOnlyTheChosenOneGoesAndTheOtherStays) {
  host_.add({"0000:01:00.0", 0x030000, 0x10de, 0x1b80, "nvidia", 1})
      .add({"0000:02:00.0", 0x030000, 0x10de, 0x1b80, "nvidia", 2});
  const auto findings = preflight(host_.facts(), choose({"0000:02:00.0"}));
  EXPECT_FALSE(anyFailed(findings)) << formatFindings(findings);
  EXPECT_NE(findingWith(findings,
                        "0000:02:00.0 has a twin at 0000:01:00.0 that stays with the "
                        "host"),
            nullptr)
      << formatFindings(findings);
}

TEST_F(PassthroughTest, WithTheIommuOffItSaysWhichParameterToAdd) {
  host_.add(kRootPort).add(kGpu).iommuOff();
  const auto findings = preflight(host_.facts(), choose({"0000:01:00.0"}));
  const Finding* f = findingWith(findings,
                                 "The firmware has an IOMMU (DMAR), but the kernel does "
                                 "not use it");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kFail);
  EXPECT_EQ(f->fix, "Add intel_iommu=on iommu=pt to the kernel command line and reboot.");
  // No table at all: the firmware setting first.
  fs::remove(dir_.path() / "root/sys/firmware/acpi/tables/DMAR");
  const auto none = preflight(host_.facts(), choose({"0000:01:00.0"}));
  EXPECT_NE(findingWith(none, "The firmware reports no IOMMU"), nullptr);
  EXPECT_THAT(formatFindings(none), HasSubstr("fix: Turn on VT-d in the firmware's settings"));
}

TEST_F(PassthroughTest, ChangedHardwareAFailedResetAndAmdsResetBugAreNamed) {
  host_.add(kRootPort).add({"0000:01:00.0", 0x030000, 0x1002, 0x67df, "amdgpu", 1});
  // The admin chose an NVIDIA card in that slot.
  auto changed = preflight(host_.facts(), choose({"0000:01:00.0=10de:2484"}));
  const Finding* f = findingWith(changed, "is now 1002:67df, not the 10de:2484 the admin chose");
  ASSERT_NE(f, nullptr) << formatFindings(changed);
  EXPECT_EQ(f->verdict, Verdict::kFail);
  // The Polaris card: works once per host boot.
  auto polaris = preflight(host_.facts(), choose({"0000:01:00.0"}));
  EXPECT_FALSE(anyFailed(polaris)) << formatFindings(polaris);
  EXPECT_NE(findingWith(polaris, "AMD GPU with the known reset bug"), nullptr);
  // Its reset failed when the VM last stopped: refused until a reboot.
  const fs::path failed = dir_.path() / "reset-failed";
  writeFile(failed / "0000:01:00.0", "");
  auto after = preflight(host_.facts(failed), choose({"0000:01:00.0"}));
  const Finding* r = findingWith(after, "did not reset when its VM last stopped");
  ASSERT_NE(r, nullptr) << formatFindings(after);
  EXPECT_EQ(r->fix, "Reboot the host.");
  EXPECT_TRUE(anyFailed(after));
}

TEST_F(PassthroughTest, AcsOverrideAndMissingInterruptRemappingAreFlagged) {
  host_.add(kRootPort).add(kGpu).add(kGpuAudio).cmdline(
      "intel_iommu=on pcie_acs_override=downstream");
  writeFile(dir_.path() / "root/proc/interrupts", " 24: 0 PCI-MSI 512000-edge ahci\n");
  const auto findings = preflight(host_.facts(), choose({"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_EQ(findingWith(findings, "pcie_acs_override is on")->verdict, Verdict::kWarn);
  EXPECT_EQ(findingWith(findings, "Interrupt remapping is off: vfio refuses")->verdict,
            Verdict::kFail);
  host_.cmdline("intel_iommu=on vfio_iommu_type1.allow_unsafe_interrupts=1");
  const auto allowed = preflight(host_.facts(), choose({"0000:01:00.0", "0000:01:00.1"}));
  EXPECT_EQ(findingWith(allowed, "allow_unsafe_interrupts is set")->verdict, Verdict::kWarn);
  EXPECT_FALSE(anyFailed(allowed)) << formatFindings(allowed);
}

TEST(PassthroughParseTest, ChosenDevicesAreCheckedWithAClearSentence) {
  EXPECT_EQ(parseChosenDevice("01:00.0")->address, "0000:01:00.0");
  auto withIds = parseChosenDevice("0000:0A:00.1=10DE:228b");
  ASSERT_TRUE(withIds);
  EXPECT_EQ(withIds->address, "0000:0a:00.1");
  EXPECT_EQ(withIds->vendor, 0x10de);
  EXPECT_EQ(withIds->device, 0x228b);
  for (const char* bad : {"", "gpu", "0000:01:00.8", "0000:01:00.0=10de", "01-00-0"}) {
    auto parsed = parseChosenDevice(bad);
    ASSERT_FALSE(parsed) << bad;
    EXPECT_THAT(parsed.error().message(), HasSubstr("such as 0000:01:00.0")) << bad;
  }
}

TEST(PassthroughReadTest, ARootWithoutSysfsSaysSo) {
  test::TempDir dir;
  auto read = readHostFacts(dir.path());
  ASSERT_FALSE(read);
  EXPECT_THAT(read.error().message(), HasSubstr("sys/bus/pci/devices is missing"));
}

}  // namespace
}  // namespace aula::agent
