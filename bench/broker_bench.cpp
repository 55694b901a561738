// The broker under load, end to end over HTTPS: a school of 3,500 users in 30
// classes, 100 simulated hypervisors, and the requests a morning brings —
// logins, desktop lists, a teacher's deployment and its start. Prints a
// Markdown table (one column per database backend) that docs/performance.md
// cites; bench/run.sh builds and runs it.
//
// Everything runs in one process on loopback: the broker (as aula-broker
// runs it, TLS included) and the clients, one thread and one keep-alive
// connection each. On a small shared machine the clients take CPU from the
// broker, so the ratio of two routes measured in the same run says more than
// either rate alone.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "aula/broker/server.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/json.hpp"
#include "aula/common/log.hpp"

#include "figures.hpp"
#include "support/postgres_server.hpp"
#include "support/temp_dir.hpp"

namespace {

using aula::json::Json;
using Clock = std::chrono::steady_clock;
namespace broker = aula::broker;
namespace http = aula::http;

constexpr std::string_view kAdminPassword = "bench-admin-password";
constexpr std::string_view kPassword = "bench-student-password";
constexpr int kClasses = 30;
constexpr int kHosts = 100;
constexpr std::size_t kLoginClients = 32;
constexpr std::size_t kListClients = 64;
constexpr int kDesktopsPerListUser = 3;
constexpr int kCourseSize = 30;
// Each pooled PostgreSQL connection plans a statement the first times it
// runs it: 15 runs give a median of the steady state a broker that has run
// for a while is in, and the maximum shows the cold start.
constexpr int kDeploymentRuns = 15;

struct Options {
  int users = 3500;
  int seconds = 10;
  bool postgres = false;
};

// A setup step that fails ends the benchmark: there is nothing to measure.
[[noreturn]] void fail(const std::string& message) {
  throw std::runtime_error(message);
}

template <typename T>
T must(aula::Result<T> result, std::string_view what) {
  if (!result)
    fail(fmt::format("{}: {}", what, result.error().message()));
  return std::move(result).value();
}

void must(const aula::Status& status, std::string_view what) {
  if (!status)
    fail(fmt::format("{}: {}", what, status.error().message()));
}

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// The value below which `fraction` of the samples lie (nearest rank).
double percentile(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty())
    return 0;
  auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

http::ClientOptions clientOptions(const std::string& caPem) {
  // Logins of 32 clients at once queue behind each other's argon2 on a small
  // machine: allow them time.
  return http::ClientOptions{.totalTimeout = std::chrono::seconds(120), .tls = {.caPem = caPem}};
}

// One request; transport errors end the benchmark, any HTTP status returns.
http::Response call(http::Client& client, std::string method, std::string url,
                    const std::string& token = {}, std::string body = {}) {
  http::Request request{.method = std::move(method), .url = std::move(url)};
  if (!token.empty())
    request.headers.emplace_back("Authorization", "Bearer " + token);
  if (!body.empty())
    request.headers.emplace_back("Content-Type", "application/json");
  request.body = std::move(body);
  return must(client.send(request), fmt::format("{} {}", request.method, request.url));
}

Json expectJson(const http::Response& response, long status, std::string_view what) {
  if (response.status != status) {
    fail(fmt::format("{}: HTTP {} instead of {}: {}", what, response.status, status,
                     response.body.substr(0, 300)));
  }
  return must(aula::json::parse(response.body, {.maxBytes = 64 * 1024 * 1024}), what);
}

std::string loginBody(std::string_view user, std::string_view password) {
  return Json{{"username", user}, {"password", password}}.dump();
}

// What one load phase measured.
struct Load {
  std::size_t ok = 0;
  std::size_t failed = 0;
  double seconds = 0;
  std::vector<double> latencyMs;  // of the successful requests, sorted
  std::string firstFailure;

  double perSecond() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
};

// One request of a load phase: true when the answer was the expected one;
// otherwise `failure` says what came instead.
using LoadRequest =
    std::function<bool(std::size_t client, std::uint64_t n, http::Client&, std::string& failure)>;

// Runs `request` in a loop on every client at once, each on its own thread,
// for `seconds`. Requests still running at the deadline finish and count;
// the rate divides by the time until the last one finished.
Load runLoad(std::vector<http::Client>& clients, int seconds, const LoadRequest& request) {
  struct PerThread {
    std::vector<double> latencyMs;
    std::size_t failed = 0;
    std::string firstFailure;
  };
  std::vector<PerThread> results(clients.size());
  std::latch ready(static_cast<std::ptrdiff_t>(clients.size()) + 1);
  std::atomic<bool> go{false};
  Clock::time_point deadline;
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < clients.size(); ++i) {
    threads.emplace_back([&, i] {
      auto& mine = results[i];
      ready.count_down();
      while (!go.load(std::memory_order_acquire))
        std::this_thread::yield();
      for (std::uint64_t n = 0; Clock::now() < deadline; ++n) {
        auto start = Clock::now();
        std::string failure;
        if (request(i, n, clients[i], failure)) {
          mine.latencyMs.push_back(msSince(start));
        } else {
          if (mine.failed++ == 0)
            mine.firstFailure = failure;
        }
      }
    });
  }
  ready.arrive_and_wait();
  auto start = Clock::now();
  deadline = start + std::chrono::seconds(seconds);
  go.store(true, std::memory_order_release);
  for (auto& t : threads)
    t.join();
  Load load;
  load.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& r : results) {
    load.ok += r.latencyMs.size();
    load.failed += r.failed;
    if (load.firstFailure.empty())
      load.firstFailure = r.firstFailure;
    load.latencyMs.insert(load.latencyMs.end(), r.latencyMs.begin(), r.latencyMs.end());
  }
  std::sort(load.latencyMs.begin(), load.latencyMs.end());
  return load;
}

// A GET that must answer 200.
LoadRequest getRoute(std::string url, const std::vector<std::string>* tokens) {
  return [url = std::move(url), tokens](std::size_t client, std::uint64_t, http::Client& c,
                                        std::string& failure) {
    http::Request request{.url = url};
    if (tokens != nullptr)
      request.headers.emplace_back("Authorization", "Bearer " + (*tokens)[client]);
    auto response = c.send(request);
    if (response && response->status == 200)
      return true;
    failure = response ? fmt::format("HTTP {}: {}", response->status, response->body.substr(0, 200))
                       : response.error().message();
    return false;
  };
}

struct Figures {
  Load logins;
  Load desktops;
  Load healthz;
  std::vector<double> deployCreateMs;
  std::vector<double> deployStartMs;
  double hashMs = 0;
};

// One broker with its school, on one database backend.
class Site {
 public:
  Site(const Options& options, bool postgres) : options_(options) {
    if (postgres) {
      std::string why;
      if (!aula::test::PostgresServer::available(&why))
        fail("--postgres: " + why);
      pg_ = std::make_unique<aula::test::PostgresServer>();
    }
    auto init = must(broker::initDataDir({.dataDir = dir_ / "broker",
                                          .adminPassword = std::string(kAdminPassword),
                                          .listen = "127.0.0.1:0",
                                          .databaseBackend = postgres ? "postgresql" : "sqlite",
                                          .postgresConninfo = pg_ ? pg_->conninfo() : ""}),
                     "Creating the data dir");
    auto config = must(aula::config::Config::loadFile(init.configPath, broker::brokerSchema(),
                                                      aula::config::noEnvironment()),
                       "Loading broker.toml");
    // Every login of the benchmark comes from 127.0.0.1; none fails, but the
    // per-address limit must not be what is measured.
    must(config.set("auth.max_failures_per_address", "100000"), "Setting the failure limit");
    must(config.set("broker.log_level", "warn"), "Setting the log level");
    poolSize_ = config.getInt("database.pool_size");
    server_ =
        must(broker::BrokerServer::start(config, {.listen = "127.0.0.1:0", .hostLink = &link_}),
             "Starting the broker");
    base_ = "https://" + server_->address();
    admin_.emplace(clientOptions(server_->caPem()));
    adminToken_ = login(*admin_, "admin", kAdminPassword);
    populate();
    createHosts();
    createTemplate();
    createDesktops();
    analyze();
  }

  // A site that has run for a while has its planner statistics: PostgreSQL's
  // autovacuum gathers them a minute or so after the tables filled, later
  // than the benchmark starts measuring.
  void analyze() {
    auto& db = server_->broker().context.db;
    if (db.dialect() != broker::db::Dialect::kPostgres)
      return;
    must(db.transact(broker::db::TxMode::kWrite,
                     [](broker::db::Transaction& tx) -> aula::Status {
                       AULA_TRY(tx.exec("ANALYZE"));
                       return {};
                     }),
         "Gathering PostgreSQL's planner statistics");
  }

  std::int64_t poolSize() const { return poolSize_; }
  // One argon2id hash, timed at set-up: what each login costs in CPU.
  double hashMs() const { return hashMs_; }
  const broker::Argon2Params& argon2() { return server_->broker().settings.argon2; }

  Figures measure() {
    Figures f;
    f.logins = measureLogins();
    auto tokens = loginListUsers();
    std::vector<http::Client> clients = makeClients(kListClients);
    checkDesktopList(clients[0], tokens[0]);
    progress("Measuring GET /api/v1/desktops with {} clients for {} s.", kListClients,
             options_.seconds);
    f.desktops = runLoad(clients, options_.seconds, getRoute(base_ + "/api/v1/desktops", &tokens));
    progress("Measuring GET /healthz with the same clients for {} s.", options_.seconds);
    f.healthz = runLoad(clients, options_.seconds, getRoute(base_ + "/healthz", nullptr));
    measureDeployments(f);
    return f;
  }

 private:
  template <typename... Args>
  static void progress(fmt::format_string<Args...> format, Args&&... args) {
    fmt::print(stderr, "broker_bench: {}\n", fmt::format(format, std::forward<Args>(args)...));
  }

  std::string login(http::Client& client, std::string_view user, std::string_view password) {
    auto body =
        expectJson(call(client, "POST", base_ + "/api/v1/session", {}, loginBody(user, password)),
                   201, fmt::format("Logging in as '{}'", user));
    return body["token"].get<std::string>();
  }

  Json adminPost(const std::string& path, const Json& body, long status = 201) {
    return expectJson(call(*admin_, "POST", base_ + path, adminToken_, body.dump()), status,
                      "POST " + path);
  }

  // Users, classes and memberships straight into the database, in one
  // transaction, with one argon2 hash for all: through the API every user
  // would cost a hash of its own, minutes of set-up for nothing measured.
  void populate() {
    auto hashStart = Clock::now();
    auto hash = must(broker::hashPassword(kPassword, argon2()), "Hashing the password");
    hashMs_ = msSince(hashStart);
    auto start = Clock::now();
    auto now = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    auto& db = server_->broker().context.db;
    must(db.transact(
             broker::db::TxMode::kWrite,
             [&](broker::db::Transaction& tx) -> aula::Status {
               students_.clear();
               studentIds_.clear();
               courseMembers_.clear();
               auto insertId = [&tx](
                                   std::string_view sql,
                                   const broker::db::Params& params) -> aula::Result<std::int64_t> {
                 auto rows = AULA_TRY(tx.query(sql, params));
                 return rows.at(0).integer(0);
               };
               constexpr const char* kCategory =
                   "INSERT INTO categories (name, created_at) VALUES (?, ?) RETURNING id";
               constexpr const char* kGroup =
                   "INSERT INTO groups_ (category_id, name, created_at) VALUES (?, ?, ?) RETURNING "
                   "id";
               constexpr const char* kUser =
                   "INSERT INTO users (username, display_name, role, category_id, auth_source, "
                   "password_hash, "
                   "created_at) VALUES (?, ?, ?, ?, 'local', ?, ?) RETURNING id";
               constexpr const char* kMember =
                   "INSERT INTO group_members (group_id, user_id) VALUES (?, ?)";
               std::int64_t categories[2] = {
                   AULA_TRY(insertId(kCategory, {std::string("Primary"), now})),
                   AULA_TRY(insertId(kCategory, {std::string("Secondary"), now}))};
               primaryCategory_ = categories[0];
               std::vector<std::int64_t> classes;
               classes.reserve(kClasses);
               for (int c = 0; c < kClasses; ++c) {
                 classes.push_back(
                     AULA_TRY(insertId(kGroup, {categories[c < kClasses / 2 ? 0 : 1],
                                                fmt::format("Class {:02}", c + 1), now})));
               }
               // A course of the teacher's category, for the deployments.
               courseGroup_ =
                   AULA_TRY(insertId(kGroup, {primaryCategory_, std::string("Course bench"), now}));
               for (int i = 0; i < options_.users; ++i) {
                 int c = i % kClasses;
                 auto name = fmt::format("student{:05}", i + 1);
                 auto id = AULA_TRY(
                     insertId(kUser, {name, fmt::format("Student {}", i + 1), std::string("user"),
                                      categories[c < kClasses / 2 ? 0 : 1], hash, now}));
                 AULA_TRY(tx.exec(kMember, {classes[static_cast<std::size_t>(c)], id}));
                 if (c < kClasses / 2 && courseMembers_.size() < kCourseSize) {
                   AULA_TRY(tx.exec(kMember, {courseGroup_, id}));
                   courseMembers_.push_back(id);
                 }
                 students_.push_back(name);
                 studentIds_.push_back(id);
               }
               AULA_TRY(insertId(kUser, {std::string("teacher"), std::string("Teacher"),
                                         std::string("manager"), primaryCategory_, hash, now}));
               return {};
             }),
         "Inserting the users");
    progress("Inserted {} users in {} classes in {:.0f} ms.", options_.users, kClasses,
             msSince(start));
  }

  // A pool of simulated hypervisors of mixed sizes and load, each online
  // through one heartbeat.
  void createHosts() {
    pool_ = adminPost("/api/v1/pools", Json{{"name", "classrooms"}})["id"].get<std::int64_t>();
    const std::int64_t sizes[] = {16, 24, 32, 64};
    for (int i = 0; i < kHosts; ++i) {
      std::int64_t cpus = sizes[i % 4];
      auto host = adminPost("/api/v1/hosts",
                            Json{{"name", fmt::format("hv-{:03}", i + 1)},
                                 {"pool_id", pool_},
                                 {"address", fmt::format("10.0.{}.{}", i / 200, i % 200 + 10)},
                                 {"agent_port", 8444},
                                 {"cpus", cpus},
                                 {"memory_mb", cpus * 4096}});
      hosts_.push_back({host["id"].get<std::int64_t>(), cpus});
    }
    heartbeats();
  }

  void heartbeats() {
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (const auto& [id, cpus] : hosts_) {
      std::int64_t memory = cpus * 4096;
      Json load{
          {"cpu_idle", 0.3 + 0.65 * unit(rng)},
          {"free_memory_mb",
           static_cast<std::int64_t>(static_cast<double>(memory) * (0.4 + 0.5 * unit(rng)))},
          {"cpus", cpus},
          {"memory_mb", memory},
          {"storage_free_gb", {{"desktops", 500 + static_cast<std::int64_t>(1500 * unit(rng))}}}};
      auto response = call(*admin_, "POST", fmt::format("{}/api/v1/hosts/{}/heartbeat", base_, id),
                           adminToken_, load.dump());
      if (response.status != 204)
        fail(fmt::format("Heartbeat: HTTP {}: {}", response.status, response.body));
    }
  }

  void createTemplate() {
    template_ = adminPost("/api/v1/templates", Json{{"name", "Debian 12 classroom"},
                                                    {"storage", "templates"},
                                                    {"base_disk", "debian-12-classroom.qcow2"},
                                                    {"disk_gb", 30},
                                                    {"vcpus", 2},
                                                    {"memory_mb", 4096},
                                                    {"category_id", primaryCategory_},
                                                    {"access", Json::array({"everyone"})},
                                                    {"pools", Json::array({pool_})}})["id"]
                    .get<std::int64_t>();
  }

  // The users of the list measurement own three desktops each.
  void createDesktops() {
    for (std::size_t u = 0; u < kListClients; ++u) {
      for (int d = 0; d < kDesktopsPerListUser; ++d) {
        adminPost("/api/v1/desktops", Json{{"name", fmt::format("Desktop {}", d + 1)},
                                           {"template_id", template_},
                                           {"owner_id", studentIds_[u]}});
      }
    }
  }

  std::vector<http::Client> makeClients(std::size_t count) {
    std::vector<http::Client> clients;
    clients.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      clients.emplace_back(clientOptions(server_->caPem()));
      // The TLS handshake happens here, not in the measurement.
      auto response = call(clients.back(), "GET", base_ + "/healthz");
      if (response.status != 200)
        fail("GET /healthz before the measurement did not answer 200.");
    }
    return clients;
  }

  // Each client logs in as its own users in turn, so no two logins at once
  // are for the same user; every login makes a new session.
  Load measureLogins() {
    auto clients = makeClients(kLoginClients);
    std::size_t perClient = students_.size() / kLoginClients;
    progress("Measuring logins with {} clients for {} s.", kLoginClients, options_.seconds);
    return runLoad(clients, options_.seconds,
                   [&](std::size_t client, std::uint64_t n, http::Client& c, std::string& failure) {
                     const auto& user = students_[client + kLoginClients * (n % perClient)];
                     auto response =
                         c.send(http::Request{.method = "POST",
                                              .url = base_ + "/api/v1/session",
                                              .headers = {{"Content-Type", "application/json"}},
                                              .body = loginBody(user, kPassword)});
                     if (response && response->status == 201 &&
                         response->body.find("\"token\"") != std::string::npos) {
                       return true;
                     }
                     failure = response ? fmt::format("HTTP {}: {}", response->status,
                                                      response->body.substr(0, 200))
                                        : response.error().message();
                     return false;
                   });
  }

  // Sessions for the users with desktops, logged in all at once.
  std::vector<std::string> loginListUsers() {
    std::vector<std::string> tokens(kListClients);
    std::vector<std::thread> threads;
    std::vector<std::string> errors(kListClients);
    for (std::size_t i = 0; i < kListClients; ++i) {
      threads.emplace_back([&, i] {
        try {
          http::Client client(clientOptions(server_->caPem()));
          tokens[i] = login(client, students_[i], kPassword);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    }
    for (auto& t : threads)
      t.join();
    for (const auto& e : errors) {
      if (!e.empty())
        fail(e);
    }
    return tokens;
  }

  void checkDesktopList(http::Client& client, const std::string& token) {
    auto list = expectJson(call(client, "GET", base_ + "/api/v1/desktops", token), 200,
                           "GET /api/v1/desktops");
    if (list.size() != kDesktopsPerListUser) {
      fail(fmt::format("GET /api/v1/desktops listed {} desktops instead of {}.", list.size(),
                       kDesktopsPerListUser));
    }
  }

  // A teacher deploys to a course of 30 and starts it, five times over; each
  // deployment is new (its own name, 30 new desktops).
  void measureDeployments(Figures& f) {
    http::Client teacher(clientOptions(server_->caPem()));
    auto token = login(teacher, "teacher", kPassword);
    // Hosts that heard nothing for 90 s count as lost; the agents would have
    // reported by now.
    heartbeats();
    progress("Measuring {} deployments of {} desktops.", kDeploymentRuns, kCourseSize);
    for (int run = 0; run < kDeploymentRuns; ++run) {
      Json body{{"name", fmt::format("Lesson {}", run + 1)},
                {"template_id", template_},
                {"group_id", courseGroup_},
                {"persistent", true}};
      auto start = Clock::now();
      auto response = call(teacher, "POST", base_ + "/api/v1/deployments", token, body.dump());
      f.deployCreateMs.push_back(msSince(start));
      auto deployment = expectJson(response, 201, "Creating a deployment");
      if (deployment["desktops"] != kCourseSize) {
        fail(fmt::format("The deployment has {} desktops instead of {}.",
                         deployment["desktops"].dump(), kCourseSize));
      }
      auto id = deployment["id"].get<std::int64_t>();
      start = Clock::now();
      response =
          call(teacher, "POST", fmt::format("{}/api/v1/deployments/{}/start", base_, id), token);
      f.deployStartMs.push_back(msSince(start));
      auto started = expectJson(response, 200, "Starting a deployment");
      if (started["succeeded"] != kCourseSize) {
        fail(fmt::format("Starting the deployment: {} of {} desktops started; failures: {}",
                         started["succeeded"].dump(), kCourseSize,
                         started["failed"].dump().substr(0, 400)));
      }
    }
  }

  Options options_;
  std::unique_ptr<aula::test::PostgresServer> pg_;
  aula::test::TempDir dir_;
  broker::SimulatedHostLink link_;
  std::unique_ptr<broker::BrokerServer> server_;  // last: stops before the link goes
  std::int64_t poolSize_ = 0;
  double hashMs_ = 0;
  std::string base_;
  std::optional<http::Client> admin_;
  std::string adminToken_;
  std::int64_t primaryCategory_ = 0;
  std::int64_t courseGroup_ = 0;
  std::vector<std::string> students_;
  std::vector<std::int64_t> studentIds_;
  std::vector<std::int64_t> courseMembers_;
  std::int64_t pool_ = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> hosts_;  // id, cpus
  std::int64_t template_ = 0;
};

std::string loadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return in ? fmt::format("{} {} {}", one, five, fifteen) : std::string("unknown");
}

std::string today() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  (void)std::strftime(text, sizeof text, "%Y-%m-%d %H:%M UTC", &tm);
  return text;
}

std::string rate(const Load& load) {
  auto text = fmt::format("{:.1f}", load.perSecond());
  if (load.failed > 0)
    text += fmt::format(" ({} failed)", load.failed);
  return text;
}

std::string latency(const Load& load) {
  return fmt::format("{:.1f} / {:.1f}", percentile(load.latencyMs, 0.50),
                     percentile(load.latencyMs, 0.99));
}

std::string range(const std::vector<double>& values) {
  auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  return fmt::format("{:.1f} ({:.1f}–{:.1f})", median(values), *lo, *hi);
}

void printTable(const std::string& command, const Options& options,
                const broker::Argon2Params& argon2, std::int64_t poolSize,
                const std::vector<std::pair<std::string, Figures>>& runs,
                const std::string& loadBefore) {
  fmt::print("## Broker benchmark\n\n");
  fmt::print("- command: `{}`\n", command);
  fmt::print("- date: {}; machine: nproc {}; load average before {}, after {}\n", today(),
             std::thread::hardware_concurrency(), loadBefore, loadAverage());
  fmt::print("- argon2id: m={} KiB, t={}, p={}; database pool: {} connections\n", argon2.memoryKib,
             argon2.iterations, argon2.parallelism, poolSize);
  fmt::print(
      "- site: {} users in {} classes in 2 categories, {} simulated hosts online, "
      "{} desktops for each of {} users; {} s per load figure\n\n",
      options.users, kClasses, kHosts, kDesktopsPerListUser, kListClients, options.seconds);
  std::string header = "| figure |";
  std::string rule = "|---|";
  for (const auto& [name, f] : runs) {
    header += fmt::format(" {} |", name);
    rule += "---:|";
  }
  fmt::print("{}\n{}\n", header, rule);
  auto row = [&](std::string_view label, const std::function<std::string(const Figures&)>& cell) {
    std::string line = fmt::format("| {} |", label);
    for (const auto& [name, f] : runs)
      line += fmt::format(" {} |", cell(f));
    fmt::print("{}\n", line);
  };
  row(fmt::format("logins/s, {} clients (POST /api/v1/session)", kLoginClients),
      [](const Figures& f) { return rate(f.logins); });
  row("one argon2id hash (set-up, one thread), ms",
      [](const Figures& f) { return fmt::format("{:.1f}", f.hashMs); });
  row("login latency p50 / p99, ms", [](const Figures& f) { return latency(f.logins); });
  row(fmt::format("GET /api/v1/desktops per s, {} clients", kListClients),
      [](const Figures& f) { return rate(f.desktops); });
  row("desktops latency p50 / p99, ms", [](const Figures& f) { return latency(f.desktops); });
  row(fmt::format("GET /healthz per s, same {} clients", kListClients),
      [](const Figures& f) { return rate(f.healthz); });
  row("healthz latency p50 / p99, ms", [](const Figures& f) { return latency(f.healthz); });
  row("**desktops / healthz**", [](const Figures& f) {
    return fmt::format("**{:.2f}**", f.healthz.perSecond() > 0
                                         ? f.desktops.perSecond() / f.healthz.perSecond()
                                         : 0);
  });
  row(fmt::format("create a {}-desktop deployment, ms, median (min–max) of {}", kCourseSize,
                  kDeploymentRuns),
      [](const Figures& f) { return range(f.deployCreateMs); });
  row(fmt::format("start its {} desktops, ms, median (min–max) of {}", kCourseSize,
                  kDeploymentRuns),
      [](const Figures& f) { return range(f.deployStartMs); });
  if (runs.size() == 2) {
    // The same figures on both databases, measured in this run.
    const auto& sqlite = runs[0].second;
    const auto& postgres = runs[1].second;
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    fmt::print(
        "\n**PostgreSQL / SQLite, start a {}-desktop deployment (median): {:.2f}** (goal ≤ 2); "
        "create it: {:.2f}\n",
        kCourseSize, ratio(median(postgres.deployStartMs), median(sqlite.deployStartMs)),
        ratio(median(postgres.deployCreateMs), median(sqlite.deployCreateMs)));
  }
  for (const auto& [name, f] : runs) {
    for (const Load* l : {&f.logins, &f.desktops, &f.healthz}) {
      if (l->failed > 0)
        fmt::print("\n{}: first failure: {}\n", name, l->firstFailure);
    }
  }
}

}  // namespace

int runBench(int argc, char** argv) {
  Options options;
  CLI::App app{"Measures the broker under load on simulated hosts and prints a Markdown table."};
  app.add_option("--users", options.users, "users in the school")->check(CLI::Range(100, 1000000));
  app.add_option("--seconds", options.seconds, "length of each load figure")
      ->check(CLI::Range(1, 3600));
  app.add_flag("--postgres", options.postgres, "also measure on PostgreSQL (a throw-away server)");
  CLI11_PARSE(app, argc, argv);

  std::string command = "broker_bench";
  for (int i = 1; i < argc; ++i)
    command += fmt::format(" {}", argv[i]);
  aula::log::setLevel(aula::log::Level::kWarn);
  try {
    std::string loadBefore = loadAverage();
    std::vector<std::pair<std::string, Figures>> runs;
    broker::Argon2Params argon2;
    std::int64_t poolSize = 0;
    for (bool postgres : {false, true}) {
      if (postgres && !options.postgres)
        continue;
      fmt::print(stderr, "broker_bench: setting up the broker on {}.\n",
                 postgres ? "PostgreSQL" : "SQLite");
      Site site(options, postgres);
      argon2 = site.argon2();
      poolSize = site.poolSize();
      auto figures = site.measure();
      figures.hashMs = site.hashMs();
      runs.emplace_back(postgres ? "PostgreSQL" : "SQLite", std::move(figures));
    }
    printTable(command, options, argon2, poolSize, runs, loadBefore);
  } catch (const std::exception& e) {
    fmt::print(stderr, "broker_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  return aula::bench::guardedMain("broker_bench", [&] { return runBench(argc, argv); });
}
