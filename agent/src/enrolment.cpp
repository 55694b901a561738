// Enrolment with the broker and the heartbeat over mutual TLS (see enrolment.hpp).
#include "aula/agent/enrolment.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"
#include "aula/common/http_client.hpp"

namespace aula::agent {

namespace fs = std::filesystem;
using json::Json;

namespace {

constexpr const char* kMarker = "enrolment.json";

// The broker's refusal as an Error: its own sentence, with a code that
// follows the HTTP status.
Error brokerRefusal(const http::Response& response) {
  Errc code = Errc::kInternal;
  switch (response.status) {
    case 400:
      code = Errc::kInvalidArgument;
      break;
    case 401:
      code = Errc::kUnauthenticated;
      break;
    case 403:
      code = Errc::kPermissionDenied;
      break;
    case 404:
      code = Errc::kNotFound;
      break;
    case 409:
      code = Errc::kConflict;
      break;
    case 429:
      code = Errc::kRateLimited;
      break;
    case 503:
      code = Errc::kUnavailable;
      break;
    default:
      break;
  }
  auto body = json::parse(response.body).valueOr(Json());
  if (body.is_object() && body.contains("error") && body["error"].is_object() &&
      body["error"].contains("message") && body["error"]["message"].is_string()) {
    return Error(code, body["error"]["message"].get<std::string>(),
                 static_cast<int>(response.status));
  }
  return makeError(code, "The broker answered HTTP {} without an explanation.", response.status);
}

Result<std::string> readText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Error(Errc::kIo,
                 fmt::format("Cannot read '{}': {}; is this host enrolled (aula-agent enroll)?",
                             path.string(), std::strerror(errno)),
                 errno);
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes `content` to `path` with `mode`, flushed to disk.
Status writeFileSynced(const fs::path& path, std::string_view content, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(errno)), errno);
  }
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      return Error(Errc::kIo,
                   fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(e)), e);
    }
    done += static_cast<std::size_t>(n);
  }
  // The umask may have taken bits away; the mode is what we say.
  if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    return Error(Errc::kIo, fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(e)),
                 e);
  }
  if (::close(fd) != 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(errno)), errno);
  }
  return {};
}

struct PendingFile {
  std::string name;
  std::string content;
  mode_t mode;
};

// Writes every file under a temporary name, then renames them into place,
// the last one last. On failure before the renames the temporary files go.
Status writeAll(const fs::path& dir, const std::vector<PendingFile>& files) {
  std::vector<fs::path> temps;
  auto cleanup = [&] {
    std::error_code ec;
    for (const auto& t : temps)
      fs::remove(t, ec);
  };
  for (const auto& f : files) {
    fs::path temp = dir / fmt::format(".{}.tmp-{}", f.name, ::getpid());
    temps.push_back(temp);
    if (auto s = writeFileSynced(temp, f.content, f.mode); !s) {
      cleanup();
      return s;
    }
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (::rename(temps[i].c_str(), (dir / files[i].name).c_str()) != 0) {
      int e = errno;
      cleanup();
      return Error(Errc::kIo,
                   fmt::format("Cannot put '{}' in place: {}.", (dir / files[i].name).string(),
                               std::strerror(e)),
                   e);
    }
  }
  // The renames are durable once the directory is.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

Result<std::string> stringField(const Json& body, std::string_view field) {
  auto value = json::getString(body, field);
  if (!value) {
    return makeError(Errc::kParse, "The broker's enrolment answer lacks the field '{}'.", field);
  }
  return value;
}

std::string trimSlash(std::string url) {
  while (!url.empty() && url.back() == '/')
    url.pop_back();
  return url;
}

}  // namespace

Result<Enrolment> enroll(const EnrolOptions& o) {
  if (o.brokerUrl.rfind("https://", 0) != 0) {
    return makeError(Errc::kInvalidArgument,
                     "The broker URL '{}' must start with https://, such as "
                     "'https://broker.school.lan:8443'.",
                     o.brokerUrl);
  }
  if (o.token.empty())
    return Error(Errc::kInvalidArgument, "The join token is empty; ask an admin for one.");
  auto fingerprint = AULA_TRY(crypto::normalizeFingerprint(o.caFingerprint));
  const fs::path marker = o.stateDir / kMarker;
  std::error_code ec;
  if (!o.force && fs::exists(marker, ec)) {
    return makeError(Errc::kAlreadyExists,
                     "This host is enrolled already ('{}' exists); use --force to enrol it again "
                     "with a new join token.",
                     marker.string());
  }

  const std::string url = trimSlash(o.brokerUrl);
  http::Client client(http::ClientOptions{.tls = {.caFingerprint = fingerprint}});
  Json request{{"token", o.token}};
  if (!o.agentAddress.empty())
    request["address"] = o.agentAddress;
  auto sent = client.postJson(url + "/api/v1/agent/enroll", request.dump());
  if (!sent)
    return sent.error().context(fmt::format("Cannot enrol with the broker at {}.", url));
  if (sent->status != 201)
    return brokerRefusal(*sent);

  auto body = json::parse(sent->body, {.maxBytes = 1024 * 1024, .maxDepth = 8});
  if (!body || !body->is_object())
    return Error(Errc::kParse, "The broker's enrolment answer is not a JSON object.");
  auto hostName = AULA_TRY(stringField(*body, "host_name"));
  auto hostId = json::getInt(*body, "host_id");
  if (!hostId)
    return Error(Errc::kParse, "The broker's enrolment answer lacks the field 'host_id'.");
  auto ca = AULA_TRY(stringField(*body, "ca"));
  auto clientCert = AULA_TRY(stringField(*body, "client_cert"));
  auto clientKey = AULA_TRY(stringField(*body, "client_key"));
  auto spiceCert = AULA_TRY(stringField(*body, "spice_cert"));
  auto spiceKey = AULA_TRY(stringField(*body, "spice_key"));
  // What we store must be what we pinned, and what the broker issued must
  // chain to it; otherwise every later connection would fail obscurely.
  auto caFingerprint = AULA_TRY(crypto::certificateFingerprint(ca));
  if (caFingerprint != fingerprint) {
    return makeError(Errc::kTls,
                     "The broker sent a CA with fingerprint {}, not the pinned {}; nothing was "
                     "stored.",
                     caFingerprint, fingerprint);
  }
  if (auto s = crypto::verifyChain(clientCert, ca); !s)
    return s.error().context("The client certificate the broker issued does not verify.");
  if (auto s = crypto::verifyChain(spiceCert, ca, hostName); !s)
    return s.error().context("The SPICE certificate the broker issued does not verify.");

  Enrolment out;
  out.hostId = *hostId;
  out.hostName = hostName;
  out.clientCertFingerprint = AULA_TRY(crypto::certificateFingerprint(clientCert));
  out.spiceSubject = AULA_TRY(crypto::certificateSubject(spiceCert));

  auto enrolledAt = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  Json record{{"broker_url", url},
              {"ca_fingerprint", fingerprint},
              {"host_id", out.hostId},
              {"host_name", hostName},
              {"address", o.agentAddress},
              {"client_cert_fingerprint", out.clientCertFingerprint},
              {"spice_subject", out.spiceSubject},
              {"enrolled_at", enrolledAt}};

  fs::create_directories(o.stateDir, ec);
  if (ec) {
    return Error(Errc::kIo, fmt::format("Cannot create the state dir '{}': {}.",
                                        o.stateDir.string(), ec.message()));
  }
  if (::chmod(o.stateDir.c_str(), 0700) != 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot make the state dir '{}' private: {}.", o.stateDir.string(),
                             std::strerror(errno)),
                 errno);
  }
  std::vector<PendingFile> files = {
      {"ca.crt", ca, 0644},
      {"agent.crt", clientCert, 0644},
      {"agent.key", clientKey, 0600},
      {"spice-server-cert.pem", spiceCert, 0644},
      {"spice-server-key.pem", spiceKey, 0600},
      {"spice-ca-cert.pem", ca, 0644},
      {kMarker, record.dump(2) + "\n", 0644},  // last: marks a complete enrolment
  };
  AULA_TRY_STATUS(writeAll(o.stateDir, files));
  for (const auto& f : files)
    out.files.push_back(o.stateDir / f.name);
  return out;
}

Status sendHeartbeat(const fs::path& stateDir, const std::string& brokerUrl, const Json& load) {
  std::string url = brokerUrl;
  if (url.empty()) {
    auto record = json::parse(AULA_TRY(readText(stateDir / kMarker)));
    if (!record || !record->is_object() || !record->contains("broker_url") ||
        !(*record)["broker_url"].is_string()) {
      return makeError(Errc::kParse, "'{}' does not name the broker's URL.",
                       (stateDir / kMarker).string());
    }
    url = (*record)["broker_url"].get<std::string>();
  }
  url = trimSlash(url);
  auto ca = AULA_TRY(readText(stateDir / "ca.crt"));
  auto cert = AULA_TRY(readText(stateDir / "agent.crt"));
  auto key = AULA_TRY(readText(stateDir / "agent.key"));
  http::Client client(
      http::ClientOptions{.tls = {.caPem = ca, .clientCertPem = cert, .clientKeyPem = key}});
  auto sent = client.postJson(url + "/api/v1/agent/heartbeat", load.dump());
  if (!sent) {
    return sent.error().context(fmt::format("Cannot send a heartbeat to the broker at {}.", url));
  }
  if (sent->status != 204)
    return brokerRefusal(*sent);
  return {};
}

}  // namespace aula::agent
