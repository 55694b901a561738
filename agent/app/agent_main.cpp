// aula-agent: the command line and signals only; the agent is AgentServer
// (agent/server/), its policy aula::agent_lib.
#include <csignal>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <pthread.h>

#include "aula/agent/enrolment.hpp"
#include "aula/agent/passthrough.hpp"
#include "aula/agent/passthrough_binding.hpp"
#include "aula/agent/settings.hpp"
#include "aula/common/log.hpp"

#include "agent_server.hpp"
#include "sysfs_host.hpp"
#include "sysfs_port.hpp"

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

// The --device values; none, after saying which is wrong.
std::optional<std::vector<aula::agent::ChosenDevice>> chosenDevices(
    const std::vector<std::string>& texts) {
  std::vector<aula::agent::ChosenDevice> chosen;
  for (const auto& text : texts) {
    auto parsed = aula::agent::parseChosenDevice(text);
    if (!parsed) {
      std::cerr << "aula-agent: " << parsed.error().message() << "\n";
      return std::nullopt;
    }
    chosen.push_back(*parsed);
  }
  return chosen;
}

// aula-agent passthrough bind|give-back|pending.
int passthrough(const std::string& what, const std::filesystem::path& root,
                const std::filesystem::path& stateDir, const std::vector<std::string>& chosenText) {
  aula::agent::RealSysfs sysfs(root);
  aula::agent::PassthroughBinder binder(sysfs, stateDir / aula::agent::kPassthroughJournal);
  if (what == "pending") {
    auto steps = binder.pending();
    if (!steps) {
      aula::log::error("{}", steps.error().message());
      return 1;
    }
    if (steps->empty())
      std::cout << "The journal is empty: every device is with the host.\n";
    for (const auto& step : *steps) {
      std::cout << step.kind << "  " << step.address << "  was "
                << (step.originalDriver.empty() ? "-" : step.originalDriver) << "\n";
    }
    return 0;
  }
  if (what == "give-back") {
    if (auto back = binder.giveBack(); !back) {
      aula::log::error("{}", back.error().message());
      return 1;
    }
    std::cout << "Every device in the journal is back with the host.\n";
    return 0;
  }
  auto parsedDevices = chosenDevices(chosenText);
  if (!parsedDevices)
    return 2;
  const auto& chosen = *parsedDevices;
  std::vector<std::string> addresses;
  addresses.reserve(chosen.size());
  for (const auto& device : chosen)
    addresses.push_back(device.address);
  auto host = aula::agent::readHostFacts(root, stateDir / "reset-failed");
  if (!host) {
    aula::log::error("{}", host.error().message());
    return 1;
  }
  const auto findings = aula::agent::preflight(*host, chosen);
  if (aula::agent::anyFailed(findings)) {
    std::cout << aula::agent::formatFindings(findings)
              << "Nothing was changed: preflight failed.\n";
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(stateDir, ec);
  if (auto bound = binder.bind(addresses); !bound) {
    aula::log::error("{}", bound.error().message());
    return 1;
  }
  std::cout << "Bound to vfio-pci:";
  for (const auto& address : addresses)
    std::cout << " " << address;
  std::cout << ". 'aula-agent passthrough give-back' gives them back.\n";
  return 0;
}

int run(int argc, char** argv) {
  aula::log::setComponent("agent");
  CLI::App app{
      "Aula agent: runs desktops on a hypervisor or workstation for the Aula broker.\n"
      "Subcommands: enroll (join a broker with a one-time token), serve (take the broker's "
      "commands and report to it), devices (this host's PCI devices for passthrough), "
      "preflight (whether passthrough of chosen devices can work here), passthrough (bind and "
      "give back by hand)."};
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

  auto* passCmd = app.add_subcommand(
      "passthrough",
      "move devices to vfio-pci and back by hand, with the agent's journal (to try a machine "
      "before its users do)");
  passCmd->require_subcommand(1);
  auto* bindCmd = passCmd->add_subcommand(
      "bind", "run preflight on the devices and, when nothing fails, bind them to vfio-pci");
  bindCmd
      ->add_option("--device", chosenText,
                   "a device to pass, 0000:01:00.0[=10de:2484]; repeat for each")
      ->required();
  auto* giveBackCmd = passCmd->add_subcommand(
      "give-back", "give every device the journal holds back to its driver, newest first");
  auto* pendingCmd =
      passCmd->add_subcommand("pending", "list what the journal holds (what is not given back)");
  for (auto* cmd : {bindCmd, giveBackCmd, pendingCmd}) {
    cmd->add_option("--root", sysRoot, "the root sysfs and /proc are under (tests)")
        ->capture_default_str();
    cmd->add_option("--state-dir", stateDir, "the agent's state folder, where the journal is")
        ->capture_default_str();
  }

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
    auto chosen = chosenDevices(chosenText);
    if (!chosen)
      return 2;
    const auto findings = aula::agent::preflight(*host, *chosen);
    std::cout << aula::agent::formatFindings(findings);
    return aula::agent::anyFailed(findings) ? 1 : 0;
  }
  if (*passCmd)
    return passthrough(*bindCmd       ? "bind"
                       : *giveBackCmd ? "give-back"
                                      : "pending",
                       sysRoot, stateDir, chosenText);
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
