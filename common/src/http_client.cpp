// The HTTP client over libcurl: one easy handle per Client, trust always explicit.
#include "aula/common/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <functional>
#include <mutex>

#include <curl/curl.h>

#include "aula/common/callback_guard.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/json.hpp"
#include "aula/common/log.hpp"

namespace aula::http {
namespace {

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

void globalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos)
    return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

struct Sink {
  std::string* body = nullptr;
  std::size_t limit = 0;
  bool overLimit = false;
  // A streamed body goes here instead, chunk by chunk; false stops it.
  const std::function<bool(std::string_view)>* onData = nullptr;
  bool stopped = false;
};

// libcurl callbacks: no exception may cross them.
size_t onBody(char* data, size_t size, size_t count, void* user) noexcept {
  auto* sink = static_cast<Sink*>(user);
  size_t n = size * count;
  return guardCallback("curl body", size_t{0}, [&]() -> size_t {
    if (sink->onData != nullptr) {
      if ((*sink->onData)(std::string_view(data, n)))
        return n;
      sink->stopped = true;
      return 0;
    }
    if (sink->body->size() + n > sink->limit) {
      sink->overLimit = true;
      return 0;
    }
    sink->body->append(data, n);
    return n;
  });
}

size_t onHeader(char* data, size_t size, size_t count, void* user) noexcept {
  auto* headers = static_cast<std::multimap<std::string, std::string>*>(user);
  size_t n = size * count;
  return guardCallback("curl header", size_t{0}, [&]() -> size_t {
    std::string_view line(data, n);
    if (line.starts_with("HTTP/")) {
      headers->clear();  // a new response (after 100-continue or a redirect)
      return n;
    }
    auto colon = line.find(':');
    if (colon != std::string_view::npos) {
      headers->emplace(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
    }
    return n;
  });
}

curl_blob blobOf(const std::string& s) {
  return curl_blob{const_cast<char*>(s.data()), s.size(), CURL_BLOB_COPY};
}

std::string hostOf(const std::string& url) {
  auto start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  auto end = url.find('/', start);
  return url.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

Error transportError(CURLcode code, const char* detail, const std::string& url) {
  std::string why = detail != nullptr && detail[0] != '\0' ? detail : curl_easy_strerror(code);
  std::string host = hostOf(url);
  int native = static_cast<int>(code);
  switch (code) {
    case CURLE_COULDNT_CONNECT:
      return Error(
          Errc::kConnectionRefused,
          fmt::format(
              "Cannot connect to {}: {}. Check that the service runs and the address is right.",
              host, why),
          native);
    case CURLE_OPERATION_TIMEDOUT:
      return Error(Errc::kTimeout, fmt::format("{} did not answer in time: {}.", host, why),
                   native);
    case CURLE_COULDNT_RESOLVE_HOST:
      return Error(Errc::kUnavailable,
                   fmt::format("Cannot resolve the host name in {}: {}.", host, why), native);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return Error(Errc::kInvalidArgument, fmt::format("The URL '{}' is not valid: {}.", url, why),
                   native);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
      return Error(Errc::kTls, fmt::format("The TLS connection to {} failed: {}.", host, why),
                   native);
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
      // A peer that rejects our client certificate closes with an alert,
      // which curl reports as a receive or send error.
      if (why.find("alert") != std::string::npos || why.find("SSL") != std::string::npos ||
          why.find("TLS") != std::string::npos) {
        return Error(Errc::kTls, fmt::format("The TLS connection to {} failed: {}.", host, why),
                     native);
      }
      return Error(Errc::kUnavailable, fmt::format("The connection to {} broke: {}.", host, why),
                   native);
    case CURLE_GOT_NOTHING:
      return Error(Errc::kUnavailable,
                   fmt::format("{} closed the connection without answering.", host), native);
    default:
      return Error(Errc::kIo, fmt::format("The request to {} failed: {}.", host, why), native);
  }
}

}  // namespace

std::string Response::header(std::string_view name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

struct Client::Impl {
  ClientOptions options;
  CurlPtr curl;
  std::optional<std::string> pinnedCa;
  char errbuf[CURL_ERROR_SIZE] = {};

  Status applyTls(CURL* c, const std::string& url) {
    bool https = url.rfind("https://", 0) == 0;
    const auto& tls = options.tls;
    if (!https)
      return {};
    const std::optional<std::string>& ca = tls.caPem ? tls.caPem : pinnedCa;
    if (ca) {
      curl_blob blob = blobOf(*ca);
      curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &blob);
      curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
    } else if (!tls.useSystemTrust) {
      return makeError(Errc::kInvalidArgument,
                       "No CA is configured for {}; give the broker's CA certificate or its "
                       "SHA-256 fingerprint.",
                       hostOf(url));
    }
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, tls.verifyHostname ? 2L : 0L);
    if (tls.clientCertPem && tls.clientKeyPem) {
      curl_blob cert = blobOf(*tls.clientCertPem);
      curl_blob key = blobOf(*tls.clientKeyPem);
      curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
      curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
      curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    }
    return {};
  }

  // Learns the CA from the server's chain: connects without verification only
  // to read the chain, keeps the certificate whose fingerprint matches, and
  // never sends a request on that connection.
  Status pinCaByFingerprint(const std::string& url) {
    auto wanted = AULA_TRY(crypto::normalizeFingerprint(*options.tls.caFingerprint));
    CurlPtr probe(curl_easy_init());
    if (!probe)
      return Error(Errc::kInternal, "Cannot create a libcurl handle.");
    char probeErr[CURL_ERROR_SIZE] = {};
    CURL* c = probe.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, probeErr);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options.connectTimeout.count()));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options.totalTimeout.count()));
    if (options.tls.clientCertPem && options.tls.clientKeyPem) {
      curl_blob cert = blobOf(*options.tls.clientCertPem);
      curl_blob key = blobOf(*options.tls.clientKeyPem);
      curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
      return transportError(rc, probeErr, url);
    curl_certinfo* info = nullptr;
    curl_easy_getinfo(c, CURLINFO_CERTINFO, &info);
    std::vector<std::string> seen;
    for (int i = 0; info != nullptr && i < info->num_of_certs; ++i) {
      for (curl_slist* item = info->certinfo[i]; item != nullptr; item = item->next) {
        std::string_view field(item->data);
        if (!field.starts_with("Cert:"))
          continue;
        std::string pem(field.substr(5));
        auto fp = crypto::certificateFingerprint(pem);
        if (!fp)
          continue;
        if (*fp == wanted) {
          pinnedCa = pem;
          return {};
        }
        seen.push_back(*fp);
      }
    }
    return makeError(Errc::kTls,
                     "The server at {} did not present a CA certificate with the fingerprint {} "
                     "(it presented {}); check the broker's fingerprint on the boot command line.",
                     hostOf(url), wanted,
                     seen.empty() ? std::string("none") : fmt::format("{}", fmt::join(seen, ", ")));
  }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  globalInit();
  impl_->options = std::move(options);
  impl_->curl.reset(curl_easy_init());
  assert(impl_->curl && "curl_easy_init failed");
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

std::optional<std::string> Client::pinnedCaPem() const {
  return impl_->pinnedCa;
}

namespace {

// curl's progress callback, about once a second: a streamed request ends
// when its owner says so, even while no data comes.
int onProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) noexcept {
  const auto* keepGoing = static_cast<const std::function<bool()>*>(user);
  return guardCallback("curl progress", 1, [&] { return (*keepGoing)() ? 0 : 1; });
}

}  // namespace

Result<Response> Client::send(const Request& request) {
  return perform(request, nullptr, nullptr);
}

Status Client::stream(const Request& request, const std::function<bool(std::string_view)>& onData,
                      const std::function<bool()>& keepGoing) {
  auto response = AULA_TRY(perform(request, &onData, &keepGoing));
  if (response.status != 200)
    return errorFromResponse(response, hostOf(request.url));
  return okStatus();
}

Result<Response> Client::perform(const Request& request,
                                 const std::function<bool(std::string_view)>* onData,
                                 const std::function<bool()>* keepGoing) {
  auto& impl = *impl_;
  const auto& options = impl.options;
  bool https = request.url.rfind("https://", 0) == 0;
  if (https && !options.tls.caPem && options.tls.caFingerprint && !impl.pinnedCa) {
    AULA_TRY_STATUS(impl.pinCaByFingerprint(request.url));
  }

  CURL* c = impl.curl.get();
  curl_easy_reset(c);  // keeps live connections and the TLS session cache
  impl.errbuf[0] = '\0';
  Response response;
  Sink sink{&response.body, options.maxResponseBytes};
  sink.onData = onData;
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, impl.errbuf);
  curl_easy_setopt(c, CURLOPT_USERAGENT, options.userAgent.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connectTimeout.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(request.timeout.value_or(options.totalTimeout).count()));
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, onHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &response.headers);
  AULA_TRY_STATUS(impl.applyTls(c, request.url));
  if (keepGoing != nullptr) {
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, onProgress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, keepGoing);
  }

  if (request.method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
      request.method == "PATCH") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.data());
  }

  curl_slist* raw = nullptr;
  raw = curl_slist_append(raw, "Expect:");  // no 100-continue round trip
  for (const auto& [name, value] : request.headers) {
    raw = curl_slist_append(raw, fmt::format("{}: {}", name, value).c_str());
  }
  SlistPtr headers(raw);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  CURLcode rc = curl_easy_perform(c);
  if ((rc == CURLE_WRITE_ERROR && sink.stopped) || rc == CURLE_ABORTED_BY_CALLBACK) {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
    return response;  // the caller ended it
  }
  if (rc == CURLE_WRITE_ERROR && sink.overLimit) {
    return makeError(Errc::kIo, "The response from {} is larger than the limit of {} bytes.",
                     hostOf(request.url), options.maxResponseBytes);
  }
  if (rc != CURLE_OK) {
    auto error = transportError(rc, impl.errbuf, request.url);
    // A pinned CA learnt by fingerprint is dropped after a TLS failure, so a
    // re-issued broker certificate is looked at afresh.
    if (error.code() == Errc::kTls && options.tls.caFingerprint)
      impl.pinnedCa.reset();
    return error;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

Result<Response> Client::get(std::string url) {
  Request r;
  r.url = std::move(url);
  return send(r);
}

Result<Response> Client::postJson(std::string url, std::string jsonBody) {
  Request r;
  r.method = "POST";
  r.url = std::move(url);
  r.body = std::move(jsonBody);
  r.headers.emplace_back("Content-Type", "application/json");
  return send(r);
}

Error errorFromResponse(const Response& response, std::string_view peer) {
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
    case 504:
      code = Errc::kTimeout;
      break;
    default:
      break;
  }
  auto body = json::parse(response.body).valueOr(json::Json());
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const auto& e = body["error"];
    if (e.contains("code") && e["code"].is_string()) {
      code = errcFromName(e["code"].get<std::string>()).value_or(code);
    }
    if (e.contains("message") && e["message"].is_string()) {
      return Error(code, e["message"].get<std::string>(), static_cast<int>(response.status));
    }
  }
  return Error(code,
               fmt::format("{} answered HTTP {} without an explanation.", peer, response.status),
               static_cast<int>(response.status));
}

std::string urlEncode(std::string_view text) {
  std::string out;
  for (unsigned char ch : text) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out;
}

}  // namespace aula::http
