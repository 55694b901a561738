// The protocol between the broker and its agents, written once for both
// sides: the routes, every request and answer as a struct, and its JSON.
// The broker's agent link sends what the agent's service parses, and the
// agent's reporter sends what the broker parses, through these functions
// only; tests/golden/protocol/ holds one golden JSON file per message.
// docs/agent-protocol.md describes the same in prose.
//
// Sequence numbers. Every observation an agent reports (a heartbeat's guest
// list, a lifecycle event, the outcome of a command) carries `seq`: a
// number the agent takes from its ObservationClock at the moment it looked,
// strictly increasing on that host, across restarts too (it follows the
// wall clock in microseconds). The broker keeps, per desktop, the seq of
// the newest observation it acted on, and ignores an older one: a heartbeat
// sampled before a stop never undoes the stop, however late it arrives.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/json.hpp"
#include "aula/common/result.hpp"

namespace aula::proto {

using json::Json;

// ---- routes ----
// The agent's endpoint (the broker calls, over mutual TLS).
inline constexpr std::string_view kDomainsRoute = "/v1/domains";
inline constexpr std::string_view kLoadRoute = "/v1/load";
inline constexpr std::string_view kTemplateFromDesktopRoute = "/v1/templates/from-desktop";
inline constexpr std::string_view kDeleteBaseRoute = "/v1/templates/delete-base";

enum class DomainCommand { kStart, kShutdown, kPowerOff, kDelete, kTicket };
std::string_view domainCommandName(DomainCommand command);  // "start", "poweroff", ...
// The route pattern the agent's router serves: "/v1/domains/{name}/start".
std::string domainCommandPattern(DomainCommand command);
// The path the broker calls: "/v1/domains/aula-42/start".
std::string domainCommandPath(DomainCommand command, std::string_view domain);

// The broker's endpoint (the agent calls).
inline constexpr std::string_view kEnrolRoute = "/api/v1/agent/enroll";
inline constexpr std::string_view kHeartbeatRoute = "/api/v1/agent/heartbeat";
inline constexpr std::string_view kWorkstationClaimRoute = "/api/v1/agent/workstation/claim";
inline constexpr std::string_view kWorkstationReleaseRoute = "/api/v1/agent/workstation/release";
inline constexpr std::string_view kEventsRoute = "/api/v1/agent/events";

// ---- sequence numbers ----
// Gives each observation on one host a number larger than every one before.
class ObservationClock {
 public:
  // max(last + 1, now in microseconds since the epoch).
  std::int64_t next();
  // For tests: the wall clock's reading is replaced by `nowMicros`.
  std::int64_t nextAt(std::int64_t nowMicros);

 private:
  std::atomic<std::int64_t> last_{0};
};

// ---- enrolment (agent -> broker, with a one-time join token) ----
struct EnrolRequest {
  std::string token;
  std::string address;  // "HOST:PORT" the broker reaches the agent at; may be empty
};
struct EnrolAnswer {
  std::int64_t hostId = 0;
  std::string hostName;
  std::string ca, clientCert, clientKey, spiceCert, spiceKey, spiceSubject;
};

// ---- commands (broker -> agent) ----
struct DesktopLimits {
  std::optional<std::int64_t> cpuShares, cpuPercentPerVcpu, diskMbPerSec, diskIops;
};
struct StartRequest {
  std::int64_t desktopId = 0;
  std::string owner;
  std::int64_t vcpus = 1;
  std::int64_t memoryMb = 1024;
  std::string video = "qxl";
  std::string baseStorage = "templates";
  std::string baseDisk;
  std::string diskPath;
  bool persistent = true;
  std::string macAddress;
  std::optional<DesktopLimits> limits;  // none: the host's [limits]
};
// What start, shutdown, poweroff and GET /v1/domains say of a domain.
struct DomainStatus {
  std::string name;
  std::optional<std::int64_t> desktopId;
  std::string state;  // libvirt's, as virsh prints it: "running", "shut off", ...
  bool running = false;
  std::optional<int> spicePort, spiceTlsPort;
  std::int64_t vcpus = 0;
  std::int64_t memoryMb = 0;
  bool forced = false;   // shutdown: the grace ran out and the guest was powered off
  std::int64_t seq = 0;  // when the agent saw this state (0: not said)
};
struct StopRequest {
  bool persistent = true;
  std::string diskPath;
  std::optional<std::int64_t> graceSeconds;  // shutdown only
};
struct DeleteRequest {
  std::string diskPath;
};
struct TicketRequest {
  std::int64_t validForSeconds = 30;
};
struct TicketAnswer {
  std::string name;
  std::string host;
  std::optional<int> tlsPort, port;
  std::string ticket;
  std::int64_t expiresAt = 0;
};

enum class TemplateMode {
  kFlatten,  // one standalone image: the base and the desktop's changes together
  kRebase,   // only the desktop's changes, over the desktop's own base
};
std::string_view templateModeName(TemplateMode mode);  // "flatten", "rebase"
Result<TemplateMode> parseTemplateMode(std::string_view name);

struct TemplateRequest {
  std::string domain;
  std::string diskPath;
  std::string templateStorage = "templates";
  std::string templateDisk;
  TemplateMode mode = TemplateMode::kFlatten;
};
struct TemplateAnswer {
  std::string templateDisk;
  std::int64_t sizeBytes = 0;
  std::optional<std::string> backing;  // rebase: the image's base, an absolute path
};
struct DeleteBaseRequest {
  std::string storage;
  std::string disk;
};

// ---- reports (agent -> broker) ----
struct GuestReport {
  std::string name;
  std::optional<std::int64_t> desktopId;
  std::string state;
  bool running = false;
};
struct Heartbeat {
  std::int64_t cpus = 1;
  std::int64_t memoryMb = 0;
  std::int64_t freeMemoryMb = 0;
  double cpuIdle = 1.0;  // 0..1
  std::int64_t allocatedVcpus = 0;
  std::int64_t runningGuests = 0;
  std::map<std::string, std::int64_t> storageFreeGb;
  // Every guest libvirt knows; none: an agent that does not reconcile.
  std::optional<std::vector<GuestReport>> guests;
  std::int64_t seq = 0;  // taken before the guests were listed
  // The host's PCI devices for passthrough, as `aula-agent devices --json`
  // prints them ({"iommu_groups": N, "devices": [{"address": ...}, ...]});
  // none from an agent that cannot read them.
  std::optional<Json> devices;
};
inline constexpr std::size_t kMaxReportedDevices = 1024;
struct LifecycleEvent {
  std::string domain;
  std::optional<std::int64_t> desktopId;
  // "started"; "shutdown" (the guest powered itself off), "stopped" (a
  // destroy or the host), "crashed".
  std::string event;
  std::string detail;
  std::int64_t at = 0;   // Unix seconds on the agent
  std::int64_t seq = 0;  // when the agent heard of it
};
struct EventBatch {
  std::vector<LifecycleEvent> events;
};
inline constexpr std::size_t kMaxEventsPerBatch = 1000;

// ---- workstations (agent -> broker) ----
// The greeter's user and the session the broker gave them at login.
struct WorkstationClaim {
  std::string user;
  std::string session;
};
// What the broker answers a claim it allows: the VM the user gets.
struct GrantedDevice {
  std::string address;  // "0000:01:00.0"
  std::string vendor;   // the IDs it had when the admin chose it ("10de"); may be empty
  std::string device;
  std::optional<std::string> rom;  // a ROM file on the workstation
};
struct GrantedDisk {
  std::string baseStorage;  // the template's image: storage and path inside it
  std::string baseDisk;
  std::string storage = "desktops";  // the user's overlay on this workstation
  std::string path;
};
struct WorkstationGrantAnswer {
  std::string user;
  std::string domain;  // the libvirt domain's name
  std::vector<GrantedDevice> devices;
  std::int64_t vcpus = 1;
  std::int64_t memoryMb = 1024;
  bool hugePages = false;
  bool hideKvm = false;
  std::string hypervVendorId;
  GrantedDisk disk;
};
// The VM has stopped: the user no longer has the workstation.
struct WorkstationRelease {
  std::string user;
};

// ---- JSON ----
// Each parser refuses unknown fields and wrong types with kInvalidArgument
// naming the field; optional fields may be absent or null.
Json toJson(const EnrolRequest& m);
Json toJson(const EnrolAnswer& m);
Json toJson(const StartRequest& m);
Json toJson(const DomainStatus& m);
Json toJson(const StopRequest& m);
Json toJson(const DeleteRequest& m);
Json toJson(const TicketRequest& m);
Json toJson(const TicketAnswer& m);
Json toJson(const TemplateRequest& m);
Json toJson(const TemplateAnswer& m);
Json toJson(const DeleteBaseRequest& m);
Json toJson(const Heartbeat& m);
Json toJson(const LifecycleEvent& m);
Json toJson(const EventBatch& m);
Json toJson(const WorkstationClaim& m);
Json toJson(const WorkstationGrantAnswer& m);
Json toJson(const WorkstationRelease& m);

Result<EnrolRequest> parseEnrolRequest(const Json& j);
Result<EnrolAnswer> parseEnrolAnswer(const Json& j);
Result<StartRequest> parseStartRequest(const Json& j);
Result<DomainStatus> parseDomainStatus(const Json& j);
Result<StopRequest> parseStopRequest(const Json& j);
Result<DeleteRequest> parseDeleteRequest(const Json& j);
Result<TicketRequest> parseTicketRequest(const Json& j);
Result<TicketAnswer> parseTicketAnswer(const Json& j);
Result<TemplateRequest> parseTemplateRequest(const Json& j);
Result<TemplateAnswer> parseTemplateAnswer(const Json& j);
Result<DeleteBaseRequest> parseDeleteBaseRequest(const Json& j);
Result<Heartbeat> parseHeartbeat(const Json& j);
Result<LifecycleEvent> parseLifecycleEvent(const Json& j);
Result<EventBatch> parseEventBatch(const Json& j);
Result<WorkstationClaim> parseWorkstationClaim(const Json& j);
Result<WorkstationGrantAnswer> parseWorkstationGrantAnswer(const Json& j);
Result<WorkstationRelease> parseWorkstationRelease(const Json& j);

}  // namespace aula::proto
