// An HTTPS server on 127.0.0.1 for tests of TLS clients, on mbedTLS.
//
// It presents a given certificate chain, can require a client certificate from
// a given CA, answers every request with a canned body and `Connection: close`,
// and records what it saw: the last request, the CN of the last client
// certificate, and why the last failed handshake failed. It serves one
// connection at a time on its own thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "aula/common/result.hpp"

namespace aula::test {

struct TlsTestServerOptions {
  std::string certChainPem;  // the server's certificate, optionally followed by its CA
  std::string keyPem;        // the server certificate's private key
  // When set, a client must present a certificate issued by this CA.
  std::optional<std::string> clientCaPem;
  std::string responseBody = "ok";
};

class TlsTestServer {
 public:
  // Binds 127.0.0.1 on a free port and starts serving. Errors: kParse for a
  // PEM that does not parse, kIo for a socket that cannot be set up.
  static Result<std::unique_ptr<TlsTestServer>> start(TlsTestServerOptions options);

  ~TlsTestServer();
  TlsTestServer(const TlsTestServer&) = delete;
  TlsTestServer& operator=(const TlsTestServer&) = delete;

  std::uint16_t port() const;
  // "https://127.0.0.1:<port><path>"
  std::string url(std::string_view path = "/") const;

  // Stops accepting, ends the connection in progress and joins the thread.
  // Idempotent; the destructor calls it.
  void stop();

  // Why the most recent failed handshake failed (empty if none has failed).
  std::string lastHandshakeError() const;
  // The most recent request as received: request line, headers and body.
  std::string lastRequest() const;
  // The CN of the certificate the client of the most recent successful
  // handshake presented, or empty if it presented none.
  std::string lastClientSubject() const;
  // Connections finished so far, whether the handshake succeeded or not.
  std::size_t connections() const;
  // Waits until at least `count` connections have finished; false on timeout.
  // A client sees a refused handshake before the server has recorded it, so
  // tests wait for this before reading lastHandshakeError().
  bool waitForConnections(std::size_t count, std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  explicit TlsTestServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::test
