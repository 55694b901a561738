// The agent's service (see service.hpp).
#include "aula/agent/service.hpp"

#include <ctime>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "aula/agent/domain_xml.hpp"
#include "aula/agent/enrolment.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"
#include "aula/common/scope_guard.hpp"

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
  (void)std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
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

proto::DomainStatus domainStatus(const DomainInfo& d) {
  return proto::DomainStatus{
      .name = d.name,
      .desktopId = d.desktopId,
      .state = d.state,
      .running = isLive(d.state),
      .spicePort = d.spicePort > 0 ? std::optional(d.spicePort) : std::nullopt,
      .spiceTlsPort = d.spiceTlsPort > 0 ? std::optional(d.spiceTlsPort) : std::nullopt,
      .vcpus = d.vcpus,
      .memoryMb = d.memoryMb};
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
    : options_(std::move(options)),
      hypervisor_(hypervisor),
      disks_(disks),
      load_(options_.hostRoot) {
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
  using proto::DomainCommand;
  router_.add("GET", std::string(proto::kDomainsRoute),
              [this](http::ServerRequest&) { return answer(domains()); });
  router_.add("GET", std::string(proto::kLoadRoute), [this](http::ServerRequest&) {
    auto beat = heartbeat();
    if (!beat)
      return errorResponse(beat.error());
    return http::ServerResponse::json(200, proto::toJson(*beat).dump());
  });
  router_.add("POST", proto::domainCommandPattern(DomainCommand::kStart),
              withBody([this](const std::string& n, const Json& b) { return start(n, b); }));
  router_.add("POST", proto::domainCommandPattern(DomainCommand::kShutdown),
              withBody([this](const std::string& n, const Json& b) { return shutdown(n, b); }));
  router_.add("POST", proto::domainCommandPattern(DomainCommand::kPowerOff),
              withBody([this](const std::string& n, const Json& b) { return powerOff(n, b); }));
  router_.add("POST", proto::domainCommandPattern(DomainCommand::kDelete),
              withBody([this](const std::string& n, const Json& b) { return remove(n, b); }));
  router_.add("POST", proto::domainCommandPattern(DomainCommand::kTicket),
              withBody([this](const std::string& n, const Json& b) { return ticket(n, b); }));
  router_.add(
      "POST", std::string(proto::kTemplateFromDesktopRoute),
      withBody([this](const std::string&, const Json& b) { return templateFromDesktop(b); }));
  router_.add("POST", std::string(proto::kDeleteBaseRoute),
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

proto::DomainStatus AgentService::statusOf(const DomainInfo& info) {
  auto status = domainStatus(info);
  status.seq = seq_.next();
  return status;
}

Result<Json> AgentService::start(const std::string& name, const Json& body) {
  const auto request = AULA_TRY(proto::parseStartRequest(body));
  const auto desktopId = request.desktopId;
  if (name != fmt::format("aula-{}", desktopId)) {
    return makeError(Errc::kInvalidArgument,
                     "The domain of desktop {} is called 'aula-{}', not '{}'.", desktopId,
                     desktopId, name);
  }
  const auto& baseStorage = request.baseStorage;
  const auto& baseDisk = request.baseDisk;
  const auto& diskPath = request.diskPath;
  const bool persistent = request.persistent;

  auto guard = lockFor(name);
  std::lock_guard lock(*guard);
  if (auto existing = hypervisor_.info(name); existing && isLive(existing->state)) {
    return proto::toJson(statusOf(*existing));  // already running: starting again changes nothing
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
  ScopeGuard dropFresh([&] {
    if (fresh)
      (void)disks_.deleteOverlay("desktops", diskPath);
  });
  DomainSpec spec;
  spec.name = name;
  spec.uuid = uuidFor(desktopId);
  spec.desktopId = desktopId;
  spec.owner = request.owner;
  spec.domainType = options_.domainType;
  spec.vcpus = request.vcpus;
  spec.memoryMb = request.memoryMb;
  spec.video = request.video;
  spec.diskPath = disk;
  spec.network = options_.settings.network;
  spec.macAddress = request.macAddress;
  spec.spice.listenAddress = options_.settings.spiceListen;
  spec.spice.tlsPort = options_.settings.spiceTlsPort;
  spec.spice.plainPort = options_.settings.spicePlainPort;
  spec.allowPlainSpice = options_.settings.spicePlainPort;
  spec.limits = options_.settings.limits;
  if (request.limits) {
    // The broker may set one desktop's limits instead of the host's.
    const auto& l = *request.limits;
    const auto& host = options_.settings.limits;
    spec.limits = AULA_TRY(limitsFrom(
        l.cpuShares.value_or(static_cast<std::int64_t>(host.cpuShares)),
        l.cpuPercentPerVcpu.value_or(host.cpuQuotaUs / 1000),
        l.diskMbPerSec.value_or(static_cast<std::int64_t>(host.diskBytesPerSec / (1024 * 1024))),
        l.diskIops.value_or(static_cast<std::int64_t>(host.diskIopsPerSec))));
  }
  // Nobody gets in until the broker asks for a ticket.
  spec.spice.passwd = AULA_TRY(crypto::randomToken(24));
  spec.spice.passwdValidTo = kExpiredValidTo;
  auto xml = AULA_TRY(renderDomainXml(spec));
  if (auto started = hypervisor_.defineAndStart(xml); !started)
    return started.error().context(fmt::format("The desktop {} could not start.", desktopId));
  dropFresh.dismiss();
  auto info = AULA_TRY(hypervisor_.info(name));
  log::info("Started {} (desktop {}, {} vCPUs, {} MiB, {}).", name, desktopId, spec.vcpus,
            spec.memoryMb, persistent ? "persistent" : "fresh overlay");
  return proto::toJson(statusOf(info));
}

Status AgentService::dropOverlayIfTransient(const proto::StopRequest& request) {
  if (request.persistent)
    return {};
  return disks_.deleteOverlay("desktops", request.diskPath);
}

Result<Json> AgentService::shutdown(const std::string& name, const Json& body) {
  const auto request = AULA_TRY(proto::parseStopRequest(body));
  auto grace = request.graceSeconds ? std::chrono::seconds(*request.graceSeconds)
                                    : options_.defaultShutdownGrace;
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
  AULA_TRY_STATUS(dropOverlayIfTransient(request));
  return stoppedStatus(name, forced);
}

Json AgentService::stoppedStatus(const std::string& name, bool forced) {
  proto::DomainStatus status;
  if (auto info = hypervisor_.info(name)) {
    status = domainStatus(*info);
  } else {
    status.name = name;
    status.desktopId = desktopIdOfName(name);
    status.state = "shut off";
  }
  status.forced = forced;
  status.seq = seq_.next();
  return proto::toJson(status);
}

Result<Json> AgentService::powerOff(const std::string& name, const Json& body) {
  auto request = AULA_TRY(proto::parseStopRequest(body));
  if (request.graceSeconds) {
    return Error(Errc::kInvalidArgument,
                 "A power-off takes no 'grace_seconds': it pulls the plug at once.");
  }
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
  AULA_TRY_STATUS(dropOverlayIfTransient(request));
  return stoppedStatus(name, false);
}

Result<Json> AgentService::remove(const std::string& name, const Json& body) {
  const auto diskPath = AULA_TRY(proto::parseDeleteRequest(body)).diskPath;
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
  auto validFor = AULA_TRY(proto::parseTicketRequest(body)).validForSeconds;
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
  return proto::toJson(proto::TicketAnswer{
      .name = name,
      .host = options_.publicHost,
      .tlsPort = info.spiceTlsPort > 0 ? std::optional(info.spiceTlsPort) : std::nullopt,
      .port = info.spicePort > 0 ? std::optional(info.spicePort) : std::nullopt,
      .ticket = passwd,
      .expiresAt = expires});
}

Result<Json> AgentService::templateFromDesktop(const Json& body) {
  const auto request = AULA_TRY(proto::parseTemplateRequest(body));
  const auto& domain = request.domain;
  if (!desktopIdOfName(domain)) {
    return makeError(Errc::kInvalidArgument,
                     "The domain '{}' is not an Aula desktop's; its name must be 'aula-<id>'.",
                     domain.substr(0, 80));
  }
  const auto& diskPath = request.diskPath;
  const auto& storage = request.templateStorage;
  if (storage == "desktops") {
    return Error(Errc::kInvalidArgument,
                 "A template's image cannot go into the 'desktops' storage, which holds users' "
                 "own disks; use 'templates'.");
  }
  const auto& templateDisk = request.templateDisk;
  const TemplateMode mode = request.mode;
  const auto modeName = proto::templateModeName(mode);
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
  std::optional<std::string> backing;
  if (auto named = Disks::backingFile(made); !named) {
    log::warn("Cannot read back the backing file of {}: {}", made.native(),
              named.error().message());
  } else if (*named) {
    backing = (*named)->native();
  }
  log::info("Made the template image {} ({}, {} bytes) from the disk of {}.", made.native(),
            modeName, ec ? 0 : size, domain);
  return proto::toJson(
      proto::TemplateAnswer{.templateDisk = templateDisk,
                            .sizeBytes = ec ? std::int64_t{0} : static_cast<std::int64_t>(size),
                            .backing = backing});
}

Result<Json> AgentService::deleteBase(const Json& body) {
  const auto request = AULA_TRY(proto::parseDeleteBaseRequest(body));
  const auto& storage = request.storage;
  const auto& disk = request.disk;
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
    out.push_back(proto::toJson(domainStatus(d)));
  return out;
}

Result<proto::Heartbeat> AgentService::heartbeat() {
  // Numbered before the guests are listed: a command that ends after this
  // number may not show in this list, and the broker knows it.
  auto seq = seq_.next();
  auto list = AULA_TRY(hypervisor_.list());
  auto memory = AULA_TRY(load_.memory());
  double idle = 1.0;
  {
    std::lock_guard lock(sampleMutex_);
    idle = load_.idleSinceLast();
  }
  auto beat = heartbeatOf(idle, memory, load_.cpusOnline(), list, disks_.freeSpaceGb());
  beat.seq = seq;
  if (options_.devices) {
    // A host whose devices cannot be read still reports its load.
    if (auto devices = options_.devices(); devices)
      beat.devices = std::move(*devices);
    else
      log::debug("No device inventory in this heartbeat: {}", devices.error().message());
  }
  return beat;
}

void AgentService::recordEvent(const DomainEvent& event) {
  proto::LifecycleEvent e{.domain = event.name,
                          .desktopId = desktopIdOfName(event.name),
                          .event = event.kind,
                          .detail = event.detail,
                          .at = unixNow(),
                          .seq = seq_.next()};
  log::info("{}: {} ({}).", event.name, event.kind, event.detail);
  {
    std::lock_guard lock(eventsMutex_);
    if (events_.size() >= kMaxQueuedEvents)
      events_.pop_front();
    events_.push_back(std::move(e));
  }
  eventsChanged_.notify_all();
}

std::vector<proto::LifecycleEvent> AgentService::takeEvents() {
  std::lock_guard lock(eventsMutex_);
  std::vector<proto::LifecycleEvent> out(events_.begin(), events_.end());
  events_.clear();
  return out;
}

void AgentService::returnEvents(std::vector<proto::LifecycleEvent> events) {
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
      } else if (auto answer = channel_.post(proto::kHeartbeatRoute, proto::toJson(*body));
                 !answer) {
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
      auto sent = channel_.post(proto::kEventsRoute, proto::toJson(proto::EventBatch{events}));
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
