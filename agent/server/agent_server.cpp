// The assembled agent (see agent_server.hpp).
#include "agent_server.hpp"

#include <fstream>
#include <mutex>

#include <fmt/format.h>
#include <pwd.h>

#include "aula/agent/broker_grants.hpp"
#include "aula/agent/disks.hpp"
#include "aula/agent/domain_xml.hpp"
#include "aula/agent/passthrough_binding.hpp"
#include "aula/agent/settings.hpp"
#include "aula/agent/workstation.hpp"
#include "aula/common/config.hpp"
#include "aula/common/file.hpp"
#include "aula/common/host_port.hpp"
#include "aula/common/http_server.hpp"
#include "aula/common/log.hpp"

#include "agent_bus.hpp"
#include "libvirt_hypervisor.hpp"
#include "sysfs_host.hpp"
#include "sysfs_port.hpp"

namespace aula::agent {

namespace fs = std::filesystem;

struct AgentServer::Impl {
  AgentSettings settings;
  EnrolmentRecord enrolment;
  std::string domainType;
  process::SystemRunner systemRunner;
  std::unique_ptr<Hypervisor> ownHypervisor;
  std::unique_ptr<Disks> disks;
  std::unique_ptr<AgentService> service;
  std::unique_ptr<http::Server> server;
  std::unique_ptr<BrokerReporter> reporter;
  // Workstation mode ([workstation] enabled): the VM service, its claims
  // at the broker on a channel of their own, and the greeter's front door.
  std::unique_ptr<RealSysfs> ownSysfs;
  std::mutex grantMutex;
  std::unique_ptr<BrokerChannel> grantChannel;
  std::unique_ptr<BrokerGrants> grants;
  std::unique_ptr<WorkstationService> workstation;
  std::unique_ptr<AgentBus> bus;
  bool stopped = false;
};

namespace {

// The host viewers connect to: the setting, else the host of the address
// the agent enrolled with, else the host's name.
std::string publicHostOf(const AgentSettings& settings, const EnrolmentRecord& enrolment) {
  if (!settings.spicePublicHost.empty())
    return settings.spicePublicHost;
  if (!enrolment.address.empty()) {
    if (auto parsed = parseHostPort(enrolment.address, PortRule::kOptional))
      return parsed->host;
  }
  return enrolment.hostName;
}

// A workstation agent that was stopped with devices still on vfio-pci
// (killed, or the host lost power during a bind) gives them back first,
// unless the workstation's VM still runs: then they stay with it, and go
// back when it stops.
void giveBackLeftoverDevices(const fs::path& state, const fs::path& hostRoot,
                             Hypervisor& hypervisor) {
  std::error_code ec;
  const fs::path journal = state / kPassthroughJournal;
  if (!fs::exists(journal, ec))
    return;
  std::string vm;
  std::getline(std::ifstream(state / kWorkstationMarker), vm);
  if (!vm.empty()) {
    if (auto info = hypervisor.info(vm); info && info->state == "running") {
      log::info("The workstation VM {} still runs; its passed devices stay with it.", vm);
      return;
    }
  }
  RealSysfs sysfs(hostRoot);
  PassthroughBinder binder(sysfs, journal);
  if (auto back = binder.giveBack(); back) {
    fs::remove(state / kWorkstationMarker, ec);
    log::info("Gave the devices an earlier run had passed through back to the host.");
  } else {
    log::error("{} The journal {} stays for the next start.", back.error().message(),
               journal.string());
  }
}

// Workstation mode: the VM service over the host's sysfs, its grants from
// the broker, and org.aula.Agent1 for the greeter. Without a bus the agent
// still runs (the broker's commands, heartbeats), and says the greeter
// cannot reach it.
Status startWorkstation(AgentServer::Impl& m, Hypervisor& hypervisor,
                        const AgentServerOptions& options) {
  const auto& ws = m.settings.workstation;
  SysfsPort* sysfs = options.sysfs;
  if (sysfs == nullptr) {
    m.ownSysfs = std::make_unique<RealSysfs>(options.hostRoot);
    sysfs = m.ownSysfs.get();
  }
  m.grantChannel = std::make_unique<BrokerChannel>(m.settings.stateDir, m.settings.brokerUrl);
  HostFactsReader readFacts = [root = options.hostRoot] { return readHostFacts(root); };
  m.grants = std::make_unique<BrokerGrants>(
      [&m](std::string_view path, const json::Json& body) {
        std::lock_guard lock(m.grantMutex);  // the channel is not thread-safe
        return m.grantChannel->post(path, body);
      },
      *m.disks, readFacts,
      BrokerGrantsOptions{.stateDir = m.settings.stateDir,
                          .hostId = m.enrolment.hostId,
                          .evdevInputs = ws.evdev,
                          .network = m.settings.network});
  m.workstation = std::make_unique<WorkstationService>(
      hypervisor, *sysfs, m.settings.stateDir / kPassthroughJournal, readFacts, *m.grants);
  AgentBusOptions busOptions{.address = ws.busAddress};
  if (const passwd* greeter = ::getpwnam(ws.greeterUser.c_str()); greeter != nullptr) {
    busOptions.allowedUids.push_back(greeter->pw_uid);
  } else {
    log::warn(
        "There is no user '{}' (workstation.greeter_user); only root may call "
        "org.aula.Agent1.",
        ws.greeterUser);
  }
  auto bus = AgentBus::start(*m.workstation, busOptions);
  if (!bus) {
    log::error(
        "{} The greeter cannot reach this agent, so nobody can start the workstation "
        "from it.",
        bus.error().message());
    return okStatus();
  }
  m.bus = std::move(*bus);
  log::info("Workstation mode: org.aula.Agent1 serves the greeter ('{}') and root.",
            ws.greeterUser);
  return okStatus();
}

}  // namespace

Result<std::unique_ptr<AgentServer>> AgentServer::start(const AgentServerOptions& options) {
  std::error_code ec;
  if (!fs::exists(options.configPath, ec)) {
    return makeError(Errc::kConfig,
                     "There is no configuration at '{}'. provisioning/hypervisor-setup.sh writes "
                     "one; see docs/admin-guide.md for the keys.",
                     options.configPath.string());
  }
  auto config = AULA_TRY(config::Config::loadFile(options.configPath, agentSchema()));
  if (auto level = log::parseLevel(config.getString("agent.log_level")))
    log::setLevel(*level);

  std::unique_ptr<AgentServer> self(new AgentServer());
  self->impl_ = std::make_unique<Impl>();
  Impl& m = *self->impl_;
  m.settings = AULA_TRY(settingsFrom(config));
  m.enrolment = AULA_TRY(readEnrolment(m.settings.stateDir));
  const fs::path& state = m.settings.stateDir;
  auto ca = AULA_TRY(file::readFile(state / "ca.crt", "broker CA"));
  auto cert = AULA_TRY(file::readFile(state / "spice" / "server-cert.pem", "host certificate"));
  auto key = AULA_TRY(file::readFile(state / "spice" / "server-key.pem", "host key"));

  process::Runner& runner = options.runner != nullptr ? *options.runner : m.systemRunner;
  m.domainType = AULA_TRY(resolveDomainType(m.settings.domainType, options.devKvm, runner));
  Hypervisor* hypervisor = options.hypervisor;
  if (hypervisor == nullptr) {
    auto opened = LibvirtHypervisor::open(m.settings.libvirtUri);
    if (!opened)
      return opened.error().context("Cannot connect to libvirt; is libvirtd running?");
    m.ownHypervisor = std::move(*opened);
    hypervisor = m.ownHypervisor.get();
  }
  m.disks = std::make_unique<Disks>(m.settings.storage, runner);
  giveBackLeftoverDevices(state, options.hostRoot, *hypervisor);

  ServiceOptions serviceOptions;
  serviceOptions.settings = m.settings;
  serviceOptions.domainType = m.domainType;
  serviceOptions.publicHost = publicHostOf(m.settings, m.enrolment);
  serviceOptions.hostRoot = options.hostRoot;
  serviceOptions.devices = [root = options.hostRoot]() -> Result<json::Json> {
    return inventoryJson(AULA_TRY(readHostFacts(root)));
  };
  m.service = std::make_unique<AgentService>(serviceOptions, *hypervisor, *m.disks);
  AgentService* service = m.service.get();
  if (m.settings.workstation.enabled)
    AULA_TRY_STATUS(startWorkstation(m, *hypervisor, options));
  WorkstationService* workstation = m.workstation.get();
  if (auto watching = hypervisor->watch([service, workstation](const DomainEvent& e) {
        service->recordEvent(e);
        if (workstation != nullptr)
          workstation->onDomainEvent(e);
      });
      !watching) {
    log::warn("{} The broker learns of changes from heartbeats only.", watching.error().message());
  }
  if (workstation != nullptr)
    workstation->adoptRunning();

  // Guests that run already are adopted as they are: the agent never stops
  // a guest because it (re)started.
  auto running = AULA_TRY(m.service->domains());
  int live = 0;
  for (const auto& d : running)
    live += d["running"].get<bool>() ? 1 : 0;
  log::info("Found {} domain(s), {} running; they are left as they are.", running.size(), live);

  http::ServerOptions serverOptions;
  serverOptions.listen = m.settings.listen;
  serverOptions.tls = http::ServerTls{
      .certChainPem = cert + ca, .keyPem = key, .clientCaPem = ca, .requireClientCert = true};
  // A start may wait for libvirt for a while; the broker waits as long.
  serverOptions.requestTimeout = std::chrono::seconds(30);
  m.server = AULA_TRY(http::Server::start(
      serverOptions, [service](http::ServerRequest& r) { return service->handle(r); }));
  m.reporter = std::make_unique<BrokerReporter>(*m.service, state, m.settings.brokerUrl,
                                                m.settings.heartbeatInterval);
  log::info("Host '{}' (id {}): listening on https://{}, domain type {}, SPICE for viewers at {}.",
            m.enrolment.hostName, m.enrolment.hostId, m.server->address(), m.domainType,
            serviceOptions.publicHost);
  return self;
}

AgentServer::~AgentServer() {
  stop();
}

void AgentServer::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  impl_->bus.reset();  // no new start from the greeter
  impl_->reporter.reset();
  if (impl_->server)
    impl_->server->stop();
}

std::string AgentServer::address() const {
  return impl_->server->address();
}

const EnrolmentRecord& AgentServer::enrolment() const {
  return impl_->enrolment;
}

const std::string& AgentServer::domainType() const {
  return impl_->domainType;
}

AgentService& AgentServer::service() {
  return *impl_->service;
}

WorkstationService* AgentServer::workstation() {
  return impl_->workstation.get();
}

}  // namespace aula::agent
