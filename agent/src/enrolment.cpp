// Enrolment with the broker and the heartbeat over mutual TLS (see enrolment.hpp).
#include "aula/agent/enrolment.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aula/common/agent_protocol.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/file.hpp"
#include "aula/common/http_client.hpp"

namespace aula::agent {

namespace fs = std::filesystem;
using json::Json;

namespace {

constexpr const char* kMarker = "enrolment.json";
constexpr const char* kSpiceDir = "spice";

// The group QEMU runs as under Debian's libvirt, or root's when there is none.
gid_t spiceKeyGroup() {
  for (const char* name : {"libvirt-qemu", "kvm"}) {
    if (const struct group* g = ::getgrnam(name))  // NOLINT: start-up only, single-threaded
      return g->gr_gid;
  }
  return 0;
}

Error brokerRefusal(const http::Response& response) {
  return http::errorFromResponse(response, "The broker");
}

// Files the enrolment stored; a missing one means the host is not enrolled.
Result<std::string> readText(const fs::path& path) {
  auto text = file::readFile(path);
  if (!text) {
    return text.error().context(
        fmt::format("Cannot read '{}'; is this host enrolled (aula-agent enroll)?", path.string()));
  }
  return text;
}

// Writes `content` to a new file `path` with `mode` (set at open, whatever
// the umask), flushed to disk.
Status writeFileSynced(const fs::path& path, std::string_view content, mode_t mode) {
  file::UniqueFd fd(
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    return Error(Errc::kIo,
                 fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(errno)), errno);
  }
  if (::fchmod(fd.get(), mode) != 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(errno)), errno);
  }
  AULA_TRY_STATUS(file::writeAll(fd.get(), content, path));
  if (::fsync(fd.get()) != 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot write '{}': {}.", path.string(), std::strerror(errno)), errno);
  }
  return {};
}

struct PendingFile {
  std::string name;  // relative to the state dir; may name a file in a subfolder
  std::string content;
  mode_t mode;
  gid_t group = static_cast<gid_t>(-1);  // -1: keep ours
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
    fs::path target = dir / f.name;
    fs::path temp =
        target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid());
    temps.push_back(temp);
    if (auto s = writeFileSynced(temp, f.content, f.mode); !s) {
      cleanup();
      return s;
    }
    if (f.group != static_cast<gid_t>(-1) &&
        ::chown(temp.c_str(), static_cast<uid_t>(-1), f.group) != 0) {
      int e = errno;
      cleanup();
      return Error(
          Errc::kIo,
          fmt::format("Cannot give '{}' to its group: {}.", target.string(), std::strerror(e)), e);
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
  if (file::UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); dfd)
    ::fsync(dfd.get());
  return {};
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
  auto request = proto::toJson(proto::EnrolRequest{.token = o.token, .address = o.agentAddress});
  auto sent = client.postJson(url + std::string(proto::kEnrolRoute), request.dump());
  if (!sent)
    return sent.error().context(fmt::format("Cannot enrol with the broker at {}.", url));
  if (sent->status != 201)
    return brokerRefusal(*sent);

  auto body = json::parse(sent->body, {.maxBytes = 1024 * 1024, .maxDepth = 8});
  if (!body || !body->is_object())
    return Error(Errc::kParse, "The broker's enrolment answer is not a JSON object.");
  auto answer = proto::parseEnrolAnswer(*body);
  if (!answer)
    return Error(Errc::kParse, answer.error().message());
  const std::string& hostName = answer->hostName;
  const std::string& ca = answer->ca;
  const std::string& clientCert = answer->clientCert;
  const std::string& clientKey = answer->clientKey;
  const std::string& spiceCert = answer->spiceCert;
  const std::string& spiceKey = answer->spiceKey;
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
  out.hostId = answer->hostId;
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
  // 0711: others may pass through to spice/, where QEMU (running as
  // libvirt-qemu) reads the SPICE certificate, but may not list the dir.
  if (::chmod(o.stateDir.c_str(), 0711) != 0) {
    return Error(Errc::kIo,
                 fmt::format("Cannot set the mode of the state dir '{}': {}.", o.stateDir.string(),
                             std::strerror(errno)),
                 errno);
  }
  // The SPICE files carry the names libvirt's spice_tls_x509_cert_dir wants;
  // the key is readable by the group QEMU runs as, when there is one.
  gid_t qemuGroup = spiceKeyGroup();
  fs::path spiceDir = o.stateDir / kSpiceDir;
  fs::create_directories(spiceDir, ec);
  if (ec || ::chmod(spiceDir.c_str(), 0755) != 0) {
    return Error(Errc::kIo, fmt::format("Cannot create the SPICE folder '{}'.", spiceDir.string()));
  }
  std::vector<PendingFile> files = {
      {"ca.crt", ca, 0644},
      {"agent.crt", clientCert, 0644},
      {"agent.key", clientKey, 0600},
      {"spice/server-cert.pem", spiceCert, 0644},
      {"spice/server-key.pem", spiceKey, 0640, qemuGroup},
      {"spice/ca-cert.pem", ca, 0644},
      {kMarker, record.dump(2) + "\n", 0644},  // last: marks a complete enrolment
  };
  AULA_TRY_STATUS(writeAll(o.stateDir, files));
  for (const auto& f : files)
    out.files.push_back(o.stateDir / f.name);
  return out;
}

Result<EnrolmentRecord> readEnrolment(const fs::path& stateDir) {
  auto path = stateDir / kMarker;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return makeError(Errc::kNotFound,
                     "This host is not enrolled: there is no '{}'. Run 'aula-agent enroll' with a "
                     "join token first (see 'aula-agent enroll --help').",
                     path.string());
  }
  auto record = json::parse(AULA_TRY(readText(path)));
  if (!record || !record->is_object())
    return makeError(Errc::kParse, "'{}' is not a JSON object; enrol again with --force.",
                     path.string());
  EnrolmentRecord out;
  out.brokerUrl = AULA_TRY(json::getString(*record, "broker_url"));
  out.hostId = AULA_TRY(json::getInt(*record, "host_id"));
  out.hostName = AULA_TRY(json::getString(*record, "host_name"));
  if (record->contains("address") && (*record)["address"].is_string())
    out.address = (*record)["address"].get<std::string>();
  return out;
}

BrokerChannel::BrokerChannel(fs::path stateDir, std::string brokerUrl)
    : stateDir_(std::move(stateDir)), brokerUrl_(std::move(brokerUrl)) {}

Result<Json> BrokerChannel::post(std::string_view path, const Json& body) {
  if (!client_) {
    std::string url = brokerUrl_;
    if (url.empty()) {
      auto record = json::parse(AULA_TRY(readText(stateDir_ / kMarker)));
      if (!record || !record->is_object() || !record->contains("broker_url") ||
          !(*record)["broker_url"].is_string()) {
        return makeError(Errc::kParse, "'{}' does not name the broker's URL.",
                         (stateDir_ / kMarker).string());
      }
      url = (*record)["broker_url"].get<std::string>();
    }
    url_ = trimSlash(url);
    auto ca = AULA_TRY(readText(stateDir_ / "ca.crt"));
    auto cert = AULA_TRY(readText(stateDir_ / "agent.crt"));
    auto key = AULA_TRY(readText(stateDir_ / "agent.key"));
    client_ = std::make_unique<http::Client>(
        http::ClientOptions{.tls = {.caPem = ca, .clientCertPem = cert, .clientKeyPem = key}});
  }
  auto sent = client_->postJson(url_ + std::string(path), body.dump());
  if (!sent) {
    client_.reset();  // a new connection (and a fresh look at the files) next time
    return sent.error().context(fmt::format("Cannot reach the broker at {}.", url_));
  }
  if (sent->status == 204)
    return Json();
  if (sent->status != 200)
    return brokerRefusal(*sent);
  auto answer = json::parse(sent->body);
  if (!answer)
    return answer.error().context("The broker's answer is not JSON.");
  return *answer;
}

Result<Json> postToBroker(const fs::path& stateDir, const std::string& brokerUrl,
                          std::string_view path, const Json& body) {
  BrokerChannel channel(stateDir, brokerUrl);
  return channel.post(path, body);
}

}  // namespace aula::agent
