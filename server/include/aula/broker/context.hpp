// What every broker service shares: who asks (Actor, Role), the broker's
// settings, its counters, and BrokerContext, the references to the database,
// clock, event bus, host link and directory that each service is built with.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "aula/broker/database.hpp"
#include "aula/broker/directory.hpp"
#include "aula/broker/events.hpp"
#include "aula/broker/host_link.hpp"
#include "aula/broker/password.hpp"
#include "aula/broker/placement.hpp"
#include "aula/broker/throttle.hpp"
#include "aula/common/clock.hpp"
#include "aula/common/json.hpp"

namespace aula::broker {

using json::Json;

enum class Role { kUser = 0, kAdvanced = 1, kManager = 2, kAdmin = 3 };
std::string_view roleName(Role role);
std::optional<Role> parseRole(std::string_view name);

struct Actor {
  std::int64_t userId = 0;
  std::string username;
  Role role = Role::kUser;
  std::optional<std::int64_t> categoryId;
  std::string address;
  std::int64_t sessionId = 0;
};

// How LDAP identities become Aula users.
struct DirectoryMapping {
  std::map<std::string, std::string> groupRoles;  // group DN (lower case) -> role name
  std::map<std::string, std::string> groupMap;    // group DN (lower case) -> "Category/Group"
  std::string defaultRole = "user";
  std::string defaultCategory;  // category of users no mapped group places
};

// The broker's certificate authority, which signs each enrolled host's
// client and SPICE certificates. Empty: this broker cannot enrol hosts.
struct CertificateAuthority {
  std::string certPem;
  std::string keyPem;
};

// What an agent sends to enrol, with where it came from.
struct EnrollRequest {
  std::string agentAddress;   // "host:port" the broker reaches the agent at; may be empty
  std::string remoteAddress;  // the peer's IP, for rate limiting and the audit log
};

// Network boot: where images live and what PCs are told.
struct BootSettings {
  std::string imageDir;  // images as <dir>/<flavour>/<version>/; empty: no images
  // The broker's HTTPS URL on the lab PCs' kernel command line; empty: the
  // host a PC asked for the boot script, with the HTTPS port.
  std::string brokerUrl;
  std::string caFingerprint;  // of the broker's CA, on the command line
  // What a MAC address no admin registered boots: "thin" (the thin image
  // of unknownChannel), "menu" (the menu, to adopt it first) or "local".
  std::string unknown = "thin";
  std::string unknownChannel = "stable";
  std::string kernelArgs;  // more on every image's command line
  // Unknown MACs recorded at most; more are served but not stored.
  std::int64_t maxUnknown = 5000;
  // Debian's signed shim and GRUB for Secure Boot PCs (served over TFTP as
  // shimx64.efi, grubx64.efi, mmx64.efi); empty: none.
  std::string loadersDir;
};

// What every greeter is told before anyone logs in (GET /api/v1/greeter).
struct GreeterSettings {
  std::string schoolName;
  std::string logoPng;  // PNG bytes, or empty
  std::chrono::seconds idleLogout{300};
};

struct BrokerSettings {
  std::chrono::seconds sessionIdle{3600};
  std::chrono::seconds sessionMax{12 * 3600};
  Argon2Params argon2;
  ThrottleSettings throttle;
  PlacementWeights placement;
  std::map<std::string, std::string> storage;  // name -> path; template disks must lie inside
  std::chrono::seconds hostLostAfter{90};
  std::chrono::seconds ticketValidity{60};
  // A desktop recorded as running must have run this long before a
  // heartbeat that lacks it marks it stopped: the heartbeat may have been
  // sampled on the host before the start finished.
  std::chrono::seconds reconcileGrace{30};
  // How long a console request waits for a start another request began.
  std::chrono::seconds consoleStartWait{180};
  DirectoryMapping directoryMapping;
  GreeterSettings greeter;
  BootSettings boot;
  CertificateAuthority ca;
  // Failed enrolments (wrong, used or expired join tokens) allowed per
  // address before a lockout of throttle.firstLockout, doubling.
  int maxEnrolFailuresPerAddress = 10;
  // Fault injection for the crash test: a pause after each desktop row of a
  // deployment, inside its transaction. Zero in production.
  std::chrono::milliseconds deploymentStepDelay{0};
};

// Counters for /metrics.
struct Counters {
  std::atomic<std::uint64_t> logins{0};
  std::atomic<std::uint64_t> loginFailures{0};
  std::atomic<std::uint64_t> loginsThrottled{0};
  std::atomic<std::uint64_t> desktopStarts{0};
  std::atomic<std::uint64_t> desktopStartFailures{0};
};

// The broker's collaborators, as one value each service keeps a reference
// to. The Broker owns the settings and counters; the rest outlive it.
struct BrokerContext {
  db::Database& db;
  const BrokerSettings& settings;
  const Clock& clock;
  EventBus& events;
  HostLink& hosts;
  Directory* directory;  // null: no LDAP
  Counters& counters;
};

}  // namespace aula::broker
