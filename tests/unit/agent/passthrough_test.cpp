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

#include "fake_host.hpp"
#include "support/temp_dir.hpp"
#include "sysfs_host.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using test::FakeHost;
using test::kGpu;
using test::kGpuAudio;
using test::kIgpu;
using test::kRootPort;
using ::testing::HasSubstr;

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
  test::fixtureMachine("clean_desktop").build(host_);
  const auto findings = preflight(host_.facts(), choose({"0000:01:00.0=10de:2484", "01:00.1"}));
  EXPECT_FALSE(anyFailed(findings)) << formatFindings(findings);
  EXPECT_NE(findingWith(findings, "its IOMMU group 1 holds nothing else the host uses"), nullptr)
      << formatFindings(findings);
  EXPECT_NE(findingWith(findings, "resets by flr, bus"), nullptr);
  EXPECT_THAT(formatFindings(findings), HasSubstr("PASS  The IOMMU is on (2 groups)."));
}

TEST_F(PassthroughTest, AGpuSharingItsGroupWithAnotherEndpointFailsNamingIt) {
  test::fixtureMachine("gpu_shared_group").build(host_);
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
  test::fixtureMachine("onboard_audio_lpc").build(host_);
  const auto findings = preflight(host_.facts(), choose({"0000:00:1f.3"}));
  const Finding* f = findingWith(findings,
                                 "shares IOMMU group 12 with 0000:00:1f.0 (LPC bridge "
                                 "8086:a305); 0000:00:1f.4 (SMBus 8086:a323), driver "
                                 "i801_smbus");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kFail);
}

TEST_F(PassthroughTest, TheBootGpuHeldByEfifbFailsWithTheKernelParameter) {
  test::fixtureMachine("boot_gpu_efifb").build(host_);
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
  test::fixtureMachine("usb_no_reset").build(host_);
  const auto findings = preflight(host_.facts(), choose({"0000:03:00.0"}));
  EXPECT_FALSE(anyFailed(findings)) << formatFindings(findings);
  const Finding* f = findingWith(findings, "(USB controller 1912:0015) has no reset method");
  ASSERT_NE(f, nullptr) << formatFindings(findings);
  EXPECT_EQ(f->verdict, Verdict::kWarn);
}

TEST_F(PassthroughTest, OfTwinGpusOnlyTheChosenOneGoesAndTheOtherStays) {
  test::fixtureMachine("twin_gpus").build(host_);
  const auto findings = preflight(host_.facts(), choose({"0000:02:00.0"}));
  EXPECT_FALSE(anyFailed(findings)) << formatFindings(findings);
  EXPECT_NE(findingWith(findings,
                        "0000:02:00.0 has a twin at 0000:01:00.0 that stays with the "
                        "host"),
            nullptr)
      << formatFindings(findings);
}

TEST_F(PassthroughTest, WithTheIommuOffItSaysWhichParameterToAdd) {
  test::fixtureMachine("iommu_off").build(host_);
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
  test::writeFileMakingDirs(failed / "0000:01:00.0", "");
  auto after = preflight(host_.facts(failed), choose({"0000:01:00.0"}));
  const Finding* r = findingWith(after, "did not reset when its VM last stopped");
  ASSERT_NE(r, nullptr) << formatFindings(after);
  EXPECT_EQ(r->fix, "Reboot the host.");
  EXPECT_TRUE(anyFailed(after));
}

TEST_F(PassthroughTest, AcsOverrideAndMissingInterruptRemappingAreFlagged) {
  host_.add(kRootPort).add(kGpu).add(kGpuAudio).cmdline(
      "intel_iommu=on pcie_acs_override=downstream");
  test::writeFileMakingDirs(dir_.path() / "root/proc/interrupts",
                            " 24: 0 PCI-MSI 512000-edge ahci\n");
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
