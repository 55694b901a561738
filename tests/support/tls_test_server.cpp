// An HTTPS server on 127.0.0.1 for tests of TLS clients (see tls_test_server.hpp):
// POSIX sockets, mbedTLS over our own send/recv callbacks, one thread.
#include "support/tls_test_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"
#include "aula/common/mbedtls_handle.hpp"

namespace aula::test {
namespace {

using tls::CtrDrbgContext;
using tls::EntropyContext;
using tls::PkContext;
using tls::SslConfig;
using tls::SslContext;
using tls::TicketContext;
using tls::X509Crt;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }

  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_ = -1;
};

// Long enough for a slow CI machine, short enough that a client that hangs
// mid-request cannot stall a test for long.
constexpr int kIoTimeoutSeconds = 5;
constexpr std::chrono::milliseconds kAcceptPoll{50};
constexpr std::chrono::milliseconds kLingerTime{1000};
constexpr std::size_t kMaxRequestBytes = std::size_t{1024} * 1024;

int parsePem(mbedtls_x509_crt* crt, const std::string& pem) {
  return mbedtls_x509_crt_parse(crt, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                pem.size() + 1);
}

std::string mbedtlsMessage(int rc) {
  std::array<char, 256> text{};
  mbedtls_strerror(rc, text.data(), text.size());
  return fmt::format("{} (-0x{:04x})", text.data(), -rc);
}

// The C callbacks mbedTLS calls. None of them may throw.
int randomCallback(void* /*unused*/, unsigned char* out, std::size_t size) {
  try {
    const auto bytes = crypto::randomBytes(size);
    if (!bytes.ok()) {
      return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
    std::copy(bytes->begin(), bytes->end(), out);
    return 0;
  } catch (...) {
    return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
  }
}

int sendCallback(void* context, const unsigned char* data, std::size_t size) {
  const int fd = *static_cast<const int*>(context);
  const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
  if (sent >= 0) {
    return static_cast<int>(sent);
  }
  if (errno == EINTR) {
    return MBEDTLS_ERR_SSL_WANT_WRITE;
  }
  return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                               : MBEDTLS_ERR_NET_SEND_FAILED;
}

int recvCallback(void* context, unsigned char* data, std::size_t size) {
  const int fd = *static_cast<const int*>(context);
  const ssize_t received = ::recv(fd, data, size, 0);
  if (received >= 0) {
    return static_cast<int>(received);  // 0 is the peer's end of stream
  }
  if (errno == EINTR) {
    return MBEDTLS_ERR_SSL_WANT_READ;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return MBEDTLS_ERR_SSL_TIMEOUT;  // SO_RCVTIMEO ran out
  }
  return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

// Closing a socket with unread input makes the kernel send a reset, which can
// overtake the alert just sent: a client refused for its certificate would see
// "connection reset" instead of why. So the write side is shut first, and what
// the client still sends is read and dropped until it closes too (bounded).
void lingeringClose(int fd) {
  ::shutdown(fd, SHUT_WR);
  const auto deadline = std::chrono::steady_clock::now() + kLingerTime;
  std::array<char, 4096> sink{};
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(kLingerTime.count())) <= 0) {
      return;
    }
    if (::recv(fd, sink.data(), sink.size(), 0) <= 0) {
      return;
    }
  }
}

std::string commonName(const mbedtls_x509_crt& crt) {
  for (const mbedtls_x509_name* name = &crt.subject; name != nullptr; name = name->next) {
    if (name->oid.p != nullptr && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &name->oid) == 0) {
      return {reinterpret_cast<const char*>(name->val.p), name->val.len};
    }
  }
  return {};
}

// The body length a request announces, or 0.
std::size_t contentLength(std::string_view head) {
  std::string lower(head);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static constexpr std::string_view kHeader = "\r\ncontent-length:";
  const std::size_t at = lower.find(kHeader);
  if (at == std::string::npos) {
    return 0;
  }
  std::size_t i = at + kHeader.size();
  while (i < lower.size() && lower[i] == ' ') {
    ++i;
  }
  std::size_t length = 0;
  while (i < lower.size() && std::isdigit(static_cast<unsigned char>(lower[i])) != 0) {
    length = length * 10 + static_cast<std::size_t>(lower[i] - '0');
    if (length > kMaxRequestBytes) {
      return kMaxRequestBytes;
    }
    ++i;
  }
  return length;
}

}  // namespace

struct TlsTestServer::Impl {
  TlsTestServerOptions options;
  SslConfig config;
  X509Crt chain;
  PkContext key;
  X509Crt clientCa;
  UniqueFd listener;
  std::uint16_t port = 0;
  std::atomic<bool> stopping{false};
  std::thread thread;

  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  int activeFd = -1;  // the connection being served, so stop() can cut it short
  std::string lastHandshakeError;
  std::string lastRequest;
  std::string lastClientSubject;
  std::size_t connections = 0;

  Status configure();
  Status listen();
  void run();
  void serve(int fd);
  void record(std::string* field, std::string value) {
    std::lock_guard lock(mutex);
    *field = std::move(value);
  }
};

Status TlsTestServer::Impl::configure() {
  int rc = parsePem(chain.get(), options.certChainPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The test server's certificate chain is not valid PEM.", rc);
  }
  rc = mbedtls_pk_parse_key(key.get(),
                            reinterpret_cast<const unsigned char*>(options.keyPem.c_str()),
                            options.keyPem.size() + 1, nullptr, 0);
  if (rc != 0) {
    return Error(Errc::kParse, "The test server's private key is not valid PEM.", rc);
  }
  rc = mbedtls_ssl_config_defaults(config.get(), MBEDTLS_SSL_IS_SERVER,
                                   MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc != 0) {
    return Error(Errc::kInternal, "The test server's TLS configuration could not be set up.", rc);
  }
  mbedtls_ssl_conf_rng(config.get(), randomCallback, nullptr);
  mbedtls_ssl_conf_min_version(config.get(), MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  rc = mbedtls_ssl_conf_own_cert(config.get(), chain.get(), key.get());
  if (rc != 0) {
    return Error(Errc::kInternal, "The test server's certificate could not be installed.", rc);
  }
  if (options.clientCaPem) {
    rc = parsePem(clientCa.get(), *options.clientCaPem);
    if (rc != 0) {
      return Error(Errc::kParse, "The test server's client CA is not valid PEM.", rc);
    }
    mbedtls_ssl_conf_ca_chain(config.get(), clientCa.get(), nullptr);
    mbedtls_ssl_conf_authmode(config.get(), MBEDTLS_SSL_VERIFY_REQUIRED);
  } else {
    mbedtls_ssl_conf_authmode(config.get(), MBEDTLS_SSL_VERIFY_NONE);
  }
  return okStatus();
}

Status TlsTestServer::Impl::listen() {
  listener = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.get() < 0) {
    return Error(Errc::kIo, "The test server could not create a socket.", errno);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;  // the kernel picks a free port
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return Error(Errc::kIo, "The test server could not bind 127.0.0.1.", errno);
  }
  if (::listen(listener.get(), 16) != 0) {
    return Error(Errc::kIo, "The test server could not listen on its socket.", errno);
  }
  socklen_t length = sizeof(address);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return Error(Errc::kIo, "The test server could not learn the port it was given.", errno);
  }
  port = ntohs(address.sin_port);
  return okStatus();
}

void TlsTestServer::Impl::run() {
  // Polling with a short timeout lets stop() end the loop with a flag alone.
  while (!stopping.load()) {
    pollfd entry{listener.get(), POLLIN, 0};
    const int ready = ::poll(&entry, 1, static_cast<int>(kAcceptPoll.count()));
    if (ready <= 0) {
      continue;
    }
    UniqueFd connection(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (connection.get() < 0) {
      continue;
    }
    const timeval timeout{kIoTimeoutSeconds, 0};
    ::setsockopt(connection.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(connection.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    {
      std::lock_guard lock(mutex);
      activeFd = connection.get();
    }
    serve(connection.get());
    lingeringClose(connection.get());
    {
      std::lock_guard lock(mutex);
      activeFd = -1;
      ++connections;
    }
    connection.reset();
    changed.notify_all();
  }
}

void TlsTestServer::Impl::serve(int fd) {
  SslContext ssl;
  int rc = mbedtls_ssl_setup(ssl.get(), config.get());
  if (rc != 0) {
    record(&lastHandshakeError, "mbedtls_ssl_setup failed: " + mbedtlsMessage(rc));
    return;
  }
  mbedtls_ssl_set_bio(ssl.get(), &fd, sendCallback, recvCallback, nullptr);

  do {
    rc = mbedtls_ssl_handshake(ssl.get());
  } while ((rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) &&
           !stopping.load());
  if (rc != 0) {
    std::string reason = mbedtlsMessage(rc);
    const std::uint32_t flags = mbedtls_ssl_get_verify_result(ssl.get());
    if (flags != 0 && flags != static_cast<std::uint32_t>(-1)) {
      std::array<char, 512> info{};
      mbedtls_x509_crt_verify_info(info.data(), info.size(), "", flags);
      reason += "; client certificate: ";
      reason += info.data();
      while (!reason.empty() && reason.back() == '\n') {
        reason.pop_back();
      }
    }
    record(&lastHandshakeError, std::move(reason));
    return;
  }
  const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(ssl.get());
  record(&lastClientSubject, peer != nullptr ? commonName(*peer) : std::string());

  std::string request;
  std::size_t wanted = 0;  // the whole request's length, once the head is in
  std::array<unsigned char, 4096> chunk{};
  while (wanted == 0 || request.size() < wanted) {
    rc = mbedtls_ssl_read(ssl.get(), chunk.data(), chunk.size());
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (stopping.load()) {
        return;
      }
      continue;
    }
    if (rc <= 0) {
      break;  // closed or failed before the request was complete: record what came
    }
    request.append(reinterpret_cast<const char*>(chunk.data()), static_cast<std::size_t>(rc));
    const std::size_t headEnd = request.find("\r\n\r\n");
    if (wanted == 0 && headEnd != std::string::npos) {
      wanted = headEnd + 4 + contentLength(std::string_view(request).substr(0, headEnd));
    }
    if (request.size() > kMaxRequestBytes) {
      break;
    }
  }
  record(&lastRequest, request);

  const std::string response = fmt::format(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n{}",
      options.responseBody.size(), options.responseBody);
  std::size_t written = 0;
  while (written < response.size()) {
    rc = mbedtls_ssl_write(ssl.get(),
                           reinterpret_cast<const unsigned char*>(response.data()) + written,
                           response.size() - written);
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (stopping.load()) {
        return;
      }
      continue;
    }
    if (rc < 0) {
      return;
    }
    written += static_cast<std::size_t>(rc);
  }
  mbedtls_ssl_close_notify(ssl.get());
}

Result<std::unique_ptr<TlsTestServer>> TlsTestServer::start(TlsTestServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  AULA_TRY_STATUS(impl->configure());
  AULA_TRY_STATUS(impl->listen());
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<TlsTestServer>(new TlsTestServer(std::move(impl)));
}

TlsTestServer::TlsTestServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TlsTestServer::~TlsTestServer() {
  stop();
}

std::uint16_t TlsTestServer::port() const {
  return impl_->port;
}

std::string TlsTestServer::url(std::string_view path) const {
  return fmt::format("https://127.0.0.1:{}{}", impl_->port, path);
}

void TlsTestServer::stop() {
  impl_->stopping.store(true);
  {
    // Wakes a serve() blocked in recv() on a client that went quiet.
    std::lock_guard lock(impl_->mutex);
    if (impl_->activeFd >= 0) {
      ::shutdown(impl_->activeFd, SHUT_RDWR);
    }
  }
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  }
  impl_->listener.reset();
}

std::string TlsTestServer::lastHandshakeError() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->lastHandshakeError;
}

std::string TlsTestServer::lastRequest() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->lastRequest;
}

std::string TlsTestServer::lastClientSubject() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->lastClientSubject;
}

std::size_t TlsTestServer::connections() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connections;
}

bool TlsTestServer::waitForConnections(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->connections >= count; });
}

}  // namespace aula::test
