// An agent's enrolment and heartbeat against a whole broker over real HTTPS:
// an admin's join token buys the host its certificates once, the agent keeps
// them privately and whole, a wrong CA fingerprint or a bad token stores
// nothing, and the heartbeat counts only with the client certificate the
// broker issued to an enrolled host. Run on SQLite and on a throw-away
// PostgreSQL, like the other broker suites.
#include <filesystem>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "aula/agent/disks.hpp"
#include "aula/agent/enrolment.hpp"
#include "aula/agent/passthrough_binding.hpp"
#include "aula/agent/workstation.hpp"
#include "aula/broker/broker.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/process.hpp"

#include "agent_server.hpp"
#include "fake_host.hpp"
#include "support/broker_backend_test.hpp"
#include "support/broker_fixture.hpp"
#include "support/fake_hypervisor.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {

namespace {

namespace fs = std::filesystem;
using json::Json;
using ::testing::HasSubstr;

mode_t modeOf(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return 0;
  return st.st_mode & 07777;
}

const Json kLoad = {{"cpus", 8},
                    {"memory_mb", 16384},
                    {"free_memory_mb", 12000},
                    {"cpu_idle", 0.75},
                    {"running_guests", 0},
                    {"allocated_vcpus", 0},
                    {"storage_free_gb", {{"desktops", 200}}}};

class AgentEnrolmentTest : public BrokerBackendTest {
 protected:
  // aula-agent serve as one piece, enrolled as `name`, its host root a
  // fixture desktop with a second GPU (as sysfs shows it) and its /proc load.
  // A workstation's agent: enrolled as kind workstation, [workstation]
  // enabled, its sysfs a FakeKernel over the same fixture.
  struct AsWorkstation {
    test::FakeKernel* kernel = nullptr;
    std::string toml;
  };
  Result<std::unique_ptr<agent::AgentServer>> assembledAgent(
      const std::string& name, int port, FakeHypervisor& hypervisor,
      const std::optional<AsWorkstation>& workstation = std::nullopt) {
    const fs::path state = dir_ / "state";
    auto enrol = options(joinToken(name, workstation ? "workstation" : "hypervisor"), state);
    enrol.agentAddress = fmt::format("127.0.0.1:{}", port);
    if (auto enrolled = agent::enroll(enrol); !enrolled)
      return enrolled.error();
    fs::create_directories(dir_ / "templates");
    fs::create_directories(dir_ / "desktops");
    fs::create_directories(dir_ / "root" / "proc");
    // Its PCI devices: a desktop with a second GPU, as sysfs shows them.
    test::FakeHost pci(dir_ / "root");
    test::fixtureMachine("clean_desktop").build(pci);
    if (workstation)
      workstation->kernel->adoptDevices();
    writeFile(dir_ / "root" / "proc" / "stat",
              "cpu  1 0 1 8 0 0 0 0\ncpu0 1 0 1 8\ncpu1 1 0 1 8\n");
    writeFile(dir_ / "root" / "proc" / "meminfo",
              "MemTotal: 8192000 kB\nMemAvailable: 4096000 kB\n");
    writeFile(dir_ / "agent.toml", fmt::format(R"([agent]
state_dir = "{}"
listen = "127.0.0.1:{}"
domain_type = "auto"
heartbeat_seconds = 1

[storage.paths]
templates = "{}"
desktops = "{}"
{}
)",
                                               state.string(), port, (dir_ / "templates").string(),
                                               (dir_ / "desktops").string(),
                                               workstation ? workstation->toml : std::string()));
    // The KVM probe "succeeds"; /dev/kvm is the test's.
    writeFile(dir_ / "kvm", "");
    return agent::AgentServer::start({.configPath = dir_ / "agent.toml",
                                      .hypervisor = &hypervisor,
                                      .runner = &runner_,
                                      .devKvm = dir_ / "kvm",
                                      .hostRoot = dir_ / "root",
                                      .sysfs = workstation ? workstation->kernel : nullptr});
  }

  // qemu-img runs for real; the KVM probe "succeeds" (this machine's KVM
  // may be absent or hang).
  process::SystemRunner system_;
  process::RecordingRunner runner_{[this](const process::Command& c) -> Result<process::Outcome> {
    if (!c.argv.empty() && c.argv[0] == "qemu-img")
      return system_.run(c);
    process::Outcome ok;
    ok.exitCode = 0;
    return ok;
  }};

  void SetUp() override {
    BrokerBackendTest::SetUp();
    if (IsSkipped())
      return;
    // Reconciliation may stop a desktop the moment a heartbeat lacks it.
    options_.settings.emplace_back("hosts.reconcile_grace_seconds", "0");
    pool_ = broker()
                .adminCall("POST", "/api/v1/pools", Json{{"name", "lab"}}, 201)["id"]
                .get<std::int64_t>();
  }

  // A join token for `host`, made by an admin through the API.
  std::string joinToken(const std::string& host, const std::string& kind = "hypervisor") {
    auto made = broker().adminCall(
        "POST", "/api/v1/enrolment-tokens",
        Json{{"host_name", host}, {"kind", kind}, {"pool_id", pool_}, {"valid_minutes", 10}}, 201);
    return made["token"].get<std::string>();
  }

  agent::EnrolOptions options(const std::string& token, const fs::path& stateDir) {
    return {.brokerUrl = broker().baseUrl(),
            .token = token,
            .caFingerprint = broker().server().caFingerprint(),
            .stateDir = stateDir,
            .agentAddress = "127.0.0.1:9443"};
  }

  Json host(const std::string& name) {
    for (const auto& h : broker().adminCall("GET", "/api/v1/hosts", std::nullopt, 200)) {
      if (h["name"] == name)
        return h;
    }
    return Json();
  }

  // POST /api/v1/agent/heartbeat with the given client certificate (or none).
  long heartbeat(const std::optional<crypto::Certificate>& cert, std::string* message = nullptr) {
    http::TlsOptions tls{.caPem = broker().caPem()};
    if (cert) {
      tls.clientCertPem = cert->certPem;
      tls.clientKeyPem = cert->keyPem;
    }
    http::Client client(http::ClientOptions{.tls = tls});
    auto sent = client.postJson(broker().baseUrl() + "/api/v1/agent/heartbeat", kLoad.dump());
    if (!sent)
      throw std::runtime_error("The heartbeat got no answer: " + sent.error().message());
    if (message != nullptr) {
      auto body = json::parse(sent->body).valueOr(Json());
      *message = body.is_object() && body.contains("error")
                     ? body["error"].value("message", std::string())
                     : std::string();
    }
    return sent->status;
  }

  crypto::Certificate brokerCa() {
    return {.certPem = readFile(broker().dataDir() / "ca" / "ca.crt"),
            .keyPem = readFile(broker().dataDir() / "ca" / "ca.key")};
  }

  TempDir dir_;
  std::int64_t pool_ = 0;
};

TEST_P(AgentEnrolmentTest, EnrolsOnceAndStoresTheIdentityPrivately) {
  const fs::path state = dir_ / "state";
  auto token = joinToken("hv9");
  auto enrolled = agent::enroll(options(token, state));
  ASSERT_TRUE(enrolled) << enrolled.error().message();
  EXPECT_EQ(enrolled->hostName, "hv9");

  // Others may pass through to spice/ (QEMU reads it) but not list the dir.
  EXPECT_EQ(modeOf(state), 0711u);
  EXPECT_EQ(modeOf(state / "spice"), 0755u);
  for (const char* name :
       {"ca.crt", "agent.crt", "spice/server-cert.pem", "spice/ca-cert.pem", "enrolment.json"}) {
    EXPECT_EQ(modeOf(state / name), 0644u) << name;
  }
  EXPECT_EQ(modeOf(state / "agent.key"), 0600u);
  EXPECT_EQ(modeOf(state / "spice/server-key.pem"), 0640u);
  // No temporary file is left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::recursive_directory_iterator(state))
    ++entries;
  EXPECT_EQ(entries, 8);  // four files, spice/ and the three in it

  const auto ca = readFile(state / "ca.crt");
  EXPECT_EQ(ca, broker().caPem());
  EXPECT_EQ(readFile(state / "spice/ca-cert.pem"), ca);
  const auto clientCert = readFile(state / "agent.crt");
  auto verified = crypto::verifyChain(clientCert, ca, "hv9");
  EXPECT_TRUE(verified) << verified.error().message();
  EXPECT_THAT(crypto::certificateSubject(clientCert).valueOr(""), HasSubstr("CN=hv9"));
  const auto spiceCert = readFile(state / "spice/server-cert.pem");
  for (const char* name : {"hv9", "127.0.0.1"}) {
    auto spice = crypto::verifyChain(spiceCert, ca, name);
    EXPECT_TRUE(spice) << name << ": " << spice.error().message();
  }
  EXPECT_FALSE(crypto::verifyChain(spiceCert, ca, "other-host"));
  auto record = json::parse(readFile(state / "enrolment.json"));
  ASSERT_TRUE(record);
  EXPECT_EQ((*record)["host_name"], "hv9");
  EXPECT_EQ((*record)["broker_url"], broker().baseUrl());

  auto h = host("hv9");
  ASSERT_TRUE(h.is_object()) << "hv9 is not among the hosts";
  EXPECT_EQ(h["id"], enrolled->hostId);
  EXPECT_EQ(h["cert_fingerprint"], crypto::certificateFingerprint(clientCert).valueOr("?"));
  EXPECT_EQ(h["cert_fingerprint"], enrolled->clientCertFingerprint);
  EXPECT_EQ(h["address"], "127.0.0.1");
  EXPECT_EQ(h["agent_port"], 9443);
  EXPECT_EQ(h["pool_id"], pool_);
  EXPECT_EQ(h["state"], "new");

  auto audit = broker().adminCall("GET", "/api/v1/audit?action=host.enrol", std::nullopt, 200);
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0]["object"], "host:hv9");
  EXPECT_EQ(audit[0]["actor"], "agent:hv9");

  // The agent refuses to overwrite its own enrolment without --force.
  auto again = agent::enroll(options(token, state));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), Errc::kAlreadyExists);
  // With --force it asks, and the broker refuses the spent token.
  auto forced = options(token, state);
  forced.force = true;
  auto reused = agent::enroll(forced);
  ASSERT_FALSE(reused);
  EXPECT_EQ(reused.error().code(), Errc::kUnauthenticated);
  EXPECT_THAT(reused.error().message(), HasSubstr("already used"));
  // The refused attempt changed nothing.
  EXPECT_EQ(readFile(state / "agent.crt"), clientCert);
}

TEST_P(AgentEnrolmentTest, FillsInAHostTheAdminMadeBefore) {
  auto made =
      broker().adminCall("POST", "/api/v1/hosts",
                         Json{{"name", "ws1"}, {"kind", "hypervisor"}, {"pool_id", pool_}}, 201);
  auto enrolled = agent::enroll(options(joinToken("ws1", "workstation"), dir_ / "ws1"));
  ASSERT_TRUE(enrolled) << enrolled.error().message();
  EXPECT_EQ(enrolled->hostId, made["id"].get<std::int64_t>());
  auto h = host("ws1");
  EXPECT_EQ(h["kind"], "workstation");
  EXPECT_EQ(h["cert_fingerprint"], enrolled->clientCertFingerprint);

  // An enrolled host cannot enrol again under a new token.
  auto second = options(joinToken("ws1"), dir_ / "ws1-again");
  auto refused = agent::enroll(second);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), Errc::kConflict);
  EXPECT_THAT(refused.error().message(), HasSubstr("enrolled already"));
  EXPECT_FALSE(fs::exists(dir_ / "ws1-again"));
}

TEST_P(AgentEnrolmentTest, TheAgentAddressIsCheckedAndNamedInTheSpiceCertificate) {
  auto token = joinToken("hv6");
  auto bad = options(token, dir_ / "bad");
  bad.agentAddress = "hv6:94:43";
  auto refused = agent::enroll(bad);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), Errc::kInvalidArgument);
  EXPECT_THAT(refused.error().message(), HasSubstr("HOST:PORT"));
  EXPECT_FALSE(fs::exists(dir_ / "bad"));

  // The refusal did not spend the token.
  auto v6 = options(token, dir_ / "v6");
  v6.agentAddress = "[::1]:9443";
  auto enrolled = agent::enroll(v6);
  ASSERT_TRUE(enrolled) << enrolled.error().message();
  auto h = host("hv6");
  EXPECT_EQ(h["address"], "::1");
  EXPECT_EQ(h["agent_port"], 9443);
  auto spice =
      crypto::verifyChain(readFile(dir_ / "v6" / "spice/server-cert.pem"), broker().caPem(), "::1");
  EXPECT_TRUE(spice) << spice.error().message();
}

TEST_P(AgentEnrolmentTest, RefusesUnknownAndExpiredTokensAndWritesNothing) {
  auto unknown = agent::enroll(options("aula_j_not-a-real-token", dir_ / "a"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), Errc::kUnauthenticated);
  EXPECT_THAT(unknown.error().message(), HasSubstr("not known"));
  EXPECT_FALSE(fs::exists(dir_ / "a"));

  // A token that expired a minute ago, put straight into the database.
  const std::string expired = "aula_j_expired-token-for-the-test";
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  auto inserted = broker().server().broker().context.db.transact(
      broker::db::TxMode::kWrite, [&](broker::db::Transaction& tx) -> Status {
        AULA_TRY(tx.exec(
            "INSERT INTO enrolment_tokens (token_hash, host_name, kind, pool_id, created_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            {crypto::sha256Hex(expired), std::string("hv-late"), std::string("hypervisor"), pool_,
             now - 3600, now - 60}));
        return {};
      });
  ASSERT_TRUE(inserted) << inserted.error().message();
  auto late = agent::enroll(options(expired, dir_ / "b"));
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), Errc::kUnauthenticated);
  EXPECT_THAT(late.error().message(), HasSubstr("expired"));
  EXPECT_FALSE(fs::exists(dir_ / "b"));
  EXPECT_FALSE(host("hv-late").is_object());
}

TEST_P(AgentEnrolmentTest, AWrongCaFingerprintIsATlsErrorAndSpendsNothing) {
  auto token = joinToken("hv2");
  auto other = crypto::createCa("Someone else's CA");
  ASSERT_TRUE(other);
  auto wrong = options(token, dir_ / "state");
  wrong.caFingerprint = crypto::certificateFingerprint(other->certPem).valueOr("");
  auto refused = agent::enroll(wrong);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), Errc::kTls) << refused.error().message();
  EXPECT_FALSE(fs::exists(dir_ / "state"));
  // The broker never saw the token: it still works.
  auto enrolled = agent::enroll(options(token, dir_ / "state"));
  EXPECT_TRUE(enrolled) << enrolled.error().message();
}

TEST_P(AgentEnrolmentTest, TooManyFailedEnrolmentsFromOneAddressAreThrottled) {
  auto good = joinToken("hv3");
  Errc last = Errc::kInternal;
  for (int i = 0; i < 10; ++i) {
    auto r = agent::enroll(options("aula_j_guess-" + std::to_string(i), dir_ / "x"));
    ASSERT_FALSE(r);
    last = r.error().code();
  }
  EXPECT_EQ(last, Errc::kUnauthenticated);
  auto blocked = agent::enroll(options(good, dir_ / "x"));
  ASSERT_FALSE(blocked);
  EXPECT_EQ(blocked.error().code(), Errc::kRateLimited) << blocked.error().message();
  EXPECT_THAT(blocked.error().message(), HasSubstr("try again in"));
}

TEST_P(AgentEnrolmentTest, HeartbeatCountsOnlyWithAnEnrolledHostsCertificate) {
  const fs::path state = dir_ / "state";
  auto enrolled = agent::enroll(options(joinToken("hv5"), state));
  ASSERT_TRUE(enrolled) << enrolled.error().message();

  auto sent = agent::postToBroker(state, "", "/api/v1/agent/heartbeat", kLoad);
  ASSERT_TRUE(sent) << sent.error().message();
  auto h = host("hv5");
  EXPECT_EQ(h["state"], "online");
  EXPECT_DOUBLE_EQ(h["cpu_idle"].get<double>(), 0.75);
  EXPECT_EQ(h["free_memory_mb"], 12000);
  EXPECT_EQ(h["cpus"], 8);
  EXPECT_EQ(h["memory_mb"], 16384);
  EXPECT_TRUE(h["last_heartbeat"].is_number());

  // The stored certificate over the raw route: 204.
  crypto::Certificate mine{.certPem = readFile(state / "agent.crt"),
                           .keyPem = readFile(state / "agent.key")};
  EXPECT_EQ(heartbeat(mine), 204);

  // No certificate: 401.
  std::string message;
  EXPECT_EQ(heartbeat(std::nullopt, &message), 401);
  EXPECT_THAT(message, HasSubstr("client certificate"));

  // A certificate from another CA does not verify, so it counts as none.
  auto otherCa = crypto::createCa("Someone else's CA");
  ASSERT_TRUE(otherCa);
  auto foreign = crypto::issueCertificate(
      *otherCa, {.commonName = "hv5", .usage = crypto::CertUsage::kClient});
  ASSERT_TRUE(foreign);
  EXPECT_EQ(heartbeat(*foreign), 401);

  // Our CA's certificate for a name that is no enrolled host: 403.
  auto intruder = crypto::issueCertificate(
      brokerCa(), {.commonName = "intruder", .usage = crypto::CertUsage::kClient});
  ASSERT_TRUE(intruder);
  EXPECT_EQ(heartbeat(*intruder, &message), 403);
  EXPECT_EQ(message, "This certificate does not belong to an enrolled host.");
  // Even one that claims an enrolled host's name.
  auto impostor = crypto::issueCertificate(
      brokerCa(), {.commonName = "hv5", .usage = crypto::CertUsage::kClient});
  ASSERT_TRUE(impostor);
  EXPECT_EQ(heartbeat(*impostor), 403);

  // The agent's own call says the same through its Status.
  const fs::path fake = dir_ / "fake";
  fs::create_directories(fake);
  writeFile(fake / "ca.crt", broker().caPem());
  writeFile(fake / "agent.crt", intruder->certPem);
  writeFile(fake / "agent.key", intruder->keyPem);
  auto refused = agent::postToBroker(fake, broker().baseUrl(), "/api/v1/agent/heartbeat", kLoad);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), Errc::kPermissionDenied);
}

TEST_P(AgentEnrolmentTest, HeartbeatsAndEventsReconcileTheBrokersViewWithTheHost) {
  const fs::path state = dir_ / "state";
  ASSERT_TRUE(agent::enroll(options(joinToken("hv7"), state)));
  ASSERT_TRUE(agent::postToBroker(state, "", "/api/v1/agent/heartbeat", kLoad));
  auto hostId = host("hv7")["id"].get<std::int64_t>();

  // A desktop running on hv7 (the simulated link plays the agent's part).
  writeFile(broker().templatesDir() / "t.qcow2", "");
  auto tpl = broker().adminCall("POST", "/api/v1/templates",
                                Json{{"name", "T"},
                                     {"base_disk", "t.qcow2"},
                                     {"disk_gb", 1},
                                     {"vcpus", 1},
                                     {"memory_mb", 256},
                                     {"access", Json::array({"everyone"})}},
                                201)["id"];
  auto owner =
      broker().adminCall("POST", "/api/v1/users",
                         Json{{"username", "u1"}, {"password", "student-secret-1"}}, 201)["id"];
  auto id =
      broker()
          .adminCall("POST", "/api/v1/desktops",
                     Json{{"name", "d"}, {"template_id", tpl}, {"owner_id", owner}}, 201)["id"]
          .get<std::int64_t>();
  auto started =
      broker().adminCall("POST", fmt::format("/api/v1/desktops/{}/start", id), std::nullopt, 200);
  ASSERT_EQ(started["host_id"], hostId);
  auto stateOf = [&] {
    return broker().adminCall("GET", fmt::format("/api/v1/desktops/{}", id), std::nullopt,
                              200)["state"];
  };
  const std::string name = fmt::format("aula-{}", id);
  auto guests = [&](Json list) {
    Json load = kLoad;
    load["guests"] = std::move(list);
    auto sent = agent::postToBroker(state, "", "/api/v1/agent/heartbeat", load);
    ASSERT_TRUE(sent) << sent.error().message();
  };

  // The host says it does not run: the broker believes the host.
  guests(Json::array());
  EXPECT_EQ(stateOf(), "stopped");
  // The host says it runs (started while the broker was away): running again.
  guests(Json::array(
      {Json{{"name", name}, {"desktop_id", id}, {"state", "running"}, {"running", true}}}));
  EXPECT_EQ(stateOf(), "running");

  // A guest Aula did not make is reported, and nothing else changes.
  guests(Json::array(
      {Json{{"name", name}, {"desktop_id", id}, {"state", "running"}, {"running", true}},
       Json{
           {"name", "win10-lab"}, {"desktop_id", nullptr}, {"state", "running"}, {"running", true}},
       Json{{"name", "aula-99999"},
            {"desktop_id", 99999},
            {"state", "running"},
            {"running", true}}}));
  auto reported = broker().adminCall("GET", fmt::format("/api/v1/hosts/{}", hostId), std::nullopt,
                                     200)["unknown_guests"];
  EXPECT_EQ(reported.size(), 2u) << reported.dump();
  EXPECT_THAT(reported.dump(), HasSubstr("win10-lab"));
  EXPECT_THAT(reported.dump(), HasSubstr("aula-99999"));
  EXPECT_EQ(stateOf(), "running");

  // A bad guest list is refused whole.
  Json bad = kLoad;
  bad["guests"] = "all of them";
  auto refused = agent::postToBroker(state, "", "/api/v1/agent/heartbeat", bad);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused.error().message(), HasSubstr("'guests'"));

  // Lifecycle events: a crash stops the desktop and is audited.
  auto crashed = agent::postToBroker(state, "", "/api/v1/agent/events",
                                     Json{{"events", Json::array({Json{{"domain", name},
                                                                       {"desktop_id", id},
                                                                       {"event", "crashed"},
                                                                       {"detail", "QEMU failed"},
                                                                       {"at", 0}}})}});
  ASSERT_TRUE(crashed) << crashed.error().message();
  EXPECT_EQ(stateOf(), "stopped");
  auto audit = broker().adminCall("GET", "/api/v1/audit?action=desktop.crashed", std::nullopt, 200);
  EXPECT_THAT(audit.dump(), HasSubstr("agent:hv7"));
  // "started" for it brings it back; events about other hosts' or unknown
  // desktops change nothing.
  ASSERT_TRUE(agent::postToBroker(
      state, "", "/api/v1/agent/events",
      Json{{"events",
            Json::array(
                {Json{{"domain", name}, {"desktop_id", id}, {"event", "started"}},
                 Json{{"domain", "aula-99999"}, {"desktop_id", 99999}, {"event", "stopped"}}})}}));
  EXPECT_EQ(stateOf(), "running");
}

// aula-agent serve as one piece: from its configuration file and the state
// enrolment left, over a hypervisor in memory, it reports to the broker and
// serves the broker's commands on its mutual-TLS endpoint, and nobody else's.
TEST_P(AgentEnrolmentTest, TheAssembledAgentReportsToTheBrokerAndTakesOnlyItsCommands) {
  const fs::path state = dir_ / "state";
  const int port = freeLoopbackPort();
  FakeHypervisor hypervisor;
  hypervisor.domains["aula-99"].state = "running";  // a guest from before the agent started
  auto server = assembledAgent("hv9", port, hypervisor);
  ASSERT_TRUE(server) << server.error().message();
  EXPECT_EQ((*server)->domainType(), "kvm");
  EXPECT_EQ((*server)->enrolment().hostName, "hv9");
  EXPECT_EQ((*server)->address(), fmt::format("127.0.0.1:{}", port));

  // Its heartbeats reach the broker: the host is online with this host's
  // figures, read from the host root's /proc.
  Json h;
  for (int i = 0; i < 100 && !(h.is_object() && h["state"] == "online"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    h = host("hv9");
  }
  EXPECT_EQ(h["state"], "online") << h.dump();
  EXPECT_EQ(h["cpus"], 2);
  EXPECT_EQ(h["memory_mb"], 8000);
  EXPECT_EQ(h["running_guests"], 1);
  EXPECT_THAT(h["unknown_guests"].dump(), HasSubstr("aula-99"));
  // And its PCI devices, for the admin choosing what a workstation passes.
  auto devices = broker().adminCall(
      "GET", fmt::format("/api/v1/hosts/{}/devices", h["id"].get<std::int64_t>()), std::nullopt,
      200);
  EXPECT_EQ(devices["iommu_groups"], 2);
  ASSERT_EQ(devices["devices"].size(), 4U) << devices.dump();
  EXPECT_EQ(devices["devices"][2]["address"], "0000:01:00.0");
  EXPECT_EQ(devices["devices"][2]["kind"], "GPU");
  EXPECT_EQ(devices["devices"][2]["vendor"], "10de");

  // The broker's client certificate may command it; another host's may not.
  auto call = [&](const crypto::Certificate& cert) {
    http::Client client(http::ClientOptions{.tls = {.caPem = broker().caPem(),
                                                    .clientCertPem = cert.certPem,
                                                    .clientKeyPem = cert.keyPem}});
    auto sent =
        client.send({.method = "GET", .url = fmt::format("https://127.0.0.1:{}/v1/domains", port)});
    if (!sent)
      throw std::runtime_error(sent.error().message());
    return *sent;
  };
  auto asBroker = call({.certPem = readFile(broker().dataDir() / "tls" / "broker-client.crt"),
                        .keyPem = readFile(broker().dataDir() / "tls" / "broker-client.key")});
  EXPECT_EQ(asBroker.status, 200) << asBroker.body;
  EXPECT_THAT(asBroker.body, HasSubstr("aula-99"));
  auto asHost =
      call({.certPem = readFile(state / "agent.crt"), .keyPem = readFile(state / "agent.key")});
  EXPECT_EQ(asHost.status, 403);
  (*server)->stop();
  EXPECT_EQ(hypervisor.domains["aula-99"].state, "running") << "stopping the agent stopped a guest";
}

// Workstation mode end to end but for the greeter and the VM: a user logs
// in at the broker, the agent claims the workstation with that session over
// its mutual-TLS link, makes the user's disk, binds the devices the admin
// chose and starts the VM; when the VM stops the devices come back and the
// broker shows the workstation free. Someone the admin did not add is
// turned away with the broker's sentence, and nothing moves.
TEST_P(AgentEnrolmentTest, AWorkstationStartsForAnAllowedUserAndIsFreedWhenItsVmStops) {
  const auto& ids = seed();
  FakeHypervisor hypervisor;
  test::FakeKernel kernel(dir_ / "root");
  auto server = assembledAgent(
      "ws1", freeLoopbackPort(), hypervisor,
      AsWorkstation{.kernel = &kernel,
                    .toml = "[workstation]\nenabled = true\nbus_address = \"unix:path=" +
                            (dir_ / "no-bus").string() +
                            "\"\nevdev = [\"/dev/input/by-id/usb-kbd-event-kbd\"]\n"});
  ASSERT_TRUE(server) << server.error().message();
  agent::WorkstationService* ws = (*server)->workstation();
  ASSERT_NE(ws, nullptr);
  auto base = system_.run({.argv = {"qemu-img", "create", "-q", "-f", "qcow2",
                                    (dir_ / "templates" / "debian-12.qcow2").string(), "64M"}});
  ASSERT_TRUE(base && base->succeeded()) << (base ? base->err : base.error().message());

  // The admin chooses the GPU and its audio from what the agent reported.
  Json h;
  for (int i = 0; i < 100 && !(h.is_object() && h["state"] == "online"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    h = host("ws1");
  }
  const auto hostId = h["id"].get<std::int64_t>();
  const std::string route = fmt::format("/api/v1/hosts/{}/workstation", hostId);
  broker().adminCall("PUT", route,
                     Json{{"devices", {"0000:01:00.0", "0000:01:00.1"}},
                          {"template_id", ids.debian},
                          {"vcpus", 2},
                          {"memory_mb", 2048},
                          {"access", {fmt::format("group:{}", ids.group1A)}}},
                     200);

  // carol is not in 1A: the broker's sentence, and the host keeps its devices.
  auto refused = ws->start("carol", broker().tokenOf("carol"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), Errc::kPermissionDenied);
  EXPECT_THAT(refused.error().message(), HasSubstr("carol may not use this workstation"));
  auto forged = ws->start("alice", broker().tokenOf("bob"));
  ASSERT_FALSE(forged);
  EXPECT_EQ(forged.error().code(), Errc::kUnauthenticated);
  EXPECT_TRUE(kernel.writes.empty()) << kernel.writes.front();

  ASSERT_TRUE(ws->start("alice", broker().tokenOf("alice")));
  ws->waitIdleWorker();
  EXPECT_EQ(ws->status().state, agent::WorkstationState::kRunning) << ws->status().message;
  const std::string xml = hypervisor.domains["aula-ws-ws1"].xml;
  EXPECT_THAT(xml, HasSubstr("<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>"));
  EXPECT_THAT(xml, HasSubstr("<vcpu placement='static'>2</vcpu>"));
  const auto disk = dir_ / "desktops" / "workstations" / "ws1" / fmt::format("{}.qcow2", ids.alice);
  EXPECT_THAT(xml, HasSubstr(disk.string()));
  EXPECT_THAT(xml, HasSubstr("usb-kbd-event-kbd"));
  // alice's own disk, over the template's image.
  auto backing = agent::Disks::backingFile(disk);
  ASSERT_TRUE(backing) << backing.error().message();
  EXPECT_EQ(backing->value_or("none"), dir_ / "templates" / "debian-12.qcow2");
  EXPECT_EQ(kernel.driverOf("0000:01:00.0").valueOr("?"), "vfio-pci");
  EXPECT_EQ(broker().adminCall("GET", route, std::nullopt, 200)["claimed_by"], "alice");

  // The guest powers off: libvirt's event gives the devices back and frees it.
  ASSERT_TRUE(ws->stop(false));
  hypervisor.handler(agent::DomainEvent{.name = "aula-ws-ws1", .kind = "shutdown"});
  EXPECT_EQ(ws->status().state, agent::WorkstationState::kIdle) << ws->status().message;
  EXPECT_EQ(kernel.driverOf("0000:01:00.0").valueOr("?"), "nvidia");
  EXPECT_TRUE(broker().adminCall("GET", route, std::nullopt, 200)["claimed_by"].is_null());
  (*server)->stop();
}

// A workstation agent restarted while its VM runs leaves the VM's devices
// passed through; restarted after the VM stopped, it gives them back.
TEST_P(AgentEnrolmentTest, AnAgentRestartedWhileTheWorkstationRunsLeavesItsDevicesWithIt) {
  const fs::path state = dir_ / "state";
  FakeHypervisor hypervisor;
  hypervisor.domains["aula-ws-7"].state = "running";
  const std::string journalText =
      R"({"address":"0000:01:00.0","driver":"nvidia","kind":"pci","override":""})"
      "\n";
  fs::create_directories(state);
  writeFile(state / agent::kPassthroughJournal, journalText);
  writeFile(state / agent::kWorkstationMarker, "aula-ws-7\n");
  {
    auto server = assembledAgent("ws7", freeLoopbackPort(), hypervisor);
    ASSERT_TRUE(server) << server.error().message();
    (*server)->stop();
  }
  EXPECT_EQ(readFile(state / agent::kPassthroughJournal), journalText)
      << "the devices of a running workstation VM were taken from it";

  // The VM has stopped while no agent ran: the next start gives back.
  hypervisor.domains["aula-ws-7"].state = "shut off";
  auto again = agent::AgentServer::start({.configPath = dir_ / "agent.toml",
                                          .hypervisor = &hypervisor,
                                          .runner = &runner_,
                                          .devKvm = dir_ / "kvm",
                                          .hostRoot = dir_ / "root"});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_FALSE(fs::exists(state / agent::kPassthroughJournal));
  EXPECT_FALSE(fs::exists(state / agent::kWorkstationMarker));
}

TEST_P(AgentEnrolmentTest, AnAgentWithoutItsConfigurationOrEnrolmentSaysWhatToDo) {
  auto missing = agent::AgentServer::start({.configPath = dir_ / "nowhere.toml"});
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.error().message(), HasSubstr("hypervisor-setup.sh writes one"));
  writeFile(dir_ / "agent.toml",
            fmt::format("[agent]\nstate_dir = \"{0}\"\n[storage.paths]\ntemplates = \"{0}\"\n"
                        "desktops = \"{0}\"\n",
                        (dir_ / "none").string()));
  FakeHypervisor hypervisor;
  auto unenrolled =
      agent::AgentServer::start({.configPath = dir_ / "agent.toml", .hypervisor = &hypervisor});
  ASSERT_FALSE(unenrolled);
  EXPECT_THAT(unenrolled.error().message(), HasSubstr("aula-agent enroll"));
}

INSTANTIATE_TEST_SUITE_P(Engines, AgentEnrolmentTest, kBothBackends, backendTestName);

}  // namespace

}  // namespace aula::test
