// The broker's side of the link to real agents: HostLink over mutual TLS.
// The broker presents its own client certificate (CN "aula-broker", issued
// by its CA) and trusts an agent whose server certificate its CA issued for
// the agent's address. docs/agent-protocol.md has the routes.
#pragma once

#include <chrono>
#include <string>

#include "aula/broker/host_link.hpp"
#include "aula/common/result.hpp"

namespace aula::broker {

struct AgentLinkOptions {
  std::string caPem;
  std::string clientCertPem;
  std::string clientKeyPem;
  // How long a clean shutdown may take before the agent pulls the plug.
  std::chrono::seconds shutdownGrace{60};
  // How long a start may take on the agent (disk, define, QEMU start).
  std::chrono::seconds startTimeout{180};
  // How long making a template's image may take: a flattened one copies the
  // whole disk (the agent itself allows qemu-img six hours).
  std::chrono::seconds templateTimeout{6 * 3600};
};

class AgentLink final : public HostLink {
 public:
  explicit AgentLink(AgentLinkOptions options) : options_(std::move(options)) {}

  Result<Observed> startDesktop(const HostAddress& host, const DesktopSpec& desktop) override;
  Result<Observed> stopDesktop(const HostAddress& host, const DesktopSpec& desktop,
                               bool force) override;
  Status deleteDesktop(const HostAddress& host, const DesktopSpec& desktop) override;
  Result<ConsoleTicket> setTicket(const HostAddress& host, const DesktopSpec& desktop,
                                  std::chrono::seconds validFor) override;
  Result<TemplateImage> makeTemplate(const HostAddress& host, const DesktopSpec& desktop,
                                     const std::string& templateDisk, TemplateMode mode) override;
  Status deleteBase(const HostAddress& host, const std::string& storage,
                    const std::string& disk) override;

 private:
  AgentLinkOptions options_;
};

}  // namespace aula::broker
