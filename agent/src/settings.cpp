// The agent's configuration (see settings.hpp).
#include "aula/agent/settings.hpp"

#include <fmt/format.h>

namespace aula::agent {

config::Schema agentSchema() {
  config::Schema s;
  s.string("agent.state_dir", "/var/lib/aula-agent", "where enrolment stored the certificates")
      .string("agent.listen", "0.0.0.0:9443", "address:port of the mutual-TLS endpoint")
      .string("agent.broker_url", "", "the broker's URL; empty: the one recorded at enrolment")
      .string("agent.libvirt_uri", "qemu:///system", "libvirt connection")
      .choice("agent.domain_type", "auto", {"auto", "kvm", "qemu"},
              "kvm, qemu (TCG), or auto: probe KVM at start")
      .integer("agent.heartbeat_seconds", 10, 1, 3600, "seconds between heartbeats")
      .choice("agent.log_level", "info", {"debug", "info", "warn", "error"}, "log level")
      .string("agent.network", "default", "the libvirt network desktops join")
      .string("spice.listen", "0.0.0.0", "address QEMU's SPICE server listens on")
      .string("spice.public_host", "",
              "address viewers connect to; empty: the host of the enrolment address")
      .boolean("spice.tls_port", true,
               "offer SPICE over TLS (needs spice_tls = 1 in /etc/libvirt/qemu.conf)")
      .boolean("spice.plain_port", false, "also offer an unencrypted SPICE port (tests only)")
      .stringMap("storage.paths", "storage name = folder");
  return s;
}

Result<AgentSettings> settingsFrom(const config::Config& c) {
  AgentSettings s;
  s.stateDir = c.getString("agent.state_dir");
  s.listen = c.getString("agent.listen");
  s.brokerUrl = c.getString("agent.broker_url");
  s.libvirtUri = c.getString("agent.libvirt_uri");
  s.domainType = c.getString("agent.domain_type");
  s.heartbeatInterval = std::chrono::seconds(c.getInt("agent.heartbeat_seconds"));
  s.network = c.getString("agent.network");
  s.spiceListen = c.getString("spice.listen");
  s.spicePublicHost = c.getString("spice.public_host");
  s.spiceTlsPort = c.getBool("spice.tls_port");
  s.spicePlainPort = c.getBool("spice.plain_port");
  if (!s.spiceTlsPort && !s.spicePlainPort) {
    return makeError(Errc::kConfig,
                     "{}: spice.tls_port and spice.plain_port are both false, so no viewer could "
                     "connect; set spice.tls_port = true.",
                     c.sourceName());
  }
  for (const auto& [name, folder] : c.getStringMap("storage.paths")) {
    std::filesystem::path path(folder);
    if (!path.is_absolute()) {
      return makeError(Errc::kConfig, "{}: storage.paths.{} must be an absolute folder, not '{}'.",
                       c.sourceName(), name, folder);
    }
    s.storage[name] = path;
  }
  for (const char* needed : {"templates", "desktops"}) {
    if (!s.storage.contains(needed)) {
      return makeError(Errc::kConfig,
                       "{}: storage.paths has no '{}' folder; add it, e.g. {} = "
                       "\"/var/lib/aula/{}\".",
                       c.sourceName(), needed, needed, needed);
    }
  }
  if (!s.stateDir.is_absolute()) {
    return makeError(Errc::kConfig, "{}: agent.state_dir must be absolute, not '{}'.",
                     c.sourceName(), s.stateDir.string());
  }
  return s;
}

}  // namespace aula::agent
