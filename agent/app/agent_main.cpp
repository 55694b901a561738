// aula-agent: start-up and the command line; the work is in aula::agent_lib.
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <pthread.h>

#include "aula/agent/disks.hpp"
#include "aula/agent/domain_xml.hpp"
#include "aula/agent/enrolment.hpp"
#include "aula/agent/service.hpp"
#include "aula/agent/settings.hpp"
#include "aula/common/config.hpp"
#include "aula/common/http_server.hpp"
#include "aula/common/log.hpp"
#include "aula/common/process.hpp"

#include "libvirt_hypervisor.hpp"

namespace {

namespace fs = std::filesystem;
using namespace aula;

Result<std::string> readFile(const fs::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return makeError(Errc::kIo, "Cannot read the {} '{}'; is this host enrolled?", what,
                     path.string());
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The host part of "HOST:PORT" or "[V6]:PORT".
std::string hostOf(const std::string& address) {
  if (address.starts_with('[')) {
    auto end = address.find(']');
    return end == std::string::npos ? address : address.substr(1, end - 1);
  }
  auto colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

int serve(const fs::path& configPath) {
  std::error_code ec;
  if (!fs::exists(configPath, ec)) {
    log::error(
        "There is no configuration at '{}'. provisioning/hypervisor-setup.sh writes one; see "
        "docs/admin-guide.md for the keys.",
        configPath.string());
    return 1;
  }
  auto config = config::Config::loadFile(configPath, agent::agentSchema());
  if (!config) {
    log::error("{}", config.error().message());
    return 1;
  }
  if (auto level = log::parseLevel(config->getString("agent.log_level")))
    log::setLevel(*level);
  auto settings = agent::settingsFrom(*config);
  if (!settings) {
    log::error("{}", settings.error().message());
    return 1;
  }
  auto enrolment = agent::readEnrolment(settings->stateDir);
  if (!enrolment) {
    log::error("{}", enrolment.error().message());
    return 1;
  }
  const fs::path& state = settings->stateDir;
  auto ca = readFile(state / "ca.crt", "broker CA");
  auto cert = readFile(state / "spice" / "server-cert.pem", "host certificate");
  auto key = readFile(state / "spice" / "server-key.pem", "host key");
  for (const auto* r : {&ca, &cert, &key}) {
    if (!*r) {
      log::error("{}", r->error().message());
      return 1;
    }
  }

  process::SystemRunner runner;
  auto domainType = agent::resolveDomainType(settings->domainType, "/dev/kvm", runner);
  if (!domainType) {
    log::error("{}", domainType.error().message());
    return 1;
  }
  auto hypervisor = agent::LibvirtHypervisor::open(settings->libvirtUri);
  if (!hypervisor) {
    log::error("{} Is libvirtd running?", hypervisor.error().message());
    return 1;
  }
  agent::Disks disks(settings->storage, runner);

  agent::ServiceOptions options;
  options.settings = *settings;
  options.domainType = *domainType;
  options.publicHost = !settings->spicePublicHost.empty() ? settings->spicePublicHost
                       : !enrolment->address.empty()      ? hostOf(enrolment->address)
                                                          : enrolment->hostName;
  agent::AgentService service(options, **hypervisor, disks);
  if (auto watching =
          (*hypervisor)->watch([&service](const agent::DomainEvent& e) { service.recordEvent(e); });
      !watching) {
    log::warn("{} The broker learns of changes from heartbeats only.", watching.error().message());
  }

  // Guests that run already are adopted as they are: the agent never stops
  // a guest because it (re)started.
  if (auto running = service.domains(); running) {
    int live = 0;
    for (const auto& d : *running)
      live += d["running"].get<bool>() ? 1 : 0;
    log::info("Found {} domain(s), {} running; they are left as they are.", running->size(), live);
  } else {
    log::error("{}", running.error().message());
    return 1;
  }

  // SIGTERM and SIGINT end the service; every thread blocks them so that
  // sigwait below gets them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  http::ServerOptions serverOptions;
  serverOptions.listen = settings->listen;
  serverOptions.tls = http::ServerTls{
      .certChainPem = *cert + *ca, .keyPem = *key, .clientCaPem = *ca, .requireClientCert = true};
  // A start may wait for libvirt for a while; the broker waits as long.
  serverOptions.requestTimeout = std::chrono::seconds(30);
  auto server = http::Server::start(
      serverOptions, [&service](http::ServerRequest& r) { return service.handle(r); });
  if (!server) {
    log::error("{}", server.error().message());
    return 1;
  }
  agent::BrokerReporter reporter(service, state, settings->brokerUrl, settings->heartbeatInterval);
  log::info("Host '{}' (id {}): listening on https://{}, domain type {}, SPICE for viewers at {}.",
            enrolment->hostName, enrolment->hostId, (*server)->address(), *domainType,
            options.publicHost);
  std::cout << "listening on " << (*server)->address() << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  log::info("Stopping on signal {}; the guests keep running.", received);
  reporter.stop();
  (*server)->stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  aula::log::setComponent("agent");
  CLI::App app{
      "Aula agent: runs desktops on a hypervisor or workstation for the Aula broker.\n"
      "Subcommands: enroll (join a broker with a one-time token), serve (take the broker's "
      "commands and report to it)."};
  app.require_subcommand(1);

  auto* enroll = app.add_subcommand(
      "enroll", "join the broker with a one-time join token and store this host's certificates");
  aula::agent::EnrolOptions options;
  std::string stateDir = aula::agent::kDefaultStateDir;
  enroll->add_option("--broker", options.brokerUrl, "the broker's URL, https://HOST:PORT")
      ->required();
  enroll
      ->add_option("--token", options.token,
                   "the join token from 'aulactl enrolment-tokens create' (or $AULA_JOIN_TOKEN)")
      ->envname("AULA_JOIN_TOKEN")
      ->required();
  enroll
      ->add_option("--ca-fingerprint", options.caFingerprint,
                   "SHA-256 fingerprint of the broker's CA, as 'aula-broker init' printed it")
      ->required();
  enroll->add_option("--state-dir", stateDir, "where the agent keeps its certificates")
      ->capture_default_str();
  enroll->add_option("--address", options.agentAddress,
                     "HOST:PORT the broker reaches this agent at; the host also goes into the "
                     "SPICE certificate (default: none, the host is known by name only)");
  enroll->add_flag("--force", options.force, "enrol again, replacing an earlier enrolment's files");

  auto* serveCmd = app.add_subcommand(
      "serve",
      "run the agent: take the broker's commands over mutual TLS, send heartbeats "
      "and lifecycle events");
  std::string configPath = aula::agent::kDefaultConfigPath;
  serveCmd->add_option("--config", configPath, "the agent's configuration file")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serveCmd)
    return serve(configPath);
  if (*enroll) {
    options.stateDir = stateDir;
    auto enrolled = aula::agent::enroll(options);
    if (!enrolled) {
      aula::log::error("{}", enrolled.error().message());
      return 1;
    }
    std::cout << "Enrolled as host '" << enrolled->hostName << "' (id " << enrolled->hostId
              << ").\n"
              << "  client certificate:  " << enrolled->clientCertFingerprint << "\n"
              << "  SPICE subject:       " << enrolled->spiceSubject << "\n"
              << "Stored:\n";
    for (const auto& file : enrolled->files)
      std::cout << "  " << file.string() << "\n";
    return 0;
  }
  return 2;
}
