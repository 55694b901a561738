// The socket half of the HTTP server (see http_server.hpp): the listener, one
// thread per connection, TLS on mbedTLS, timeouts, and a stop() that ends
// idle connections at once and waits for in-flight requests.
//
// Sockets are non-blocking and every wait is a poll() against a deadline, so
// no peer can hold a thread longer than the configured timeouts, and stop()
// can wake a waiting connection by shutting its socket down.
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include <arpa/inet.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"
#include "aula/common/file.hpp"
#include "aula/common/host_port.hpp"
#include "aula/common/http_server.hpp"
#include "aula/common/log.hpp"
#include "aula/common/mbedtls_handle.hpp"

#include "socket_address.hpp"

namespace aula::http {
namespace {

using tls::CtrDrbgContext;
using tls::EntropyContext;
using tls::PkContext;
using tls::SslConfig;
using tls::SslContext;
using tls::TicketContext;
using tls::X509Crt;

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kReadChunk = std::size_t{16} * 1024;
// A close_notify is a courtesy; a peer that does not take it is not waited for.
constexpr auto kCloseNotifyTimeout = 200ms;
// Back-off when accept() fails for lack of descriptors or memory, so the loop
// does not spin while the condition lasts.
constexpr auto kAcceptBackoff = 100ms;
// After an error answer the client may still be sending the request it was
// refused for; closing with those bytes unread would reset the connection and
// could destroy the answer before the client reads it. So the rest is read
// and dropped, within these bounds.
constexpr auto kLingerTime = 1000ms;
constexpr std::size_t kLingerBytes = std::size_t{4} * 1024 * 1024;
// Repeated warnings about refused connections are logged at most this often.
constexpr auto kWarningInterval = 10s;
// Finished connection threads are joined at least this often.
constexpr auto kReapInterval = 1000ms;
constexpr std::uint32_t kTicketLifetimeSeconds = 24 * 60 * 60;

// ECDHE only (forward secrecy), AEAD only. Aula's PKI issues ECDSA keys; the
// RSA suites are there for a certificate from elsewhere.
constexpr std::array<int, 7> kCipherSuites = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

using file::UniqueFd;
using net::hostText;

std::string errnoText(int error) {
  return std::error_code(error, std::generic_category()).message();
}

std::string mbedtlsMessage(int rc) {
  std::array<char, 200> text{};
  mbedtls_strerror(rc, text.data(), text.size());
  return fmt::format("{} (-0x{:04x})", text.data(), -rc);
}

int parsePem(mbedtls_x509_crt* crt, const std::string& pem) {
  return mbedtls_x509_crt_parse(crt, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                pem.size() + 1);
}

constexpr std::pair<int, std::string_view> kReasonPhrases[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {415, "Unsupported Media Type"},
    {422, "Unprocessable Content"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

std::string_view reasonPhrase(int status) {
  for (const auto& [code, phrase] : kReasonPhrases) {
    if (code == status) {
      return phrase;
    }
  }
  return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
}

// The code in the JSON error body for the statuses the server itself answers.
std::string_view errorCode(int status) {
  switch (status) {
    case 400:
      return "bad_request";
    case 408:
      return "request_timeout";
    case 413:
      return "payload_too_large";
    case 431:
      return "headers_too_large";
    case 501:
      return "not_implemented";
    case 503:
      return "unavailable";
    case 505:
      return "http_version_not_supported";
    default:
      return "internal";
  }
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool isHeaderName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) != 0 ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool isHeaderValue(std::string_view value) {
  return std::none_of(value.begin(), value.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  });
}

// ---- waiting on sockets ---------------------------------------------------------

enum class Wait { kReady, kTimeout, kError };

Wait waitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    const int timeout = static_cast<int>(std::clamp<long long>(left.count(), 0, INT_MAX));
    pollfd entry{fd, events, 0};
    const int rc = ::poll(&entry, 1, timeout);
    if (rc > 0) {
      return Wait::kReady;  // readiness, hang-up or error: the next call says which
    }
    if (rc == 0) {
      if (Clock::now() >= deadline) {
        return Wait::kTimeout;
      }
      continue;
    }
    if (errno != EINTR) {
      return Wait::kError;
    }
  }
}

enum class Io { kOk, kEof, kTimeout, kError };

// recv() on a non-blocking socket, waiting until `deadline`.
Io receive(int fd, char* data, std::size_t size, std::size_t& got, Clock::time_point deadline) {
  while (true) {
    const ssize_t n = ::recv(fd, data, size, 0);
    if (n > 0) {
      got = static_cast<std::size_t>(n);
      return Io::kOk;
    }
    if (n == 0) {
      return Io::kEof;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Io::kError;
    }
    switch (waitFor(fd, POLLIN, deadline)) {
      case Wait::kReady:
        break;
      case Wait::kTimeout:
        return Io::kTimeout;
      case Wait::kError:
        return Io::kError;
    }
  }
}

// send() of some bytes; MSG_NOSIGNAL because a peer that left must not kill
// the process with SIGPIPE.
Io sendSome(int fd, const char* data, std::size_t size, std::size_t& sent,
            Clock::time_point deadline) {
  while (true) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n >= 0) {
      sent = static_cast<std::size_t>(n);
      return Io::kOk;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Io::kError;
    }
    switch (waitFor(fd, POLLOUT, deadline)) {
      case Wait::kReady:
        break;
      case Wait::kTimeout:
        return Io::kTimeout;
      case Wait::kError:
        return Io::kError;
    }
  }
}

// Half-closes the socket and drops what the peer still sends (see kLingerTime).
void lingerClose(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto deadline = Clock::now() + kLingerTime;
  std::array<char, kReadChunk> sink{};
  std::size_t dropped = 0;
  while (dropped < kLingerBytes) {
    std::size_t got = 0;
    if (receive(fd, sink.data(), sink.size(), got, deadline) != Io::kOk) {
      break;
    }
    dropped += got;
  }
}

// ---- transports -------------------------------------------------------------------

class Transport {
 public:
  virtual ~Transport() = default;
  virtual Io read(char* data, std::size_t size, std::size_t& got, Clock::time_point deadline) = 0;
  virtual bool writeAll(std::string_view data, Clock::time_point deadline) = 0;
  // Sends `length` bytes of the file from `offset`; each chunk must go
  // within `stall` (a slow client on a big file is fine, a stuck one is not).
  virtual bool sendFile(int fd, std::uint64_t offset, std::uint64_t length,
                        std::chrono::milliseconds stall) {
    std::vector<char> buffer(std::size_t{256} * 1024);
    while (length > 0) {
      const std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(length, buffer.size()));
      const ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        log::warn("Reading a file being served failed: {}.",
                  n == 0 ? "it got shorter" : std::strerror(errno));
        return false;
      }
      if (!writeAll({buffer.data(), static_cast<std::size_t>(n)}, Clock::now() + stall))
        return false;
      offset += static_cast<std::uint64_t>(n);
      length -= static_cast<std::uint64_t>(n);
    }
    return true;
  }
  // Ends the stream politely (TLS close_notify) before the socket closes.
  virtual void finish() {}
};

class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(int fd) : fd_(fd) {}

  Io read(char* data, std::size_t size, std::size_t& got, Clock::time_point deadline) override {
    return receive(fd_, data, size, got, deadline);
  }

  bool writeAll(std::string_view data, Clock::time_point deadline) override {
    while (!data.empty()) {
      std::size_t sent = 0;
      if (sendSome(fd_, data.data(), data.size(), sent, deadline) != Io::kOk) {
        return false;
      }
      data.remove_prefix(sent);
    }
    return true;
  }

  // The kernel copies from the page cache to the socket: no read into a
  // buffer of ours, which is what lets one broker feed a classroom of PCs
  // booting at once.
  bool sendFile(int fd, std::uint64_t offset, std::uint64_t length,
                std::chrono::milliseconds stall) override {
    auto position = static_cast<off_t>(offset);
    auto deadline = Clock::now() + stall;
    while (length > 0) {
      const std::size_t chunk =
          static_cast<std::size_t>(std::min<std::uint64_t>(length, std::uint64_t{4} * 1024 * 1024));
      const ssize_t n = ::sendfile(fd_, fd, &position, chunk);
      if (n > 0) {
        length -= static_cast<std::uint64_t>(n);
        deadline = Clock::now() + stall;
        continue;
      }
      if (n == 0) {
        log::warn("A file being served got shorter while it was sent.");
        return false;
      }
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return false;
      if (waitFor(fd_, POLLOUT, deadline) != Wait::kReady)
        return false;
    }
    return true;
  }

 private:
  int fd_;
};

// The TLS server configuration, shared read-only by every connection.
// Members are declared in the order they are needed, so they are freed in
// reverse: the config before what it points to.
struct TlsState {
  EntropyContext entropy;
  CtrDrbgContext drbg;  // locks itself: mbedTLS is built with threading
  X509Crt chain;
  PkContext key;
  X509Crt clientCa;
  bool verifiesClients = false;
  TicketContext tickets;
  SslConfig config;
};

Result<std::unique_ptr<TlsState>> makeTlsState(const ServerTls& options) {
  auto tls = std::make_unique<TlsState>();
  static constexpr std::string_view kPersonalization = "aula http server";
  int rc = mbedtls_ctr_drbg_seed(tls->drbg.get(), mbedtls_entropy_func, tls->entropy.get(),
                                 reinterpret_cast<const unsigned char*>(kPersonalization.data()),
                                 kPersonalization.size());
  if (rc != 0) {
    return Error(Errc::kInternal,
                 "The TLS random number generator could not be seeded from the operating "
                 "system's entropy source.",
                 rc);
  }
  rc = parsePem(tls->chain.get(), options.certChainPem);
  if (rc != 0) {
    return Error(
        Errc::kInvalidArgument,
        fmt::format("The server's TLS certificate chain is not valid PEM: {}.", mbedtlsMessage(rc)),
        rc);
  }
  rc = mbedtls_pk_parse_key(tls->key.get(),
                            reinterpret_cast<const unsigned char*>(options.keyPem.c_str()),
                            options.keyPem.size() + 1, nullptr, 0);
  if (rc != 0) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("The server's TLS private key is not a valid unencrypted PEM key: {}.",
                             mbedtlsMessage(rc)),
                 rc);
  }
  rc = mbedtls_pk_check_pair(&tls->chain.get()->pk, tls->key.get());
  if (rc != 0) {
    return Error(Errc::kInvalidArgument,
                 "The server's TLS private key does not belong to the first certificate of its "
                 "chain.",
                 rc);
  }

  mbedtls_ssl_config* config = tls->config.get();
  rc = mbedtls_ssl_config_defaults(config, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                   MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc != 0) {
    return Error(Errc::kInternal, "The TLS configuration could not be set up.", rc);
  }
  mbedtls_ssl_conf_rng(config, mbedtls_ctr_drbg_random, tls->drbg.get());
  mbedtls_ssl_conf_min_version(config, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_max_version(config, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(config, kCipherSuites.data());
  // The whole parsed chain goes out, CA included, so that a client that pins
  // the CA by fingerprint finds it in the handshake.
  rc = mbedtls_ssl_conf_own_cert(config, tls->chain.get(), tls->key.get());
  if (rc != 0) {
    return Error(Errc::kInternal, "The server's TLS certificate could not be installed.", rc);
  }
  // Session tickets let a returning client skip the ECDHE and signature work.
  rc = mbedtls_ssl_ticket_setup(tls->tickets.get(), mbedtls_ctr_drbg_random, tls->drbg.get(),
                                MBEDTLS_CIPHER_AES_256_GCM, kTicketLifetimeSeconds);
  if (rc != 0) {
    return Error(Errc::kInternal, "The TLS session ticket key could not be set up.", rc);
  }
  mbedtls_ssl_conf_session_tickets_cb(config, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
                                      tls->tickets.get());

  if (options.clientCaPem) {
    rc = parsePem(tls->clientCa.get(), *options.clientCaPem);
    if (rc != 0) {
      return Error(
          Errc::kInvalidArgument,
          fmt::format("The client CA certificate is not valid PEM: {}.", mbedtlsMessage(rc)), rc);
    }
    mbedtls_ssl_conf_ca_chain(config, tls->clientCa.get(), nullptr);
    mbedtls_ssl_conf_authmode(config, options.requireClientCert ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                                : MBEDTLS_SSL_VERIFY_OPTIONAL);
    tls->verifiesClients = true;
  } else if (options.requireClientCert) {
    return Error(Errc::kInvalidArgument,
                 "Requiring a client certificate needs a client CA to verify it against.");
  } else {
    mbedtls_ssl_conf_authmode(config, MBEDTLS_SSL_VERIFY_NONE);
  }
  return tls;
}

std::string colonHex(const crypto::Bytes& bytes) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0) {
      out.push_back(':');
    }
    out += fmt::format("{:02X}", bytes[i]);
  }
  return out;
}

struct PeerIdentity {
  std::optional<std::string> commonName;
  std::optional<std::string> fingerprint;
};

class TlsTransport final : public Transport {
 public:
  TlsTransport(int fd, TlsState& tls) : tls_(tls) { io_.fd = fd; }

  // False when the handshake failed; the reason is logged.
  bool handshake(Clock::time_point deadline, const std::string& peer) {
    int rc = mbedtls_ssl_setup(ssl_.get(), tls_.config.get());
    if (rc != 0) {
      log::error("A TLS session for {} could not be set up: {}.", peer, mbedtlsMessage(rc));
      return false;
    }
    mbedtls_ssl_set_bio(ssl_.get(), &io_, sendCallback, recvCallback, nullptr);
    io_.deadline = deadline;
    // Our callbacks wait themselves, so WANT_READ/WANT_WRITE only come back
    // after an EINTR-like hiccup; the deadline still bounds the loop.
    do {
      rc = mbedtls_ssl_handshake(ssl_.get());
    } while ((rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) &&
             Clock::now() < deadline);
    if (rc != 0) {
      const std::uint32_t flags = mbedtls_ssl_get_verify_result(ssl_.get());
      if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != UINT32_MAX) {
        std::array<char, 512> info{};
        mbedtls_x509_crt_verify_info(info.data(), info.size(), "", flags);
        // verify_info lists one reason per line, some with trailing blanks.
        std::string why;
        for (std::string_view rest = info.data(); !rest.empty();) {
          const auto newline = rest.find('\n');
          std::string_view line = rest.substr(0, newline);
          rest = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
          while (!line.empty() && line.back() == ' ') {
            line.remove_suffix(1);
          }
          if (!line.empty()) {
            why += why.empty() ? "" : "; ";
            why += line;
          }
        }
        log::info("The TLS handshake with {} failed: its client certificate was refused: {}.", peer,
                  why);
      } else {
        log::debug("The TLS handshake with {} failed: {}.", peer, mbedtlsMessage(rc));
      }
      return false;
    }
    return true;
  }

  // The client certificate's identity, only when it verified against the
  // client CA: with an optional client certificate a bad one counts as none.
  PeerIdentity identity() const {
    PeerIdentity identity;
    const mbedtls_x509_crt* cert = mbedtls_ssl_get_peer_cert(ssl_.get());
    if (!tls_.verifiesClients || cert == nullptr ||
        mbedtls_ssl_get_verify_result(ssl_.get()) != 0) {
      return identity;
    }
    for (const mbedtls_x509_name* name = &cert->subject; name != nullptr; name = name->next) {
      if (name->oid.p != nullptr && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &name->oid) == 0) {
        identity.commonName =
            std::string(reinterpret_cast<const char*>(name->val.p), name->val.len);
        break;
      }
    }
    identity.fingerprint = colonHex(crypto::sha256(
        std::string_view(reinterpret_cast<const char*>(cert->raw.p), cert->raw.len)));
    return identity;
  }

  Io read(char* data, std::size_t size, std::size_t& got, Clock::time_point deadline) override {
    io_.deadline = deadline;
    while (true) {
      const int rc = mbedtls_ssl_read(ssl_.get(), reinterpret_cast<unsigned char*>(data), size);
      if (rc > 0) {
        got = static_cast<std::size_t>(rc);
        return Io::kOk;
      }
      if ((rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) &&
          Clock::now() < deadline) {
        continue;
      }
      if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == MBEDTLS_ERR_SSL_CONN_EOF) {
        return Io::kEof;
      }
      return rc == MBEDTLS_ERR_SSL_TIMEOUT ? Io::kTimeout : Io::kError;
    }
  }

  bool writeAll(std::string_view data, Clock::time_point deadline) override {
    io_.deadline = deadline;
    while (!data.empty()) {
      const int rc = mbedtls_ssl_write(
          ssl_.get(), reinterpret_cast<const unsigned char*>(data.data()), data.size());
      if ((rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) &&
          Clock::now() < deadline) {
        continue;
      }
      if (rc < 0) {
        return false;
      }
      data.remove_prefix(static_cast<std::size_t>(rc));
    }
    return true;
  }

  void finish() override {
    io_.deadline = Clock::now() + kCloseNotifyTimeout;
    mbedtls_ssl_close_notify(ssl_.get());
  }

 private:
  struct SocketIo {
    int fd = -1;
    Clock::time_point deadline;
  };

  // The bio callbacks mbedTLS calls; they cannot throw.
  static int sendCallback(void* context, const unsigned char* data, std::size_t size) noexcept {
    const auto* io = static_cast<const SocketIo*>(context);
    std::size_t sent = 0;
    switch (sendSome(io->fd, reinterpret_cast<const char*>(data), size, sent, io->deadline)) {
      case Io::kOk:
        return static_cast<int>(sent);
      case Io::kTimeout:
        return MBEDTLS_ERR_SSL_TIMEOUT;
      default:
        return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                                     : MBEDTLS_ERR_NET_SEND_FAILED;
    }
  }

  static int recvCallback(void* context, unsigned char* data, std::size_t size) noexcept {
    const auto* io = static_cast<const SocketIo*>(context);
    std::size_t got = 0;
    switch (receive(io->fd, reinterpret_cast<char*>(data), size, got, io->deadline)) {
      case Io::kOk:
        return static_cast<int>(got);
      case Io::kEof:
        return 0;
      case Io::kTimeout:
        return MBEDTLS_ERR_SSL_TIMEOUT;
      default:
        return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
    }
  }

  TlsState& tls_;
  SocketIo io_;
  SslContext ssl_;
};

// ---- responses ------------------------------------------------------------------

// The Date header (RFC 9110 6.6.1): clients with a wrong clock (a thin
// client with a flat clock battery) compare it with their own.
std::string dateHeader() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buffer[64] = {};
  (void)std::strftime(buffer, sizeof buffer, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  return buffer;
}

// The status line and headers. Content-Length, Connection and Date are the
// server's to set; a header with a line break in it is dropped rather than
// let it split the response.
std::string responseHead(const ServerResponse& response, int status, bool streaming, bool close) {
  std::string head = fmt::format("HTTP/1.1 {} {}\r\n", status, reasonPhrase(status));
  head += dateHeader();
  bool hasCacheControl = false;
  for (const auto& [name, value] : response.headers) {
    const std::string key = lower(name);
    if (key == "content-length" || key == "connection" || key == "transfer-encoding" ||
        key == "date") {
      continue;
    }
    if (!isHeaderName(name) || !isHeaderValue(value)) {
      log::error("The response header '{}' is not valid and was left out.", name);
      continue;
    }
    hasCacheControl = hasCacheControl || key == "cache-control";
    head += fmt::format("{}: {}\r\n", name, value);
  }
  if (streaming) {
    if (!hasCacheControl) {
      head += "Cache-Control: no-cache\r\n";
    }
  } else if (status != 204 && status != 304 && status >= 200) {
    head += fmt::format("Content-Length: {}\r\n",
                        response.file ? response.file->length : response.body.size());
  }
  head += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  return head;
}

class ConnectionStreamWriter final : public StreamWriter {
 public:
  ConnectionStreamWriter(Transport& transport, const std::atomic<bool>& serverStopping,
                         std::chrono::milliseconds timeout)
      : transport_(transport), serverStopping_(serverStopping), timeout_(timeout) {}

  bool write(std::string_view data) override {
    if (failed_) {
      return false;
    }
    if (!data.empty() && !transport_.writeAll(data, Clock::now() + timeout_)) {
      failed_ = true;
    }
    return !failed_;
  }

  bool stopping() const override { return serverStopping_.load(); }

 private:
  Transport& transport_;
  const std::atomic<bool>& serverStopping_;
  std::chrono::milliseconds timeout_;
  bool failed_ = false;
};

}  // namespace

// ---- Server ---------------------------------------------------------------------

struct Server::Impl {
  // One accepted connection. The thread owns the socket; `fd` is a copy that
  // stop() may shut down while the connection waits for a request.
  struct Connection {
    std::thread thread;
    int fd = -1;        // guarded by mutex; -1 once closed
    bool busy = false;  // guarded by mutex: a request is being handled
    bool done = false;  // guarded by mutex: the thread is about to end
    std::string remoteAddress;
  };

  ServerOptions options;
  Handler handler;
  std::unique_ptr<TlsState> tls;
  UniqueFd listener;
  UniqueFd wake;  // an eventfd that ends the accept loop's poll
  int port = 0;
  std::string address;
  std::atomic<bool> stopping{false};
  std::thread acceptThread;
  std::mutex stopMutex;  // serializes stop() callers
  bool stopped = false;  // guarded by stopMutex

  mutable std::mutex mutex;
  std::list<Connection> connections;  // guarded by mutex (the list; see Connection)
  std::atomic<std::size_t> active{0};
  // Used by the accept thread only.
  Clock::time_point lastAcceptWarning;
  Clock::time_point lastCapWarning;

  Status listen();
  void acceptLoop();
  void admit(UniqueFd fd, const sockaddr_storage& peer);
  void reap();
  void run(Connection& connection, int fd);
  void serve(Connection& connection, int fd);
  bool respond(Transport& transport, ServerRequest& request, bool closeAfter);
  void answerError(Transport& transport, int status, std::string_view message);
  void stop();
};

Status Server::Impl::listen() {
  auto bound = AULA_TRY(net::bindListener(options.listen, SOCK_STREAM));
  listener = std::move(bound.fd);
  port = bound.port;
  address = std::move(bound.address);
  wake = AULA_TRY(net::wakeFd());
  return okStatus();
}

void Server::Impl::acceptLoop() {
  while (!stopping.load()) {
    std::array<pollfd, 2> fds{{{listener.get(), POLLIN, 0}, {wake.get(), POLLIN, 0}}};
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(kReapInterval.count()));
    reap();
    if (ready <= 0 || fds[1].revents != 0) {
      continue;
    }
    if ((fds[0].revents & POLLIN) == 0) {
      continue;
    }
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    const int fd = ::accept4(listener.get(), reinterpret_cast<sockaddr*>(&peer), &length,
                             SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      const int error = errno;
      if (error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM) {
        if (Clock::now() - lastAcceptWarning > kWarningInterval) {
          log::warn("The server on {} cannot accept connections: {}.", address, errnoText(error));
          lastAcceptWarning = Clock::now();
        }
        pollfd waitWake{wake.get(), POLLIN, 0};
        ::poll(&waitWake, 1, static_cast<int>(kAcceptBackoff.count()));
      }
      continue;
    }
    admit(UniqueFd(fd), peer);
  }
}

void Server::Impl::admit(UniqueFd fd, const sockaddr_storage& peer) {
  const std::string remote = hostText(peer);
  if (active.load() >= options.maxConnections) {
    // A TLS client would read plain text as a broken handshake, so it only
    // sees the connection close.
    if (!tls) {
      const ServerResponse busy = ServerResponse::error(
          503, "unavailable", "The server has too many connections open; try again later.");
      const std::string bytes = responseHead(busy, 503, false, true) + busy.body;
      [[maybe_unused]] const ssize_t sent =
          ::send(fd.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    // At most one line in a while: a flood must not become a flood of logs.
    if (Clock::now() - lastCapWarning > kWarningInterval) {
      log::warn(
          "The server on {} refused a connection from {}: it has reached its limit of {} "
          "open connections.",
          address, remote, options.maxConnections);
      lastCapWarning = Clock::now();
    }
    return;
  }
  const int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  Connection* connection = nullptr;
  {
    std::lock_guard lock(mutex);
    connection = &connections.emplace_back();
    connection->fd = fd.get();
    connection->remoteAddress = remote;
  }
  ++active;
  try {
    connection->thread = std::thread([this, connection, raw = fd.get()] { run(*connection, raw); });
    fd.release();
  } catch (const std::system_error& e) {
    log::error("The server on {} cannot start a thread for a connection from {}: {}.", address,
               remote, e.what());
    --active;
    std::lock_guard lock(mutex);
    connections.pop_back();
  }
}

void Server::Impl::reap() {
  std::list<Connection> finished;
  {
    std::lock_guard lock(mutex);
    for (auto it = connections.begin(); it != connections.end();) {
      auto next = std::next(it);
      if (it->done) {
        finished.splice(finished.end(), connections, it);
      }
      it = next;
    }
  }
  for (Connection& connection : finished) {
    connection.thread.join();
  }
}

void Server::Impl::run(Connection& connection, int fd) {
  try {
    serve(connection, fd);
  } catch (const std::exception& e) {
    log::error("A connection from {} failed: {}.", connection.remoteAddress, e.what());
  } catch (...) {
    log::error("A connection from {} failed with an unknown exception.", connection.remoteAddress);
  }
  {
    // Closing under the lock: stop() must never shut down a descriptor
    // number that has been closed and reused.
    std::lock_guard lock(mutex);
    ::close(fd);
    connection.fd = -1;
    connection.done = true;
  }
  --active;
}

void Server::Impl::serve(Connection& connection, int fd) {
  std::unique_ptr<Transport> transport;
  PeerIdentity identity;
  if (tls) {
    auto tlsTransport = std::make_unique<TlsTransport>(fd, *tls);
    if (!tlsTransport->handshake(Clock::now() + options.requestTimeout, connection.remoteAddress)) {
      return;
    }
    identity = tlsTransport->identity();
    transport = std::move(tlsTransport);
  } else {
    transport = std::make_unique<PlainTransport>(fd);
  }

  RequestParser parser(
      {.maxHeaderBytes = options.maxHeaderBytes, .maxBodyBytes = options.maxBodyBytes});
  std::vector<char> buffer(kReadChunk);
  std::string_view received;
  // When the first byte of the request being read arrived; unset between
  // requests, when the idle timeout applies instead.
  std::optional<Clock::time_point> started;
  bool linger = false;
  while (!stopping.load()) {
    const RequestParser::State state = parser.feed(received);
    received = {};
    if (state == RequestParser::State::kNeedMore) {
      if (!started && !parser.idle()) {
        started = Clock::now();
      }
      const auto deadline =
          started ? *started + options.requestTimeout : Clock::now() + options.idleTimeout;
      std::size_t got = 0;
      const Io io = transport->read(buffer.data(), buffer.size(), got, deadline);
      if (io == Io::kOk) {
        received = std::string_view(buffer.data(), got);
        continue;
      }
      if (io == Io::kTimeout && started) {
        answerError(*transport, 408, "The request did not arrive in time.");
      }
      break;
    }
    if (state == RequestParser::State::kError) {
      log::debug("A request from {} was refused: {}", connection.remoteAddress,
                 parser.errorMessage());
      answerError(*transport, parser.errorStatus(), parser.errorMessage());
      linger = true;
      break;
    }

    ServerRequest request = parser.take();
    started.reset();
    request.remoteAddress = connection.remoteAddress;
    request.clientCommonName = identity.commonName;
    request.clientCertFingerprint = identity.fingerprint;
    {
      std::lock_guard lock(mutex);
      if (stopping.load()) {
        break;
      }
      connection.busy = true;
    }
    const bool keepOpen = respond(*transport, request, parser.closeAfter());
    {
      std::lock_guard lock(mutex);
      connection.busy = false;
    }
    if (!keepOpen) {
      break;
    }
  }
  transport->finish();
  if (linger) {
    lingerClose(fd);
  }
}

bool Server::Impl::respond(Transport& transport, ServerRequest& request, bool closeAfter) {
  ServerResponse response;
  try {
    response = handler(request);
  } catch (const std::exception& e) {
    log::error("The handler for {} {} threw an exception: {}", request.method, request.path,
               e.what());
    response = ServerResponse::error(500, "internal",
                                     "The server failed while handling the request; see its log.");
  } catch (...) {
    log::error("The handler for {} {} threw an unknown exception.", request.method, request.path);
    response = ServerResponse::error(500, "internal",
                                     "The server failed while handling the request; see its log.");
  }
  int status = response.status;
  if (status < 100 || status > 599) {
    log::error("The handler for {} {} answered with the invalid status {}.", request.method,
               request.path, status);
    response = ServerResponse::error(500, "internal",
                                     "The server failed while handling the request; see its log.");
    status = 500;
  }
  log::debug("{} {} {} -> {}", request.remoteAddress, request.method, request.path, status);

  const bool head = request.method == "HEAD";
  const auto deadline = Clock::now() + options.requestTimeout;
  if (response.stream) {
    // The body ends when the connection does.
    if (!transport.writeAll(responseHead(response, status, true, true), deadline) || head) {
      return false;
    }
    ConnectionStreamWriter writer(transport, stopping, options.requestTimeout);
    try {
      response.stream(writer);
    } catch (const std::exception& e) {
      log::error("The stream for {} {} threw an exception: {}", request.method, request.path,
                 e.what());
    } catch (...) {
      log::error("The stream for {} {} threw an unknown exception.", request.method, request.path);
    }
    return false;
  }

  const bool close = closeAfter || stopping.load();
  std::string bytes = responseHead(response, status, false, close);
  const bool hasBody = !head && status != 204 && status != 304;
  if (response.file) {
    if (!transport.writeAll(bytes, deadline))
      return false;
    if (hasBody && !transport.sendFile(response.file->fd->get(), response.file->offset,
                                       response.file->length, options.requestTimeout)) {
      return false;
    }
    return !close;
  }
  if (hasBody) {
    bytes += response.body;
  }
  return transport.writeAll(bytes, deadline) && !close;
}

void Server::Impl::answerError(Transport& transport, int status, std::string_view message) {
  const ServerResponse response = ServerResponse::error(status, errorCode(status), message);
  transport.writeAll(responseHead(response, status, false, true) + response.body,
                     Clock::now() + options.requestTimeout);
}

void Server::Impl::stop() {
  std::lock_guard stopLock(stopMutex);
  if (stopped) {
    return;
  }
  stopping.store(true);
  if (wake.get() >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(wake.get(), &one, sizeof(one));
  }
  if (acceptThread.joinable()) {
    acceptThread.join();
  }
  listener.reset();
  {
    // Connections waiting for a request are woken with their socket shut
    // down; busy ones finish their response and then see `stopping`.
    std::lock_guard lock(mutex);
    for (Connection& connection : connections) {
      if (!connection.busy && connection.fd >= 0) {
        ::shutdown(connection.fd, SHUT_RDWR);
      }
    }
  }
  // The accept thread is gone, so nothing else changes the list now.
  for (Connection& connection : connections) {
    if (connection.thread.joinable()) {
      connection.thread.join();
    }
  }
  connections.clear();
  stopped = true;
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Handler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  if (impl->options.tls) {
    impl->tls = AULA_TRY(makeTlsState(*impl->options.tls));
  }
  AULA_TRY_STATUS(impl->listen());
  Impl* raw = impl.get();
  impl->acceptThread = std::thread([raw] { raw->acceptLoop(); });
  log::info("Listening on {} ({}).", impl->address, impl->tls ? "HTTPS" : "HTTP");
  std::unique_ptr<Server> server(new Server());
  server->impl_ = std::move(impl);
  return server;
}

Server::~Server() {
  stop();
}

int Server::port() const {
  return impl_->port;
}

std::string Server::address() const {
  return impl_->address;
}

void Server::stop() {
  if (impl_) {
    impl_->stop();
  }
}

std::size_t Server::activeConnections() const {
  return impl_->active.load();
}

}  // namespace aula::http
