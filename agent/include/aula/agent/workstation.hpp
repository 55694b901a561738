// Workstation mode, the policy half of the front door: a user the broker
// allows gets the local passthrough VM; the devices go to vfio-pci first
// and always come back when the VM stops. The greeter reaches this through
// the agent's D-Bus API (agent/dbus/), which adds nothing but the bus.
//
//   idle ──start──> starting ──VM runs──> running ──VM stops──> idle
//                      │                     │stop
//                      └──fails──> failed    └──> stopping ──VM stops──> idle
//
// start() answers at once with what stops it (not allowed, busy, preflight
// failed); binding and starting the VM take seconds and run on a worker,
// each change of state reported to the state listener. The devices are
// given back whenever the VM stops, however it stops.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "aula/agent/hypervisor.hpp"
#include "aula/agent/passthrough.hpp"
#include "aula/agent/passthrough_binding.hpp"
#include "aula/agent/workstation_xml.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

// What the broker answers when a user may use this workstation now: the
// devices the admin chose for it (with the IDs they had then) and the VM.
struct WorkstationGrant {
  std::string user;
  std::vector<ChosenDevice> devices;
  // The VM: name, disk and everything else; its devices are set from
  // `devices` by the service.
  WorkstationSpec spec;
};

// Asks the broker whether `user`, logged in there with the opaque session
// token `session`, may use this workstation now. Errors: kPermissionDenied
// or kUnauthenticated with one sentence the greeter shows as it is;
// kUnavailable when the broker cannot be asked.
class WorkstationGrants {
 public:
  virtual ~WorkstationGrants() = default;
  virtual Result<WorkstationGrant> claim(std::string_view user, std::string_view session) = 0;
  // The user's VM has stopped (or never started after a claim): the broker
  // may show the workstation free. Best effort; a failure is logged.
  virtual Status release(std::string_view user) = 0;
};

enum class WorkstationState { kIdle, kStarting, kRunning, kStopping, kFailed };
// "idle", "starting", "running", "stopping", "failed".
std::string_view stateName(WorkstationState state);

struct WorkstationStatus {
  WorkstationState state = WorkstationState::kIdle;
  std::string user;     // who has it; empty when idle
  std::string message;  // one sentence for the screen
};

// Beside the journal while the workstation's VM may run: its domain name,
// then the user it runs for.
// An agent that restarts while that VM runs leaves its devices with it
// instead of replaying the journal.
inline constexpr const char* kWorkstationMarker = "workstation.domain";

using HostFactsReader = std::function<Result<HostFacts>()>;
using StateListener = std::function<void(const WorkstationStatus&)>;

class WorkstationService {
 public:
  WorkstationService(Hypervisor& hypervisor, SysfsPort& sysfs, const std::filesystem::path& journal,
                     HostFactsReader readFacts, WorkstationGrants& grants);
  ~WorkstationService();  // waits for a start under way; the VM keeps running
  WorkstationService(const WorkstationService&) = delete;
  WorkstationService& operator=(const WorkstationService&) = delete;

  // Called on every change of state (on the caller's or the worker's
  // thread); set before the first start.
  void setListener(StateListener listener);

  Result<HostFacts> devices() const { return readFacts_(); }
  // Preflight for `chosen`; none: the host's own checks only.
  Result<std::vector<Finding>> preflight(const std::vector<ChosenDevice>& chosen) const;

  // Errors: kConflict while it is not idle or failed; the grant's errors;
  // kConfig with preflight's failures, each with its fix, when passthrough
  // cannot work on this host as it is set up now.
  Status start(std::string_view user, std::string_view session);
  // Asks the guest to power off; `force` pulls the plug. The devices come
  // back when the VM has stopped. Errors: kConflict when nothing runs.
  Status stop(bool force);
  WorkstationStatus status() const;

  // From the hypervisor's event watch: the workstation's VM stopping, by
  // itself or otherwise, gives the devices back.
  void onDomainEvent(const DomainEvent& event);

  // At the agent's start, after its event watch is on: a VM this service
  // started before the agent restarted (the marker beside the journal)
  // that still runs is running again, for the user it was started for; one
  // that stopped meanwhile gets its devices given back.
  void adoptRunning();

  // Waits until the worker is done (tests, shutdown).
  void waitIdleWorker();

 private:
  void setState(WorkstationState state, std::string user, std::string message);
  void bringUp(WorkstationGrant grant, const HostFacts& facts);
  void giveBackDevices(const std::string& why);
  void releaseClaim(const std::string& user);

  Hypervisor& hypervisor_;
  PassthroughBinder binder_;
  HostFactsReader readFacts_;
  WorkstationGrants& grants_;
  StateListener listener_;

  mutable std::mutex mutex_;
  WorkstationStatus status_;
  void forgetDomain();

  std::filesystem::path marker_;
  std::string domain_;     // the VM's name while it is starting or running
  std::mutex startMutex_;  // one start at a time, the grant included
  std::thread worker_;
};

}  // namespace aula::agent
