// The agent's side of enrolment and of its heartbeat to the broker.
//
// Enrolment trades an admin's one-time join token for the host's identity:
// the agent reaches the broker over TLS pinned to the fingerprint of the
// broker's CA, and keeps what comes back in its state dir:
//
//   ca.crt                  the broker's CA (trust for every later connection)
//   agent.crt, agent.key    the agent's client certificate (CN = host name)
//   spice-server-cert.pem,  the SPICE server certificate and key of this host
//   spice-server-key.pem
//   spice-ca-cert.pem       the CA again, under the name SPICE set-ups expect
//   enrolment.json          broker URL, CA fingerprint, host id and name
//
// Keys are 0600 and the dir 0700. The heartbeat then speaks mutual TLS with
// the stored certificate, trusting only the stored CA.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

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

// Enrols this host with the broker and stores its identity. Every file is
// written under a temporary name first and renamed into place only once all
// of them are whole, so a failure leaves nothing half-written; enrolment.json
// comes last and marks a complete enrolment. Refuses (kAlreadyExists) a state
// dir that holds an enrolment unless `force`. A wrong fingerprint is kTls and
// writes nothing; the broker's refusals keep its sentence (kUnauthenticated
// for a token that is unknown, used or expired).
Result<Enrolment> enroll(const EnrolOptions& options);

// Sends one heartbeat with the host's load (the fields of
// POST /api/v1/agent/heartbeat) over mutual TLS with the stored certificate.
// An empty `brokerUrl` means the one recorded at enrolment.
Status sendHeartbeat(const std::filesystem::path& stateDir, const std::string& brokerUrl,
                     const json::Json& load);

}  // namespace aula::agent
