// The broker's policy: who may do what to which object, quotas, placement,
// sessions, and the audit log. Every operation takes the Actor who asks and
// checks its rights first; every change is one database transaction and one
// audit entry. Inputs and outputs are JSON objects, the shapes documented in
// docs/api.md, so the HTTP layer only routes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

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
  CertificateAuthority ca;
  // Failed enrolments (wrong, used or expired join tokens) allowed per
  // address before a lockout of throttle.firstLockout, doubling.
  int maxEnrolFailuresPerAddress = 10;
  // Fault injection for the crash test: a pause after each desktop row of a
  // deployment, inside its transaction. Zero in production.
  std::chrono::milliseconds deploymentStepDelay{0};
};

class Broker {
 public:
  Broker(db::Database& database, BrokerSettings settings, const Clock& clock, EventBus& events,
         HostLink& hosts, Directory* directory);

  const BrokerSettings& settings() const { return settings_; }
  db::Database& database() { return db_; }

  // ---- set-up (aula-broker init) ----
  // Creates the first admin and the default quotas if there are no users yet.
  Status bootstrap(std::string_view adminName, std::string_view adminPassword);

  // ---- sessions ----
  // {"token","expires_at","user"}; kUnauthenticated, kRateLimited ("try again in N s").
  Result<Json> login(std::string_view username, std::string_view password,
                     const std::string& address);
  Result<Actor> authenticate(std::string_view token, const std::string& address);
  Status logout(const Actor& actor);
  Result<Json> me(const Actor& actor);
  Result<Json> changePassword(const Actor& actor, const Json& body);
  Result<Json> listApiTokens(const Actor& actor);
  Result<Json> createApiToken(const Actor& actor, const Json& body);
  Status deleteApiToken(const Actor& actor, std::int64_t id);

  // ---- organisation ----
  Result<Json> listCategories(const Actor& actor);
  Result<Json> createCategory(const Actor& actor, const Json& body);
  Result<Json> updateCategory(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteCategory(const Actor& actor, std::int64_t id);

  Result<Json> listGroups(const Actor& actor);
  Result<Json> getGroup(const Actor& actor, std::int64_t id);
  Result<Json> createGroup(const Actor& actor, const Json& body);
  Result<Json> updateGroup(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteGroup(const Actor& actor, std::int64_t id);
  Result<Json> addMembers(const Actor& actor, std::int64_t groupId, const Json& body);
  Status removeMember(const Actor& actor, std::int64_t groupId, std::int64_t userId);

  Result<Json> listUsers(const Actor& actor, const std::map<std::string, std::string>& filter);
  Result<Json> getUser(const Actor& actor, std::int64_t id);
  Result<Json> createUser(const Actor& actor, const Json& body);
  Result<Json> updateUser(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteUser(const Actor& actor, std::int64_t id);

  // Quotas by subject: "role:user", "group-member:<id>", "user:<id>",
  // "group:<id>", "category:<id>".
  Result<Json> listQuotas(const Actor& actor);
  Result<Json> setQuota(const Actor& actor, std::string_view subject, const Json& body);
  Status deleteQuota(const Actor& actor, std::string_view subject);
  Result<Json> usage(const Actor& actor, std::int64_t userId);

  // ---- templates ----
  Result<Json> listTemplates(const Actor& actor);
  Result<Json> getTemplate(const Actor& actor, std::int64_t id);
  Result<Json> createTemplate(const Actor& actor, const Json& body);
  Result<Json> updateTemplate(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteTemplate(const Actor& actor, std::int64_t id);

  // ---- desktops ----
  Result<Json> listDesktops(const Actor& actor, const std::map<std::string, std::string>& filter);
  Result<Json> getDesktop(const Actor& actor, std::int64_t id);
  Result<Json> createDesktop(const Actor& actor, const Json& body);
  Result<Json> startDesktop(const Actor& actor, std::int64_t id);
  Result<Json> stopDesktop(const Actor& actor, std::int64_t id, bool force);
  Status deleteDesktop(const Actor& actor, std::int64_t id);
  Result<Json> console(const Actor& actor, std::int64_t id);
  // A template from a stopped desktop's disk, made by the agent of the host
  // that holds the disk ({"name", "mode", "description", "access"}); the new
  // template, as createTemplate() answers it.
  Result<Json> makeTemplateFromDesktop(const Actor& actor, std::int64_t id, const Json& body);

  // ---- deployments ----
  Result<Json> listDeployments(const Actor& actor);
  Result<Json> getDeployment(const Actor& actor, std::int64_t id);
  Result<Json> createDeployment(const Actor& actor, const Json& body);
  Result<Json> startDeployment(const Actor& actor, std::int64_t id);
  Result<Json> stopDeployment(const Actor& actor, std::int64_t id, bool force);
  Status deleteDeployment(const Actor& actor, std::int64_t id);

  // ---- hosts ----
  Result<Json> listPools(const Actor& actor);
  Result<Json> createPool(const Actor& actor, const Json& body);
  Status deletePool(const Actor& actor, std::int64_t id);
  Result<Json> listHosts(const Actor& actor);
  Result<Json> getHost(const Actor& actor, std::int64_t id);
  Result<Json> createHost(const Actor& actor, const Json& body);
  Result<Json> updateHost(const Actor& actor, std::int64_t id, const Json& body);
  Status deleteHost(const Actor& actor, std::int64_t id);
  // The agent's heartbeat (the agent issue authenticates it by certificate).
  Status recordHeartbeat(std::int64_t hostId, const Json& load);
  // Lifecycle events from a host's agent ({"events": [{domain, desktop_id,
  // event, detail, at}]}): a desktop that stopped or crashed on its own is
  // marked stopped, one started outside the broker running. Events for
  // desktops the broker is starting or stopping itself change nothing.
  Status recordAgentEvents(std::int64_t hostId, const Json& body);
  // Marks hosts silent for longer than hostLostAfter as lost; returns how many.
  Result<int> markLostHosts();
  Result<Json> listEnrolmentTokens(const Actor& actor);
  Result<Json> createEnrolmentToken(const Actor& actor, const Json& body);
  Status deleteEnrolmentToken(const Actor& actor, std::int64_t id);
  // An agent's enrolment with a one-time join token (no user session):
  // creates the host (or fills in the one an admin made and nobody enrolled)
  // and issues its client and SPICE server certificates with the broker's CA.
  // {"host_id","host_name","client_cert","client_key","spice_cert",
  // "spice_key","spice_subject","ca"}. kUnauthenticated for an unknown, used
  // or expired token; kRateLimited after too many failures from one address.
  Result<Json> enrollHost(std::string_view token, const EnrollRequest& request);
  // The enrolled host whose client certificate has this fingerprint
  // ("AB:CD:..."), or kPermissionDenied.
  Result<std::int64_t> hostByCertificate(std::string_view fingerprint);

  // ---- boot hosts (MAC -> what it boots) ----
  Result<Json> listBootHosts(const Actor& actor);
  Result<Json> putBootHost(const Actor& actor, std::string_view mac, const Json& body);
  Status deleteBootHost(const Actor& actor, std::string_view mac);

  // ---- audit ----
  Result<Json> listAudit(const Actor& actor, const std::map<std::string, std::string>& filter);

  // Whether `actor` may see `event` on the live stream.
  bool canSee(const Actor& actor, const Event& event) const;

  // Counters for /metrics.
  struct Counters {
    std::atomic<std::uint64_t> logins{0};
    std::atomic<std::uint64_t> loginFailures{0};
    std::atomic<std::uint64_t> loginsThrottled{0};
    std::atomic<std::uint64_t> desktopStarts{0};
    std::atomic<std::uint64_t> desktopStartFailures{0};
  };
  Counters& counters() { return counters_; }
  Result<Json> gauges();  // desktops by state, hosts by state, users

 private:
  Result<std::int64_t> syncDirectoryUser(const DirectoryUser& entry);
  // Asks the hosts to delete a deleted template's image and audits the outcome.
  void deleteTemplateImage(const Actor& actor, std::int64_t templateId, const std::string& storage,
                           const std::string& disk, const std::vector<HostAddress>& hosts);
  bool copying(std::int64_t desktopId);

  db::Database& db_;
  BrokerSettings settings_;
  const Clock& clock_;
  EventBus& events_;
  HostLink& hosts_;
  Directory* directory_;
  LoginThrottle throttle_;
  LoginThrottle enrolThrottle_;
  Placer placer_;
  Counters counters_;
  // Desktops whose disk is being made into a template: they neither start
  // nor go away until the copy is done.
  std::mutex copyingMutex_;
  std::set<std::int64_t> copying_;
};

}  // namespace aula::broker
