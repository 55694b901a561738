// Workstations: hosts of kind workstation whose agent runs one local VM
// that owns the machine's GPU, USB controller and sound card. The broker
// keeps, per workstation, the devices an admin chose from what its agent
// reported, the template its disk grows from, the VM's size, and who may
// use it; the workstation's agent claims it for a user logged in at its
// greeter, and releases it when the VM has stopped.
#pragma once

#include <cstdint>
#include <string>

#include "aula/broker/auth_service.hpp"
#include "aula/broker/context.hpp"

namespace aula::broker {

class WorkstationService {
 public:
  WorkstationService(BrokerContext& ctx, AuthService& auth) : ctx_(ctx), auth_(auth) {}

  // Every workstation record, by host name.
  Result<Json> list(const Actor& actor);
  // The record of host `hostId`, each device marked against the host's last
  // report ("present", "missing", "changed"). kNotFound when none is set.
  Result<Json> get(const Actor& actor, std::int64_t hostId);
  // Sets the whole record (PUT): devices, template_id, vcpus, memory_mb,
  // access, huge_pages, hide_kvm, hyperv_vendor_id. Each chosen device must
  // be one the host's agent reported, and its IDs are kept as they are now.
  Result<Json> set(const Actor& actor, std::int64_t hostId, const Json& body);
  // kConflict while a user has it.
  Status remove(const Actor& actor, std::int64_t hostId);

  // The workstation's agent asks, for {user, session} from its greeter,
  // whether that user may use it now. The answer is what the agent needs
  // to start the VM (docs/agent-protocol.md). Errors: kUnauthenticated (the
  // session is not valid), kPermissionDenied (not this user's, or the host
  // is not in service), kNotFound (no record).
  Result<Json> claim(std::int64_t hostId, const Json& body, const std::string& address);
  // The VM stopped: {user}. A release for someone who no longer has it is
  // not an error (a newer claim replaced theirs).
  Status release(std::int64_t hostId, const Json& body);

 private:
  BrokerContext& ctx_;
  AuthService& auth_;
};

}  // namespace aula::broker
