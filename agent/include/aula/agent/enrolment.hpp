// The agent's side of enrolment and of its heartbeat to the broker.
//
// Enrolment trades an admin's one-time join token for the host's identity:
// the agent reaches the broker over TLS pinned to the fingerprint of the
// broker's CA, and keeps what comes back in its state dir:
//
//   ca.crt                  the broker's CA (trust for every later connection)
//   agent.crt, agent.key    the agent's client certificate (CN = host name)
//   spice/server-cert.pem,  the SPICE (and agent HTTPS) server certificate and
//   spice/server-key.pem    key of this host; the key is 0640, group libvirt-qemu
//   spice/ca-cert.pem       the CA again: spice/ is what qemu.conf's
//                           spice_tls_x509_cert_dir names
//   enrolment.json          broker URL, CA fingerprint, host id and name
//
// agent.key is 0600; the dir is 0711 so that QEMU can reach spice/. The heartbeat then speaks
// mutual TLS with the stored certificate, trusting only the stored CA.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/http_client.hpp"
#include "aula/common/json.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

inline constexpr const char* kDefaultStateDir = "/var/lib/aula-agent";

struct EnrolOptions {
  std::string brokerUrl;      // "https://broker.school.lan:8443"
  std::string token;          // the join token from "aulactl enrolment-tokens create"
  std::string caFingerprint;  // SHA-256 of the broker's CA, with or without colons
  std::filesystem::path stateDir = kDefaultStateDir;
  std::string agentAddress;  // "HOST:PORT" the broker reaches this agent at; may be empty
  bool force = false;        // replace an earlier enrolment's files
};

struct Enrolment {
  std::int64_t hostId = 0;
  std::string hostName;
  std::string clientCertFingerprint;
  std::string spiceSubject;
  std::vector<std::filesystem::path> files;  // what was written, in order
};

// What enrolment.json records.
struct EnrolmentRecord {
  std::string brokerUrl;
  std::int64_t hostId = 0;
  std::string hostName;
  std::string address;  // "HOST:PORT" given at enrolment; may be empty
};
// Reads <stateDir>/enrolment.json. Errors say to enrol first.
Result<EnrolmentRecord> readEnrolment(const std::filesystem::path& stateDir);

// Enrols this host with the broker and stores its identity. Every file is
// written under a temporary name first and renamed into place only once all
// of them are whole, so a failure leaves nothing half-written; enrolment.json
// comes last and marks a complete enrolment. Refuses (kAlreadyExists) a state
// dir that holds an enrolment unless `force`. A wrong fingerprint is kTls and
// writes nothing; the broker's refusals keep its sentence (kUnauthenticated
// for a token that is unknown, used or expired).
Result<Enrolment> enroll(const EnrolOptions& options);

// A kept-alive mutual-TLS connection to the broker for the agent's
// heartbeats and events: a new handshake for each one cost the broker about
// 30 times the work of the heartbeat itself (docs/performance.md). The
// certificates are read on first use and again after a transport failure.
// Not thread-safe.
class BrokerChannel {
 public:
  // An empty `brokerUrl` means the one recorded at enrolment.
  BrokerChannel(std::filesystem::path stateDir, std::string brokerUrl);
  // POSTs `body` to `path` ("/api/v1/agent/heartbeat"); the answer's JSON
  // (null for 204), or the broker's refusal with its own sentence.
  Result<json::Json> post(std::string_view path, const json::Json& body);

 private:
  std::filesystem::path stateDir_;
  std::string brokerUrl_;
  std::string url_;  // resolved
  std::unique_ptr<http::Client> client_;
};

// POSTs `body` to the broker's `path` ("/api/v1/agent/events") the same way;
// returns the answer's JSON body (null for 204). The broker's refusals keep
// its sentence.
Result<json::Json> postToBroker(const std::filesystem::path& stateDir, const std::string& brokerUrl,
                                std::string_view path, const json::Json& body);

}  // namespace aula::agent
