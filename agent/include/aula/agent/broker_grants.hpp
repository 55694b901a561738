// WorkstationGrants over the broker: the claim goes to
// POST /api/v1/agent/workstation/claim on the agent's mutual-TLS link, and
// the answer becomes the VM, its disk the user's own overlay on this
// workstation, made here at the first claim.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "aula/agent/disks.hpp"
#include "aula/agent/workstation.hpp"
#include "aula/common/agent_protocol.hpp"

namespace aula::agent {

// POSTs a body to a broker route, as BrokerChannel::post does.
using BrokerPost = std::function<Result<json::Json>(std::string_view path, const json::Json&)>;

struct BrokerGrantsOptions {
  std::filesystem::path stateDir;  // the VM's NVRAM copy goes to <stateDir>/nvram/
  // This host's id at the broker, kept in the VM's <metadata> where a
  // desktop's keeps its desktop id: no desktop is ever placed on a
  // workstation, so the broker's reconciliation never mistakes it for one.
  std::int64_t hostId = 0;
  // The host's keyboard and mouse for the VM when the admin passed no USB
  // controller ([workstation] evdev).
  std::vector<std::filesystem::path> evdevInputs;
  std::string network = "default";  // the libvirt network the VM joins
};

class BrokerGrants final : public WorkstationGrants {
 public:
  BrokerGrants(BrokerPost post, Disks& disks, HostFactsReader readFacts,
               BrokerGrantsOptions options);

  // Errors: the broker's, with its sentence and code (kUnauthenticated,
  // kPermissionDenied, kNotFound); kUnavailable when it cannot be reached;
  // the disk's when the overlay cannot be made.
  Result<WorkstationGrant> claim(std::string_view user, std::string_view session) override;
  Status release(std::string_view user) override;

 private:
  BrokerPost post_;
  Disks& disks_;
  HostFactsReader readFacts_;
  BrokerGrantsOptions options_;
};

// The VM the broker's answer describes, on a host with `facts` (which says
// whether a USB controller is passed, so evdev is needed or not).
Result<WorkstationGrant> grantFromAnswer(const proto::WorkstationGrantAnswer& answer,
                                         const HostFacts& facts, const BrokerGrantsOptions& options,
                                         const std::filesystem::path& diskPath);

}  // namespace aula::agent
