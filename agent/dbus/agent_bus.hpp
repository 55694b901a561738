// The agent's front door on a workstation: org.aula.Agent1 on the system
// bus through sd-bus, for the greeter (its own user) and root only. The
// bus policy (agent/dbus/org.aula.Agent1.conf, installed in
// /usr/share/dbus-1/system.d) keeps everyone else from calling; the agent
// checks the caller's uid again on every call.
//
// Object /org/aula/Agent1, interface org.aula.Agent1:
//   Devices() -> s inventory                  the host's PCI devices, as JSON
//   Preflight(as chosen) -> b passed, a(sss)  verdict, text, fix per check
//   Start(s user, s session)                  the broker's session token
//   Stop(b force)
//   Status() -> s state, s user, s message
//   signal StateChanged(s state, s user, s message)
// Errors: org.aula.Agent1.Error.{NotAllowed, Busy, PreflightFailed,
// BrokerUnavailable, Failed} and org.freedesktop.DBus.Error.InvalidArgs,
// each with one sentence the greeter can show.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

#include "aula/agent/workstation.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

inline constexpr const char* kAgentBusName = "org.aula.Agent1";
inline constexpr const char* kAgentObjectPath = "/org/aula/Agent1";

struct AgentBusOptions {
  // "unix:path=/run/...": a bus of the tests' own; empty: the system bus.
  std::string address;
  // Who may call besides root: the greeter's user.
  std::vector<uid_t> allowedUids;
};

class AgentBus {
 public:
  // Connects, takes the name and serves on a thread of its own. Errors:
  // kUnavailable when there is no bus, kPermissionDenied when the bus
  // policy does not let this process own the name.
  static Result<std::unique_ptr<AgentBus>> start(WorkstationService& service,
                                                 const AgentBusOptions& options);
  ~AgentBus();  // releases the name and stops the thread
  AgentBus(const AgentBus&) = delete;
  AgentBus& operator=(const AgentBus&) = delete;

  struct Impl;

 private:
  explicit AgentBus(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::agent
