// The Hypervisor over libvirt: one connection (qemu:///system on a host,
// test:///default for lifecycle logic), RAII handles, and libvirt's own
// error read into each Error where the call failed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aula/agent/hypervisor.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

class LibvirtHypervisor final : public Hypervisor {
 public:
  // Opens a read-write connection to `uri`. Errors: kUnavailable with
  // libvirt's reason (no daemon, no permission).
  static Result<std::unique_ptr<LibvirtHypervisor>> open(const std::string& uri);
  ~LibvirtHypervisor() override;
  LibvirtHypervisor(const LibvirtHypervisor&) = delete;
  LibvirtHypervisor& operator=(const LibvirtHypervisor&) = delete;

  Status defineAndStart(const std::string& xml) override;
  Status shutdown(const std::string& name) override;
  Status destroy(const std::string& name) override;
  Status undefine(const std::string& name) override;
  Status updateGraphics(const std::string& name, const std::string& xml) override;
  Result<std::vector<DomainInfo>> list() override;
  Result<DomainInfo> info(const std::string& name) override;
  Status watch(DomainEventHandler handler) override;

 private:
  struct Impl;
  explicit LibvirtHypervisor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The SPICE ports of a live domain XML's <graphics type='spice'> start tag
// (-1 where absent), and the desktop id of Aula's metadata element. Exposed
// for tests; both read libvirt's own output only.
struct SpicePorts {
  int port = -1;
  int tlsPort = -1;
};
SpicePorts parseSpicePorts(const std::string& domainXml);
std::optional<std::int64_t> parseDesktopId(const std::string& metadataXml);

}  // namespace aula::agent
