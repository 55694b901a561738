// A whole broker for API tests: a data dir made by initDataDir on SQLite or
// PostgreSQL, the BrokerServer serving HTTPS on 127.0.0.1 with in-memory
// hosts, an HTTP client that speaks to it the way aulactl and the greeter do,
// and a school to test with (seed()): two categories, a class in each,
// teachers, students, three online hosts and a template everyone may use.
//
// Like the other test helpers it fails by throwing, which GoogleTest reports
// as a failure of the running test.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aula/broker/host_link.hpp"
#include "aula/broker/server.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/json.hpp"
#include "aula/common/process.hpp"

#include "support/temp_dir.hpp"

namespace aula::test {

enum class Backend { kSqlite, kPostgres };
std::string_view backendName(Backend backend);  // "sqlite", "postgresql"

// One answer of the API. json's noexcept moves and destructor call code
// clang-tidy cannot prove non-throwing, as for Event.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct ApiResponse {
  long status = 0;
  json::Json body;   // parsed; null when the body is empty or not JSON
  std::string text;  // the body as it came
  std::multimap<std::string, std::string> headers;  // names lower-cased

  std::string header(std::string_view name) const;
  std::string errorCode() const;     // error.code of an error body, or ""
  std::string errorMessage() const;  // error.message of an error body, or ""
  // "403 permission_denied: Only an admin may do this." for failure messages.
  std::string describe() const;
};

// Requests to one broker over HTTPS, trusting only its CA. Not thread-safe,
// like http::Client: one per thread.
class ApiClient {
 public:
  ApiClient(std::string baseUrl, const std::string& caPem);

  // `path` starts with '/'; a body is sent as application/json. Throws when
  // the request gets no HTTP answer at all.
  ApiResponse call(std::string_view method, std::string_view path, std::string_view token = {},
                   const std::optional<json::Json>& body = std::nullopt,
                   std::vector<std::pair<std::string, std::string>> headers = {});
  // A request as given (its url is a path), for bodies that are not JSON.
  ApiResponse send(http::Request request, std::string_view token = {});
  // POST /api/v1/session; the token, or throws unless the answer is 201.
  std::string login(std::string_view username, std::string_view password);

 private:
  std::string baseUrl_;
  http::Client client_;
};

struct BrokerOptions {
  Backend backend = Backend::kSqlite;
  std::string postgresConninfo;  // for Backend::kPostgres
  // Scalar keys set after broker.toml is loaded, as text ("auth.max_failures_per_user", "3").
  std::vector<std::pair<std::string, std::string>> settings;
  // TOML appended to broker.toml before it is loaded, for what config.set
  // cannot say: tables such as [ldap.group_map].
  std::string extraToml;
  // Another broker's data dir: this broker joins its database, as the admin
  // guide's "Several brokers on one PostgreSQL" says (a copy of broker.toml,
  // ca/ and tls/), instead of running init.
  std::optional<std::filesystem::path> joinDataDir;
};

// What seed() made.
struct SeedIds {
  std::int64_t categoryA = 0, categoryB = 0;  // "School A", "School B"
  std::int64_t group1A = 0, group1B = 0;      // "1A" in A, "1B" in B
  std::int64_t admin = 0;
  std::int64_t teacherA = 0, teacherB = 0;  // managers of A and B
  std::int64_t alice = 0, bob = 0;          // users in A, members of 1A
  std::int64_t carol = 0;                   // user in B, member of 1B
  std::int64_t adv = 0;                     // advanced user in A, in no group
  std::int64_t pool = 0;                    // "default"
  std::vector<std::int64_t> hosts;          // three online hypervisors
  std::int64_t debian = 0;                  // template "Debian", shared with everyone
};

class BrokerFixture {
 public:
  static constexpr std::string_view kAdminPassword = "admin-secret-1";
  static constexpr std::string_view kPassword = "student-secret-1";  // every seeded user's

  // Makes the data dir and starts the broker; throws with the broker's message.
  explicit BrokerFixture(const BrokerOptions& options = {});
  ~BrokerFixture();
  BrokerFixture(const BrokerFixture&) = delete;
  BrokerFixture& operator=(const BrokerFixture&) = delete;

  const std::filesystem::path& dataDir() const { return dataDir_; }
  std::filesystem::path caFile() const;  // the CA in PEM, for curl --cacert
  std::filesystem::path templatesDir() const { return dir_ / "templates"; }
  std::string baseUrl() const;  // "https://127.0.0.1:<port>"
  const std::string& caPem() const;
  broker::SimulatedHostLink& hosts() { return hosts_; }
  broker::BrokerServer& server() { return *server_; }

  // The client of the test's own thread; other threads make their own.
  ApiClient& api() { return api_; }
  ApiClient newClient() const { return ApiClient(baseUrl(), caPem()); }

  const std::string& adminToken();
  // A session of a seeded (or test-made) user with kPassword, made once.
  const std::string& tokenOf(const std::string& username);

  // Creates the school described in the header, as admin, once.
  const SeedIds& seed();
  const SeedIds& ids() const { return ids_; }

  // As admin; each throws unless the broker answers with success.
  std::int64_t createUser(const std::string& username, std::string_view role,
                          std::optional<std::int64_t> categoryId,
                          const std::vector<std::int64_t>& groupIds = {});
  std::int64_t createDesktop(std::int64_t ownerId, const std::string& name,
                             std::optional<std::int64_t> templateId = std::nullopt);

  // Runs the aulactl at `bin` against this broker as the holder of `token`,
  // with HOME and XDG_CONFIG_HOME under `home` and `env` added; throws only
  // when it cannot run at all.
  process::Outcome runAulactl(const std::string& bin, std::vector<std::string> args,
                              const std::string& token, const std::filesystem::path& home,
                              std::vector<std::pair<std::string, std::string>> env = {}) const;

  // Runs `method path` as admin and returns the body; throws unless the status is `expected`.
  json::Json adminCall(std::string_view method, std::string_view path,
                       const std::optional<json::Json>& body = std::nullopt, long expected = 0);

 private:
  TempDir dir_;  // first: removed after the broker has stopped
  std::filesystem::path dataDir_;
  broker::SimulatedHostLink hosts_;
  std::unique_ptr<broker::BrokerServer> server_;
  ApiClient api_;
  std::optional<std::string> adminToken_;
  std::map<std::string, std::string> tokens_;
  bool seeded_ = false;
  SeedIds ids_;
};

}  // namespace aula::test
