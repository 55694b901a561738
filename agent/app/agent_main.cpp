// aula-agent: the command line and signals only; the agent is AgentServer
// (agent/server/), its policy aula::agent_lib.
#include <csignal>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <pthread.h>

#include "aula/agent/enrolment.hpp"
#include "aula/agent/settings.hpp"
#include "aula/common/log.hpp"

#include "agent_server.hpp"

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
