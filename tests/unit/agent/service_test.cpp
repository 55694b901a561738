// The agent's service above a fake hypervisor: who may call it, what each
// command does to disks and domains, the ticket rules, the heartbeat body,
// and the event queue. The fake stands where LibvirtHypervisor stands on a
// host (agent_service_test runs the same service over real libvirt).
#include "aula/agent/service.hpp"

#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/agent/disks.hpp"
#include "aula/agent/host_load.hpp"
#include "aula/agent/hypervisor.hpp"
#include "aula/agent/settings.hpp"
#include "aula/common/config.hpp"
#include "aula/common/process.hpp"

#include "support/fake_hypervisor.hpp"
#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using json::Json;
using test::FakeHypervisor;
using ::testing::HasSubstr;
using ::testing::Not;

class AgentServiceOverFakeTest : public ::testing::Test {
 protected:
  AgentServiceOverFakeTest()
      : runner_([](const process::Command& c) -> Result<process::Outcome> {
          // qemu-img create: the overlay appears.
          if (c.argv.size() > 1 && c.argv[1] == "create")
            test::writeFile(c.argv.back(), "overlay");
          return process::Outcome{.exitCode = 0};
        }),
        disks_({{"templates", dir_ / "templates"}, {"desktops", dir_ / "desktops"}}, runner_),
        service_(options(), hv_, disks_) {
    fs::create_directories(dir_ / "templates");
    fs::create_directories(dir_ / "desktops");
    test::writeFile(dir_ / "templates" / "base.qcow2", "base");
    // The host's /proc as the service reads it: four CPUs, 16000 MiB.
    fs::create_directories(dir_ / "root" / "proc");
    test::writeFile(dir_ / "root" / "proc" / "stat",
                    "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\ncpu1 1 2 3 4\ncpu2 1 2 3 4\n"
                    "cpu3 1 2 3 4\nintr 1 2 3\n");
    test::writeFile(dir_ / "root" / "proc" / "meminfo",
                    "MemTotal:       16384000 kB\nMemFree: 1 kB\nMemAvailable:    8192000 kB\n");
  }

  ServiceOptions options() {
    ServiceOptions o;
    o.settings.spiceListen = "0.0.0.0";
    o.settings.network = "lab";
    o.settings.storage = {{"templates", dir_ / "templates"}, {"desktops", dir_ / "desktops"}};
    o.domainType = "qemu";
    o.publicHost = "hv1.school.lan";
    o.defaultShutdownGrace = std::chrono::seconds(1);
    o.hostRoot = dir_ / "root";
    return o;
  }

  static Json spec(std::int64_t id, bool persistent = true) {
    return Json{{"desktop_id", id},
                {"owner", "alice"},
                {"vcpus", 2},
                {"memory_mb", 1024},
                {"video", "qxl"},
                {"base_storage", "templates"},
                {"base_disk", "base.qcow2"},
                {"disk_path", fmt::format("7/{}.qcow2", id)},
                {"persistent", persistent}};
  }

  http::ServerResponse call(const std::string& method, const std::string& path, const Json& body,
                            std::optional<std::string> cn = std::string(kBrokerCommonName)) {
    http::ServerRequest r;
    r.method = method;
    r.path = path;
    r.target = path;
    r.body = body.is_null() ? "" : body.dump();
    r.clientCommonName = std::move(cn);
    return service_.handle(r);
  }

  test::TempDir dir_;
  process::RecordingRunner runner_;
  Disks disks_;
  FakeHypervisor hv_;
  AgentService service_;
};

TEST_F(AgentServiceOverFakeTest, OnlyTheBrokersCertificateMayCommand) {
  EXPECT_EQ(call("GET", "/v1/domains", nullptr, std::nullopt).status, 401);
  auto other = call("GET", "/v1/domains", nullptr, std::string("hv2"));
  EXPECT_EQ(other.status, 403);
  EXPECT_THAT(other.body, HasSubstr("only the broker"));
  EXPECT_EQ(call("GET", "/v1/domains", nullptr).status, 200);
  EXPECT_EQ(call("GET", "/v1/nothing", nullptr).status, 404);
}

TEST_F(AgentServiceOverFakeTest, StartMakesTheOverlayAndALockedSpiceDisplay) {
  auto r = call("POST", "/v1/domains/aula-42/start", spec(42));
  ASSERT_EQ(r.status, 200) << r.body;
  auto body = json::parse(r.body).value();
  EXPECT_EQ(body["running"], true);
  EXPECT_EQ(body["spice_tls_port"], 5951);
  EXPECT_TRUE(fs::exists(dir_ / "desktops" / "7" / "42.qcow2"));
  const auto& xml = hv_.domains["aula-42"].xml;
  EXPECT_THAT(xml, HasSubstr("type='qemu'"));
  EXPECT_THAT(xml, HasSubstr("<name>aula-42</name>"));
  // Nobody gets in before the broker asks for a ticket.
  EXPECT_THAT(xml, HasSubstr("passwdValidTo='1970-01-01T00:00:01'"));
  EXPECT_THAT(xml, HasSubstr((dir_ / "desktops" / "7" / "42.qcow2").string()));
  EXPECT_THAT(xml, HasSubstr("<source network='lab'"));

  // Starting a running desktop changes nothing.
  ASSERT_EQ(call("POST", "/v1/domains/aula-42/start", spec(42)).status, 200);
  EXPECT_EQ(hv_.starts, 1);
}

TEST_F(AgentServiceOverFakeTest, EachDesktopGetsTheHostsLimitsOrItsOwn) {
  // The service of this fixture has none: nothing is written.
  ASSERT_EQ(call("POST", "/v1/domains/aula-20/start", spec(20)).status, 200);
  EXPECT_THAT(hv_.domains["aula-20"].xml, Not(HasSubstr("<iotune>")));
  EXPECT_THAT(hv_.domains["aula-20"].xml, Not(HasSubstr("<cputune>")));
  // The broker may give one desktop its own.
  Json limited = spec(21);
  limited["limits"] = Json{{"cpu_shares", 512}, {"cpu_percent_per_vcpu", 50}, {"disk_iops", 300}};
  auto r = call("POST", "/v1/domains/aula-21/start", limited);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto& xml = hv_.domains["aula-21"].xml;
  EXPECT_THAT(xml, HasSubstr("<shares>512</shares>"));
  EXPECT_THAT(xml, HasSubstr("<quota>50000</quota>"));
  EXPECT_THAT(xml, HasSubstr("<period>100000</period>"));
  EXPECT_THAT(xml, HasSubstr("<total_iops_sec>300</total_iops_sec>"));
  limited["desktop_id"] = 22;
  limited["limits"]["cpu_percent_per_vcpu"] = 150;
  auto bad = call("POST", "/v1/domains/aula-22/start", limited);
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("cpu_percent_per_vcpu is 150"));
}

TEST(AgentSettings, LimitsComeFromTheConfigInAdminsUnits) {
  auto config = config::Config::parse(R"([storage.paths]
templates = "/t"
desktops = "/d"
[limits]
cpu_shares = 2048
cpu_percent_per_vcpu = 25
disk_mb_per_sec = 100
)",
                                      "agent.toml", agentSchema(), config::noEnvironment());
  ASSERT_TRUE(config) << config.error().message();
  auto s = settingsFrom(*config);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->limits.cpuShares, 2048u);
  EXPECT_EQ(s->limits.cpuQuotaUs, 25000);
  EXPECT_EQ(s->limits.diskBytesPerSec, 100u * 1024 * 1024);
  EXPECT_EQ(s->limits.diskIopsPerSec, 0u);
  auto noDesktops = config::Config::parse("[storage.paths]\ntemplates = \"/t\"\n", "agent.toml",
                                          agentSchema(), config::noEnvironment());
  ASSERT_TRUE(noDesktops);
  auto refused = settingsFrom(*noDesktops);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused.error().message(), HasSubstr("no 'desktops' folder"));
  auto tiny = config::Config::parse(
      "[storage.paths]\ntemplates = \"/t\"\ndesktops = \"/d\"\n[limits]\ncpu_shares = 1\n",
      "agent.toml", agentSchema(), config::noEnvironment());
  ASSERT_TRUE(tiny);
  auto tooSmall = settingsFrom(*tiny);
  ASSERT_FALSE(tooSmall);
  EXPECT_THAT(tooSmall.error().message(), HasSubstr("limits.cpu_shares is 1"));
}

TEST_F(AgentServiceOverFakeTest, StartRefusesBadRequests) {
  auto mismatch = call("POST", "/v1/domains/aula-41/start", spec(42));
  EXPECT_EQ(mismatch.status, 400);
  EXPECT_THAT(mismatch.body, HasSubstr("'aula-42', not 'aula-41'"));
  Json escaping = spec(43);
  escaping["disk_path"] = "../../etc/passwd";
  auto escaped = call("POST", "/v1/domains/aula-43/start", escaping);
  EXPECT_EQ(escaped.status, 400) << escaped.body;
  Json unknown = spec(44);
  unknown["colour"] = "blue";
  EXPECT_EQ(call("POST", "/v1/domains/aula-44/start", unknown).status, 400);
  auto noBase = spec(45);
  noBase["base_disk"] = "missing.qcow2";
  EXPECT_EQ(call("POST", "/v1/domains/aula-45/start", noBase).status, 404);
  EXPECT_EQ(hv_.starts, 0);
}

TEST_F(AgentServiceOverFakeTest, ANonPersistentDesktopGetsAFreshOverlayAndLosesItAtStop) {
  ASSERT_EQ(call("POST", "/v1/domains/aula-5/start", spec(5, false)).status, 200);
  auto overlay = dir_ / "desktops" / "7" / "5.qcow2";
  ASSERT_TRUE(fs::exists(overlay));
  test::writeFile(overlay, "changed by the guest");
  auto off = call("POST", "/v1/domains/aula-5/poweroff",
                  Json{{"persistent", false}, {"disk_path", "7/5.qcow2"}});
  ASSERT_EQ(off.status, 200) << off.body;
  EXPECT_FALSE(fs::exists(overlay));
  ASSERT_EQ(call("POST", "/v1/domains/aula-5/start", spec(5, false)).status, 200);
  EXPECT_EQ(test::readFile(overlay), "overlay");

  // A persistent one keeps its overlay across stop and start.
  ASSERT_EQ(call("POST", "/v1/domains/aula-6/start", spec(6)).status, 200);
  auto kept = dir_ / "desktops" / "7" / "6.qcow2";
  test::writeFile(kept, "changed by the guest");
  ASSERT_EQ(call("POST", "/v1/domains/aula-6/poweroff",
                 Json{{"persistent", true}, {"disk_path", "7/6.qcow2"}})
                .status,
            200);
  ASSERT_EQ(call("POST", "/v1/domains/aula-6/start", spec(6)).status, 200);
  EXPECT_EQ(test::readFile(kept), "changed by the guest");
}

TEST_F(AgentServiceOverFakeTest, AFailedFirstStartLeavesNoDisk) {
  hv_.failStarts = true;
  auto r = call("POST", "/v1/domains/aula-30/start", spec(30));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_THAT(r.body, HasSubstr("could not start"));
  EXPECT_FALSE(fs::exists(dir_ / "desktops" / "7" / "30.qcow2"));
  // A persistent desktop's existing disk stays, whatever happens.
  hv_.failStarts = false;
  ASSERT_EQ(call("POST", "/v1/domains/aula-31/start", spec(31)).status, 200);
  hv_.domains["aula-31"].state = "shut off";
  hv_.failStarts = true;
  EXPECT_EQ(call("POST", "/v1/domains/aula-31/start", spec(31)).status, 400);
  EXPECT_TRUE(fs::exists(dir_ / "desktops" / "7" / "31.qcow2"));
}

TEST_F(AgentServiceOverFakeTest, AShutdownThatHangsEndsInAPowerOff) {
  ASSERT_EQ(call("POST", "/v1/domains/aula-8/start", spec(8)).status, 200);
  hv_.obeysShutdown = false;
  auto r = call("POST", "/v1/domains/aula-8/shutdown",
                Json{{"grace_seconds", 1}, {"persistent", true}, {"disk_path", "7/8.qcow2"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).value()["forced"], true);
  EXPECT_EQ(hv_.domains["aula-8"].state, "shut off");
  EXPECT_EQ(hv_.destroys, 1);
}

TEST_F(AgentServiceOverFakeTest, TicketsLastAtMostAMinuteAndNeedARunningDesktop) {
  EXPECT_EQ(call("POST", "/v1/domains/aula-9/ticket", Json{{"valid_for_seconds", 30}}).status, 404);
  ASSERT_EQ(call("POST", "/v1/domains/aula-9/start", spec(9)).status, 200);
  EXPECT_EQ(call("POST", "/v1/domains/aula-9/ticket", Json{{"valid_for_seconds", 61}}).status, 400);
  EXPECT_EQ(call("POST", "/v1/domains/aula-9/ticket", Json{{"valid_for_seconds", 0}}).status, 400);
  auto before = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  auto r = call("POST", "/v1/domains/aula-9/ticket", Json{{"valid_for_seconds", 30}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto t = json::parse(r.body).value();
  EXPECT_EQ(t["host"], "hv1.school.lan");
  EXPECT_EQ(t["tls_port"], 5951);
  EXPECT_GE(t["expires_at"].get<std::int64_t>(), before + 30);
  EXPECT_LE(t["expires_at"].get<std::int64_t>(), before + 31);
  const auto& graphics = hv_.domains["aula-9"].graphics;
  EXPECT_THAT(graphics, HasSubstr(t["ticket"].get<std::string>()));
  EXPECT_THAT(graphics, HasSubstr("connected='disconnect'"));
  // Each ticket is new.
  auto again = json::parse(call("POST", "/v1/domains/aula-9/ticket", Json{}).body).value();
  EXPECT_NE(again["ticket"], t["ticket"]);

  hv_.domains["aula-9"].state = "shut off";
  EXPECT_EQ(call("POST", "/v1/domains/aula-9/ticket", Json{}).status, 409);
}

TEST_F(AgentServiceOverFakeTest, DeleteRemovesTheDomainAndItsDisk) {
  ASSERT_EQ(call("POST", "/v1/domains/aula-10/start", spec(10)).status, 200);
  auto r = call("POST", "/v1/domains/aula-10/delete", Json{{"disk_path", "7/10.qcow2"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(hv_.domains.contains("aula-10"));
  EXPECT_FALSE(fs::exists(dir_ / "desktops" / "7" / "10.qcow2"));
  // Deleting what is gone already is no error.
  EXPECT_EQ(call("POST", "/v1/domains/aula-10/delete", Json{{"disk_path", "7/10.qcow2"}}).status,
            200);
}

TEST_F(AgentServiceOverFakeTest, TheHeartbeatCountsRunningGuestsOnlyAndListsThemAll) {
  ASSERT_EQ(call("POST", "/v1/domains/aula-1/start", spec(1)).status, 200);
  ASSERT_EQ(call("POST", "/v1/domains/aula-2/start", spec(2)).status, 200);
  hv_.domains["aula-2"].state = "shut off";
  hv_.domains["stray"].state = "running";
  auto body = service_.heartbeat();
  ASSERT_TRUE(body) << body.error().message();
  EXPECT_EQ(body->runningGuests, 2);
  EXPECT_EQ(body->allocatedVcpus, 4);
  ASSERT_TRUE(body->guests.has_value());
  EXPECT_EQ(body->guests->size(), 3u);
  EXPECT_EQ(body->cpus, 4);  // from the host root's /proc/stat, not this machine's
  EXPECT_EQ(body->memoryMb, 16000);
  EXPECT_EQ(body->freeMemoryMb, 8000);
  EXPECT_TRUE(body->storageFreeGb.contains("desktops"));
  EXPECT_THAT(proto::toJson(*body)["guests"].dump(),
              HasSubstr(R"("desktop_id":null,"name":"stray")"));
}

// The order the broker relies on: what the agent reports is numbered when
// it looked, so a heartbeat listed before a command ends carries a smaller
// number than the command's answer, and one listed after a larger one.
TEST_F(AgentServiceOverFakeTest, ObservationsAreNumberedInTheOrderTheAgentMadeThem) {
  auto before = service_.heartbeat();
  ASSERT_TRUE(before);
  auto started = call("POST", "/v1/domains/aula-1/start", spec(1));
  ASSERT_EQ(started.status, 200) << started.body;
  auto status = proto::parseDomainStatus(Json::parse(started.body));
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_TRUE(status->running);
  EXPECT_GT(status->seq, before->seq);
  service_.recordEvent({.name = "aula-1", .kind = "stopped", .detail = "destroyed"});
  auto stopped = call("POST", "/v1/domains/aula-1/poweroff", Json{{"disk_path", "7/1.qcow2"}});
  ASSERT_EQ(stopped.status, 200) << stopped.body;
  auto off = proto::parseDomainStatus(Json::parse(stopped.body));
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_FALSE(off->running);
  auto events = service_.takeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_GT(events[0].seq, status->seq);
  EXPECT_GT(off->seq, events[0].seq);
  auto after = service_.heartbeat();
  ASSERT_TRUE(after);
  EXPECT_GT(after->seq, off->seq);
}

TEST_F(AgentServiceOverFakeTest, EventsQueueUpToALimitAndComeBackAfterAFailedSend) {
  service_.recordEvent({.name = "aula-3", .kind = "crashed", .detail = "QEMU failed"});
  auto events = service_.takeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].desktopId, 3);
  EXPECT_EQ(events[0].event, "crashed");
  EXPECT_TRUE(service_.takeEvents().empty());
  service_.recordEvent({.name = "aula-4", .kind = "started", .detail = "booted"});
  service_.returnEvents(std::move(events));
  events = service_.takeEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].domain, "aula-3");  // the returned ones first, in order
  for (std::size_t i = 0; i < AgentService::kMaxQueuedEvents + 5; ++i)
    service_.recordEvent({.name = "aula-5", .kind = "started", .detail = "booted"});
  EXPECT_EQ(service_.takeEvents().size(), AgentService::kMaxQueuedEvents);
}

TEST(HostLoad, ParsesProcFiles) {
  auto t = parseCpuTimes("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->idle, 850u);
  EXPECT_EQ(t->total, 1000u);
  EXPECT_DOUBLE_EQ(idleBetween({.idle = 850, .total = 1000}, {.idle = 1600, .total = 2000}), 0.75);
  EXPECT_DOUBLE_EQ(idleBetween(*t, *t), 1.0);
  EXPECT_FALSE(parseCpuTimes("intr 1 2 3\n"));
  auto m =
      parseMemInfo("MemTotal:       16384000 kB\nMemFree: 1 kB\nMemAvailable:    8192000 kB\n");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->totalMb, 16000);
  EXPECT_EQ(m->availableMb, 8000);
  EXPECT_FALSE(parseMemInfo("MemTotal: 1 kB\n"));
  EXPECT_EQ(parseCpuCount("cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\nintr 1\n"), 2);
  EXPECT_EQ(parseCpuCount(""), 1);
  EXPECT_EQ(desktopIdOfName("aula-12"), 12);
  EXPECT_FALSE(desktopIdOfName("aula-"));
  EXPECT_FALSE(desktopIdOfName("aula-stray"));
  EXPECT_FALSE(desktopIdOfName("win10"));
}

}  // namespace
}  // namespace aula::agent
