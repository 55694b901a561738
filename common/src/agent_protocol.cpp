// The broker-agent protocol's JSON (see agent_protocol.hpp).
#include "aula/common/agent_protocol.hpp"

#include <chrono>
#include <initializer_list>

#include <fmt/format.h>

namespace aula::proto {

namespace {

Json optional(const std::optional<std::int64_t>& v) {
  return v ? Json(*v) : Json();
}
Json optional(const std::optional<int>& v) {
  return v ? Json(*v) : Json();
}
Json optional(const std::optional<std::string>& v) {
  return v ? Json(*v) : Json();
}

// Reads the fields of one message; the first error wins and names the
// message and the field.
class Reader {
 public:
  Reader(const Json& j, std::string_view message, std::initializer_list<std::string_view> fields)
      : j_(j), message_(message) {
    if (!j.is_object()) {
      fail(fmt::format("The {} must be a JSON object.", message));
      return;
    }
    if (auto known = json::checkFields(j, fields); !known)
      fail(fmt::format("The {}: {}", message, known.error().message()));
  }

  std::string text(std::string_view field, bool required, std::string fallback = {}) {
    const Json* v = find(field);
    if (v == nullptr)
      return missing(field, required, std::move(fallback));
    if (!v->is_string())
      return wrong(field, "a string", std::move(fallback));
    return v->get<std::string>();
  }
  std::optional<std::string> optText(std::string_view field) {
    if (find(field) == nullptr)
      return std::nullopt;
    return text(field, true);
  }
  std::int64_t integer(std::string_view field, bool required, std::int64_t fallback = 0) {
    const Json* v = find(field);
    if (v == nullptr)
      return missing(field, required, fallback);
    if (!v->is_number_integer())
      return wrong(field, "a whole number", fallback);
    return v->get<std::int64_t>();
  }
  std::optional<std::int64_t> optInteger(std::string_view field) {
    if (find(field) == nullptr)
      return std::nullopt;
    return integer(field, true);
  }
  std::optional<int> optPort(std::string_view field) {
    auto v = optInteger(field);
    if (v && (*v < 0 || *v > 65535))
      return wrong(field, "a port from 0 to 65535", std::optional<int>());
    return v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
  }
  bool boolean(std::string_view field, bool required, bool fallback = false) {
    const Json* v = find(field);
    if (v == nullptr)
      return missing(field, required, fallback);
    if (!v->is_boolean())
      return wrong(field, "true or false", fallback);
    return v->get<bool>();
  }
  double number(std::string_view field, bool required, double fallback = 0) {
    const Json* v = find(field);
    if (v == nullptr)
      return missing(field, required, fallback);
    if (!v->is_number())
      return wrong(field, "a number", fallback);
    return v->get<double>();
  }
  // The field's value when it is an array or object; null when absent.
  const Json* nested(std::string_view field, Json::value_t type, std::string_view what) {
    const Json* v = find(field);
    if (v == nullptr)
      return nullptr;
    if (v->type() != type)
      return wrong(field, what, static_cast<const Json*>(nullptr));
    return v;
  }
  void fail(std::string sentence) {
    if (!error_)
      error_.emplace(Errc::kInvalidArgument, std::move(sentence));
  }
  // Adopts a nested message's error.
  void fail(const Error& e) {
    if (!error_)
      error_ = e;
  }
  template <typename T>
  Result<T> done(T value) {
    if (error_)
      return *error_;
    return value;
  }

 private:
  const Json* find(std::string_view field) const {
    if (error_ || !j_.is_object())
      return nullptr;
    auto it = j_.find(field);
    if (it == j_.end() || it->is_null())
      return nullptr;
    return &*it;
  }
  template <typename T>
  T missing(std::string_view field, bool required, T fallback) {
    if (required)
      fail(fmt::format("The {} lacks the field '{}'.", message_, field));
    return fallback;
  }
  template <typename T>
  T wrong(std::string_view field, std::string_view expected, T fallback) {
    fail(fmt::format("The field '{}' of the {} must be {}.", field, message_, expected));
    return fallback;
  }

  const Json& j_;
  std::string_view message_;
  std::optional<Error> error_;
};

}  // namespace

// ---- routes ----

std::string_view domainCommandName(DomainCommand command) {
  switch (command) {
    case DomainCommand::kStart:
      return "start";
    case DomainCommand::kShutdown:
      return "shutdown";
    case DomainCommand::kPowerOff:
      return "poweroff";
    case DomainCommand::kDelete:
      return "delete";
    case DomainCommand::kTicket:
      return "ticket";
  }
  assert(false && "every DomainCommand has a name");
  return "";
}

std::string domainCommandPattern(DomainCommand command) {
  return fmt::format("{}/{{name}}/{}", kDomainsRoute, domainCommandName(command));
}

std::string domainCommandPath(DomainCommand command, std::string_view domain) {
  return fmt::format("{}/{}/{}", kDomainsRoute, domain, domainCommandName(command));
}

// ---- sequence numbers ----

std::int64_t ObservationClock::next() {
  auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  return nextAt(now);
}

std::int64_t ObservationClock::nextAt(std::int64_t nowMicros) {
  std::int64_t last = last_.load();
  std::int64_t want = 0;
  do {
    want = std::max(last + 1, nowMicros);
  } while (!last_.compare_exchange_weak(last, want));
  return want;
}

// ---- enrolment ----

Json toJson(const EnrolRequest& m) {
  Json j{{"token", m.token}};
  if (!m.address.empty())
    j["address"] = m.address;
  return j;
}

Result<EnrolRequest> parseEnrolRequest(const Json& j) {
  Reader r(j, "enrolment request", {"token", "address"});
  EnrolRequest m;
  m.token = r.text("token", true);
  m.address = r.text("address", false);
  return r.done(m);
}

Json toJson(const EnrolAnswer& m) {
  return Json{
      {"host_id", m.hostId},         {"host_name", m.hostName},        {"ca", m.ca},
      {"client_cert", m.clientCert}, {"client_key", m.clientKey},      {"spice_cert", m.spiceCert},
      {"spice_key", m.spiceKey},     {"spice_subject", m.spiceSubject}};
}

Result<EnrolAnswer> parseEnrolAnswer(const Json& j) {
  Reader r(j, "broker's enrolment answer",
           {"host_id", "host_name", "ca", "client_cert", "client_key", "spice_cert", "spice_key",
            "spice_subject"});
  EnrolAnswer m;
  m.hostId = r.integer("host_id", true);
  m.hostName = r.text("host_name", true);
  m.ca = r.text("ca", true);
  m.clientCert = r.text("client_cert", true);
  m.clientKey = r.text("client_key", true);
  m.spiceCert = r.text("spice_cert", true);
  m.spiceKey = r.text("spice_key", true);
  m.spiceSubject = r.text("spice_subject", false);
  return r.done(m);
}

// ---- commands ----

Json toJson(const StartRequest& m) {
  Json j{{"desktop_id", m.desktopId}, {"owner", m.owner},        {"vcpus", m.vcpus},
         {"memory_mb", m.memoryMb},   {"video", m.video},        {"base_storage", m.baseStorage},
         {"base_disk", m.baseDisk},   {"disk_path", m.diskPath}, {"persistent", m.persistent}};
  if (!m.macAddress.empty())
    j["mac_address"] = m.macAddress;
  if (m.limits) {
    j["limits"] = Json{{"cpu_shares", optional(m.limits->cpuShares)},
                       {"cpu_percent_per_vcpu", optional(m.limits->cpuPercentPerVcpu)},
                       {"disk_mb_per_sec", optional(m.limits->diskMbPerSec)},
                       {"disk_iops", optional(m.limits->diskIops)}};
  }
  return j;
}

Result<StartRequest> parseStartRequest(const Json& j) {
  Reader r(j, "start request",
           {"desktop_id", "owner", "vcpus", "memory_mb", "video", "base_storage", "base_disk",
            "disk_path", "persistent", "mac_address", "limits"});
  StartRequest m;
  m.desktopId = r.integer("desktop_id", true);
  m.owner = r.text("owner", false);
  m.vcpus = r.integer("vcpus", false, 1);
  m.memoryMb = r.integer("memory_mb", false, 1024);
  m.video = r.text("video", false, "qxl");
  m.baseStorage = r.text("base_storage", false, "templates");
  m.baseDisk = r.text("base_disk", true);
  m.diskPath = r.text("disk_path", true);
  m.persistent = r.boolean("persistent", false, true);
  m.macAddress = r.text("mac_address", false);
  if (const Json* l = r.nested("limits", Json::value_t::object, "an object")) {
    Reader lr(*l, "start request's limits",
              {"cpu_shares", "cpu_percent_per_vcpu", "disk_mb_per_sec", "disk_iops"});
    DesktopLimits limits;
    limits.cpuShares = lr.optInteger("cpu_shares");
    limits.cpuPercentPerVcpu = lr.optInteger("cpu_percent_per_vcpu");
    limits.diskMbPerSec = lr.optInteger("disk_mb_per_sec");
    limits.diskIops = lr.optInteger("disk_iops");
    auto parsed = lr.done(limits);
    if (!parsed)
      r.fail(parsed.error());
    else
      m.limits = *parsed;
  }
  return r.done(m);
}

Json toJson(const DomainStatus& m) {
  Json j{{"name", m.name},
         {"desktop_id", optional(m.desktopId)},
         {"state", m.state},
         {"running", m.running},
         {"spice_port", optional(m.spicePort)},
         {"spice_tls_port", optional(m.spiceTlsPort)},
         {"vcpus", m.vcpus},
         {"memory_mb", m.memoryMb}};
  if (m.forced)
    j["forced"] = true;
  if (m.seq != 0)
    j["seq"] = m.seq;
  return j;
}

Result<DomainStatus> parseDomainStatus(const Json& j) {
  Reader r(j, "agent's domain status",
           {"name", "desktop_id", "state", "running", "spice_port", "spice_tls_port", "vcpus",
            "memory_mb", "forced", "seq"});
  DomainStatus m;
  m.name = r.text("name", true);
  m.desktopId = r.optInteger("desktop_id");
  m.state = r.text("state", true);
  m.running = r.boolean("running", true);
  m.spicePort = r.optPort("spice_port");
  m.spiceTlsPort = r.optPort("spice_tls_port");
  m.vcpus = r.integer("vcpus", false);
  m.memoryMb = r.integer("memory_mb", false);
  m.forced = r.boolean("forced", false);
  m.seq = r.integer("seq", false);
  return r.done(m);
}

Json toJson(const StopRequest& m) {
  Json j{{"persistent", m.persistent}, {"disk_path", m.diskPath}};
  if (m.graceSeconds)
    j["grace_seconds"] = *m.graceSeconds;
  return j;
}

Result<StopRequest> parseStopRequest(const Json& j) {
  Reader r(j, "stop request", {"persistent", "disk_path", "grace_seconds"});
  StopRequest m;
  m.persistent = r.boolean("persistent", false, true);
  m.diskPath = r.text("disk_path", !m.persistent);
  m.graceSeconds = r.optInteger("grace_seconds");
  if (m.graceSeconds && (*m.graceSeconds < 0 || *m.graceSeconds > 3600))
    r.fail("The field 'grace_seconds' of the stop request must be from 0 to 3600.");
  return r.done(m);
}

Json toJson(const DeleteRequest& m) {
  return Json{{"disk_path", m.diskPath}};
}

Result<DeleteRequest> parseDeleteRequest(const Json& j) {
  Reader r(j, "delete request", {"disk_path"});
  DeleteRequest m;
  m.diskPath = r.text("disk_path", true);
  return r.done(m);
}

Json toJson(const TicketRequest& m) {
  return Json{{"valid_for_seconds", m.validForSeconds}};
}

Result<TicketRequest> parseTicketRequest(const Json& j) {
  Reader r(j, "ticket request", {"valid_for_seconds"});
  TicketRequest m;
  m.validForSeconds = r.integer("valid_for_seconds", false, 30);
  return r.done(m);
}

Json toJson(const TicketAnswer& m) {
  return Json{{"name", m.name},           {"host", m.host},     {"tls_port", optional(m.tlsPort)},
              {"port", optional(m.port)}, {"ticket", m.ticket}, {"expires_at", m.expiresAt}};
}

Result<TicketAnswer> parseTicketAnswer(const Json& j) {
  Reader r(j, "agent's ticket answer",
           {"name", "host", "tls_port", "port", "ticket", "expires_at"});
  TicketAnswer m;
  m.name = r.text("name", false);
  m.host = r.text("host", false);
  m.tlsPort = r.optPort("tls_port");
  m.port = r.optPort("port");
  m.ticket = r.text("ticket", true);
  m.expiresAt = r.integer("expires_at", true);
  return r.done(m);
}

std::string_view templateModeName(TemplateMode mode) {
  return mode == TemplateMode::kRebase ? "rebase" : "flatten";
}

Result<TemplateMode> parseTemplateMode(std::string_view name) {
  if (name == "flatten")
    return TemplateMode::kFlatten;
  if (name == "rebase")
    return TemplateMode::kRebase;
  return makeError(Errc::kInvalidArgument,
                   "The field 'mode' must be 'flatten' or 'rebase', not '{}'.", name.substr(0, 40));
}

Json toJson(const TemplateRequest& m) {
  return Json{{"domain", m.domain},
              {"disk_path", m.diskPath},
              {"template_storage", m.templateStorage},
              {"template_disk", m.templateDisk},
              {"mode", templateModeName(m.mode)}};
}

Result<TemplateRequest> parseTemplateRequest(const Json& j) {
  Reader r(j, "template request",
           {"domain", "disk_path", "template_storage", "template_disk", "mode"});
  TemplateRequest m;
  m.domain = r.text("domain", true);
  m.diskPath = r.text("disk_path", true);
  m.templateStorage = r.text("template_storage", false, "templates");
  m.templateDisk = r.text("template_disk", true);
  auto mode = parseTemplateMode(r.text("mode", false, "flatten"));
  if (!mode)
    r.fail(mode.error());
  else
    m.mode = *mode;
  return r.done(m);
}

Json toJson(const TemplateAnswer& m) {
  return Json{{"template_disk", m.templateDisk},
              {"size_bytes", m.sizeBytes},
              {"backing", optional(m.backing)}};
}

Result<TemplateAnswer> parseTemplateAnswer(const Json& j) {
  Reader r(j, "agent's template answer", {"template_disk", "size_bytes", "backing"});
  TemplateAnswer m;
  m.templateDisk = r.text("template_disk", false);
  m.sizeBytes = r.integer("size_bytes", false);
  m.backing = r.optText("backing");
  return r.done(m);
}

Json toJson(const DeleteBaseRequest& m) {
  return Json{{"storage", m.storage}, {"disk", m.disk}};
}

Result<DeleteBaseRequest> parseDeleteBaseRequest(const Json& j) {
  Reader r(j, "base deletion request", {"storage", "disk"});
  DeleteBaseRequest m;
  m.storage = r.text("storage", true);
  m.disk = r.text("disk", true);
  return r.done(m);
}

// ---- reports ----

Json toJson(const Heartbeat& m) {
  Json storage = Json::object();
  for (const auto& [name, gb] : m.storageFreeGb)
    storage[name] = gb;
  Json j{{"cpus", m.cpus},
         {"memory_mb", m.memoryMb},
         {"free_memory_mb", m.freeMemoryMb},
         {"cpu_idle", m.cpuIdle},
         {"allocated_vcpus", m.allocatedVcpus},
         {"running_guests", m.runningGuests},
         {"storage_free_gb", storage}};
  if (m.guests) {
    Json guests = Json::array();
    for (const auto& g : *m.guests) {
      guests.push_back(Json{{"name", g.name},
                            {"desktop_id", optional(g.desktopId)},
                            {"state", g.state},
                            {"running", g.running}});
    }
    j["guests"] = std::move(guests);
  }
  if (m.seq != 0)
    j["seq"] = m.seq;
  if (m.devices)
    j["devices"] = *m.devices;
  return j;
}

namespace {

// The inventory's shape: what the broker stores and shows, bounded.
std::optional<std::string> devicesProblem(const Json& d) {
  const Json* list = d.contains("devices") ? &d["devices"] : nullptr;
  if (!d.contains("iommu_groups") || !d["iommu_groups"].is_number_integer() || list == nullptr ||
      !list->is_array()) {
    return "The field 'devices' must be an object with 'iommu_groups' (a whole number) and "
           "'devices' (an array), as `aula-agent devices --json` prints it.";
  }
  if (list->size() > kMaxReportedDevices)
    return fmt::format("The field 'devices' lists {} devices; at most {} are taken.", list->size(),
                       kMaxReportedDevices);
  for (const auto& device : *list) {
    if (!device.is_object() || !device.contains("address") || !device["address"].is_string() ||
        device["address"].get<std::string>().size() > 32) {
      return "Each of the field 'devices' devices must be an object with its PCI 'address'.";
    }
  }
  return std::nullopt;
}

}  // namespace

Result<Heartbeat> parseHeartbeat(const Json& j) {
  Reader r(j, "heartbeat",
           {"cpus", "memory_mb", "free_memory_mb", "cpu_idle", "allocated_vcpus", "running_guests",
            "storage_free_gb", "guests", "seq", "devices"});
  Heartbeat m;
  m.cpus = r.integer("cpus", true);
  m.memoryMb = r.integer("memory_mb", true);
  m.freeMemoryMb = r.integer("free_memory_mb", true);
  m.cpuIdle = r.number("cpu_idle", false, 1.0);
  if (m.cpuIdle < 0 || m.cpuIdle > 1)
    r.fail("The field 'cpu_idle' must be a number from 0 to 1.");
  m.allocatedVcpus = r.integer("allocated_vcpus", false);
  m.runningGuests = r.integer("running_guests", false);
  if (const Json* s = r.nested("storage_free_gb", Json::value_t::object, "an object")) {
    for (const auto& [name, free] : s->items()) {
      if (!free.is_number_integer()) {
        r.fail(fmt::format("The free space of the storage '{}' must be a whole number of GiB.",
                           name.substr(0, 40)));
        break;
      }
      m.storageFreeGb[name] = free.get<std::int64_t>();
    }
  }
  if (const Json* g = r.nested("guests", Json::value_t::array, "an array")) {
    m.guests.emplace();
    for (const auto& guest : *g) {
      Reader gr(guest, "heartbeat's guest", {"name", "desktop_id", "state", "running"});
      GuestReport report;
      report.name = gr.text("name", true);
      report.desktopId = gr.optInteger("desktop_id");
      report.state = gr.text("state", false);
      report.running = gr.boolean("running", false);
      auto parsed = gr.done(report);
      if (!parsed) {
        r.fail(parsed.error());
        break;
      }
      m.guests->push_back(std::move(*parsed));
    }
  }
  m.seq = r.integer("seq", false);
  if (const Json* d = r.nested("devices", Json::value_t::object, "an object")) {
    if (auto problem = devicesProblem(*d))
      r.fail(*problem);
    else
      m.devices = *d;
  }
  return r.done(m);
}

Json toJson(const LifecycleEvent& m) {
  Json j{{"domain", m.domain},
         {"desktop_id", optional(m.desktopId)},
         {"event", m.event},
         {"detail", m.detail},
         {"at", m.at}};
  if (m.seq != 0)
    j["seq"] = m.seq;
  return j;
}

Result<LifecycleEvent> parseLifecycleEvent(const Json& j) {
  Reader r(j, "lifecycle event", {"domain", "desktop_id", "event", "detail", "at", "seq"});
  LifecycleEvent m;
  m.domain = r.text("domain", false);
  m.desktopId = r.optInteger("desktop_id");
  m.event = r.text("event", true);
  m.detail = r.text("detail", false);
  m.at = r.integer("at", false);
  m.seq = r.integer("seq", false);
  return r.done(m);
}

Json toJson(const EventBatch& m) {
  Json events = Json::array();
  for (const auto& e : m.events)
    events.push_back(toJson(e));
  return Json{{"events", std::move(events)}};
}

Result<EventBatch> parseEventBatch(const Json& j) {
  Reader r(j, "event batch", {"events"});
  EventBatch m;
  const Json* events = r.nested("events", Json::value_t::array, "an array");
  if (events == nullptr)
    r.fail("The event batch lacks the field 'events'.");
  else if (events->size() > kMaxEventsPerBatch)
    r.fail(fmt::format("Send at most {} events at a time.", kMaxEventsPerBatch));
  else {
    for (const auto& e : *events) {
      auto parsed = parseLifecycleEvent(e);
      if (!parsed) {
        r.fail(parsed.error());
        break;
      }
      m.events.push_back(std::move(*parsed));
    }
  }
  return r.done(m);
}

// ---- workstations ----

Json toJson(const WorkstationClaim& m) {
  return Json{{"user", m.user}, {"session", m.session}};
}

Result<WorkstationClaim> parseWorkstationClaim(const Json& j) {
  Reader r(j, "workstation claim", {"user", "session"});
  WorkstationClaim m;
  m.user = r.text("user", true);
  m.session = r.text("session", true);
  return r.done(m);
}

Json toJson(const WorkstationGrantAnswer& m) {
  Json devices = Json::array();
  for (const auto& d : m.devices) {
    devices.push_back(Json{{"address", d.address},
                           {"vendor", d.vendor},
                           {"device", d.device},
                           {"rom", optional(d.rom)}});
  }
  return Json{{"user", m.user},
              {"domain", m.domain},
              {"devices", devices},
              {"vcpus", m.vcpus},
              {"memory_mb", m.memoryMb},
              {"huge_pages", m.hugePages},
              {"hide_kvm", m.hideKvm},
              {"hyperv_vendor_id", m.hypervVendorId},
              {"disk", Json{{"base_storage", m.disk.baseStorage},
                            {"base_disk", m.disk.baseDisk},
                            {"storage", m.disk.storage},
                            {"path", m.disk.path}}}};
}

Result<WorkstationGrantAnswer> parseWorkstationGrantAnswer(const Json& j) {
  Reader r(j, "broker's workstation grant",
           {"user", "domain", "devices", "vcpus", "memory_mb", "huge_pages", "hide_kvm",
            "hyperv_vendor_id", "disk"});
  WorkstationGrantAnswer m;
  m.user = r.text("user", true);
  m.domain = r.text("domain", true);
  m.vcpus = r.integer("vcpus", true);
  m.memoryMb = r.integer("memory_mb", true);
  m.hugePages = r.boolean("huge_pages", false);
  m.hideKvm = r.boolean("hide_kvm", false);
  m.hypervVendorId = r.text("hyperv_vendor_id", false);
  if (const Json* devices = r.nested("devices", Json::value_t::array, "an array")) {
    for (const auto& d : *devices) {
      Reader dr(d, "workstation grant's device", {"address", "vendor", "device", "rom"});
      GrantedDevice g;
      g.address = dr.text("address", true);
      g.vendor = dr.text("vendor", false);
      g.device = dr.text("device", false);
      g.rom = dr.optText("rom");
      auto parsed = dr.done(std::move(g));
      if (!parsed) {
        r.fail(parsed.error());
        break;
      }
      m.devices.push_back(std::move(*parsed));
    }
  }
  if (m.devices.empty())
    r.fail("The broker's workstation grant lists no devices.");
  if (const Json* disk = r.nested("disk", Json::value_t::object, "an object")) {
    Reader dr(*disk, "workstation grant's disk", {"base_storage", "base_disk", "storage", "path"});
    GrantedDisk g;
    g.baseStorage = dr.text("base_storage", true);
    g.baseDisk = dr.text("base_disk", true);
    g.storage = dr.text("storage", false, "desktops");
    g.path = dr.text("path", true);
    auto parsed = dr.done(std::move(g));
    if (parsed)
      m.disk = std::move(*parsed);
    else
      r.fail(parsed.error());
  } else {
    r.fail("The broker's workstation grant lacks the field 'disk'.");
  }
  return r.done(m);
}

Json toJson(const WorkstationRelease& m) {
  return Json{{"user", m.user}};
}

Result<WorkstationRelease> parseWorkstationRelease(const Json& j) {
  Reader r(j, "workstation release", {"user"});
  WorkstationRelease m;
  m.user = r.text("user", true);
  return r.done(m);
}

}  // namespace aula::proto
