// Binding devices to vfio-pci and giving them back, on a fixture sysfs tree
// whose "kernel" (FakeKernel, over the real adapter's writes) does what
// Linux does on driver_override, unbind and drivers_probe: the exact files
// written, a twin the host keeps, a failure half-way, and an agent killed
// half-way whose successor gives every device back.
#include "aula/agent/passthrough_binding.hpp"

#include <fstream>
#include <map>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fake_host.hpp"
#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using test::FakeKernel;

constexpr const char* kGpu = "0000:01:00.0";
constexpr const char* kAudio = "0000:01:00.1";
constexpr const char* kTwin = "0000:02:00.0";

class BindingTest : public ::testing::Test {
 protected:
  BindingTest() {
    kernel_.device(kGpu, "nvidia");
    kernel_.device(kAudio, "snd_hda_intel");
    kernel_.device(kTwin, "nvidia");  // the host's own card of the same model
    kernel_.loadDriver("vfio-pci");
  }
  std::string driver(const char* address) { return kernel_.driverOf(address).valueOr("?"); }

  test::TempDir dir_;
  FakeKernel kernel_{dir_.path() / "root"};
  fs::path journal_ = dir_.path() / "passthrough.journal";
};

TEST_F(BindingTest, BindsByDriverOverrideUnbindAndProbeAndGivesBackTheSameWay) {
  PassthroughBinder binder(kernel_, journal_);
  ASSERT_TRUE(binder.bind({kGpu, kAudio}));
  EXPECT_EQ(driver(kGpu), "vfio-pci");
  EXPECT_EQ(driver(kAudio), "vfio-pci");
  EXPECT_EQ(driver(kTwin), "nvidia") << "the twin stays with the host";
  EXPECT_THAT(kernel_.writes, ElementsAre("bus/pci/devices/0000:01:00.0/driver_override=vfio-pci",
                                          "bus/pci/drivers/nvidia/unbind=0000:01:00.0",
                                          "bus/pci/drivers_probe=0000:01:00.0",
                                          "bus/pci/devices/0000:01:00.1/driver_override=vfio-pci",
                                          "bus/pci/drivers/snd_hda_intel/unbind=0000:01:00.1",
                                          "bus/pci/drivers_probe=0000:01:00.1"));
  ASSERT_EQ(binder.pending()->size(), 2U);

  kernel_.writes.clear();
  ASSERT_TRUE(binder.giveBack());
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_EQ(driver(kAudio), "snd_hda_intel");
  EXPECT_EQ(kernel_.overrideOf(kGpu).valueOr("?"), "");
  // Newest first.
  EXPECT_THAT(kernel_.writes, ElementsAre("bus/pci/devices/0000:01:00.1/driver_override=\n",
                                          "bus/pci/drivers/vfio-pci/unbind=0000:01:00.1",
                                          "bus/pci/drivers_probe=0000:01:00.1",
                                          "bus/pci/devices/0000:01:00.0/driver_override=\n",
                                          "bus/pci/drivers/vfio-pci/unbind=0000:01:00.0",
                                          "bus/pci/drivers_probe=0000:01:00.0"));
  EXPECT_FALSE(fs::exists(journal_));
}

TEST_F(BindingTest, AFailureHalfWayGivesBackWhatWasBound) {
  // The audio function's driver_override is refused: writing it fails.
  fs::remove(dir_.path() / "root/sys/bus/pci/devices" / kAudio / "driver_override");
  PassthroughBinder binder(kernel_, journal_);
  auto bound = binder.bind({kGpu, kAudio});
  ASSERT_FALSE(bound);
  EXPECT_THAT(bound.error().message(), HasSubstr("0000:01:00.1/driver_override failed"));
  EXPECT_EQ(driver(kGpu), "nvidia") << "the GPU went back";
  EXPECT_EQ(driver(kAudio), "snd_hda_intel");
  EXPECT_FALSE(fs::exists(journal_));
}

TEST_F(BindingTest, WithoutVfioPciLoadedItSaysSoAndTheDeviceComesBack) {
  fs::remove_all(dir_.path() / "root/sys/bus/pci/drivers/vfio-pci");
  PassthroughBinder binder(kernel_, journal_);
  auto bound = binder.bind({kGpu});
  ASSERT_FALSE(bound);
  EXPECT_THAT(bound.error().message(),
              HasSubstr("0000:01:00.0 did not go to vfio-pci (its driver is now 'none'); is the "
                        "vfio-pci module loaded?"));
  EXPECT_EQ(driver(kGpu), "nvidia");
}

TEST_F(BindingTest, AnUnbindThatHangsNamesWhoHoldsTheDeviceAndItComesBackAfterwards) {
  // Xorg has the GPU's DRM node open and a tool has its BAR mapped.
  const fs::path root = dir_.path() / "root";
  fs::create_directories(root / "sys/bus/pci/devices" / kGpu / "drm/card1");
  fs::create_directories(root / "sys/bus/pci/devices" / kGpu / "drm/renderD128");
  test::writeFileMakingDirs(root / "proc/812/comm", "Xorg\n");
  fs::create_directories(root / "proc/812/fd");
  fs::create_symlink("/dev/null", root / "proc/812/fd/0");
  fs::create_symlink("/dev/dri/card1", root / "proc/812/fd/14");
  fs::create_symlink("/dev/dri/card1", root / "proc/812/fd/15");
  test::writeFileMakingDirs(root / "proc/901/comm", "nvtop\n");
  test::writeFileMakingDirs(root / "proc/901/maps",
                            "7f3a00000000-7f3a01000000 rw-s 00000000 00:15 4242 "
                            "/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/resource1\n");
  test::writeFileMakingDirs(root / "proc/33/comm", "bash\n");
  kernel_.hangUnbindOf(kGpu);

  PassthroughBinder binder(kernel_, journal_);
  binder.unbindTimeout = std::chrono::milliseconds(200);
  auto bound = binder.bind({kAudio, kGpu});
  ASSERT_FALSE(bound);
  EXPECT_THAT(bound.error().message(),
              HasSubstr("Unbinding 0000:01:00.0 from nvidia did not finish within 0.2 s; it is "
                        "held by Xorg (pid 812) on /dev/dri/card1, nvtop (pid 901) on its memory "
                        "(BAR) mapped. Close them"))
      << bound.error().message();
  EXPECT_EQ(driver(kAudio), "snd_hda_intel") << "what was bound went back";
  EXPECT_TRUE(fs::exists(journal_)) << "the GPU's step stays until its unbind has finished";

  // Xorg lets go; the kernel's unbind finishes; the device comes back.
  kernel_.releaseUnbind();
  // Until the unbind has returned, giving back says it is still under way.
  Status back = binder.giveBack();
  for (int i = 0; i < 100 && !back; ++i) {
    EXPECT_THAT(back.error().message(), HasSubstr("0000:01:00.0 is still being unbound"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    back = binder.giveBack();
  }
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_FALSE(fs::exists(journal_));
}

TEST_F(BindingTest, TheBootGpuTakesTheConsoleAndFramebufferAlongAndGivesThemBack) {
  const fs::path sys = dir_.path() / "root/sys";
  test::writeFileMakingDirs(sys / "bus/pci/devices" / kGpu / "boot_vga", "1\n");
  kernel_.firmwareConsole();
  auto console = [&] { return kernel_.read("class/vtconsole/vtcon1/bind").valueOr("?"); };
  auto efifb = [&] {
    return fs::is_symlink(sys / "bus/platform/drivers/efi-framebuffer/efi-framebuffer.0");
  };

  PassthroughBinder binder(kernel_, journal_);
  ASSERT_TRUE(binder.bind({kGpu, kAudio}));
  EXPECT_EQ(console(), "0");
  EXPECT_FALSE(efifb());
  EXPECT_EQ(driver(kGpu), "vfio-pci");
  // Console and framebuffer first, each in the journal before it changed.
  ASSERT_GE(kernel_.writes.size(), 3U);
  EXPECT_EQ(kernel_.writes[0], "class/vtconsole/vtcon1/bind=0");
  EXPECT_EQ(kernel_.writes[1], "bus/platform/drivers/efi-framebuffer/unbind=efi-framebuffer.0");
  EXPECT_EQ(kernel_.writes[2], "bus/pci/devices/0000:01:00.0/driver_override=vfio-pci");
  auto pending = binder.pending();
  ASSERT_EQ(pending->size(), 4U);
  EXPECT_EQ((*pending)[0].kind, "vtconsole");
  EXPECT_EQ((*pending)[1].kind, "framebuffer");
  EXPECT_EQ((*pending)[1].originalDriver, "efi-framebuffer");

  kernel_.writes.clear();
  ASSERT_TRUE(binder.giveBack());
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_TRUE(efifb());
  EXPECT_EQ(console(), "1");
  // The GPU's own driver first, then the framebuffer, then the console.
  ASSERT_GE(kernel_.writes.size(), 2U);
  EXPECT_EQ(kernel_.writes[kernel_.writes.size() - 2],
            "bus/platform/drivers/efi-framebuffer/bind=efi-framebuffer.0");
  EXPECT_EQ(kernel_.writes.back(), "class/vtconsole/vtcon1/bind=1");

  // Killed right after the console went: the next agent puts it back.
  {
    PassthroughBinder killed(kernel_, journal_);
    killed.afterEachWrite = [] { return false; };
    ASSERT_FALSE(killed.bind({kGpu}));
  }
  EXPECT_EQ(console(), "0");
  EXPECT_TRUE(efifb());
  PassthroughBinder restarted(kernel_, journal_);
  ASSERT_TRUE(restarted.giveBack());
  EXPECT_EQ(console(), "1");
  EXPECT_EQ(driver(kGpu), "nvidia");
}

TEST_F(BindingTest, AnAgentKilledHalfWayLeavesAJournalItsSuccessorReplays) {
  {
    PassthroughBinder binder(kernel_, journal_);
    int writes = 0;
    binder.afterEachWrite = [&] { return ++writes < 5; };  // killed after the 5th write
    ASSERT_FALSE(binder.bind({kGpu, kAudio}));
  }
  // The GPU is on vfio-pci, the audio function unbound and on no driver.
  EXPECT_EQ(driver(kGpu), "vfio-pci");
  EXPECT_EQ(driver(kAudio), "");
  // The restarted agent finds the journal and gives every device back.
  PassthroughBinder restarted(kernel_, journal_);
  auto pending = restarted.pending();
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 2U);
  EXPECT_EQ((*pending)[1].address, kAudio);
  EXPECT_EQ((*pending)[1].originalDriver, "snd_hda_intel");
  ASSERT_TRUE(restarted.giveBack());
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_EQ(driver(kAudio), "snd_hda_intel");
  EXPECT_EQ(driver(kTwin), "nvidia");
  for (const auto& w : kernel_.writes)
    EXPECT_THAT(w, ::testing::Not(HasSubstr("new_id")));
}

}  // namespace
}  // namespace aula::agent
