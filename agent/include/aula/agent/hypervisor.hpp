// The agent's view of a hypervisor, in Aula's terms: define and start a
// desktop's domain, stop it, change its SPICE ticket, list what runs. The
// real adapter (agent/libvirt/) speaks libvirt; policy code and its tests
// see only this interface and include no libvirt header.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::agent {

struct DomainInfo {
  std::string name;
  // "running", "shut off", "paused", "blocked", "shutting down", "crashed",
  // "suspended" (power management) or "no state", as virsh prints them.
  std::string state;
  // The broker's desktop id from Aula's <metadata>; empty for a domain Aula
  // did not define.
  std::optional<std::int64_t> desktopId;
  int spicePort = -1;     // the plain SPICE port while running; -1 when none
  int spiceTlsPort = -1;  // the TLS SPICE port while running; -1 when none
  std::int64_t vcpus = 0;
  std::int64_t memoryMb = 0;
};

// A change of a domain's life, as libvirt reports it.
struct DomainEvent {
  std::string name;
  // "started"; "shutdown" (the guest powered itself off), "stopped" (pulled
  // off by a destroy or the host), "crashed" (QEMU died or the guest
  // panicked).
  std::string kind;
  std::string detail;  // libvirt's detail, in words: "booted", "destroyed", ...
};
using DomainEventHandler = std::function<void(const DomainEvent&)>;

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  // Defines the domain from its whole XML (checked against the schema) and
  // starts it. A domain that is defined but fails to start stays defined.
  virtual Status defineAndStart(const std::string& xml) = 0;
  // Asks the guest to power off (ACPI); returns before it has.
  virtual Status shutdown(const std::string& name) = 0;
  // Pulls the plug at once.
  virtual Status destroy(const std::string& name) = 0;
  // Removes the definition (and any managed save or snapshot metadata); a
  // running domain becomes transient and disappears when it stops.
  virtual Status undefine(const std::string& name) = 0;
  // Replaces the running domain's <graphics> element (a new ticket);
  // `xml` comes from renderGraphicsUpdateXml().
  virtual Status updateGraphics(const std::string& name, const std::string& xml) = 0;
  // Every domain, running or not.
  virtual Result<std::vector<DomainInfo>> list() = 0;
  // One domain; kNotFound when there is none of that name.
  virtual Result<DomainInfo> info(const std::string& name) = 0;
  // Calls `handler` (on a thread of the hypervisor's) for each lifecycle
  // event from now on. One handler; a second call replaces it.
  virtual Status watch(DomainEventHandler handler) = 0;
};

}  // namespace aula::agent
