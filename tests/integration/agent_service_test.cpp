// Broker and agent together, for real: aula-broker and aula-agent run as
// processes, the agent enrolled with a join token and speaking mutual TLS to
// the broker, guests on the real qemu:///system under TCG. A student's
// console request starts their desktop and returns a one-time ticket; the
// test looks at the guest's screen through SPICE over TLS with it
// (aula-spice-probe), and checks what a viewer, a teacher or an admin would:
// wrong, expired and replaced tickets are refused, a second viewer kicks the
// first out, a non-persistent desktop forgets its changes, the agent and
// the broker can each be restarted (the agent by SIGKILL) while desktops
// run, and a guest the broker does not know is reported, never stopped.
//
// The environment is built once for the suite (libvirtd, broker, agent,
// school); each test makes its own desktops and removes them.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "aula/agent/enrolment.hpp"
#include "aula/broker/server.hpp"
#include "aula/common/config.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/process.hpp"

#include "support/agent_stack.hpp"
#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/libvirtd_fixture.hpp"
#include "support/screen.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

namespace fs = std::filesystem;
using json::Json;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kTicketSeconds = 8;

// What aula-spice-probe did: its exit code and its output line(s).
struct ProbeResult {
  int exit = -1;
  std::string output;
};

class AgentServiceTest : public AgentStackTest {
 protected:
  static void SetUpTestSuite() { startStack(AgentStackOptions{.ticketSeconds = kTicketSeconds}); }

  std::int64_t newDesktop(const std::string& name, bool persistent) {
    return AgentStackTest::newDesktop(name, env_->templateId, persistent);
  }

  ApiResponse console(std::int64_t id) {
    return env_->api->call("POST", fmt::format("/api/v1/desktops/{}/console", id),
                           env_->studentToken);
  }

  Json desktop(std::int64_t id) {
    return env_->admin("GET", fmt::format("/api/v1/desktops/{}", id));
  }

  // Runs the probe with the console's connection details and `ticket`.
  ProbeResult probe(const Json& descriptor, const std::string& ticket,
                    std::vector<std::string> extra) {
    static int counter = 0;
    fs::path base = env_->dir / fmt::format("probe-{}", ++counter);
    writeFile(base.string() + ".ticket", ticket);
    writeFile(base.string() + ".ca", descriptor["ca"].get<std::string>());
    std::vector<std::string> argv = {AULA_SPICE_PROBE_BIN,
                                     "--host",
                                     descriptor["host"].get<std::string>(),
                                     "--ticket-file",
                                     base.string() + ".ticket",
                                     "--timeout",
                                     "20"};
    if (descriptor["tls_port"].is_number()) {
      argv.insert(argv.end(), {"--tls-port", std::to_string(descriptor["tls_port"].get<int>()),
                               "--ca-file", base.string() + ".ca", "--host-subject",
                               descriptor["host_subject"].get<std::string>()});
    } else {
      argv.insert(argv.end(), {"--port", std::to_string(descriptor["port"].get<int>())});
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto out = runProgram(argv, 90s);
    return {out.exitCode, out.out + out.err};
  }

  // Asks for consoles until the guest's text shows (it boots in seconds
  // under TCG); the last console's descriptor.
  Json screenUntilText(std::int64_t id, ScreenShares* shares) {
    Json descriptor;
    fs::path shot = env_->dir / fmt::format("desktop-{}.ppm", id);
    for (int attempt = 0; attempt < 20; ++attempt) {
      auto r = console(id);
      if (r.status != 200)
        throw std::runtime_error("console: " + r.describe());
      descriptor = r.body;
      auto p = probe(descriptor, descriptor["ticket"], {"--screenshot", shot.string()});
      if (p.exit == 0) {
        *shares = analysePpm(shot);
        if (shares->white > 5 && shares->blue > 40)
          return descriptor;
      }
      std::this_thread::sleep_for(2s);
    }
    return descriptor;
  }
};

TEST_F(AgentServiceTest, AgentTakesCommandsFromTheBrokerOnly) {
  // The agent's own client certificate is of the same CA, but not the broker's.
  auto ca = readFile(env_->agentState / "ca.crt");
  http::Client asAgent(
      http::ClientOptions{.tls = {.caPem = ca,
                                  .clientCertPem = readFile(env_->agentState / "agent.crt"),
                                  .clientKeyPem = readFile(env_->agentState / "agent.key")}});
  auto url = fmt::format("https://127.0.0.1:{}/v1/domains", env_->agentPort);
  auto refused = asAgent.get(url);
  ASSERT_TRUE(refused) << refused.error().message();
  EXPECT_EQ(refused->status, 403);
  EXPECT_THAT(refused->body, HasSubstr("only the broker"));
  // Without any certificate the handshake itself fails.
  http::Client anonymous(http::ClientOptions{.tls = {.caPem = ca}});
  EXPECT_FALSE(anonymous.get(url));
}

TEST_F(AgentServiceTest, ConsoleShowsTheGuestAndItsTicketWorksOnceForAWhile) {
  auto id = newDesktop("console", true);
  ScreenShares shares;
  Json first = screenUntilText(id, &shares);
  EXPECT_GT(shares.white, 5) << "No text on the guest's screen seen through SPICE.";
  EXPECT_GT(shares.blue, 40);
  EXPECT_EQ(desktop(id)["state"], "running");
  EXPECT_EQ(domainState(fmt::format("aula-{}", id)), "running");

  // What the viewer gets: where, how long, and whom to trust.
  EXPECT_EQ(first["host"], "127.0.0.1");
  EXPECT_EQ(first["ca"], env_->caPem);
  EXPECT_THAT(first["host_subject"].get<std::string>(), HasSubstr("CN=hv1"));
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  EXPECT_LE(first["expires_at"].get<std::int64_t>(), now + 60);
  EXPECT_GT(first["expires_at"].get<std::int64_t>(), now);
  if (env_->libvirtd->spiceTls()) {
    EXPECT_TRUE(first["tls_port"].is_number());
    EXPECT_TRUE(first["port"].is_null()) << "A plain SPICE port is open outside tests' config.";
  }

  // A wrong ticket is refused.
  EXPECT_EQ(probe(first, "not-the-ticket", {}).exit, 3);

  // A viewer holding the current ticket is kicked out by the next one.
  auto r = console(id);
  ASSERT_EQ(r.status, 200) << r.describe();
  Json second = r.body;
  fs::path holdTicket = env_->dir / "hold.ticket";
  fs::path holdCa = env_->dir / "hold.ca";
  writeFile(holdTicket, second["ticket"].get<std::string>());
  writeFile(holdCa, second["ca"].get<std::string>());
  std::vector<std::string> holdArgs = {AULA_SPICE_PROBE_BIN, "--host", "127.0.0.1", "--ticket-file",
                                       holdTicket.string(),  "--hold", "40"};
  if (second["tls_port"].is_number()) {
    holdArgs.insert(holdArgs.end(),
                    {"--tls-port", std::to_string(second["tls_port"].get<int>()), "--ca-file",
                     holdCa.string(), "--host-subject", second["host_subject"].get<std::string>()});
  } else {
    holdArgs.insert(holdArgs.end(), {"--port", std::to_string(second["port"].get<int>())});
  }
  ChildProcess viewer(holdArgs, env_->dir / "hold.log");
  auto holdLog = [&] { return fileTail(env_->dir / "hold.log", 20); };
  ASSERT_TRUE(waitFor([&] { return holdLog().find("connected") != std::string::npos; }, 20s))
      << holdLog();
  auto third = console(id);
  ASSERT_EQ(third.status, 200) << third.describe();
  EXPECT_TRUE(waitFor([&] { return !viewer.running(); }, 15s))
      << "The first viewer stayed connected after a new ticket.";
  EXPECT_EQ(viewer.stop(SIGKILL), -1);  // it had ended on its own
  EXPECT_THAT(holdLog(), HasSubstr("disconnected by server"));
  // The replaced ticket no longer works; the new one does.
  EXPECT_EQ(probe(second, second["ticket"], {}).exit, 3);
  EXPECT_EQ(probe(third.body, third.body["ticket"], {}).exit, 0);

  // A ticket nobody replaced stops working when it expires.
  auto fourth = console(id);
  ASSERT_EQ(fourth.status, 200);
  std::this_thread::sleep_for(std::chrono::seconds(kTicketSeconds + 2));
  EXPECT_EQ(probe(fourth.body, fourth.body["ticket"], {}).exit, 3)
      << "An expired ticket still got in.";
}

TEST_F(AgentServiceTest, ANonPersistentDesktopForgetsItsChangesAPersistentOneKeepsThem) {
  auto kept = newDesktop("persistent", true);
  auto fresh = newDesktop("fresh", false);
  for (auto id : {kept, fresh}) {
    auto r =
        env_->api->call("POST", fmt::format("/api/v1/desktops/{}/start", id), env_->studentToken);
    ASSERT_EQ(r.status, 200) << r.describe();
    auto name = fmt::format("aula-{}", id);
    // The guest writes 64 KiB at 1 MiB.
    EXPECT_THAT(qemuIo(name, "write -P 0xcd 1M 64k"), HasSubstr("wrote 65536/65536"));
    auto read = qemuIo(name, "read -P 0xcd 1M 64k");
    EXPECT_THAT(read, HasSubstr("read 65536/65536"));
    EXPECT_THAT(read, Not(HasSubstr("verification failed")));
    r = env_->api->call("POST", fmt::format("/api/v1/desktops/{}/stop?force=true", id),
                        env_->studentToken);
    ASSERT_EQ(r.status, 200) << r.describe();
    EXPECT_EQ(r.body["state"], "stopped");
    EXPECT_EQ(domainState(name), "shut off");
  }
  // The non-persistent desktop's overlay went with the stop.
  EXPECT_FALSE(fs::exists(env_->desktops / fmt::format("{}/{}.qcow2", env_->studentId, fresh)));
  EXPECT_TRUE(fs::exists(env_->desktops / fmt::format("{}/{}.qcow2", env_->studentId, kept)));
  for (auto id : {kept, fresh}) {
    auto r =
        env_->api->call("POST", fmt::format("/api/v1/desktops/{}/start", id), env_->studentToken);
    ASSERT_EQ(r.status, 200) << r.describe();
  }
  auto keptRead = qemuIo(fmt::format("aula-{}", kept), "read -P 0xcd 1M 64k");
  EXPECT_THAT(keptRead, HasSubstr("read 65536/65536"));
  EXPECT_THAT(keptRead, Not(HasSubstr("verification failed"))) << "A persistent desktop lost data.";
  EXPECT_THAT(qemuIo(fmt::format("aula-{}", fresh), "read -P 0xcd 1M 64k"),
              HasSubstr("Pattern verification failed"))
      << "A non-persistent desktop kept what it wrote before its stop.";
}

TEST_F(AgentServiceTest, AGuestThatStopsOnItsOwnIsSeenStoppedByTheBroker) {
  auto id = newDesktop("events", true);
  auto r =
      env_->api->call("POST", fmt::format("/api/v1/desktops/{}/start", id), env_->studentToken);
  ASSERT_EQ(r.status, 200) << r.describe();
  // Pulled off behind the broker's back: libvirt's event reaches the broker
  // through the agent.
  virsh({"destroy", fmt::format("aula-{}", id)});
  EXPECT_TRUE(waitFor([&] { return desktop(id)["state"] == "stopped"; }, 10s))
      << "The broker still thinks the desktop runs.";
}

TEST_F(AgentServiceTest, AnAgentKilledWhileGuestsRunAdoptsThemWhenItComesBack) {
  auto id = newDesktop("adopted", true);
  ScreenShares shares;
  screenUntilText(id, &shares);
  ASSERT_GT(shares.white, 5);
  auto name = fmt::format("aula-{}", id);

  EXPECT_EQ(env_->agent->stop(SIGKILL), 128 + SIGKILL);
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(domainState(name), "running") << "The guest died with its agent.";
  EXPECT_EQ(desktop(id)["state"], "running");

  env_->startAgent();
  EXPECT_THAT(readFile(env_->agentLog), HasSubstr("1 running; they are left as they are"));
  EXPECT_EQ(domainState(name), "running");
  // The new agent serves the adopted guest: a console works, a stop works.
  Json seen = screenUntilText(id, &shares);
  EXPECT_GT(shares.white, 5) << "No console through the restarted agent.";
  auto r = env_->api->call("POST", fmt::format("/api/v1/desktops/{}/stop", id), env_->studentToken);
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(domainState(name), "shut off");
}

TEST_F(AgentServiceTest, ABrokerRestartLeavesDesktopsRunningAndCatchesUp) {
  auto stays = newDesktop("stays", true);
  auto stopsMeanwhile = newDesktop("stops-meanwhile", true);
  for (auto id : {stays, stopsMeanwhile}) {
    auto r =
        env_->api->call("POST", fmt::format("/api/v1/desktops/{}/start", id), env_->studentToken);
    ASSERT_EQ(r.status, 200) << r.describe();
  }
  EXPECT_EQ(env_->broker->stop(SIGTERM), 0);
  // While the broker is away, one guest stops; the agent keeps the event.
  virsh({"destroy", fmt::format("aula-{}", stopsMeanwhile)});
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(domainState(fmt::format("aula-{}", stays)), "running");

  env_->startBroker();
  env_->adminToken = env_->api->login("admin", BrokerFixture::kAdminPassword);
  env_->studentToken = env_->api->login(kStudent, kStudentPassword);
  EXPECT_TRUE(waitFor([&] { return desktop(stopsMeanwhile)["state"] == "stopped"; }, 15s))
      << "The broker did not catch up with a guest that stopped while it was away.";
  EXPECT_EQ(desktop(stays)["state"], "running");
  EXPECT_EQ(domainState(fmt::format("aula-{}", stays)), "running");
  EXPECT_EQ(env_->admin("GET", fmt::format("/api/v1/hosts/{}", env_->hostId))["state"], "online");
}

TEST_F(AgentServiceTest, AGuestTheBrokerDoesNotKnowIsReportedAndLeftRunning) {
  // A domain made by hand on the host, outside Aula.
  fs::path xml = env_->dir / "stray.xml";
  writeFile(xml,
            "<domain type='qemu'><name>aula-stray</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os></domain>\n");
  ASSERT_THAT(virsh({"create", xml.string()}), HasSubstr("created"));
  Json host;
  EXPECT_TRUE(waitFor(
      [&] {
        host = env_->admin("GET", fmt::format("/api/v1/hosts/{}", env_->hostId));
        return host["unknown_guests"].dump().find("aula-stray") != std::string::npos;
      },
      15s))
      << host.dump();
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(domainState("aula-stray"), "running") << "An unknown guest was stopped.";
  virsh({"destroy", "aula-stray"});
}

}  // namespace
}  // namespace aula::test
