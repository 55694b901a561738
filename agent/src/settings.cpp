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
      .stringMap("storage.paths", "storage name = folder")
      .integer("limits.cpu_shares", 0, 0, 262144,
               "each desktop's CPU weight (1024 = normal); 0: the host's default")
      .integer("limits.cpu_percent_per_vcpu", 0, 0, 100,
               "cap per vCPU in percent of one host CPU; 0: no cap")
      .integer("limits.disk_mb_per_sec", 0, 0, 1 << 20,
               "each desktop disk's read+write MiB/s; 0: no cap")
      .integer("limits.disk_iops", 0, 0, 1 << 24, "each desktop disk's operations/s; 0: no cap")
      .boolean("workstation.enabled", false,
               "run this host's passthrough VM for the greeter (org.aula.Agent1 on D-Bus)")
      .string("workstation.greeter_user", "aula",
              "the local user the greeter runs as, allowed on org.aula.Agent1 besides root")
      .string("workstation.bus_address", "", "the D-Bus to serve on; empty: the system bus")
      .stringList("workstation.evdev", {},
                  "the host's keyboard and mouse (/dev/input/by-id/...-event-kbd first) for a VM "
                  "without a passed USB controller");
  return s;
}

Result<DomainLimits> limitsFrom(std::int64_t cpuShares, std::int64_t cpuPercentPerVcpu,
                                std::int64_t diskMbPerSec, std::int64_t diskIops) {
  if (cpuShares != 0 && (cpuShares < 2 || cpuShares > 262144)) {
    return makeError(Errc::kInvalidArgument,
                     "cpu_shares is {}; use 0 (the host's default) or 2 to 262144 (1024 is a "
                     "normal share).",
                     cpuShares);
  }
  if (cpuPercentPerVcpu < 0 || cpuPercentPerVcpu > 100) {
    return makeError(Errc::kInvalidArgument,
                     "cpu_percent_per_vcpu is {}; use 0 (no cap) or 1 to 100.", cpuPercentPerVcpu);
  }
  if (diskMbPerSec < 0 || diskIops < 0) {
    return makeError(Errc::kInvalidArgument,
                     "disk_mb_per_sec and disk_iops must be 0 (no cap) or more.");
  }
  DomainLimits l;
  l.cpuShares = static_cast<std::uint64_t>(cpuShares);
  if (cpuPercentPerVcpu > 0) {
    l.cpuPeriodUs = 100000;
    l.cpuQuotaUs = cpuPercentPerVcpu * 1000;
  }
  l.diskBytesPerSec = static_cast<std::uint64_t>(diskMbPerSec) * 1024 * 1024;
  l.diskIopsPerSec = static_cast<std::uint64_t>(diskIops);
  return l;
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
  auto limits = limitsFrom(c.getInt("limits.cpu_shares"), c.getInt("limits.cpu_percent_per_vcpu"),
                           c.getInt("limits.disk_mb_per_sec"), c.getInt("limits.disk_iops"));
  if (!limits)
    return makeError(Errc::kConfig, "{}: limits.{}", c.sourceName(), limits.error().message());
  s.limits = *limits;
  s.workstation.enabled = c.getBool("workstation.enabled");
  s.workstation.greeterUser = c.getString("workstation.greeter_user");
  s.workstation.busAddress = c.getString("workstation.bus_address");
  for (const auto& input : c.getStringList("workstation.evdev")) {
    if (input.rfind("/dev/input/", 0) != 0 || input.find("..") != std::string::npos) {
      return makeError(Errc::kConfig,
                       "{}: workstation.evdev lists '{}'; give the input devices under "
                       "/dev/input/by-id/, keyboard first.",
                       c.sourceName(), input);
    }
    s.workstation.evdev.emplace_back(input);
  }
  if (!s.stateDir.is_absolute()) {
    return makeError(Errc::kConfig, "{}: agent.state_dir must be absolute, not '{}'.",
                     c.sourceName(), s.stateDir.string());
  }
  return s;
}

}  // namespace aula::agent
