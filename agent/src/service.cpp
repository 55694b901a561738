// The agent's service (see service.hpp).
#include "aula/agent/service.hpp"

#include <ctime>
#include <filesystem>
#include <thread>

#include <fmt/format.h>
#include <unistd.h>

#include "aula/agent/domain_xml.hpp"
#include "aula/agent/enrolment.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"

namespace aula::agent {

namespace fs = std::filesystem;
using json::Json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kExpiredValidTo = "1970-01-01T00:00:01";
constexpr std::int64_t kMaxTicketSeconds = 60;

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// libvirt's passwdValidTo: UTC "YYYY-MM-DDTHH:MM:SS", no zone suffix.
std::string libvirtTime(std::int64_t unix) {
  std::time_t t = unix;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return text;
}

// A stable UUID per desktop: redefining "aula-42" keeps its identity.
std::string uuidFor(std::int64_t desktopId) {
  std::string hex = crypto::sha256Hex(fmt::format("aula-desktop:{}", desktopId));
  hex[12] = '4';                                              // version 4 layout
  hex[16] = "89ab"[static_cast<unsigned char>(hex[16]) % 4];  // RFC 4122 variant
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20, 12));
}

bool isLive(const std::string& state) {
  return state == "running" || state == "blocked" || state == "paused" || state == "shutting down";
}

Json domainJson(const DomainInfo& d) {
  return Json{{"name", d.name},
              {"desktop_id", d.desktopId ? Json(*d.desktopId) : Json()},
              {"state", d.state},
              {"running", isLive(d.state)},
              {"spice_port", d.spicePort > 0 ? Json(d.spicePort) : Json()},
              {"spice_tls_port", d.spiceTlsPort > 0 ? Json(d.spiceTlsPort) : Json()},
              {"vcpus", d.vcpus},
              {"memory_mb", d.memoryMb}};
}

Result<std::string> optString(const Json& body, std::string_view field, std::string fallback) {
  if (!body.contains(field) || body[std::string(field)].is_null())
    return fallback;
  return json::getString(body, field);
}

Result<std::int64_t> optInt(const Json& body, std::string_view field, std::int64_t fallback) {
  if (!body.contains(field) || body[std::string(field)].is_null())
    return fallback;
  return json::getInt(body, field);
}

Result<bool> optBool(const Json& body, std::string_view field, bool fallback) {
  if (!body.contains(field) || body[std::string(field)].is_null())
    return fallback;
  return json::getBool(body, field);
}

http::ServerResponse errorResponse(const Error& error) {
  int status = http::httpStatusFor(error.code());
  if (status == 500)
    log::error("Request failed: {}", error.message());
  return http::ServerResponse::error(status, errcName(error.code()), error.message());
}

http::ServerResponse answer(const Result<Json>& result) {
  if (!result)
    return errorResponse(result.error());
  return http::ServerResponse::json(200, result->dump());
}

}  // namespace

std::optional<std::int64_t> desktopIdOfName(std::string_view name) {
  if (!name.starts_with("aula-"))
    return std::nullopt;
  auto digits = name.substr(5);
  if (digits.empty() || digits.size() > 18 ||
      digits.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  return std::stoll(std::string(digits));
}

AgentService::AgentService(ServiceOptions options, Hypervisor& hypervisor, Disks& disks)
    : options_(std::move(options)), hypervisor_(hypervisor), disks_(disks) {
  auto withBody = [](auto method) {
    return [method](http::ServerRequest& r) {
      auto body =
          json::parse(r.body.empty() ? "{}" : r.body, {.maxBytes = 64 * 1024, .maxDepth = 4});
      if (!body)
        return errorResponse(body.error());
      if (!body->is_object())
        return errorResponse(Error(Errc::kInvalidArgument, "The body must be a JSON object."));
      return answer(method(r.pathParams["name"], *body));
    };
  };
  router_.add("GET", "/v1/domains", [this](http::ServerRequest&) { return answer(domains()); });
  router_.add("GET", "/v1/load", [this](http::ServerRequest&) { return answer(heartbeat()); });
  router_.add("POST", "/v1/domains/{name}/start",
              withBody([this](const std::string& n, const Json& b) { return start(n, b); }));
  router_.add("POST", "/v1/domains/{name}/shutdown",
              withBody([this](const std::string& n, const Json& b) { return shutdown(n, b); }));
  router_.add("POST", "/v1/domains/{name}/poweroff",
              withBody([this](const std::string& n, const Json& b) { return powerOff(n, b); }));
  router_.add("POST", "/v1/domains/{name}/delete",
              withBody([this](const std::string& n, const Json& b) { return remove(n, b); }));
  router_.add("POST", "/v1/domains/{name}/ticket",
              withBody([this](const std::string& n, const Json& b) { return ticket(n, b); }));
  router_.add(
      "POST", "/v1/templates/from-desktop",
      withBody([this](const std::string&, const Json& b) { return templateFromDesktop(b); }));
  router_.add("POST", "/v1/templates/delete-base",
              withBody([this](const std::string&, const Json& b) { return deleteBase(b); }));
}

http::ServerResponse AgentService::handle(http::ServerRequest& request) {
  if (!request.clientCommonName) {
    return http::ServerResponse::error(401, "unauthenticated",
                                       "This endpoint takes requests from the Aula broker only, "
                                       "with its client certificate.");
  }
  if (*request.clientCommonName != kBrokerCommonName) {
    log::warn("Refused a request from '{}' at {}: only the broker may send commands.",
              *request.clientCommonName, request.remoteAddress);
    return http::ServerResponse::error(
        403, "permission_denied",
        fmt::format("The certificate of '{}' is not the broker's; only the broker may send "
                    "commands to an agent.",
                    *request.clientCommonName));
  }
  return router_.dispatch(request);
}

std::shared_ptr<std::mutex> AgentService::lockFor(const std::string& name) {
  std::lock_guard lock(locksMutex_);
  auto& m = locks_[name];
  if (!m)
    m = std::make_shared<std::mutex>();
  return m;
}

Result<std::string> AgentService::spiceGraphicsXml(const std::string& passwd,
                                                   const std::string& validTo) const {
  SpiceSpec spice;
  spice.listenAddress = options_.settings.spiceListen;
  spice.tlsPort = options_.settings.spiceTlsPort;
  spice.plainPort = options_.settings.spicePlainPort;
  spice.passwd = passwd;
  spice.passwdValidTo = validTo;
  return renderGraphicsUpdateXml(spice, options_.settings.spicePlainPort);
}

Result<Json> AgentService::start(const std::string& name, const Json& body) {
  AULA_TRY_STATUS(
      json::checkFields(body, {"desktop_id", "owner", "vcpus", "memory_mb", "video", "base_storage",
                               "base_disk", "disk_path", "persistent", "mac_address", "limits"}));
  auto desktopId = AULA_TRY(json::getInt(body, "desktop_id"));
  if (name != fmt::format("aula-{}", desktopId)) {
    return makeError(Errc::kInvalidArgument,
                     "The domain of desktop {} is called 'aula-{}', not '{}'.", desktopId,
                     desktopId, name);
  }
  auto baseStorage = AULA_TRY(optString(body, "base_storage", "templates"));
  auto baseDisk = AULA_TRY(json::getString(body, "base_disk"));
  auto diskPath = AULA_TRY(json::getString(body, "disk_path"));
  auto persistent = AULA_TRY(optBool(body, "persistent", true));

  auto guard = lockFor(name);
  std::lock_guard lock(*guard);
  if (auto existing = hypervisor_.info(name); existing && isLive(existing->state)) {
    return domainJson(*existing);  // already running: starting again changes nothing
  }
  // The disk: a persistent desktop keeps its overlay; a non-persistent one
  // starts from a fresh one every time.
  fs::path disk;
  bool fresh = true;  // this start made the overlay
  if (persistent) {
    auto existing = AULA_TRY(disks_.resolve("desktops", diskPath));
    std::error_code ec;
    if (fs::exists(existing, ec)) {
      disk = existing;
      fresh = false;
    } else {
      disk = AULA_TRY(disks_.createOverlay(baseStorage, baseDisk, "desktops", diskPath));
    }
  } else {
    disk = AULA_TRY(disks_.resetOverlay(baseStorage, baseDisk, "desktops", diskPath));
  }
  // A start that fails after making the overlay takes it away again: the
  // broker forgets the host of a desktop that never ran, and would never ask
  // for the file to be deleted.
  struct DropFresh {
    Disks& disks;
    const std::string& path;
    bool armed;
    ~DropFresh() {
      if (armed)
        (void)disks.deleteOverlay("desktops", path);
    }
  } dropFresh{disks_, diskPath, fresh};
  DomainSpec spec;
  spec.name = name;
  spec.uuid = uuidFor(desktopId);
  spec.desktopId = desktopId;
  spec.owner = AULA_TRY(optString(body, "owner", ""));
  spec.domainType = options_.domainType;
  spec.vcpus = AULA_TRY(optInt(body, "vcpus", 1));
  spec.memoryMb = AULA_TRY(optInt(body, "memory_mb", 1024));
  spec.video = AULA_TRY(optString(body, "video", "qxl"));
  spec.diskPath = disk;
  spec.network = options_.settings.network;
  spec.macAddress = AULA_TRY(optString(body, "mac_address", ""));
  spec.spice.listenAddress = options_.settings.spiceListen;
  spec.spice.tlsPort = options_.settings.spiceTlsPort;
  spec.spice.plainPort = options_.settings.spicePlainPort;
  spec.allowPlainSpice = options_.settings.spicePlainPort;
  spec.limits = options_.settings.limits;
  if (body.contains("limits") && !body["limits"].is_null()) {
    // The broker may set one desktop's limits instead of the host's.
    const Json& l = body["limits"];
    if (!l.is_object())
      return makeError(Errc::kInvalidArgument, "The field 'limits' must be an object.");
    AULA_TRY_STATUS(json::checkFields(
        l, {"cpu_shares", "cpu_percent_per_vcpu", "disk_mb_per_sec", "disk_iops"}));
    const auto& host = options_.settings.limits;
    spec.limits = AULA_TRY(limitsFrom(
        AULA_TRY(optInt(l, "cpu_shares", static_cast<std::int64_t>(host.cpuShares))),
        AULA_TRY(optInt(l, "cpu_percent_per_vcpu", host.cpuQuotaUs / 1000)),
        AULA_TRY(optInt(l, "disk_mb_per_sec",
                        static_cast<std::int64_t>(host.diskBytesPerSec / (1024 * 1024)))),
        AULA_TRY(optInt(l, "disk_iops", static_cast<std::int64_t>(host.diskIopsPerSec)))));
  }
  // Nobody gets in until the broker asks for a ticket.
  spec.spice.passwd = AULA_TRY(crypto::randomToken(24));
  spec.spice.passwdValidTo = kExpiredValidTo;
  auto xml = AULA_TRY(renderDomainXml(spec));
  if (auto started = hypervisor_.defineAndStart(xml); !started)
    return started.error().context(fmt::format("The desktop {} could not start.", desktopId));
  dropFresh.armed = false;
  auto info = AULA_TRY(hypervisor_.info(name));
  log::info("Started {} (desktop {}, {} vCPUs, {} MiB, {}).", name, desktopId, spec.vcpus,
            spec.memoryMb, persistent ? "persistent" : "fresh overlay");
  return domainJson(info);
}

Status AgentService::dropOverlayIfTransient(const Json& body) {
  auto persistent = AULA_TRY(optBool(body, "persistent", true));
  if (persistent)
    return {};
  auto diskPath = AULA_TRY(json::getString(body, "disk_path"));
  return disks_.deleteOverlay("desktops", diskPath);
}

Result<Json> AgentService::shutdown(const std::string& name, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"grace_seconds", "persistent", "disk_path"}));
  auto grace = std::chrono::seconds(
      AULA_TRY(optInt(body, "grace_seconds", options_.defaultShutdownGrace.count())));
  auto guard = lockFor(name);
  std::lock_guard lock(*guard);
  bool forced = false;
  auto info = hypervisor_.info(name);
  if (info && isLive(info->state)) {
    AULA_TRY_STATUS(hypervisor_.shutdown(name));
    auto deadline = Clock::now() + grace;
    while (true) {
      auto now = hypervisor_.info(name);
      if (!now || !isLive(now->state))
        break;
      if (Clock::now() >= deadline) {
        log::warn("{} did not shut down within {} s; powering it off.", name, grace.count());
        auto destroyed = hypervisor_.destroy(name);
        if (!destroyed && destroyed.error().code() != Errc::kConflict)
          return destroyed.error();
        forced = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  } else if (!info && info.error().code() != Errc::kNotFound) {
    return info.error();
  }
  AULA_TRY_STATUS(dropOverlayIfTransient(body));
  return Json{{"name", name}, {"state", "shut off"}, {"forced", forced}};
}

Result<Json> AgentService::powerOff(const std::string& name, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"persistent", "disk_path"}));
  auto guard = lockFor(name);
  std::lock_guard lock(*guard);
  auto info = hypervisor_.info(name);
  if (info && isLive(info->state)) {
    auto destroyed = hypervisor_.destroy(name);
    if (!destroyed && destroyed.error().code() != Errc::kConflict)
      return destroyed.error();
  } else if (!info && info.error().code() != Errc::kNotFound) {
    return info.error();
  }
  AULA_TRY_STATUS(dropOverlayIfTransient(body));
  return Json{{"name", name}, {"state", "shut off"}};
}

Result<Json> AgentService::remove(const std::string& name, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"disk_path"}));
  auto diskPath = AULA_TRY(json::getString(body, "disk_path"));
  auto guard = lockFor(name);
  std::lock_guard lock(*guard);
  auto info = hypervisor_.info(name);
  if (info) {
    if (isLive(info->state)) {
      auto destroyed = hypervisor_.destroy(name);
      if (!destroyed && destroyed.error().code() != Errc::kConflict)
        return destroyed.error();
    }
    auto undefined = hypervisor_.undefine(name);
    if (!undefined && undefined.error().code() != Errc::kNotFound)
      return undefined.error();
  } else if (info.error().code() != Errc::kNotFound) {
    return info.error();
  }
  AULA_TRY_STATUS(disks_.deleteOverlay("desktops", diskPath));
  log::info("Deleted {} and its disk.", name);
  return Json{{"name", name}, {"deleted", true}};
}

Result<Json> AgentService::ticket(const std::string& name, const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"valid_for_seconds"}));
  auto validFor = AULA_TRY(optInt(body, "valid_for_seconds", 30));
  if (validFor < 1 || validFor > kMaxTicketSeconds) {
    return makeError(Errc::kInvalidArgument, "A ticket is valid from 1 to {} seconds, not {}.",
                     kMaxTicketSeconds, validFor);
  }
  auto guard = lockFor(name);
  std::lock_guard lock(*guard);
  auto info = AULA_TRY(hypervisor_.info(name));
  if (!isLive(info.state))
    return makeError(Errc::kConflict, "The domain '{}' is {}, not running.", name, info.state);
  auto passwd = AULA_TRY(crypto::randomToken(24));
  std::int64_t expires = unixNow() + validFor;
  auto xml = AULA_TRY(spiceGraphicsXml(passwd, libvirtTime(expires)));
  AULA_TRY_STATUS(hypervisor_.updateGraphics(name, xml));
  return Json{{"name", name},
              {"host", options_.publicHost},
              {"tls_port", info.spiceTlsPort > 0 ? Json(info.spiceTlsPort) : Json()},
              {"port", info.spicePort > 0 ? Json(info.spicePort) : Json()},
              {"ticket", passwd},
              {"expires_at", expires}};
}

Result<Json> AgentService::templateFromDesktop(const Json& body) {
  AULA_TRY_STATUS(json::checkFields(
      body, {"domain", "disk_path", "template_storage", "template_disk", "mode"}));
  auto domain = AULA_TRY(json::getString(body, "domain"));
  if (!desktopIdOfName(domain)) {
    return makeError(Errc::kInvalidArgument,
                     "The domain '{}' is not an Aula desktop's; its name must be 'aula-<id>'.",
                     domain.substr(0, 80));
  }
  auto diskPath = AULA_TRY(json::getString(body, "disk_path"));
  auto storage = AULA_TRY(optString(body, "template_storage", "templates"));
  if (storage == "desktops") {
    return Error(Errc::kInvalidArgument,
                 "A template's image cannot go into the 'desktops' storage, which holds users' "
                 "own disks; use 'templates'.");
  }
  auto templateDisk = AULA_TRY(json::getString(body, "template_disk"));
  auto modeName = AULA_TRY(optString(body, "mode", "flatten"));
  TemplateMode mode = TemplateMode::kFlatten;
  if (modeName == "rebase") {
    mode = TemplateMode::kRebase;
  } else if (modeName != "flatten") {
    return makeError(Errc::kInvalidArgument,
                     "The field 'mode' must be 'flatten' or 'rebase', not '{}'.",
                     modeName.substr(0, 40));
  }
  // Held for the whole copy: a start of this desktop waits until the image is
  // made, so the guest never writes to the disk while it is being read.
  auto guard = lockFor(domain);
  std::lock_guard lock(*guard);
  auto info = hypervisor_.info(domain);
  if (info && isLive(info->state)) {
    return makeError(Errc::kConflict,
                     "The desktop {} is {}; shut it down first, since the disk of a running guest "
                     "is not consistent.",
                     domain, info->state);
  }
  if (!info && info.error().code() != Errc::kNotFound)
    return info.error();
  auto made =
      AULA_TRY(disks_.templateFromDesktop("desktops", diskPath, storage, templateDisk, mode));
  std::error_code ec;
  auto size = fs::file_size(made, ec);
  // The image is made: a header that cannot be read back now is worth a
  // warning, not a failure that would leave the image without its template.
  Json backing;
  if (auto named = Disks::backingFile(made); !named) {
    log::warn("Cannot read back the backing file of {}: {}", made.native(),
              named.error().message());
  } else if (*named) {
    backing = (*named)->native();
  }
  log::info("Made the template image {} ({}, {} bytes) from the disk of {}.", made.native(),
            modeName, ec ? 0 : size, domain);
  return Json{{"template_disk", templateDisk},
              {"size_bytes", ec ? std::int64_t{0} : static_cast<std::int64_t>(size)},
              {"backing", backing}};
}

Result<Json> AgentService::deleteBase(const Json& body) {
  AULA_TRY_STATUS(json::checkFields(body, {"storage", "disk"}));
  auto storage = AULA_TRY(json::getString(body, "storage"));
  auto disk = AULA_TRY(json::getString(body, "disk"));
  if (storage == "desktops") {
    return Error(Errc::kInvalidArgument,
                 "Base images are not kept in the 'desktops' storage, which holds users' own "
                 "disks; desktops' disks are deleted with their desktop.");
  }
  AULA_TRY_STATUS(disks_.deleteBase(storage, disk));
  log::info("Deleted the base image {} in storage '{}'.", disk, storage);
  return Json{{"storage", storage}, {"disk", disk}, {"deleted", true}};
}

Result<Json> AgentService::domains() {
  auto list = AULA_TRY(hypervisor_.list());
  Json out = Json::array();
  for (const auto& d : list)
    out.push_back(domainJson(d));
  return out;
}

Result<Json> AgentService::heartbeat() {
  auto list = AULA_TRY(hypervisor_.list());
  auto memory = AULA_TRY(readMemInfo());
  double idle = 1.0;
  {
    std::lock_guard lock(sampleMutex_);
    idle = cpu_.idleSinceLast();
  }
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  return heartbeatBody(idle, memory, cpus > 0 ? static_cast<int>(cpus) : 1, list,
                       disks_.freeSpaceGb());
}

void AgentService::recordEvent(const DomainEvent& event) {
  auto id = desktopIdOfName(event.name);
  Json e{{"domain", event.name},
         {"desktop_id", id ? Json(*id) : Json()},
         {"event", event.kind},
         {"detail", event.detail},
         {"at", unixNow()}};
  log::info("{}: {} ({}).", event.name, event.kind, event.detail);
  {
    std::lock_guard lock(eventsMutex_);
    if (events_.size() >= kMaxQueuedEvents)
      events_.pop_front();
    events_.push_back(std::move(e));
  }
  eventsChanged_.notify_all();
}

std::vector<Json> AgentService::takeEvents() {
  std::lock_guard lock(eventsMutex_);
  std::vector<Json> out(events_.begin(), events_.end());
  events_.clear();
  return out;
}

void AgentService::returnEvents(std::vector<Json> events) {
  std::lock_guard lock(eventsMutex_);
  for (auto it = events.rbegin(); it != events.rend(); ++it) {
    if (events_.size() >= kMaxQueuedEvents)
      break;
    events_.push_front(std::move(*it));
  }
}

bool AgentService::waitForEvent(std::chrono::milliseconds timeout) {
  std::unique_lock lock(eventsMutex_);
  eventsChanged_.wait_for(lock, timeout, [&] { return !events_.empty() || wake_; });
  wake_ = false;
  return !events_.empty();
}

void AgentService::wakeWaiters() {
  {
    std::lock_guard lock(eventsMutex_);
    wake_ = true;
  }
  eventsChanged_.notify_all();
}

BrokerReporter::BrokerReporter(AgentService& service, fs::path stateDir, std::string brokerUrl,
                               std::chrono::seconds interval)
    : service_(service), channel_(std::move(stateDir), std::move(brokerUrl)), interval_(interval) {
  thread_ = std::thread([this] { run(); });
}

BrokerReporter::~BrokerReporter() {
  stop();
}

void BrokerReporter::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  service_.wakeWaiters();
  if (thread_.joinable())
    thread_.join();
}

void BrokerReporter::run() {
  auto nextHeartbeat = Clock::now();
  bool brokerAway = false;
  auto stopping = [this] {
    std::lock_guard lock(mutex_);
    return stopping_;
  };
  while (!stopping()) {
    if (Clock::now() >= nextHeartbeat) {
      nextHeartbeat = Clock::now() + interval_;
      auto body = service_.heartbeat();
      Status sent;
      if (!body) {
        sent = body.error();
      } else if (auto answer = channel_.post("/api/v1/agent/heartbeat", *body); !answer) {
        sent = answer.error();
      }
      if (!sent && !brokerAway) {
        log::warn("Heartbeat not delivered (will keep trying): {}", sent.error().message());
      } else if (sent && brokerAway) {
        log::info("The broker answers again.");
      }
      brokerAway = !sent;
    }
    auto events = service_.takeEvents();
    if (!events.empty()) {
      auto sent = channel_.post("/api/v1/agent/events", Json{{"events", events}});
      if (!sent) {
        Errc code = sent.error().code();
        if (code == Errc::kInvalidArgument || code == Errc::kPermissionDenied ||
            code == Errc::kUnauthenticated || code == Errc::kNotFound) {
          // Refused, not missed: sending them again would be refused again.
          // The heartbeat's guest list tells the broker the same.
          log::error("The broker refused {} event(s), which are dropped: {}", events.size(),
                     sent.error().message());
        } else {
          // Kept for the next try; the heartbeat's guest list covers what a
          // full queue loses.
          service_.returnEvents(std::move(events));
          if (!brokerAway)
            log::warn("Events not delivered (will retry): {}", sent.error().message());
          brokerAway = true;
        }
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(nextHeartbeat - Clock::now());
    if (left.count() <= 0)
      continue;
    if (brokerAway) {
      // Queued events do not wake us while the broker is away: try again in
      // at most 2 s, or at the next heartbeat.
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, std::min(left, std::chrono::milliseconds(2000)),
                     [this] { return stopping_; });
    } else {
      service_.waitForEvent(left);
    }
  }
}

}  // namespace aula::agent
