// The whole of Aula on one machine for tests and benchmarks: libvirtd
// (support/libvirtd_fixture), aula-broker and aula-agent as processes, the
// agent enrolled with a join token, the test guest as a template, a student.
// Paths to the programs come from compile definitions on the
// aula_agent_stack_test_support target. Fails by throwing.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "aula/broker/server.hpp"
#include "aula/common/callback_guard.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/json.hpp"
#include "aula/common/process.hpp"

#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/libvirtd_fixture.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {

namespace fs = std::filesystem;
using json::Json;

inline constexpr const char* kStudent = "alice";
inline constexpr const char* kStudentPassword = "student-secret-1";

// Runs a program to its end; throws when it cannot be run at all.
process::Outcome runProgram(std::vector<std::string> argv,
                            std::chrono::milliseconds timeout = std::chrono::seconds(60));
// virsh on qemu:///system; its output and errors.
std::string virsh(std::vector<std::string> args);
// "running", "shut off", ..., or "absent".
std::string domainState(const std::string& name);
// Runs one qemu-io command on the guest's disk through QEMU's monitor: what
// the guest would write or read. QEMU prints qemu-io's report on its stdout,
// which libvirt keeps in the domain's log; returns the lines added to it.
std::string qemuIo(const std::string& domain, const std::string& command);

template <typename Predicate>
bool waitFor(Predicate done, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return done();
}

struct AgentStackOptions {
  int ticketSeconds = 8;     // console.ticket_seconds (5..60)
  int heartbeatSeconds = 1;  // agent.heartbeat_seconds
  // spice.public_host: where viewers reach the guests' SPICE ports. A VM on
  // QEMU's user network reaches this machine's loopback as 10.0.2.2.
  std::string spicePublicHost = "127.0.0.1";
  // boot.kernel_args: more on the command line of the images PCs boot.
  std::string bootKernelArgs;
};

// The host's loopback as a guest on QEMU's user network sees it; the
// broker's certificate names it too.
inline constexpr const char* kUserNetHost = "10.0.2.2";

struct AgentStack {
  // Builds the stack: libvirtd (fixture), the test guest as template
  // "Test guest", aula-broker (SQLite, its own data dir, a fixed port), one
  // student with room for a few running desktops, and an enrolled aula-agent
  // for host "hv1", online. Throws with the failing part's log.
  explicit AgentStack(AgentStackOptions options = {}) : options_(std::move(options)) { start(); }

  std::unique_ptr<Libvirtd> libvirtd;
  fs::path dir;  // under the fixture's image dir: QEMU may read it
  fs::path templates;
  fs::path desktops;
  fs::path agentState;
  fs::path brokerConfig;
  int brokerPort = 0;
  int bootPort = 0;  // the broker's plain-HTTP boot listener
  int agentPort = 0;
  std::string caPem;
  std::unique_ptr<ChildProcess> broker;
  std::unique_ptr<ChildProcess> agent;
  fs::path agentLog;
  int agentStarts = 0;
  std::unique_ptr<ApiClient> api;
  std::string adminToken;
  std::string studentToken;
  std::int64_t studentId = 0;
  std::int64_t templateId = 0;
  std::int64_t hostId = 0;

  ~AgentStack() {
    guardCallback("stopping the test's broker and agent", [this] { tearDown(); });
  }

  // Stops the agent and the broker and removes the guests this stack made.
  void tearDown() {
    if (agent)
      agent->stop(SIGTERM);
    if (broker)
      broker->stop(SIGTERM);
    // Whatever a failed test left behind.
    for (const auto& name : {std::string("aula-stray")}) {
      virsh({"destroy", name});
      virsh({"undefine", name});
    }
    auto list = runProgram({"virsh", "-c", Libvirtd::kUri, "list", "--all", "--name"}).out;
    std::istringstream names(list);
    std::string name;
    while (std::getline(names, name)) {
      if (name.starts_with("aula-") &&
          virsh({"dumpxml", name}).find(desktops.string()) != std::string::npos) {
        virsh({"destroy", name});
        virsh({"undefine", name});
      }
    }
  }

  Json admin(std::string_view method, const std::string& path,
             const std::optional<Json>& body = std::nullopt) {
    return api->call(method, path, adminToken, body).body;
  }

  void startBroker() {
    broker = std::make_unique<ChildProcess>(
        std::vector<std::string>{AULA_BROKER_BIN, "--config", brokerConfig.string()},
        dir / "broker.log");
    bool up = waitFor(
        [&] {
          try {
            return ApiClient(url(), caPem).call("GET", "/healthz").status == 200;
          } catch (...) {
            return false;
          }
        },
        std::chrono::seconds(30));
    if (!up)
      throw std::runtime_error("aula-broker did not answer:\n" + broker->log());
  }

  void startAgent() {
    agentLog = dir / fmt::format("agent-{}.log", ++agentStarts);
    agent =
        std::make_unique<ChildProcess>(std::vector<std::string>{AULA_AGENT_BIN, "serve", "--config",
                                                                (dir / "agent.toml").string()},
                                       agentLog);
    if (!waitFor([&] { return fileTail(agentLog, 5).find("listening on") != std::string::npos; },
                 std::chrono::seconds(30))) {
      throw std::runtime_error("aula-agent did not start:\n" + agent->log());
    }
  }

  std::string url() const { return fmt::format("https://127.0.0.1:{}", brokerPort); }

  void start() {
    libvirtd = std::make_unique<Libvirtd>();
    dir = libvirtd->imageDir();
    templates = dir / "templates";
    desktops = dir / "desktops";
    agentState = dir / "agent";
    for (const auto& d : {templates, desktops})
      fs::create_directories(d);
    // The test guest: built once per build tree, copied where QEMU reads it.
    fs::path cached = fs::path(AULA_TEST_TEMPLATE_DIR) / "test-template.qcow2";
    fs::create_directories(cached.parent_path());
    auto built =
        runProgram({AULA_TEST_TEMPLATE_SCRIPT, cached.string()}, std::chrono::seconds(600));
    if (!built.succeeded())
      throw std::runtime_error("The test template did not build:\n" + built.err);
    fs::copy_file(cached, templates / "test.qcow2");
    fs::permissions(templates / "test.qcow2", fs::perms::owner_read | fs::perms::owner_write |
                                                  fs::perms::group_read | fs::perms::others_read);

    // The broker: its own data dir, a fixed port (the agent keeps the URL
    // it enrolled with across a broker restart).
    brokerPort = freeLoopbackPort();
    bootPort = freeLoopbackPort();
    broker::InitOptions init;
    init.dataDir = dir / "broker";
    init.adminPassword = std::string(BrokerFixture::kAdminPassword);
    init.listen = fmt::format("127.0.0.1:{}", brokerPort);
    init.serverNames = {"aula-broker", kUserNetHost};
    auto initialised = broker::initDataDir(init);
    if (!initialised)
      throw std::runtime_error(initialised.error().message());
    brokerConfig = init.dataDir / "broker.toml";
    {
      auto text = readFile(brokerConfig);
      auto at = text.find("[storage.paths]");
      text = text.substr(0, at) +
             fmt::format("[storage.paths]\ntemplates = \"{}\"\ndesktops = \"{}\"\n\n",
                         templates.string(), desktops.string()) +
             fmt::format(
                 "[console]\nticket_seconds = {}\n\n[hosts]\nshutdown_grace_seconds = "
                 "3\nlost_after_seconds = 30\n",
                 options_.ticketSeconds) +
             fmt::format("\n[boot]\nlisten = \"127.0.0.1:{}\"\nkernel_args = \"{}\"\n", bootPort,
                         options_.bootKernelArgs);
      writeFile(brokerConfig, text);
    }
    caPem = readFile(init.dataDir / "ca" / "ca.crt");
    startBroker();
    api = std::make_unique<ApiClient>(url(), caPem);
    adminToken = api->login("admin", BrokerFixture::kAdminPassword);

    auto category = admin("POST", "/api/v1/categories", Json{{"name", "School"}})["id"];
    auto pool = admin("POST", "/api/v1/pools", Json{{"name", "default"}})["id"];
    studentId = admin("POST", "/api/v1/users",
                      Json{{"username", kStudent},
                           {"role", "user"},
                           {"category_id", category},
                           {"password", kStudentPassword}})["id"]
                    .get<std::int64_t>();
    // Room for the few desktops a test runs at once.
    admin("PUT", fmt::format("/api/v1/quotas/user:{}", studentId),
          Json{{"desktops", 20},
               {"running", 4},
               {"vcpus", 8},
               {"memory_mb", 4096},
               {"disk_gb", 40},
               {"templates", 0}});
    studentToken = api->login(kStudent, kStudentPassword);
    templateId = admin("POST", "/api/v1/templates",
                       Json{{"name", "Test guest"},
                            {"base_disk", "test.qcow2"},
                            {"disk_gb", 1},
                            {"vcpus", 1},
                            {"memory_mb", 256},
                            {"access", Json::array({"everyone"})}})["id"]
                     .get<std::int64_t>();

    // Enrolment, as an admin does it on the host.
    agentPort = freeLoopbackPort();
    auto token = admin("POST", "/api/v1/enrolment-tokens",
                       Json{{"host_name", "hv1"}, {"pool_id", pool}})["token"]
                     .get<std::string>();
    auto enrolled = runProgram(
        {AULA_AGENT_BIN, "enroll", "--broker", url(), "--token", token, "--ca-fingerprint",
         crypto::certificateFingerprint(caPem).valueOr(""), "--address",
         fmt::format("127.0.0.1:{}", agentPort), "--state-dir", agentState.string()});
    if (!enrolled.succeeded())
      throw std::runtime_error("aula-agent enroll failed:\n" + enrolled.err);
    hostId = admin("GET", "/api/v1/hosts")[0]["id"].get<std::int64_t>();
    bool tls = libvirtd->spiceTls();
    if (tls)
      libvirtd->useSpiceCertificates(agentState / "spice");
    writeFile(
        dir / "agent.toml",
        fmt::format(R"([agent]
state_dir = "{}"
listen = "127.0.0.1:{}"
domain_type = "qemu"
heartbeat_seconds = {}
network = "{}"

[spice]
listen = "127.0.0.1"
public_host = "{}"
tls_port = {}
plain_port = {}

[storage.paths]
templates = "{}"
desktops = "{}"
)",
                    agentState.string(), agentPort, options_.heartbeatSeconds, libvirtd->network(),
                    options_.spicePublicHost, tls, !tls, templates.string(), desktops.string()));
    startAgent();
    if (!waitFor(
            [&] {
              return admin("GET", fmt::format("/api/v1/hosts/{}", hostId))["state"] == "online";
            },
            std::chrono::seconds(30))) {
      throw std::runtime_error("The agent's host did not come online:\n" + agent->log());
    }
  }

 private:
  AgentStackOptions options_;
};

// A suite of tests on one AgentStack, built once for the suite (a define,
// the broker and the agent take seconds), and skipped, with the reason,
// where libvirt cannot run. Each test's desktops are deleted after it.
class AgentStackTest : public ::testing::Test {
 protected:
  // From the derived suite's SetUpTestSuite().
  static void startStack(AgentStackOptions options = {}) {
    std::string why;
    if (!Libvirtd::available(&why)) {
      skipReason_ = why;
      return;
    }
    env_ = new AgentStack(std::move(options));
  }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    if (!skipReason_.empty())
      GTEST_SKIP() << skipReason_;
    ASSERT_NE(env_, nullptr) << "The suite's environment did not come up; see the first failure.";
  }
  void TearDown() override {
    if (env_ != nullptr)
      deleteDesktops();
  }

  // A desktop of the student, made by the admin; deleted after the test.
  std::int64_t newDesktop(const std::string& name, std::int64_t templateId, bool persistent) {
    auto r = env_->api->call("POST", "/api/v1/desktops", env_->adminToken,
                             Json{{"name", name},
                                  {"template_id", templateId},
                                  {"owner_id", env_->studentId},
                                  {"persistent", persistent}});
    if (r.status != 201)
      throw std::runtime_error("Cannot create a desktop: " + r.describe());
    auto id = r.body["id"].get<std::int64_t>();
    desktops_.push_back(id);
    return id;
  }
  void deleteDesktops() {
    for (auto id : desktops_)
      env_->admin("DELETE", fmt::format("/api/v1/desktops/{}", id));
    desktops_.clear();
  }

  static inline AgentStack* env_ = nullptr;
  static inline std::string skipReason_;
  std::vector<std::int64_t> desktops_;
};

}  // namespace aula::test
