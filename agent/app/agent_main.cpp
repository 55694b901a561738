// aula-agent: the command line and signals only; the agent is AgentServer
// (agent/server/), its policy aula::agent_lib.
#include <csignal>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <pthread.h>

#include "aula/agent/enrolment.hpp"
#include "aula/agent/passthrough.hpp"
#include "aula/agent/settings.hpp"
#include "aula/common/log.hpp"

#include "agent_server.hpp"
#include "sysfs_host.hpp"

namespace {

// Runs the agent until SIGTERM or SIGINT.
int serve(const std::filesystem::path& configPath) {
  // Every thread blocks the signals, so that sigwait below gets them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = aula::agent::AgentServer::start({.configPath = configPath});
  if (!server) {
    aula::log::error("{}", server.error().message());
    return 1;
  }
  std::cout << "listening on " << (*server)->address() << std::endl;
  int received = 0;
  sigwait(&signals, &received);
  aula::log::info("Stopping on signal {}; the guests keep running.", received);
  (*server)->stop();
  return 0;
}

int run(int argc, char** argv) {
  aula::log::setComponent("agent");
  CLI::App app{
      "Aula agent: runs desktops on a hypervisor or workstation for the Aula broker.\n"
      "Subcommands: enroll (join a broker with a one-time token), serve (take the broker's "
      "commands and report to it), devices (this host's PCI devices for passthrough), "
      "preflight (whether passthrough of chosen devices can work here)."};
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

  auto* devicesCmd = app.add_subcommand(
      "devices", "list this host's PCI devices with their IOMMU groups, drivers and resets");
  std::string sysRoot = "/";
  bool asJson = false;
  devicesCmd->add_option("--root", sysRoot, "the root sysfs and /proc are under (tests)")
      ->capture_default_str();
  devicesCmd->add_flag("--json", asJson, "print JSON, as the broker gets it");
  auto* preflightCmd = app.add_subcommand(
      "preflight",
      "check whether VFIO passthrough of the chosen devices can work on this host; exits 1 "
      "when a check fails");
  std::vector<std::string> chosenText;
  preflightCmd
      ->add_option("--device", chosenText,
                   "a device to pass, 0000:01:00.0, optionally with the IDs it must have "
                   "(0000:01:00.0=10de:2484); repeat for each")
      ->required();
  preflightCmd->add_option("--root", sysRoot, "the root sysfs and /proc are under (tests)")
      ->capture_default_str();
  std::string resetFailedDir =
      (std::filesystem::path(aula::agent::kDefaultStateDir) / "reset-failed").string();
  preflightCmd
      ->add_option("--reset-failed-dir", resetFailedDir,
                   "where the agent records devices whose reset failed")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serveCmd)
    return serve(configPath);
  if (*devicesCmd || *preflightCmd) {
    auto host = aula::agent::readHostFacts(sysRoot, *preflightCmd ? resetFailedDir : "");
    if (!host) {
      aula::log::error("{}", host.error().message());
      return 1;
    }
    if (*devicesCmd) {
      std::cout << (asJson ? aula::agent::inventoryJson(*host).dump(2) + "\n"
                           : aula::agent::formatInventory(*host));
      return 0;
    }
    std::vector<aula::agent::ChosenDevice> chosen;
    for (const auto& text : chosenText) {
      auto parsed = aula::agent::parseChosenDevice(text);
      if (!parsed) {
        std::cerr << "aula-agent: " << parsed.error().message() << "\n";
        return 2;
      }
      chosen.push_back(*parsed);
    }
    const auto findings = aula::agent::preflight(*host, chosen);
    std::cout << aula::agent::formatFindings(findings);
    return aula::agent::anyFailed(findings) ? 1 : 0;
  }
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

}  // namespace

int main(int argc, char** argv) {
  // Errors are values below; what still throws (out of memory, a bug) ends
  // the program with a message instead of std::terminate.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    aula::log::error("The agent stopped on an unexpected error: {}", e.what());
  } catch (...) {
    aula::log::error("The agent stopped on an unexpected error.");
  }
  return 70;
}
