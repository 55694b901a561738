// aula-agent: start-up and the command line; the work is in aula::agent_lib.
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "aula/agent/enrolment.hpp"
#include "aula/common/log.hpp"

int main(int argc, char** argv) {
  aula::log::setComponent("agent");
  CLI::App app{
      "Aula agent: runs desktops on a hypervisor or workstation for the Aula broker.\n"
      "Subcommands: enroll (join a broker with a one-time token). serve: not yet (the service "
      "mode that takes the broker's commands is still to be built)."};
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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
