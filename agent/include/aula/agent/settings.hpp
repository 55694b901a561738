// The agent's configuration: /etc/aula/agent.toml, checked against a schema
// (unknown keys are refused), with AULA_SECTION_KEY environment overrides.
// provisioning/hypervisor-setup.sh writes the file; docs/admin-guide.md
// describes every key.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "aula/agent/domain_xml.hpp"
#include "aula/common/config.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

inline constexpr const char* kDefaultConfigPath = "/etc/aula/agent.toml";

config::Schema agentSchema();

struct AgentSettings {
  std::filesystem::path stateDir;
  std::string listen;      // "ADDR:PORT" of the agent's mutual-TLS endpoint
  std::string brokerUrl;   // empty: the one recorded at enrolment
  std::string libvirtUri;  // "qemu:///system"
  std::string domainType;  // "auto" | "kvm" | "qemu"
  std::chrono::seconds heartbeatInterval{10};
  std::string network;          // the libvirt network desktops join
  std::string spiceListen;      // where QEMU listens for SPICE
  std::string spicePublicHost;  // what viewers connect to; empty: from the enrolment address
  bool spiceTlsPort = true;     // needs spice_tls = 1 in qemu.conf
  bool spicePlainPort = false;  // tests only
  std::map<std::string, std::filesystem::path> storage;  // name -> folder
  // Every desktop's share of the host ([limits]); a start may narrow them.
  DomainLimits limits;
  // [workstation]: this host's passthrough VM, started for the greeter.
  struct Workstation {
    bool enabled = false;
    std::string greeterUser = "aula";  // may call org.aula.Agent1 besides root
    std::string busAddress;            // empty: the system bus
    std::vector<std::filesystem::path> evdev;
  } workstation;
};

// Per-desktop limits in the units admins think in; 0 leaves one unset.
// CPU: a relative weight, and a cap in percent of one host CPU per vCPU;
// disk: the overlay's throughput in MiB/s and operations per second.
// Errors name the field and its range.
Result<DomainLimits> limitsFrom(std::int64_t cpuShares, std::int64_t cpuPercentPerVcpu,
                                std::int64_t diskMbPerSec, std::int64_t diskIops);

// Reads the settings; errors name the key. Storage folders must be absolute.
Result<AgentSettings> settingsFrom(const config::Config& config);

}  // namespace aula::agent
