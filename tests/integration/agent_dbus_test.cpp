// The workstation agent's D-Bus front door, org.aula.Agent1, on a real
// dbus-daemon the test starts with a system-bus policy and the agent's own
// policy file (agent/dbus/org.aula.Agent1.conf). Calls go through busctl as
// root, as another user (setpriv), and signals are read with sd-bus. Behind
// the bus: the real WorkstationService, binding on a fixture sysfs tree
// whose kernel acts on the writes (FakeKernel), and a hypervisor in memory,
// since a VFIO guest cannot start on these machines. The broker's answer
// comes from a fake grant source (the broker's side is not built yet).
#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>

#include "aula/common/process.hpp"

#include "agent_bus.hpp"
#include "fake_host.hpp"
#include "support/child_process.hpp"
#include "support/fake_hypervisor.hpp"
#include "support/temp_dir.hpp"
#include "sysfs_host.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr uid_t kNobody = 65534;
constexpr const char* kGpu = "0000:01:00.0";
constexpr const char* kAudio = "0000:01:00.1";

// The broker, as the agent sees it: rhea with her session may use the
// workstation; nobody else.
class FakeGrants final : public WorkstationGrants {
 public:
  explicit FakeGrants(fs::path state) : state_(std::move(state)) {}
  Result<WorkstationGrant> claim(std::string_view user, std::string_view session) override {
    if (user != "rhea" || session != "rhea-session") {
      return makeError(Errc::kPermissionDenied,
                       "{} may not use this workstation now; it is booked for rhea.", user);
    }
    WorkstationGrant grant;
    grant.user = "rhea";
    for (const auto* text : devices)
      grant.devices.push_back(*parseChosenDevice(text));
    WorkstationSpec& spec = grant.spec;
    spec.name = "aula-ws-7";
    spec.uuid = "0b5e7c2d-1f4a-4e6b-8c9d-3a2f1e0d9c8b";
    spec.desktopId = 7;
    spec.nvramPath = state_ / "nvram/aula-ws-7_VARS.fd";
    spec.diskPath = state_ / "desktops/aula-ws-7.qcow2";
    spec.evdevInputs = {"/dev/input/by-id/usb-kbd-event-kbd"};
    return grant;
  }
  Status release(std::string_view user) override {
    released.emplace_back(user);
    return okStatus();
  }
  std::vector<const char*> devices = {"0000:01:00.0=10de:2484", "0000:01:00.1"};
  std::vector<std::string> released;  // whom release() was called for

 private:
  fs::path state_;
};

// The system bus's default policy (from /usr/share/dbus-1/system.conf),
// listening in `dir`, with the agent's policy file included.
std::string busConfig(const fs::path& dir, const fs::path& policy) {
  return fmt::format(
      R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{}</include>
</busconfig>
)",
      dir.native(), policy.native());
}

// A dbus-daemon of the test's own, stopped with it.
class PrivateBus {
 public:
  PrivateBus(const fs::path& dir, const fs::path& policy) {
    fs::create_directories(dir);
    // Another user must reach the socket to be turned away by the policy:
    // the folder and the test's own above it are opened to everyone.
    for (const auto& folder : {dir.parent_path(), dir}) {
      fs::permissions(folder, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
    }
    test::writeFile(dir / "bus.conf", busConfig(dir, policy));
    daemon_ = std::make_unique<test::ChildProcess>(
        std::vector<std::string>{"/usr/bin/dbus-daemon",
                                 "--config-file=" + (dir / "bus.conf").native(), "--nofork",
                                 "--nopidfile"},
        dir / "dbus-daemon.log");
    address_ = "unix:path=" + (dir / "bus").native();
    for (int i = 0; i < 100 && !fs::exists(dir / "bus"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!fs::exists(dir / "bus"))
      throw std::runtime_error("dbus-daemon did not start: " + daemon_->log());
  }
  const std::string& address() const { return address_; }

 private:
  std::unique_ptr<test::ChildProcess> daemon_;
  std::string address_;
};

// StateChanged signals as a greeter would see them, read with sd-bus.
class SignalWatcher {
 public:
  explicit SignalWatcher(const std::string& address) {
    sd_bus* raw = nullptr;
    int r = sd_bus_new(&raw);
    bus_.reset(raw);
    if (r >= 0)
      r = sd_bus_set_address(raw, address.c_str());
    if (r >= 0)
      r = sd_bus_set_bus_client(raw, 1);
    if (r >= 0)
      r = sd_bus_start(raw);
    if (r >= 0)
      r = sd_bus_match_signal(raw, nullptr, kAgentBusName, kAgentObjectPath, "org.aula.Agent1",
                              "StateChanged", &SignalWatcher::onSignal, this);
    if (r < 0)
      throw std::runtime_error("the test's sd-bus client failed: " + std::to_string(r));
  }
  // The states seen until `state` arrives (or 20 s pass).
  std::vector<std::string> until(const std::string& state) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      while (sd_bus_process(bus_.get(), nullptr) > 0) {
      }
      if (!states.empty() && states.back() == state)
        break;
      sd_bus_wait(bus_.get(), 100000);
    }
    return states;
  }
  std::vector<std::string> states;
  std::vector<std::string> messages;

 private:
  static int onSignal(sd_bus_message* m, void* self, sd_bus_error* /*error*/) {
    const char* state = nullptr;
    const char* user = nullptr;
    const char* message = nullptr;
    if (sd_bus_message_read(m, "sss", &state, &user, &message) >= 0) {
      static_cast<SignalWatcher*>(self)->states.emplace_back(state);
      static_cast<SignalWatcher*>(self)->messages.emplace_back(message);
    }
    return 0;
  }
  struct Unref {
    void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
  };
  std::unique_ptr<sd_bus, Unref> bus_;
};

class AgentDbusTest : public ::testing::Test {
 protected:
  AgentDbusTest() {
    test::fixtureMachine("clean_desktop").build(host_);
    kernel_.adoptDevices();
    EXPECT_TRUE(hypervisor_.watch([this](const DomainEvent& e) { service_.onDomainEvent(e); }));
  }

  // busctl call ... as root, or as `uid` when given.
  process::Outcome call(const std::string& address, std::vector<std::string> args,
                        std::optional<uid_t> uid = std::nullopt) {
    std::vector<std::string> argv;
    if (uid) {
      argv = {"setpriv", "--reuid=" + std::to_string(*uid), "--regid=" + std::to_string(*uid),
              "--clear-groups"};
    }
    for (const char* part : {"busctl", "--timeout=20"})
      argv.emplace_back(part);
    argv.push_back("--address=" + address);
    for (const char* part : {"call", kAgentBusName, kAgentObjectPath, "org.aula.Agent1"})
      argv.emplace_back(part);
    argv.insert(argv.end(), args.begin(), args.end());
    auto outcome = runner_.run({.argv = argv, .timeout = std::chrono::seconds(30)});
    if (!outcome)
      throw std::runtime_error(outcome.error().message());
    return *outcome;
  }
  std::string driver(const char* address) { return kernel_.driverOf(address).valueOr("?"); }

  test::TempDir dir_;
  test::FakeHost host_{dir_.path() / "root"};
  test::FakeKernel kernel_{dir_.path() / "root"};
  test::FakeHypervisor hypervisor_;
  FakeGrants grants_{dir_.path() / "state"};
  WorkstationService service_{hypervisor_, kernel_, dir_.path() / "passthrough.journal",
                              [root = dir_.path() / "root"] { return readHostFacts(root); },
                              grants_};
  process::SystemRunner runner_;
  PrivateBus bus_{dir_.path() / "bus", AULA_AGENT_BUS_POLICY};
};

TEST_F(AgentDbusTest, RootSeesTheStatusTheDevicesAndPreflight) {
  auto agentBus = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  auto status = call(bus_.address(), {"Status"});
  ASSERT_TRUE(status.succeeded()) << status.err;
  EXPECT_EQ(status.out, "sss \"idle\" \"\" \"The workstation is free.\"\n");

  auto devices = call(bus_.address(), {"Devices"});
  ASSERT_TRUE(devices.succeeded()) << devices.err;
  EXPECT_THAT(devices.out, HasSubstr("0000:01:00.0"));
  EXPECT_THAT(devices.out, HasSubstr("10de"));

  auto passed = call(bus_.address(), {"Preflight", "as", "2", kGpu, kAudio});
  ASSERT_TRUE(passed.succeeded()) << passed.err;
  EXPECT_THAT(passed.out, testing::StartsWith("ba(sss) true "));
  EXPECT_THAT(passed.out, HasSubstr("\"PASS\" \"The IOMMU is on (2 groups).\""));

  auto bad = call(bus_.address(), {"Preflight", "as", "1", "gpu"});
  EXPECT_FALSE(bad.succeeded());
  EXPECT_THAT(bad.err, HasSubstr("such as 0000:01:00.0"));
}

TEST_F(AgentDbusTest, TheUserTheBrokerAllowsGetsTheVmAndTheDevicesComeBackWhenItStops) {
  auto agentBus = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  SignalWatcher watcher(bus_.address());

  auto started = call(bus_.address(), {"Start", "ss", "rhea", "rhea-session"});
  ASSERT_TRUE(started.succeeded()) << started.err;
  EXPECT_THAT(watcher.until("running"), testing::ElementsAre("starting", "running"));
  EXPECT_EQ(driver(kGpu), "vfio-pci");
  EXPECT_EQ(driver(kAudio), "vfio-pci");
  ASSERT_TRUE(hypervisor_.domains.contains("aula-ws-7"));
  EXPECT_EQ(hypervisor_.domains["aula-ws-7"].state, "running");
  EXPECT_THAT(hypervisor_.domains["aula-ws-7"].xml,
              HasSubstr("<hostdev mode='subsystem' type='pci' managed='no'>"));
  EXPECT_EQ(call(bus_.address(), {"Status"}).out,
            "sss \"running\" \"rhea\" \"The workstation runs.\"\n");
  // A restarted agent would leave the running VM its devices.
  EXPECT_EQ(test::readFile(dir_.path() / kWorkstationMarker), "aula-ws-7\nrhea\n");

  // One user at a time.
  auto again = call(bus_.address(), {"Start", "ss", "rhea", "rhea-session"});
  EXPECT_FALSE(again.succeeded());
  EXPECT_THAT(again.err, HasSubstr("The workstation is running for rhea"));

  auto stopped = call(bus_.address(), {"Stop", "b", "false"});
  ASSERT_TRUE(stopped.succeeded()) << stopped.err;
  // The guest powers off; libvirt says so.
  hypervisor_.handler({"aula-ws-7", "shutdown", "finished"});
  EXPECT_THAT(watcher.until("idle"),
              testing::ElementsAre("starting", "running", "stopping", "idle"));
  EXPECT_EQ(watcher.messages.back(),
            "The workstation has stopped. Its devices are back with the host.");
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_EQ(driver(kAudio), "snd_hda_intel");
  EXPECT_FALSE(fs::exists(dir_.path() / "passthrough.journal"));
  EXPECT_FALSE(fs::exists(dir_.path() / kWorkstationMarker));
  // The broker hears that rhea no longer has it.
  EXPECT_EQ(grants_.released, std::vector<std::string>{"rhea"});
}

// The agent restarts while the VM runs: the new service says it runs, for
// whom, and still gives the devices back when it stops.
TEST_F(AgentDbusTest, AServiceStartedAgainAdoptsTheRunningVm) {
  ASSERT_TRUE(service_.start("rhea", "rhea-session"));
  service_.waitIdleWorker();
  ASSERT_EQ(service_.status().state, WorkstationState::kRunning);

  WorkstationService again{hypervisor_, kernel_, dir_.path() / "passthrough.journal",
                           [root = dir_.path() / "root"] { return readHostFacts(root); }, grants_};
  EXPECT_TRUE(hypervisor_.watch([&again](const DomainEvent& e) { again.onDomainEvent(e); }));
  again.adoptRunning();
  auto agentBus = AgentBus::start(again, {.address = bus_.address()});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  EXPECT_EQ(call(bus_.address(), {"Status"}).out,
            "sss \"running\" \"rhea\" \"The workstation runs (it kept running while the agent "
            "restarted).\"\n");
  EXPECT_EQ(driver(kGpu), "vfio-pci");

  ASSERT_TRUE(call(bus_.address(), {"Stop", "b", "true"}).succeeded());
  hypervisor_.handler({"aula-ws-7", "stopped", "destroyed"});
  EXPECT_EQ(again.status().state, WorkstationState::kIdle) << again.status().message;
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_EQ(grants_.released, std::vector<std::string>{"rhea"});
  EXPECT_FALSE(fs::exists(dir_.path() / kWorkstationMarker));
}

// It stopped while the agent was away: the new service gives the devices back.
TEST_F(AgentDbusTest, AVmThatStoppedWhileTheAgentWasAwayGetsItsDevicesBack) {
  ASSERT_TRUE(service_.start("rhea", "rhea-session"));
  service_.waitIdleWorker();
  hypervisor_.domains["aula-ws-7"].state = "shut off";  // nobody heard it
  WorkstationService again{hypervisor_, kernel_, dir_.path() / "passthrough.journal",
                           [root = dir_.path() / "root"] { return readHostFacts(root); }, grants_};
  again.adoptRunning();
  EXPECT_EQ(again.status().state, WorkstationState::kIdle) << again.status().message;
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_EQ(grants_.released, std::vector<std::string>{"rhea"});
}

TEST_F(AgentDbusTest, AVmThatWillNotStartLeavesTheHostItsDevices) {
  auto agentBus = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  SignalWatcher watcher(bus_.address());
  hypervisor_.failStarts = true;
  ASSERT_TRUE(call(bus_.address(), {"Start", "ss", "rhea", "rhea-session"}).succeeded());
  EXPECT_THAT(watcher.until("failed"), testing::ElementsAre("starting", "failed"));
  EXPECT_THAT(watcher.messages.back(), HasSubstr("The VM did not start: libvirt refused the "
                                                 "domain. The devices are back with the host."));
  EXPECT_EQ(driver(kGpu), "nvidia");
  EXPECT_EQ(driver(kAudio), "snd_hda_intel");
  service_.waitIdleWorker();
  EXPECT_EQ(grants_.released, std::vector<std::string>{"rhea"});  // her claim is given up
}

TEST_F(AgentDbusTest, ChangedHardwareIsRefusedBeforeAnythingIsTouched) {
  auto agentBus = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  grants_.devices = {"0000:01:00.0=1002:67df"};  // the admin chose an AMD card there
  auto started = call(bus_.address(), {"Start", "ss", "rhea", "rhea-session"});
  EXPECT_FALSE(started.succeeded());
  EXPECT_THAT(started.err, HasSubstr("Passthrough cannot work on this workstation"));
  EXPECT_THAT(started.err, HasSubstr("is now 10de:2484, not the 1002:67df the admin chose"));
  EXPECT_TRUE(kernel_.writes.empty());
  EXPECT_EQ(call(bus_.address(), {"Status"}).out,
            "sss \"idle\" \"\" \"The workstation is free.\"\n");
}

TEST_F(AgentDbusTest, CallersWhoAreNotAllowedAreTurnedAway) {
  auto agentBus = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  // A user the broker does not allow: its sentence, and nothing changes.
  auto mallory = call(bus_.address(), {"Start", "ss", "mallory", "stolen"});
  EXPECT_FALSE(mallory.succeeded());
  EXPECT_THAT(mallory.err, HasSubstr("mallory may not use this workstation now"));
  EXPECT_TRUE(kernel_.writes.empty());

  // Another local user: the bus policy turns them away before the agent.
  auto other = call(bus_.address(), {"Status"}, kNobody);
  EXPECT_FALSE(other.succeeded());
  EXPECT_THAT(other.err, HasSubstr("Access denied")) << other.err;
  auto otherStart = call(bus_.address(), {"Start", "ss", "rhea", "rhea-session"}, kNobody);
  EXPECT_FALSE(otherStart.succeeded());
  EXPECT_TRUE(kernel_.writes.empty());
}

TEST_F(AgentDbusTest, TheGreetersUserIsLetInByThePolicyAndTheAgentOthersOnlyByThePolicy) {
  // The same policy file with the greeter's user being nobody (no user
  // aula exists on the test machine).
  std::string policy = test::readFile(AULA_AGENT_BUS_POLICY);
  const std::string aula = "<policy user=\"aula\">";
  ASSERT_NE(policy.find(aula), std::string::npos);
  policy.replace(policy.find(aula), aula.size(), "<policy user=\"nobody\">");
  test::writeFile(dir_.path() / "greeter-is-nobody.conf", policy);
  PrivateBus bus(dir_.path() / "bus2", dir_.path() / "greeter-is-nobody.conf");
  {
    // The policy lets nobody through, but the agent was not told nobody
    // is its greeter: it answers with its own refusal.
    auto agentBus = AgentBus::start(service_, {.address = bus.address()});
    ASSERT_TRUE(agentBus) << agentBus.error().message();
    auto refused = call(bus.address(), {"Status"}, kNobody);
    EXPECT_FALSE(refused.succeeded());
    EXPECT_THAT(refused.err,
                HasSubstr("Only the greeter and root may use the workstation agent, not uid "
                          "65534"));
  }
  auto agentBus = AgentBus::start(service_, {.address = bus.address(), .allowedUids = {kNobody}});
  ASSERT_TRUE(agentBus) << agentBus.error().message();
  auto status = call(bus.address(), {"Status"}, kNobody);
  ASSERT_TRUE(status.succeeded()) << status.err;
  EXPECT_THAT(status.out, HasSubstr("\"idle\""));
  // Any other user is still stopped by the bus.
  auto daemonUser = call(bus.address(), {"Status"}, 1);
  EXPECT_FALSE(daemonUser.succeeded());
  EXPECT_THAT(daemonUser.err, HasSubstr("Access denied"));
}

TEST_F(AgentDbusTest, ASecondAgentCannotTakeTheName) {
  // A second agent on the same bus cannot take the name.
  auto first = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_TRUE(first) << first.error().message();
  auto second = AgentBus::start(service_, {.address = bus_.address()});
  ASSERT_FALSE(second);
  EXPECT_THAT(second.error().message(), HasSubstr("Cannot take the name org.aula.Agent1"));
}

}  // namespace
}  // namespace aula::agent
