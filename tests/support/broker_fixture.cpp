// A whole broker for API tests (see broker_fixture.hpp).
#include "support/broker_fixture.hpp"

#include <chrono>
#include <stdexcept>

#include <fmt/format.h>

namespace aula::test {

namespace fs = std::filesystem;
using json::Json;

std::string_view backendName(Backend backend) {
  return backend == Backend::kSqlite ? "sqlite" : "postgresql";
}

// ---- ApiResponse ----

std::string ApiResponse::header(std::string_view name) const {
  std::string lower(name);
  for (auto& c : lower)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto it = headers.find(lower);
  return it == headers.end() ? std::string() : it->second;
}

std::string ApiResponse::errorCode() const {
  if (!body.is_object() || !body.contains("error") || !body["error"].is_object())
    return {};
  return body["error"].value("code", "");
}

std::string ApiResponse::errorMessage() const {
  if (!body.is_object() || !body.contains("error") || !body["error"].is_object())
    return {};
  return body["error"].value("message", "");
}

std::string ApiResponse::describe() const {
  if (!errorCode().empty())
    return fmt::format("{} {}: {}", status, errorCode(), errorMessage());
  return fmt::format("{} {}", status, text.substr(0, 300));
}

// ---- ApiClient ----

ApiClient::ApiClient(std::string baseUrl, const std::string& caPem)
    : baseUrl_(std::move(baseUrl)), client_(http::ClientOptions{.tls = {.caPem = caPem}}) {}

ApiResponse ApiClient::send(http::Request request, std::string_view token) {
  std::string what = fmt::format("{} {}", request.method, request.url);
  request.url = baseUrl_ + request.url;
  if (!token.empty())
    request.headers.emplace_back("Authorization", fmt::format("Bearer {}", token));
  auto sent = client_.send(request);
  if (!sent)
    throw std::runtime_error(fmt::format("{} got no answer: {}", what, sent.error().message()));
  ApiResponse out;
  out.status = sent->status;
  out.text = std::move(sent->body);
  out.headers = std::move(sent->headers);
  if (!out.text.empty())
    out.body =
        json::parse(out.text, {.maxBytes = 64 * 1024 * 1024, .maxDepth = 64}).valueOr(Json());
  return out;
}

ApiResponse ApiClient::call(std::string_view method, std::string_view path, std::string_view token,
                            const std::optional<Json>& body,
                            std::vector<std::pair<std::string, std::string>> headers) {
  http::Request request{
      .method = std::string(method), .url = std::string(path), .headers = std::move(headers)};
  if (body) {
    request.body = body->dump();
    request.headers.emplace_back("Content-Type", "application/json");
  }
  return send(std::move(request), token);
}

std::string ApiClient::login(std::string_view username, std::string_view password) {
  auto r =
      call("POST", "/api/v1/session", {}, Json{{"username", username}, {"password", password}});
  if (r.status != 201 || !r.body.contains("token")) {
    throw std::runtime_error(fmt::format("Logging in as '{}' failed: {}", username, r.describe()));
  }
  return r.body["token"].get<std::string>();
}

// ---- BrokerFixture ----

namespace {

std::string tomlString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

void replaceAll(std::string& text, std::string_view from, std::string_view to) {
  for (auto pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
}

std::unique_ptr<broker::BrokerServer> startBroker(const fs::path& dataDir, const fs::path& scratch,
                                                  const BrokerOptions& options,
                                                  broker::SimulatedHostLink& hosts) {
  fs::path configPath = dataDir / "broker.toml";
  if (options.joinDataDir) {
    // What an admin copies to the next broker, modes kept.
    fs::create_directories(dataDir);
    fs::copy_file(*options.joinDataDir / "broker.toml", configPath);
    for (const char* sub : {"ca", "tls"}) {
      fs::copy(*options.joinDataDir / sub, dataDir / sub, fs::copy_options::recursive);
    }
  } else {
    auto made = broker::initDataDir({.dataDir = dataDir,
                                     .adminPassword = std::string(BrokerFixture::kAdminPassword),
                                     .listen = "127.0.0.1:0",
                                     .databaseBackend = std::string(backendName(options.backend)),
                                     .postgresConninfo = options.postgresConninfo});
    if (!made)
      throw std::runtime_error("initDataDir failed: " + made.error().message());
    configPath = made->configPath;

    // Storage paths are a table, which config.set cannot reach: point them
    // into the test's directory in the file itself.
    fs::create_directories(scratch / "templates");
    fs::create_directories(scratch / "desktops");
    std::string toml = readFile(configPath);
    replaceAll(toml, "\"/var/lib/aula/templates\"", tomlString((scratch / "templates").string()));
    replaceAll(toml, "\"/var/lib/aula/desktops\"", tomlString((scratch / "desktops").string()));
    toml += "\n" + options.extraToml + "\n";
    writeFile(configPath, toml);
  }

  auto config =
      config::Config::loadFile(configPath, broker::brokerSchema(), config::noEnvironment());
  if (!config)
    throw std::runtime_error("Loading broker.toml failed: " + config.error().message());
  // Cheap hashes: a test logs in dozens of times.
  std::vector<std::pair<std::string, std::string>> settings = {{"auth.argon2_memory_kib", "1024"},
                                                               {"auth.argon2_iterations", "1"},
                                                               {"broker.log_level", "warn"}};
  if (options.joinDataDir)
    settings.emplace_back("broker.data_dir", dataDir.string());
  settings.insert(settings.end(), options.settings.begin(), options.settings.end());
  for (const auto& [key, value] : settings) {
    if (auto set = config->set(key, value); !set) {
      throw std::runtime_error(
          fmt::format("Setting {} = {} failed: {}", key, value, set.error().message()));
    }
  }
  auto server = broker::BrokerServer::start(*config, {.listen = "127.0.0.1:0", .hostLink = &hosts});
  if (!server)
    throw std::runtime_error("The broker did not start: " + server.error().message());
  return std::move(server).value();
}

}  // namespace

BrokerFixture::BrokerFixture(const BrokerOptions& options)
    : dataDir_(dir_ / "broker"),
      server_(startBroker(dataDir_, dir_.path(), options, hosts_)),
      api_(baseUrl(), caPem()) {}

BrokerFixture::~BrokerFixture() {
  if (server_)
    server_->stop();
}

fs::path BrokerFixture::caFile() const {
  return dataDir_ / "ca" / "ca.crt";
}

std::string BrokerFixture::baseUrl() const {
  return fmt::format("https://127.0.0.1:{}", server_->port());
}

const std::string& BrokerFixture::caPem() const {
  return server_->caPem();
}

const std::string& BrokerFixture::adminToken() {
  if (!adminToken_)
    adminToken_ = api_.login("admin", kAdminPassword);
  return *adminToken_;
}

const std::string& BrokerFixture::tokenOf(const std::string& username) {
  auto it = tokens_.find(username);
  if (it == tokens_.end())
    it = tokens_.emplace(username, api_.login(username, kPassword)).first;
  return it->second;
}

Json BrokerFixture::adminCall(std::string_view method, std::string_view path,
                              const std::optional<Json>& body, long expected) {
  auto r = api_.call(method, path, adminToken(), body);
  bool ok = expected != 0 ? r.status == expected : (r.status >= 200 && r.status < 300);
  if (!ok) {
    throw std::runtime_error(
        fmt::format("As admin, {} {} answered {}", method, path, r.describe()));
  }
  return r.body;
}

process::Outcome BrokerFixture::runAulactl(
    const std::string& bin, std::vector<std::string> args, const std::string& token,
    const std::filesystem::path& home, std::vector<std::pair<std::string, std::string>> env) const {
  args.insert(args.begin(), bin);
  env.insert(env.begin(), {{"AULA_URL", baseUrl()},
                           {"AULA_TOKEN", token},
                           {"AULA_CA_FILE", caFile().string()},
                           {"HOME", home.string()},
                           {"XDG_CONFIG_HOME", (home / "config").string()}});
  process::SystemRunner runner;
  auto ran = runner.run({.argv = std::move(args), .timeout = std::chrono::seconds(60), .env = env});
  if (!ran)
    throw std::runtime_error("aulactl did not run: " + ran.error().message());
  return *ran;
}

std::int64_t BrokerFixture::createUser(const std::string& username, std::string_view role,
                                       std::optional<std::int64_t> categoryId,
                                       const std::vector<std::int64_t>& groupIds) {
  Json body{
      {"username", username}, {"role", role}, {"password", kPassword}, {"group_ids", groupIds}};
  if (categoryId)
    body["category_id"] = *categoryId;
  return adminCall("POST", "/api/v1/users", body, 201)["id"].get<std::int64_t>();
}

std::int64_t BrokerFixture::createDesktop(std::int64_t ownerId, const std::string& name,
                                          std::optional<std::int64_t> templateId) {
  Json body{
      {"name", name}, {"template_id", templateId.value_or(ids_.debian)}, {"owner_id", ownerId}};
  return adminCall("POST", "/api/v1/desktops", body, 201)["id"].get<std::int64_t>();
}

const SeedIds& BrokerFixture::seed() {
  if (seeded_)
    return ids_;
  auto id = [](const Json& j) { return j["id"].get<std::int64_t>(); };
  ids_.admin = id(adminCall("GET", "/api/v1/me"));
  ids_.categoryA = id(adminCall("POST", "/api/v1/categories", Json{{"name", "School A"}}, 201));
  ids_.categoryB = id(adminCall("POST", "/api/v1/categories", Json{{"name", "School B"}}, 201));
  ids_.group1A = id(adminCall("POST", "/api/v1/groups",
                              Json{{"name", "1A"}, {"category_id", ids_.categoryA}}, 201));
  ids_.group1B = id(adminCall("POST", "/api/v1/groups",
                              Json{{"name", "1B"}, {"category_id", ids_.categoryB}}, 201));
  ids_.teacherA = createUser("teacher-a", "manager", ids_.categoryA);
  ids_.teacherB = createUser("teacher-b", "manager", ids_.categoryB);
  ids_.alice = createUser("alice", "user", ids_.categoryA, {ids_.group1A});
  ids_.bob = createUser("bob", "user", ids_.categoryA, {ids_.group1A});
  ids_.carol = createUser("carol", "user", ids_.categoryB, {ids_.group1B});
  ids_.adv = createUser("adv", "advanced", ids_.categoryA);
  ids_.pool = id(adminCall("POST", "/api/v1/pools", Json{{"name", "default"}}, 201));
  for (int i = 1; i <= 3; ++i) {
    auto host = id(adminCall("POST", "/api/v1/hosts",
                             Json{{"name", fmt::format("hv{}", i)},
                                  {"pool_id", ids_.pool},
                                  {"address", fmt::format("10.0.0.{}", i)},
                                  {"agent_port", 9443},
                                  {"cpus", 16},
                                  {"memory_mb", 65536}},
                             201));
    adminCall(
        "POST", fmt::format("/api/v1/hosts/{}/heartbeat", host),
        Json{{"cpu_idle", 0.9}, {"free_memory_mb", 60000}, {"cpus", 16}, {"memory_mb", 65536}},
        204);
    ids_.hosts.push_back(host);
  }
  ids_.debian = id(adminCall("POST", "/api/v1/templates",
                             Json{{"name", "Debian"},
                                  {"base_disk", "debian-12.qcow2"},
                                  {"disk_gb", 20},
                                  {"vcpus", 1},
                                  {"memory_mb", 1024},
                                  {"access", {"everyone"}}},
                             201));
  seeded_ = true;
  return ids_;
}

}  // namespace aula::test
