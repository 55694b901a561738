// Assembling the broker from its configuration; creating a data dir.
#include "aula/broker/server.hpp"

#include <algorithm>
#include <condition_variable>
#include <thread>

#include <sys/stat.h>

#include "aula/broker/agent_link.hpp"
#include "aula/broker/api.hpp"
#include "aula/broker/boot_tftp.hpp"
#include "aula/broker/event_relay.hpp"
#include "aula/broker/schema.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/file.hpp"
#include "aula/common/http_server.hpp"
#include "aula/common/log.hpp"

namespace aula::broker {

namespace fs = std::filesystem;

config::Schema brokerSchema() {
  config::Schema s;
  s.require("broker.data_dir", config::Type::kString,
            "folder with the broker's state, CA and TLS files")
      .string("broker.listen", "0.0.0.0:8443", "address and port to serve HTTPS on")
      .choice("broker.log_level", "info", {"debug", "info", "warn", "error"})
      .string("tls.cert", "", "the broker's certificate chain (default: <data_dir>/tls/broker.crt)")
      .string("tls.key", "", "the broker's key (default: <data_dir>/tls/broker.key)")
      .string("tls.ca_cert", "", "the CA certificate (default: <data_dir>/ca/ca.crt)")
      .string("tls.ca_key", "", "the CA key (default: <data_dir>/ca/ca.key)")
      .string("tls.client_cert", "",
              "the broker's client certificate for agents (default: "
              "<data_dir>/tls/broker-client.crt; made from the CA when missing)")
      .string("tls.client_key", "", "its key (default: <data_dir>/tls/broker-client.key)")
      .choice("database.backend", "sqlite", {"sqlite", "postgresql"})
      .string("database.path", "", "SQLite file (default: <data_dir>/aula.db)")
      .string("database.postgres", "", "libpq connection string, for the postgresql backend")
      .integer("database.pool_size", 8, 1, 256)
      .integer("auth.session_idle_minutes", 60, 1, 7 * 24 * 60)
      .integer("auth.session_max_hours", 12, 1, 24 * 30)
      .integer("auth.argon2_memory_kib", 19456, 1024, 4 * 1024 * 1024)
      .integer("auth.argon2_iterations", 2, 1, 100)
      .integer("auth.max_failures_per_user", 5, 1, 1000)
      .integer("auth.max_failures_per_address", 30, 1, 100000)
      .integer("auth.lockout_seconds", 30, 1, 86400)
      .boolean("ldap.enabled", false)
      .string("ldap.uri", "")
      .string("ldap.base_dn", "")
      .string("ldap.user_filter", "(uid={username})")
      .string("ldap.bind_dn", "")
      .string("ldap.bind_password_file", "")
      .string("ldap.group_base_dn", "")
      .string("ldap.group_filter", "(|(member={dn})(uniqueMember={dn}))")
      .string("ldap.uid_attribute", "uid")
      .choice("ldap.nested_groups", "off", {"off", "follow", "in_chain"})
      .integer("ldap.nested_depth", 5, 1, 32)
      .string("ldap.nested_filter", "(|(member={dn})(uniqueMember={dn}))")
      .integer("ldap.sync_minutes", 60, 0, 10080)
      .string("ldap.ca_cert", "")
      .boolean("ldap.start_tls", false)
      .integer("ldap.timeout_ms", 5000, 100, 60000)
      .stringMap("ldap.group_roles", "directory group DN = aula role")
      .stringMap("ldap.group_map", "directory group DN = \"Category/Group\"")
      .choice("ldap.default_role", "user", {"user", "advanced", "manager", "admin"})
      .string("ldap.default_category", "")
      .stringMap("storage.paths", "storage name = folder; template disks must lie inside one")
      .number("placement.weight_cpu", 1.0)
      .number("placement.weight_memory", 1.0)
      .number("placement.weight_vcpu_ratio", 1.0)
      .number("placement.weight_random", 0.2)
      .number("placement.vcpu_ratio_limit", 4.0)
      .integer("placement.memory_reserve_mb", 512, 0, 1 << 20)
      .integer("hosts.lost_after_seconds", 90, 5, 86400)
      .integer("hosts.reconcile_grace_seconds", 30, 0, 3600,
               "how long a desktop must have run before a heartbeat without it stops it")
      .integer("hosts.shutdown_grace_seconds", 60, 0, 3600,
               "how long a guest may take to shut down before it is powered off")
      .integer("limits.max_body_bytes", 1024 * 1024, 1024, 64 * 1024 * 1024)
      .integer("console.ticket_seconds", 60, 5, 60)
      .string("greeter.school_name", "", "the school's name on every lab PC's login screen")
      .string("greeter.logo_file", "", "a PNG of at most 256 KiB shown beside the name")
      .integer("greeter.idle_logout_minutes", 5, 1, 1440,
               "a greeter's desktop list logs out after this long without a key")
      .string("boot.listen", "",
              "address and port to serve network boot on, in plain HTTP (a PC's firmware "
              "cannot check our CA), like 0.0.0.0:8080; empty: no network boot")
      .string("boot.image_dir", "", "where images are kept (default: <data_dir>/images)")
      .string("boot.broker_url", "",
              "the broker's HTTPS URL as lab PCs reach it (default: the host a PC asked for "
              "its boot script, with the HTTPS port)")
      .choice("boot.unknown", "thin", {"thin", "menu", "local"},
              "what a PC no admin registered boots: the thin image, the menu, or its own disk")
      .string("boot.unknown_channel", "stable", "the channel unknown PCs boot from")
      .string("boot.kernel_args", "", "more on every image's kernel command line")
      .string("boot.tftp_listen", "",
              "address and port to serve TFTP on, for UEFI PCs with Secure Boot on (Debian's "
              "signed shim and GRUB, which read only TFTP), like 10.0.0.2:69; empty: none")
      .string("boot.loaders_dir", "",
              "where Debian's signed shimx64.efi and grubx64.efi are "
              "(provisioning/fetch-loaders.sh puts them there; default: <data_dir>/loaders)")
      .integer("boot.max_unknown", 5000, 0, 1000000,
               "unknown MAC addresses recorded at most (more are served, not stored)")
      .boolean("debug.simulate_hosts", false,
               "start desktops on in-memory hosts (demos, benchmarks)")
      .integer("debug.deployment_step_delay_ms", 0, 0, 10000, "fault injection for the crash test");
  return s;
}

namespace {

// A file the configuration names; a failure is the configuration's.
Result<std::string> readText(const fs::path& path, std::string_view what) {
  auto text = file::readFile(path, what);
  if (!text)
    return Error(Errc::kConfig, text.error().message());
  return text;
}

// Key material and the configuration: mode set when the file is made, never
// wider for a moment, and replaced whole.
Status writePrivate(const fs::path& path, std::string_view content, mode_t mode) {
  return file::writeFileAtomic(path, content, {.mode = mode});
}

// The broker's client certificate for agents (CN "aula-broker"), made from
// the CA unless it exists.
Status ensureClientCertificate(const std::string& caCertPem, const std::string& caKeyPem,
                               const fs::path& certPath, const fs::path& keyPath) {
  std::error_code ec;
  if (fs::exists(certPath, ec) && fs::exists(keyPath, ec))
    return {};
  auto issued = AULA_TRY(crypto::issueCertificate(
      {.certPem = caCertPem, .keyPem = caKeyPem},
      {.commonName = kBrokerClientName, .usage = crypto::CertUsage::kClient}));
  AULA_TRY_STATUS(writePrivate(keyPath, issued.keyPem, 0600));
  AULA_TRY_STATUS(writePrivate(certPath, issued.certPem, 0644));
  log::info("Made the broker's client certificate for agents: {}.", certPath.string());
  return {};
}

fs::path orDefault(const config::Config& c, std::string_view key, const fs::path& def) {
  const auto& v = c.getString(key);
  return v.empty() ? def : fs::path(v);
}

std::string tomlString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

Result<std::unique_ptr<db::Database>> openDatabase(const config::Config& c,
                                                   const fs::path& dataDir) {
  if (c.getString("database.backend") == "postgresql") {
    if (c.getString("database.postgres").empty()) {
      return Error(
          Errc::kConfig,
          fmt::format("{}: database.backend is 'postgresql' but database.postgres (the connection "
                      "string) is empty.",
                      c.sourceName()));
    }
    return db::openPostgres({.conninfo = c.getString("database.postgres"),
                             .poolSize = static_cast<int>(c.getInt("database.pool_size"))});
  }
  return db::openSqlite({.path = orDefault(c, "database.path", dataDir / "aula.db").string(),
                         .poolSize = static_cast<int>(c.getInt("database.pool_size"))});
}

// What goes on lab PCs' kernel command line is checked before any PC boots.
Status checkBootSettings(const config::Config& c) {
  auto plain = [](std::string_view v) {
    return std::all_of(v.begin(), v.end(), [](char ch) {
      const auto u = static_cast<unsigned char>(ch);
      return u > 0x20 && u < 0x7f && ch != '$';
    });
  };
  const auto& url = c.getString("boot.broker_url");
  if (!url.empty() && (!url.starts_with("https://") || !plain(url))) {
    return makeError(Errc::kConfig,
                     "{}: boot.broker_url '{}' must be the broker's https:// URL, without spaces "
                     "or '$', like https://aula.school.example:8443.",
                     c.sourceName(), url);
  }
  const auto& args = c.getString("boot.kernel_args");
  for (std::size_t start = 0; start < args.size();) {
    auto end = args.find(' ', start);
    if (end == std::string::npos)
      end = args.size();
    if (!plain(args.substr(start, end - start))) {
      return makeError(Errc::kConfig,
                       "{}: boot.kernel_args '{}' may hold only printable characters other than "
                       "'$', separated by spaces.",
                       c.sourceName(), args);
    }
    start = end + 1;
  }
  return checkChannel(c.getString("boot.unknown_channel"));
}

BrokerSettings settingsFrom(const config::Config& c) {
  BrokerSettings s;
  s.sessionIdle = std::chrono::minutes(c.getInt("auth.session_idle_minutes"));
  s.sessionMax = std::chrono::hours(c.getInt("auth.session_max_hours"));
  s.argon2.memoryKib = static_cast<std::uint32_t>(c.getInt("auth.argon2_memory_kib"));
  s.argon2.iterations = static_cast<std::uint32_t>(c.getInt("auth.argon2_iterations"));
  s.throttle.maxFailuresPerUser = static_cast<int>(c.getInt("auth.max_failures_per_user"));
  s.throttle.maxFailuresPerAddress = static_cast<int>(c.getInt("auth.max_failures_per_address"));
  s.throttle.firstLockout = std::chrono::seconds(c.getInt("auth.lockout_seconds"));
  s.placement.cpuIdle = c.getDouble("placement.weight_cpu");
  s.placement.freeMemory = c.getDouble("placement.weight_memory");
  s.placement.vcpuRatio = c.getDouble("placement.weight_vcpu_ratio");
  s.placement.random = c.getDouble("placement.weight_random");
  s.placement.defaultVcpuRatioLimit = c.getDouble("placement.vcpu_ratio_limit");
  s.placement.memoryReserveMb = c.getInt("placement.memory_reserve_mb");
  s.storage = c.getStringMap("storage.paths");
  s.hostLostAfter = std::chrono::seconds(c.getInt("hosts.lost_after_seconds"));
  s.ticketValidity = std::chrono::seconds(c.getInt("console.ticket_seconds"));
  s.reconcileGrace = std::chrono::seconds(c.getInt("hosts.reconcile_grace_seconds"));
  s.deploymentStepDelay = std::chrono::milliseconds(c.getInt("debug.deployment_step_delay_ms"));
  for (const auto& [dn, role] : c.getStringMap("ldap.group_roles")) {
    std::string lower = dn;
    for (auto& ch : lower)
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    s.directoryMapping.groupRoles[lower] = role;
  }
  for (const auto& [dn, target] : c.getStringMap("ldap.group_map")) {
    std::string lower = dn;
    for (auto& ch : lower)
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    s.directoryMapping.groupMap[lower] = target;
  }
  s.boot.imageDir =
      orDefault(c, "boot.image_dir", fs::path(c.getString("broker.data_dir")) / "images");
  s.boot.brokerUrl = c.getString("boot.broker_url");
  s.boot.unknown = c.getString("boot.unknown");
  s.boot.unknownChannel = c.getString("boot.unknown_channel");
  s.boot.kernelArgs = c.getString("boot.kernel_args");
  s.boot.maxUnknown = c.getInt("boot.max_unknown");
  s.boot.loadersDir =
      orDefault(c, "boot.loaders_dir", fs::path(c.getString("broker.data_dir")) / "loaders");
  s.greeter.schoolName = c.getString("greeter.school_name");
  s.greeter.idleLogout = std::chrono::minutes(c.getInt("greeter.idle_logout_minutes"));
  s.directoryMapping.defaultRole = c.getString("ldap.default_role");
  s.directoryMapping.defaultCategory = c.getString("ldap.default_category");
  return s;
}

// Until the agent link exists, a broker without simulated hosts says so.
class NoAgentLink final : public HostLink {
 public:
  Result<Observed> startDesktop(const HostAddress& host, const DesktopSpec&) override {
    return away(host);
  }
  Result<Observed> stopDesktop(const HostAddress& host, const DesktopSpec&, bool) override {
    return away(host);
  }
  Status deleteDesktop(const HostAddress& host, const DesktopSpec&) override { return away(host); }
  Result<ConsoleTicket> setTicket(const HostAddress& host, const DesktopSpec&,
                                  std::chrono::seconds) override {
    return away(host);
  }
  Result<TemplateImage> makeTemplate(const HostAddress& host, const DesktopSpec&,
                                     const std::string&, TemplateMode) override {
    return away(host);
  }
  Status deleteBase(const HostAddress& host, const std::string&, const std::string&) override {
    return away(host);
  }

 private:
  static Error away(const HostAddress& host) {
    return makeError(
        Errc::kUnavailable,
        "The broker cannot reach the agent on host '{}': it has no client certificate for "
        "agents (see the log at start-up).",
        host.name);
  }
};

}  // namespace

Result<InitResult> initDataDir(const InitOptions& o) {
  std::error_code ec;
  const fs::path& dir = o.dataDir;
  // Any piece of an earlier broker stops init: overwriting its CA would cut
  // every enrolled agent off, and a cleanup after a failure would delete it.
  for (const char* name : {"broker.toml", "ca", "tls", "aula.db"}) {
    if (fs::exists(dir / name, ec)) {
      return makeError(
          Errc::kAlreadyExists,
          "The data dir '{}' already holds a broker ('{}' exists); nothing was changed.",
          dir.string(), name);
    }
  }
  bool created = !fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  if (ec)
    return makeError(Errc::kIo, "Cannot create the data dir '{}': {}.", dir.string(), ec.message());
  // On any failure from here on, take away what this run made.
  struct Cleanup {
    const fs::path& dir;
    bool created = false;
    bool armed = true;
    ~Cleanup() {
      if (!armed)
        return;
      std::error_code e;
      if (created) {
        fs::remove_all(dir, e);
      } else {
        for (const char* name :
             {"broker.toml", "ca", "tls", "aula.db", "aula.db-wal", "aula.db-shm"}) {
          fs::remove_all(dir / name, e);
        }
      }
    }
  } cleanup{dir, created};

  ::chmod(dir.c_str(), 0750);
  fs::create_directories(dir / "ca", ec);
  fs::create_directories(dir / "tls", ec);
  ::chmod((dir / "ca").c_str(), 0700);

  auto ca = AULA_TRY(crypto::createCa("Aula broker CA"));
  std::vector<std::string> dns{"localhost"};
  std::vector<std::string> ips{"127.0.0.1", "::1"};
  for (const auto& name : o.serverNames) {
    bool ip = name.find(':') != std::string::npos ||
              name.find_first_not_of("0123456789.") == std::string::npos;
    (ip ? ips : dns).push_back(name);
  }
  auto serverCert = AULA_TRY(crypto::issueCertificate(
      ca, {.commonName = o.serverNames.empty() ? "aula-broker" : o.serverNames.front(),
           .dnsNames = dns,
           .ipAddresses = ips,
           .usage = crypto::CertUsage::kServer}));
  AULA_TRY_STATUS(writePrivate(dir / "ca" / "ca.crt", ca.certPem, 0644));
  AULA_TRY_STATUS(writePrivate(dir / "ca" / "ca.key", ca.keyPem, 0600));
  // The chain carries the CA so clients that know only its fingerprint find it.
  AULA_TRY_STATUS(writePrivate(dir / "tls" / "broker.crt", serverCert.certPem + ca.certPem, 0644));
  AULA_TRY_STATUS(writePrivate(dir / "tls" / "broker.key", serverCert.keyPem, 0600));
  AULA_TRY_STATUS(ensureClientCertificate(ca.certPem, ca.keyPem, dir / "tls" / "broker-client.crt",
                                          dir / "tls" / "broker-client.key"));

  std::string toml = fmt::format(
      "# Aula broker configuration, made by 'aula-broker init'. See docs/admin-guide.md.\n"
      "[broker]\ndata_dir = {}\nlisten = {}\n\n[database]\nbackend = {}\n{}"
      "\n[storage.paths]\ntemplates = {}\ndesktops = {}\n",
      tomlString(fs::absolute(dir).string()), tomlString(o.listen), tomlString(o.databaseBackend),
      o.databaseBackend == "postgresql"
          ? fmt::format("postgres = {}\n", tomlString(o.postgresConninfo))
          : "",
      tomlString("/var/lib/aula/templates"), tomlString("/var/lib/aula/desktops"));
  AULA_TRY_STATUS(writePrivate(dir / "broker.toml", toml, 0640));

  auto config = AULA_TRY(
      config::Config::loadFile(dir / "broker.toml", brokerSchema(), config::noEnvironment()));
  auto database = AULA_TRY(openDatabase(config, dir));
  AULA_TRY_STATUS(database->migrate(migrations()));

  InitResult result;
  result.configPath = dir / "broker.toml";
  if (o.adminPassword) {
    result.adminPassword = *o.adminPassword;
  } else {
    result.adminPassword = AULA_TRY(crypto::randomToken(12));
    result.passwordGenerated = true;
  }
  EventBus events;
  NoAgentLink link;
  Broker broker(*database, settingsFrom(config), SystemClock::instance(), events, link, nullptr);
  AULA_TRY_STATUS(broker.auth.bootstrap(o.adminName, result.adminPassword));
  result.caFingerprint = AULA_TRY(crypto::certificateFingerprint(ca.certPem));
  cleanup.armed = false;
  return result;
}

struct BrokerServer::Impl {
  std::unique_ptr<db::Database> database;
  EventBus events;
  std::unique_ptr<EventRelay> relay;  // events to and from the other brokers
  std::unique_ptr<HostLink> ownLink;
  std::unique_ptr<Directory> directory;
  std::unique_ptr<Broker> broker;
  std::unique_ptr<Api> api;
  std::unique_ptr<http::Server> server;
  std::unique_ptr<http::Server> bootServer;  // plain HTTP for network boot, when configured
  std::unique_ptr<tftp::Server> tftpServer;  // TFTP for Secure Boot PCs, when configured
  std::string caPem;
  std::thread watchdog;
  std::thread directorySync;  // every ldap.sync_minutes, when there is a directory
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
};

Result<std::unique_ptr<BrokerServer>> BrokerServer::start(const config::Config& c,
                                                          const StartOptions& options) {
  auto self = std::unique_ptr<BrokerServer>(new BrokerServer());
  self->impl_ = std::make_unique<Impl>();
  auto& impl = *self->impl_;
  fs::path dataDir = c.getString("broker.data_dir");
  if (auto level = log::parseLevel(c.getString("broker.log_level")))
    log::setLevel(*level);

  impl.caPem =
      AULA_TRY(readText(orDefault(c, "tls.ca_cert", dataDir / "ca" / "ca.crt"), "CA certificate"));
  auto chain = AULA_TRY(
      readText(orDefault(c, "tls.cert", dataDir / "tls" / "broker.crt"), "TLS certificate"));
  auto key = AULA_TRY(readText(orDefault(c, "tls.key", dataDir / "tls" / "broker.key"), "TLS key"));

  impl.database = AULA_TRY(openDatabase(c, dataDir));
  AULA_TRY_STATUS(impl.database->migrate(migrations()));

  if (c.getBool("ldap.enabled")) {
    LdapSettings ldap;
    ldap.uri = c.getString("ldap.uri");
    ldap.baseDn = c.getString("ldap.base_dn");
    if (ldap.uri.empty() || ldap.baseDn.empty()) {
      return Error(
          Errc::kConfig,
          fmt::format("{}: ldap.enabled is true, so ldap.uri and ldap.base_dn must be set.",
                      c.sourceName()));
    }
    ldap.userFilter = c.getString("ldap.user_filter");
    if (!c.getString("ldap.bind_dn").empty()) {
      ldap.bindDn = c.getString("ldap.bind_dn");
      auto pw =
          AULA_TRY(readText(c.getString("ldap.bind_password_file"), "LDAP bind password file"));
      while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r'))
        pw.pop_back();
      ldap.bindPassword = pw;
    }
    ldap.groupBaseDn = c.getString("ldap.group_base_dn");
    ldap.groupFilter = c.getString("ldap.group_filter");
    ldap.uidAttribute = c.getString("ldap.uid_attribute");
    const auto& nested = c.getString("ldap.nested_groups");
    ldap.nestedGroups = nested == "follow"     ? NestedGroups::kFollow
                        : nested == "in_chain" ? NestedGroups::kInChain
                                               : NestedGroups::kOff;
    ldap.nestedDepth = static_cast<int>(c.getInt("ldap.nested_depth"));
    ldap.nestedFilter = c.getString("ldap.nested_filter");
    ldap.startTls = c.getBool("ldap.start_tls");
    if (!c.getString("ldap.ca_cert").empty())
      ldap.caPem = AULA_TRY(readText(c.getString("ldap.ca_cert"), "LDAP CA"));
    ldap.timeout = std::chrono::milliseconds(c.getInt("ldap.timeout_ms"));
    for (const auto& [dn, role] : c.getStringMap("ldap.group_roles")) {
      if (!parseRole(role)) {
        return makeError(Errc::kConfig,
                         "{}: ldap.group_roles gives the group '{}' the role '{}'; the roles are "
                         "user, advanced, manager and admin.",
                         c.sourceName(), dn, role);
      }
    }
    for (const auto& [dn, target] : c.getStringMap("ldap.group_map")) {
      auto slash = target.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == target.size()) {
        return makeError(Errc::kConfig,
                         "{}: ldap.group_map sends the group '{}' to '{}', which is not "
                         "\"Category/Group\" (for example \"School A/1A\").",
                         c.sourceName(), dn, target);
      }
    }
    // Settings that cannot work stop the broker here, with what to change,
    // instead of failing every directory login later.
    if (auto checked = checkLdapSettings(ldap); !checked) {
      return Error(Errc::kConfig, fmt::format("{}: {}", c.sourceName(), checked.error().message()));
    }
    impl.directory = makeLdapDirectory(std::move(ldap));
  }
  if (auto checked = checkBootSettings(c); !checked)
    return checked.error();
  BrokerSettings settings = settingsFrom(c);
  settings.boot.caFingerprint = AULA_TRY(crypto::certificateFingerprint(impl.caPem));
  if (const auto& logo = c.getString("greeter.logo_file"); !logo.empty()) {
    settings.greeter.logoPng = AULA_TRY(readText(logo, "greeter logo"));
    constexpr std::string_view kPngSignature = "\x89PNG\r\n\x1a\n";
    if (settings.greeter.logoPng.size() > 256 * 1024 ||
        !settings.greeter.logoPng.starts_with(kPngSignature)) {
      return Error(
          Errc::kConfig,
          fmt::format("{}: greeter.logo_file '{}' must be a PNG of at most 256 KiB; it is "
                      "{} bytes{}.",
                      c.sourceName(), logo, settings.greeter.logoPng.size(),
                      settings.greeter.logoPng.starts_with(kPngSignature) ? "" : " and not a PNG"));
    }
  }
  // The CA key signs enrolled hosts' certificates. A broker without it (the
  // key kept offline) serves everything but enrolment.
  fs::path caKeyPath = orDefault(c, "tls.ca_key", dataDir / "ca" / "ca.key");
  std::error_code exists;
  if (fs::exists(caKeyPath, exists)) {
    settings.ca = {.certPem = impl.caPem, .keyPem = AULA_TRY(readText(caKeyPath, "CA key"))};
  } else {
    log::warn("There is no CA key at '{}', so this broker cannot enrol hosts.", caKeyPath.string());
  }
  HostLink* link = options.hostLink;
  if (link == nullptr) {
    if (c.getBool("debug.simulate_hosts")) {
      impl.ownLink = std::make_unique<SimulatedHostLink>();
    } else {
      fs::path clientCert = orDefault(c, "tls.client_cert", dataDir / "tls" / "broker-client.crt");
      fs::path clientKey = orDefault(c, "tls.client_key", dataDir / "tls" / "broker-client.key");
      if (!settings.ca.keyPem.empty()) {
        AULA_TRY_STATUS(ensureClientCertificate(settings.ca.certPem, settings.ca.keyPem, clientCert,
                                                clientKey));
      }
      auto certPem = readText(clientCert, "client certificate for agents");
      auto keyPem = readText(clientKey, "client key for agents");
      if (certPem && keyPem) {
        impl.ownLink = std::make_unique<AgentLink>(AgentLinkOptions{
            .caPem = impl.caPem,
            .clientCertPem = *certPem,
            .clientKeyPem = *keyPem,
            .shutdownGrace = std::chrono::seconds(c.getInt("hosts.shutdown_grace_seconds"))});
      } else {
        log::warn("{} The broker cannot command agents.",
                  (certPem ? keyPem.error() : certPem.error()).message());
        impl.ownLink = std::make_unique<NoAgentLink>();
      }
    }
    link = impl.ownLink.get();
  }
  impl.relay = AULA_TRY(EventRelay::start(*impl.database, impl.events));
  impl.broker =
      std::make_unique<Broker>(*impl.database, std::move(settings), SystemClock::instance(),
                               impl.events, *link, impl.directory.get());
  impl.api = std::make_unique<Api>(
      *impl.broker, impl.events,
      ApiOptions{.caPem = impl.caPem,
                 .maxBodyBytes = static_cast<std::size_t>(c.getInt("limits.max_body_bytes"))});
  http::ServerOptions serverOptions;
  serverOptions.listen = options.listen.value_or(c.getString("broker.listen"));
  // Agents present client certificates of our CA; browsers, greeters and
  // aulactl present none, so a certificate is asked for but not required.
  serverOptions.tls = http::ServerTls{
      .certChainPem = chain, .keyPem = key, .clientCaPem = impl.caPem, .requireClientCert = false};
  serverOptions.maxBodyBytes = static_cast<std::size_t>(c.getInt("limits.max_body_bytes"));
  Api* api = impl.api.get();
  impl.server = AULA_TRY(
      http::Server::start(serverOptions, [api](http::ServerRequest& r) { return api->handle(r); }));
  impl.broker->bootHosts.setHttpsPort(impl.server->port());
  if (const auto bootListen = options.bootListen.value_or(c.getString("boot.listen"));
      !bootListen.empty()) {
    // Only what a booting PC needs is on plain HTTP; everything else stays
    // behind TLS.
    std::string httpsAddress = impl.server->address();
    impl.bootServer = AULA_TRY(
        http::Server::start({.listen = bootListen}, [api, httpsAddress](http::ServerRequest& r) {
          if (r.path.starts_with("/boot/"))
            return api->handle(r);
          return http::ServerResponse::error(
              404, "not_found",
              fmt::format("This is Aula's network-boot listener, which serves only /boot/; the "
                          "API is on HTTPS ({}).",
                          httpsAddress));
        }));
    log::info("Serving network boot on http://{}/boot/ipxe (images in {}).",
              impl.bootServer->address(), impl.broker->settings.boot.imageDir);
  }
  if (const auto& tftpListen = c.getString("boot.tftp_listen"); !tftpListen.empty()) {
    impl.tftpServer =
        AULA_TRY(tftp::Server::start({.listen = tftpListen}, bootTftpHandler(*impl.broker)));
    const auto& loaders = impl.broker->settings.boot.loadersDir;
    std::error_code ec;
    if (!fs::is_regular_file(fs::path(loaders) / "shimx64.efi", ec)) {
      log::warn(
          "Serving TFTP on {}, but {} holds no shimx64.efi: Secure Boot PCs cannot start "
          "until provisioning/fetch-loaders.sh {} puts Debian's signed loaders there.",
          impl.tftpServer->address(), loaders, loaders);
    } else {
      log::info("Serving TFTP on {} for Secure Boot PCs (signed loaders in {}).",
                impl.tftpServer->address(), loaders);
    }
  }

  Impl* raw = &impl;
  impl.watchdog = std::thread([raw] {
    std::unique_lock lock(raw->mutex);
    while (!raw->stopping) {
      raw->wake.wait_for(lock, std::chrono::seconds(5));
      if (raw->stopping)
        break;
      lock.unlock();
      auto lost = raw->broker->hosts.markLost();
      if (lost && *lost > 0)
        log::warn("{} host(s) stopped sending heartbeats and are marked lost.", *lost);
      lock.lock();
    }
  });
  const auto syncEvery = std::chrono::minutes(c.getInt("ldap.sync_minutes"));
  if (impl.directory && syncEvery.count() > 0) {
    impl.directorySync = std::thread([raw, syncEvery] {
      // Not at start: a broker restarted in a loop would sweep the
      // directory each time.
      const Actor system{.username = "directory-sync", .role = Role::kAdmin};
      std::unique_lock lock(raw->mutex);
      while (!raw->stopping) {
        raw->wake.wait_for(lock, syncEvery);
        if (raw->stopping)
          break;
        lock.unlock();
        auto synced = raw->broker->auth.syncDirectoryUsers(system);
        if (!synced) {
          log::warn("The scheduled directory sync did not run: {}", synced.error().message());
        } else {
          log::info("Directory sync: {} user(s) checked, {} disabled as gone from the directory.",
                    (*synced)["checked"].get<std::int64_t>(), (*synced)["disabled"].size());
        }
        lock.lock();
      }
    });
  }
  log::info("Listening on https://{} (CA fingerprint {}).", impl.server->address(),
            crypto::certificateFingerprint(impl.caPem).valueOr("unknown"));
  return self;
}

BrokerServer::~BrokerServer() {
  stop();
}

void BrokerServer::stop() {
  if (!impl_)
    return;
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping)
      return;
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->events.close();
  if (impl_->tftpServer)
    impl_->tftpServer->stop();
  if (impl_->bootServer)
    impl_->bootServer->stop();
  if (impl_->server)
    impl_->server->stop();
  if (impl_->watchdog.joinable())
    impl_->watchdog.join();
  if (impl_->directorySync.joinable())
    impl_->directorySync.join();
  impl_->relay.reset();
}

int BrokerServer::port() const {
  return impl_->server->port();
}
std::string BrokerServer::address() const {
  return impl_->server->address();
}
std::string BrokerServer::bootAddress() const {
  return impl_->bootServer ? impl_->bootServer->address() : std::string();
}
std::string BrokerServer::tftpAddress() const {
  return impl_->tftpServer ? impl_->tftpServer->address() : std::string();
}
const std::string& BrokerServer::caPem() const {
  return impl_->caPem;
}
std::string BrokerServer::caFingerprint() const {
  return crypto::certificateFingerprint(impl_->caPem).valueOr("");
}
Broker& BrokerServer::broker() {
  return *impl_->broker;
}

}  // namespace aula::broker
