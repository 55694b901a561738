// aula-agent passthrough bind | give-back | pending, the real program on
// fixture sysfs trees: preflight refuses before anything changes; and the
// crash test: the agent is killed (SIGKILL) in the middle of a bind, stuck
// on the driver's unbind (a FIFO nobody reads, as the kernel's unbind
// blocks while the device is held), and the next run gives the device back
// from the journal it left.
#include <chrono>
#include <csignal>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "aula/agent/passthrough_binding.hpp"
#include "aula/common/process.hpp"

#include "fake_host.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class PassthroughCliTest : public ::testing::Test {
 protected:
  process::Outcome agent(std::vector<std::string> args) {
    std::vector<std::string> argv{AULA_AGENT_BIN, "passthrough"};
    argv.insert(argv.end(), args.begin(), args.end());
    for (const auto& extra : {"--root=" + root_.native(), "--state-dir=" + state_.native()})
      argv.push_back(extra);
    auto outcome = runner_.run({.argv = argv, .timeout = std::chrono::seconds(60)});
    if (!outcome)
      throw std::runtime_error(outcome.error().message());
    return *outcome;
  }
  std::string file(const std::string& path) {
    return fs::exists(root_ / path) ? test::readFile(root_ / path) : "(none)";
  }

  test::TempDir dir_;
  fs::path root_ = dir_.path() / "root";
  fs::path state_ = dir_.path() / "state";
  process::SystemRunner runner_;
};

TEST_F(PassthroughCliTest, PreflightFailingChangesNothing) {
  test::FakeHost host(root_);
  test::fixtureMachine("iommu_off").build(host);
  auto bound = agent({"bind", "--device", "0000:01:00.0"});
  EXPECT_EQ(bound.exitCode, 1);
  EXPECT_THAT(bound.out, HasSubstr("FAIL  The firmware has an IOMMU (DMAR), but the kernel"));
  EXPECT_THAT(bound.out, HasSubstr("Nothing was changed: preflight failed."));
  EXPECT_FALSE(fs::exists(state_ / kPassthroughJournal));
  EXPECT_EQ(file("sys/bus/pci/devices/0000:01:00.0/driver_override"), "(none)");

  auto pending = agent({"pending"});
  EXPECT_EQ(pending.exitCode, 0);
  EXPECT_THAT(pending.out, HasSubstr("The journal is empty"));
  auto bad = agent({"bind", "--device", "gpu"});
  EXPECT_EQ(bad.exitCode, 2);
  EXPECT_THAT(bad.err, HasSubstr("such as 0000:01:00.0"));
}

TEST_F(PassthroughCliTest, AnAgentKilledInTheMiddleOfABindIsUndoneByTheNextRun) {
  test::FakeHost host(root_);
  test::fixtureMachine("clean_desktop").build(host);
  test::FakeKernel kernel(root_);
  kernel.adoptDevices();
  // The driver's unbind blocks, as Linux's does while a program holds the
  // card: here a FIFO that nobody reads.
  const fs::path unbind = root_ / "sys/bus/pci/drivers/nvidia/unbind";
  fs::remove(unbind);
  ASSERT_EQ(::mkfifo(unbind.c_str(), 0600), 0);

  test::ChildProcess bind(
      {AULA_AGENT_BIN, "passthrough", "bind", "--device", "0000:01:00.0=10de:2484", "--device",
       "0000:01:00.1", "--root=" + root_.native(), "--state-dir=" + state_.native()},
      dir_.path() / "bind.log");
  const std::string override = "sys/bus/pci/devices/0000:01:00.0/driver_override";
  for (int i = 0; i < 200 && file(override) != "vfio-pci\n" && file(override) != "vfio-pci"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  ASSERT_THAT(file(override), HasSubstr("vfio-pci")) << bind.log();
  ASSERT_TRUE(bind.running()) << "the bind should be stuck on the unbind\n" << bind.log();
  EXPECT_EQ(bind.stop(SIGKILL), 128 + SIGKILL);

  // What the killed agent left: the journal, and the override it wrote.
  auto pending = agent({"pending"});
  ASSERT_EQ(pending.exitCode, 0) << pending.err;
  EXPECT_EQ(pending.out, "pci  0000:01:00.0  was nvidia\n");

  fs::remove(unbind);
  test::writeFile(unbind, "");
  auto back = agent({"give-back"});
  ASSERT_EQ(back.exitCode, 0) << back.out << back.err;
  EXPECT_THAT(back.out, HasSubstr("Every device in the journal is back with the host."));
  EXPECT_EQ(kernel.overrideOf("0000:01:00.0").valueOr("?"), "");
  EXPECT_EQ(kernel.driverOf("0000:01:00.0").valueOr("?"), "nvidia");
  EXPECT_FALSE(fs::exists(state_ / kPassthroughJournal));
}

}  // namespace
}  // namespace aula::agent
