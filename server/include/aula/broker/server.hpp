// The assembled broker: configuration, database, CA and TLS, the API and its
// HTTPS server, the lost-host watchdog. aula-broker's main() is this plus
// signal handling; tests start the same thing in-process.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "aula/broker/broker.hpp"
#include "aula/common/config.hpp"

namespace aula::broker {

// Every configuration key of the broker, with defaults.
config::Schema brokerSchema();

struct InitOptions {
  std::filesystem::path dataDir;
  std::string adminName = "admin";
  std::optional<std::string> adminPassword;  // none: generated and returned
  std::string listen = "0.0.0.0:8443";
  std::vector<std::string> serverNames;  // DNS names and IPs for the TLS certificate
  std::string databaseBackend = "sqlite";
  std::string postgresConninfo;
};

struct InitResult {
  std::filesystem::path configPath;
  std::string adminPassword;  // as given or generated
  bool passwordGenerated = false;
  std::string caFingerprint;
};

// Creates a new data dir: broker.toml, the CA, the broker's TLS certificate,
// the database with its schema, the first admin. Refuses (kAlreadyExists) a
// data dir that already holds a broker, and leaves nothing half-made behind
// on failure.
Result<InitResult> initDataDir(const InitOptions& options);

struct StartOptions {
  std::optional<std::string> listen;      // overrides broker.listen
  std::optional<std::string> bootListen;  // overrides boot.listen
  HostLink* hostLink = nullptr;           // tests: a link of their own
};

class BrokerServer {
 public:
  static Result<std::unique_ptr<BrokerServer>> start(const config::Config& config,
                                                     const StartOptions& options = {});
  ~BrokerServer();

  int port() const;
  std::string address() const;      // "127.0.0.1:43121"
  std::string bootAddress() const;  // the network-boot listener's, or empty when off
  std::string tftpAddress() const;  // the TFTP listener's, or empty when off
  const std::string& caPem() const;
  std::string caFingerprint() const;
  Broker& broker();
  void stop();

 private:
  BrokerServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::broker
