// aula-broker: start-up only. `init` makes a data dir; without a subcommand
// it serves the API until SIGTERM or SIGINT.
#include <iostream>

#include <CLI/CLI.hpp>
#include <signal.h>

#include "aula/broker/server.hpp"
#include "aula/common/file.hpp"
#include "aula/common/log.hpp"

namespace {

int serve(const std::string& configPath, const std::string& listen, const std::string& portFile) {
  using namespace aula;
  // Block the stop signals before any thread starts, so sigwait gets them.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGTERM);
  sigaddset(&stopSignals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);
  (void)signal(SIGPIPE, SIG_IGN);

  auto config = config::Config::loadFile(configPath, broker::brokerSchema());
  if (!config) {
    log::error("{}", config.error().message());
    return 2;
  }
  broker::StartOptions options;
  if (!listen.empty())
    options.listen = listen;
  auto server = broker::BrokerServer::start(*config, options);
  if (!server) {
    log::error("The broker cannot start. {}", server.error().message());
    return 1;
  }
  if (!portFile.empty()) {
    auto written = file::writeFileAtomic(portFile, (*server)->address() + "\n", {.mode = 0644});
    if (!written) {
      log::error("The broker cannot write its port file. {}", written.error().message());
      (*server)->stop();
      return 1;
    }
  }
  int signal = 0;
  sigwait(&stopSignals, &signal);
  log::info("Stopping on signal {}.", signal);
  (*server)->stop();
  log::info("Stopped.");
  return 0;
}

int run(int argc, char** argv) {
  aula::log::setComponent("broker");
  CLI::App app{"Aula broker: users, templates, desktops and hosts, over an HTTPS API."};
  std::string configPath = "/etc/aula/broker.toml";
  std::string listen;
  std::string portFile;
  app.add_option("--config", configPath, "configuration file")->capture_default_str();
  app.add_option("--listen", listen, "ADDR:PORT to serve on (port 0 picks a free port)");
  app.add_option("--port-file", portFile, "write the address actually bound to this file");

  auto* init = app.add_subcommand(
      "init", "create a data dir: configuration, CA, TLS certificate, database, first admin");
  aula::broker::InitOptions initOptions;
  std::string dataDir;
  std::string passwordFile;
  init->add_option("--data-dir", dataDir, "folder to create the broker's state in")->required();
  init->add_option("--admin", initOptions.adminName, "name of the first admin")
      ->capture_default_str();
  init->add_option("--admin-password-file", passwordFile,
                   "file holding the first admin's password (else one is generated)");
  init->add_option("--listen", initOptions.listen, "ADDR:PORT the broker will serve on")
      ->capture_default_str();
  init->add_option("--name", initOptions.serverNames,
                   "DNS name or IP of the broker, for its certificate (repeatable)");
  init->add_option("--database", initOptions.databaseBackend, "sqlite or postgresql")
      ->check(CLI::IsMember({"sqlite", "postgresql"}))
      ->capture_default_str();
  init->add_option("--postgres", initOptions.postgresConninfo,
                   "libpq connection string for --database postgresql");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*init) {
    initOptions.dataDir = dataDir;
    if (!passwordFile.empty()) {
      auto pw = aula::file::readFile(passwordFile, "password file");
      if (!pw) {
        aula::log::error("{}", pw.error().message());
        return 2;
      }
      initOptions.adminPassword = pw->substr(0, pw->find('\n'));
    }
    auto result = aula::broker::initDataDir(initOptions);
    if (!result) {
      aula::log::error("{}", result.error().message());
      return 1;
    }
    std::cout << "Created the broker in " << dataDir << ".\n"
              << "  configuration:   " << result->configPath.string() << "\n"
              << "  CA fingerprint:  " << result->caFingerprint << "\n"
              << "  first admin:     " << initOptions.adminName << "\n";
    if (result->passwordGenerated) {
      std::cout << "  admin password:  " << result->adminPassword
                << "   (shown once; change it after logging in)\n";
    }
    std::cout << "Start it with: aula-broker --config " << result->configPath.string() << "\n";
    return 0;
  }
  return serve(configPath, listen, portFile);
}

}  // namespace

int main(int argc, char** argv) {
  // Errors are values below; what still throws (out of memory, a bug) ends
  // the program with a message instead of std::terminate.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    aula::log::error("The broker stopped on an unexpected error: {}", e.what());
  } catch (...) {
    aula::log::error("The broker stopped on an unexpected error.");
  }
  return 70;
}
