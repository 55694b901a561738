// The assembled agent: its configuration, the enrolment it stored, the
// hypervisor (libvirt, or one a test passes in), the disks, the mutual-TLS
// endpoint the broker commands, and the reporter that sends heartbeats and
// events. aula-agent's `serve` is this plus signal handling; tests start the
// same thing in-process over a fake hypervisor.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "aula/agent/enrolment.hpp"
#include "aula/agent/hypervisor.hpp"
#include "aula/agent/service.hpp"
#include "aula/agent/workstation.hpp"
#include "aula/common/process.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

struct AgentServerOptions {
  std::filesystem::path configPath = "/etc/aula/agent.toml";
  // Tests: a hypervisor of their own instead of libvirt's (not owned).
  Hypervisor* hypervisor = nullptr;
  // Runs qemu-img and the KVM probe; none: the system's (not owned).
  process::Runner* runner = nullptr;
  std::filesystem::path devKvm = "/dev/kvm";
  std::filesystem::path hostRoot = "/";  // where /proc is read
  // Tests: the kernel's sysfs as a fixture acting like it (not owned);
  // none: the real one under hostRoot.
  SysfsPort* sysfs = nullptr;
};

class AgentServer {
 public:
  // Reads the configuration and the enrolment, resolves the domain type,
  // opens the hypervisor, adopts what runs, and starts the endpoint and the
  // reporter. Every failure is one sentence saying what to fix.
  static Result<std::unique_ptr<AgentServer>> start(const AgentServerOptions& options);
  ~AgentServer();  // stops; the guests keep running
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  std::string address() const;  // where the endpoint listens: "127.0.0.1:9443"
  const EnrolmentRecord& enrolment() const;
  const std::string& domainType() const;
  AgentService& service();
  // The workstation's VM service; null unless [workstation] enabled.
  WorkstationService* workstation();
  void stop();

  struct Impl;  // opaque; public so that start()'s helpers may take it

 private:
  AgentServer() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::agent
