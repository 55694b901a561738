// The agent's service: the broker's commands over the agent's mutual-TLS
// endpoint, and what the agent tells the broker (heartbeat with load and
// guests, lifecycle events). docs/agent-protocol.md describes the routes.
//
// Policy only: the hypervisor and the disks come in through their
// interfaces, so the same code runs over libvirt on a host and over a fake
// in unit tests; HTTP is the common http::Server's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aula/agent/disks.hpp"
#include "aula/agent/enrolment.hpp"
#include "aula/agent/host_load.hpp"
#include "aula/agent/hypervisor.hpp"
#include "aula/agent/settings.hpp"
#include "aula/common/agent_protocol.hpp"
#include "aula/common/http_server.hpp"
#include "aula/common/json.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

// The subject CN of the broker's client certificate. The broker's CA issues
// certificates with this CN to brokers only (no host may take the name), so
// the agent accepts a client of its CA with this CN and refuses every other,
// including other hosts' agents.
inline constexpr const char* kBrokerCommonName = "aula-broker";

struct ServiceOptions {
  AgentSettings settings;
  std::string domainType = "qemu";  // resolved: "kvm" or "qemu"
  std::string publicHost;           // the host viewers connect to
  // How long a clean shutdown may take before the plug is pulled, when the
  // broker does not say.
  std::chrono::seconds defaultShutdownGrace{60};
  // Where /proc is read from: "/" on a host, a test's folder in tests.
  std::filesystem::path hostRoot = "/";
  // The host's PCI inventory for each heartbeat, so the admin sees what a
  // workstation could pass through; none: not reported.
  std::function<Result<json::Json>()> devices;
};

class AgentService {
 public:
  AgentService(ServiceOptions options, Hypervisor& hypervisor, Disks& disks);

  // One request on the agent's endpoint: checks the caller is the broker,
  // routes, and turns Results into responses.
  http::ServerResponse handle(http::ServerRequest& request);

  // The commands, also callable directly (tests, benchmarks).
  Result<json::Json> start(const std::string& name, const json::Json& body);
  Result<json::Json> shutdown(const std::string& name, const json::Json& body);
  Result<json::Json> powerOff(const std::string& name, const json::Json& body);
  Result<json::Json> remove(const std::string& name, const json::Json& body);
  Result<json::Json> ticket(const std::string& name, const json::Json& body);
  Result<json::Json> domains();
  // Templates: a shut-off desktop's disk made into a template's image
  // (flatten or rebase), and the deletion of a template's base image while no
  // image uses it.
  Result<json::Json> templateFromDesktop(const json::Json& body);
  Result<json::Json> deleteBase(const json::Json& body);

  // The heartbeat, sampled now.
  Result<proto::Heartbeat> heartbeat();

  // Lifecycle events, queued for the broker (at most kMaxQueuedEvents; the
  // oldest go first, and the next heartbeat's guest list corrects for them).
  static constexpr std::size_t kMaxQueuedEvents = 1000;
  void recordEvent(const DomainEvent& event);
  std::vector<proto::LifecycleEvent> takeEvents();
  // After a failed send, in front.
  void returnEvents(std::vector<proto::LifecycleEvent> events);
  // Waits until an event is queued or `timeout` passes; true when one is.
  bool waitForEvent(std::chrono::milliseconds timeout);
  void wakeWaiters();

 private:
  std::shared_ptr<std::mutex> lockFor(const std::string& name);
  Result<std::string> spiceGraphicsXml(const std::string& passwd, const std::string& validTo) const;
  Status dropOverlayIfTransient(const proto::StopRequest& request);
  // The domain's status as the broker reads it, numbered now.
  proto::DomainStatus statusOf(const DomainInfo& info);
  // After a stop: what the domain is now (shut off, or gone), numbered now.
  json::Json stoppedStatus(const std::string& name, bool forced);

  ServiceOptions options_;
  Hypervisor& hypervisor_;
  Disks& disks_;
  http::Router router_;
  std::mutex locksMutex_;
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;
  std::mutex sampleMutex_;
  HostLoad load_;
  // Numbers every observation this agent reports (see agent_protocol.hpp).
  proto::ObservationClock seq_;
  std::mutex eventsMutex_;
  std::condition_variable eventsChanged_;
  std::deque<proto::LifecycleEvent> events_;
  bool wake_ = false;
};

// Sends the heartbeat every interval and events as they come, to the
// broker, over the mutual-TLS channel; keeps events that could not be sent.
class BrokerReporter {
 public:
  BrokerReporter(AgentService& service, std::filesystem::path stateDir, std::string brokerUrl,
                 std::chrono::seconds interval);
  ~BrokerReporter();  // stops
  void stop();

 private:
  void run();
  AgentService& service_;
  BrokerChannel channel_;  // used by the reporter's thread only
  std::chrono::seconds interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

// The desktop id of an Aula domain name ("aula-42" -> 42); none otherwise.
std::optional<std::int64_t> desktopIdOfName(std::string_view name);

}  // namespace aula::agent
