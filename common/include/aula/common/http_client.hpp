// An HTTP(S) client over libcurl, for the greeter (to the broker), the agent
// (to the broker) and the broker (to agents) and for aulactl.
//
// TLS trust is always explicit: either a CA in PEM (the broker's own CA), or
// the SHA-256 fingerprint of that CA (what a thin client's kernel command line
// carries). With a fingerprint, the client takes the CA from the chain the
// server presents, only if its fingerprint matches, and then verifies the
// connection against it as if it had been given the PEM. The system's CA store
// is never consulted unless `useSystemTrust` is set.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::http {

struct TlsOptions {
  std::optional<std::string> caPem;          // trust exactly this CA
  std::optional<std::string> caFingerprint;  // or the CA with this SHA-256 fingerprint
  bool useSystemTrust = false;               // or the system's CA store
  std::optional<std::string> clientCertPem;  // mutual TLS
  std::optional<std::string> clientKeyPem;
  bool verifyHostname = true;
};

struct ClientOptions {
  std::chrono::milliseconds connectTimeout{5000};
  std::chrono::milliseconds totalTimeout{30000};
  std::size_t maxResponseBytes = std::size_t{64} * 1024 * 1024;
  std::string userAgent = "aula/0.1";
  TlsOptions tls;
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Per-request override of ClientOptions::totalTimeout.
  std::optional<std::chrono::milliseconds> timeout;
};

struct Response {
  long status = 0;
  std::multimap<std::string, std::string> headers;  // names lower-cased
  std::string body;

  // The first value of a header (name in any case), or empty.
  std::string header(std::string_view name) const;
};

// A client keeps its connection(s) alive between requests. Not thread-safe:
// use one per thread.
class Client {
 public:
  explicit Client(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Any HTTP status is a Response; only transport failures are Errors:
  // kConnectionRefused, kTimeout, kTls (with what failed), kUnavailable (name
  // resolution, reset connection), kInvalidArgument (a malformed URL), kIo.
  Result<Response> send(const Request& request);

  // A long answer read as it comes (server-sent events): `onData` gets each
  // chunk and returns false to stop; `keepGoing` is asked about once a
  // second, and false ends the request even while nothing arrives. The
  // request's timeout still applies. A status other than 200 is an Error.
  Status stream(const Request& request, const std::function<bool(std::string_view)>& onData,
                const std::function<bool()>& keepGoing);

  Result<Response> get(std::string url);
  Result<Response> postJson(std::string url, std::string jsonBody);

  // The CA PEM the client has come to trust through a fingerprint, once known.
  std::optional<std::string> pinnedCaPem() const;

 private:
  Result<Response> perform(const Request& request,
                           const std::function<bool(std::string_view)>* onData,
                           const std::function<bool()>* keepGoing);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A peer's refusal as an Error: the code and sentence of an Aula error body
// ({"error":{"code","message"}}), else a code that follows the HTTP status
// and a sentence naming `peer` and the status.
Error errorFromResponse(const Response& response, std::string_view peer);

// Percent-encodes a string for use in a URL's path segment or query value.
std::string urlEncode(std::string_view text);

}  // namespace aula::http
