// The real aula-broker binary killed (SIGKILL) in the middle of a class
// deployment's transaction, then started again on the same data: the
// deployment must be all there or not there at all, the SQLite file must be
// intact, and the broker must work on as before. On SQLite and PostgreSQL.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "aula/broker/database.hpp"
#include "aula/broker/server.hpp"

#include "support/broker_backend_test.hpp"
#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

#ifndef AULA_BROKER_BIN
#error "AULA_BROKER_BIN must name the aula-broker binary"
#endif

namespace aula::test {

namespace {

namespace fs = std::filesystem;
using json::Json;
using namespace std::chrono_literals;

constexpr std::string_view kAdminPassword = "admin-secret-1";
constexpr int kClassSize = 30;

// aula-broker serving from a config file, its output in a log file.
class BrokerProcess {
 public:
  BrokerProcess(const fs::path& config, fs::path portFile, const fs::path& log)
      : portFile_((fs::remove(portFile), std::move(portFile))),
        process_({AULA_BROKER_BIN, "--config", config.string(), "--listen", "127.0.0.1:0",
                  "--port-file", portFile_.string()},
                 log) {}

  // "127.0.0.1:<port>" once the broker serves; throws with its log if it dies first.
  std::string waitForAddress() {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (fs::exists(portFile_)) {
        auto text = readFile(portFile_);
        return text.substr(0, text.find('\n'));
      }
      if (!process_.running())
        throw std::runtime_error("aula-broker exited before serving:\n" + process_.log());
      std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error("aula-broker did not write its port file in 20 s:\n" + process_.log());
  }

  // SIGKILL: no shutdown, no flushing, no rollback by the broker itself.
  void kill() { process_.stop(SIGKILL); }
  // SIGTERM; the exit status.
  int terminate() { return process_.stop(SIGTERM); }
  std::string log() const { return process_.log(); }

 private:
  fs::path portFile_;
  ChildProcess process_;
};

// The broker runs as a process of its own here (it is killed); the shared
// fixture gives each test its database.
class BrokerCrashTest : public BrokerBackendTest {};

// What an admin sees after the crash: the deployments and the desktops.
struct Seen {
  Json deployments;
  Json desktops;
};

Seen look(ApiClient& api, const std::string& token) {
  auto deployments = api.call("GET", "/api/v1/deployments", token);
  auto desktops = api.call("GET", "/api/v1/desktops?scope=all", token);
  if (deployments.status != 200 || desktops.status != 200) {
    throw std::runtime_error("Listing failed: " + deployments.describe() + " / " +
                             desktops.describe());
  }
  return {deployments.body, desktops.body};
}

std::string integrityCheck(const fs::path& file) {
  auto database = broker::db::openSqlite({.path = file.string(), .poolSize = 1});
  if (!database)
    return "cannot open: " + database.error().message();
  std::string verdict;
  auto checked =
      (*database)->transact(broker::db::TxMode::kRead, [&](broker::db::Transaction& tx) -> Status {
        auto rows = AULA_TRY(tx.query("PRAGMA integrity_check"));
        for (const auto& row : rows)
          verdict += (verdict.empty() ? "" : "; ") + row.text(0);
        return {};
      });
  if (!checked)
    return "cannot check: " + checked.error().message();
  return verdict;
}

TEST_P(BrokerCrashTest, DeploymentIsAllOrNothingWhenTheBrokerIsKilledMidway) {
  TempDir dir;
  const auto dataDir = dir / "broker";
  auto made = broker::initDataDir({.dataDir = dataDir,
                                   .adminPassword = std::string(kAdminPassword),
                                   .listen = "127.0.0.1:0",
                                   .databaseBackend = std::string(backendName(GetParam())),
                                   .postgresConninfo = options_.postgresConninfo});
  ASSERT_TRUE(made.ok()) << made.error().message();
  // Each desktop row of a deployment waits 100 ms inside the transaction, so
  // a class of 30 takes 3 s to commit: time enough to kill the broker inside it.
  writeFile(made->configPath, readFile(made->configPath) +
                                  "\n[auth]\nargon2_memory_kib = 1024\nargon2_iterations = 1\n"
                                  "\n[debug]\ndeployment_step_delay_ms = 100\n");
  const auto caPem = readFile(dataDir / "ca" / "ca.crt");
  const auto portFile = dir / "broker.port";
  const auto log = dir / "broker.log";

  auto process = std::make_unique<BrokerProcess>(made->configPath, portFile, log);
  auto address = process->waitForAddress();
  ApiClient api("https://" + address, caPem);
  const auto admin = api.login("admin", kAdminPassword);
  auto call = [&](std::string_view method, std::string_view path, const Json& body) {
    auto r = api.call(method, path, admin, body);
    if (r.status != 201)
      throw std::runtime_error(fmt::format("{} {}: {}", method, path, r.describe()));
    return r.body["id"].get<std::int64_t>();
  };
  const auto category = call("POST", "/api/v1/categories", Json{{"name", "School A"}});
  const auto group =
      call("POST", "/api/v1/groups", Json{{"name", "1A"}, {"category_id", category}});
  for (int i = 1; i <= kClassSize; ++i) {
    call("POST", "/api/v1/users",
         Json{{"username", fmt::format("student{:02}", i)},
              {"category_id", category},
              {"group_ids", {group}}});
  }
  const auto debian = call("POST", "/api/v1/templates",
                           Json{{"name", "Debian"},
                                {"base_disk", "debian-12.qcow2"},
                                {"disk_gb", 20},
                                {"vcpus", 1},
                                {"memory_mb", 1024},
                                {"access", {"everyone"}}});

  long firstStatus = 0;
  std::thread deploy([&] {
    ApiClient client("https://" + address, caPem);
    try {
      firstStatus = client
                        .call("POST", "/api/v1/deployments", admin,
                              Json{{"name", "Exam"}, {"template_id", debian}, {"group_id", group}})
                        .status;
    } catch (const std::exception&) {
      firstStatus = -1;  // no answer: the broker died under the request
    }
  });
  std::this_thread::sleep_for(1200ms);
  process->kill();
  deploy.join();
  EXPECT_EQ(firstStatus, -1) << "the deployment finished before the kill; the test proves nothing";

  if (GetParam() == Backend::kSqlite) {
    EXPECT_EQ(integrityCheck(dataDir / "aula.db"), "ok");
  }

  process = std::make_unique<BrokerProcess>(made->configPath, portFile, log);
  address = process->waitForAddress();
  ApiClient again("https://" + address, caPem);
  const auto admin2 = again.login("admin", kAdminPassword);
  auto seen = look(again, admin2);
  if (seen.deployments.empty()) {
    EXPECT_EQ(seen.desktops.size(), 0u)
        << "a half deployment survived the crash: " << seen.desktops.dump();
  } else {
    ASSERT_EQ(seen.deployments.size(), 1u) << seen.deployments.dump();
    EXPECT_EQ(seen.deployments[0]["desktops"], kClassSize) << seen.deployments.dump();
    EXPECT_EQ(seen.desktops.size(), static_cast<std::size_t>(kClassSize));
  }
  const auto before = seen.desktops.size();

  // The broker works on: the same deployment, made again, is whole.
  auto redo =
      again.call("POST", "/api/v1/deployments", admin2,
                 Json{{"name", "Exam again"}, {"template_id", debian}, {"group_id", group}});
  ASSERT_EQ(redo.status, 201) << redo.describe() << "\n" << process->log();
  EXPECT_EQ(redo.body["desktops"], kClassSize);
  seen = look(again, admin2);
  EXPECT_EQ(seen.desktops.size(), before + kClassSize);

  EXPECT_EQ(process->terminate(), 0) << process->log();
  if (GetParam() == Backend::kSqlite) {
    EXPECT_EQ(integrityCheck(dataDir / "aula.db"), "ok");
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, BrokerCrashTest, kBothBackends, backendTestName);

}  // namespace
}  // namespace aula::test
