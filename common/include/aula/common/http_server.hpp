// An HTTP/1.1 server over TLS (mbedTLS) or plain TCP, for the broker's API and
// the agent's mutual-TLS endpoint.
//
// One thread per connection (keep-alive, idle timeout, a cap on connections);
// handlers run on the connection's thread. Requests are parsed by
// RequestParser, which is also the fuzz target: it never trusts a length,
// limits the head and the body, and answers a malformed request with 400,
// an oversized one with 413 or 431, then closes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/file.hpp"
#include "aula/common/result.hpp"

namespace aula::http {

struct ServerRequest {
  std::string method;  // "GET", ...
  std::string target;  // as sent: "/api/v1/desktops?owner=x"
  std::string path;    // percent-decoded path without the query: "/api/v1/desktops"
  std::map<std::string, std::string> query;         // decoded query parameters
  std::multimap<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string remoteAddress;  // "127.0.0.1" or "::1"
  // Set when the peer presented a certificate that verified against the
  // server's client CA.
  std::optional<std::string> clientCommonName;
  std::optional<std::string> clientCertFingerprint;  // "AB:CD:..." (crypto::certificateFingerprint)
  std::map<std::string, std::string> pathParams;     // filled by Router: "{id}" -> value

  // The first value of a header (name in any case), or empty.
  std::string header(std::string_view name) const;
};

// Handed to a streaming response (server-sent events): write chunks until
// write() returns false (the peer left) or stopping() is true (the server stops).
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  virtual bool write(std::string_view data) = 0;
  virtual bool stopping() const = 0;
};

// A body read from an open file: `length` bytes from `offset`. The server
// sends it with sendfile(2) on plain HTTP and in chunks over TLS; the
// descriptor is closed when the last copy of the response goes.
struct FileBody {
  std::shared_ptr<const file::UniqueFd> fd;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

struct ServerResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // When set, the body is this file's bytes instead of `body`.
  std::optional<FileBody> file;
  // When set, the server sends the status and headers without a
  // Content-Length, then calls stream() on the connection's thread; the
  // connection closes when it returns.
  std::function<void(StreamWriter&)> stream;

  static ServerResponse json(int status, std::string body);
  static ServerResponse text(int status, std::string body,
                             std::string contentType = "text/plain; charset=utf-8");
  // {"error":{"code":"<code>","message":"<message>"}}
  static ServerResponse error(int status, std::string_view code, std::string_view message);
};

using Handler = std::function<ServerResponse(ServerRequest&)>;

// Serving a file the way caches and download tools expect: a strong ETag,
// Last-Modified, conditional GET (If-None-Match: 304), one byte range
// (Range: 206, or 416 with the size when it lies past the end; If-Range
// with a stale tag gets the whole file; several ranges get the whole file,
// as RFC 9110 allows), HEAD, and the Cache-Control given.
struct FileServeOptions {
  std::string contentType = "application/octet-stream";
  std::string cacheControl = "no-cache";
  // The entity tag, quoted ("\"abc\""); empty: made from the size and mtime.
  std::string etag;
};

// The response for GET or HEAD of `path`; 404 (JSON error) when it is not a
// regular file that can be opened.
ServerResponse serveFile(const ServerRequest& request, const std::filesystem::path& path,
                         const FileServeOptions& options = {});

// One "Range: bytes=..." header against a file of `size` bytes.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t length = 0;
};
enum class RangeResult { kWhole, kPartial, kUnsatisfiable };
RangeResult parseRange(std::string_view header, std::uint64_t size, ByteRange& range);

// The HTTP status that answers an Error of this code (400 invalid, 404 not
// found, 409 conflict, 503 unavailable, ...).
int httpStatusFor(Errc code);

// Routes by method and path pattern; "{name}" matches one path segment.
// Unknown path: 404; known path, other method: 405 with Allow. Both with the
// JSON error body.
class Router {
 public:
  void add(std::string method, std::string pattern, Handler handler);
  ServerResponse dispatch(ServerRequest& request) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  std::vector<Route> routes_;
};

struct ServerTls {
  std::string certChainPem;  // the server's certificate, then its CA (so fingerprint pinning works)
  std::string keyPem;
  std::optional<std::string> clientCaPem;  // verify client certificates against this CA
  bool requireClientCert = false;          // refuse the handshake without one
};

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // "ADDR:PORT", "[::1]:PORT"; port 0 picks a free port
  std::optional<ServerTls> tls;        // none: plain HTTP (tests, behind a proxy)
  std::size_t maxHeaderBytes = std::size_t{16} * 1024;
  std::size_t maxBodyBytes = std::size_t{1024} * 1024;
  std::chrono::milliseconds idleTimeout{30000};     // keep-alive connection with no request
  std::chrono::milliseconds requestTimeout{30000};  // one request's head + body, once started
  std::size_t maxConnections = 4096;
};

class Server {
 public:
  // Binds and starts accepting. Errors: kInvalidArgument (bad address or
  // TLS material), kIo (bind: the message names the address and errno).
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Handler handler);
  ~Server();  // stops

  int port() const;
  std::string address() const;  // "127.0.0.1:43121"
  // Stops accepting, asks streams to end, closes idle connections and waits
  // for in-flight requests to finish.
  void stop();
  std::size_t activeConnections() const;

 private:
  Server() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- parsing (exposed for tests and the fuzz target) ----

struct ParseLimits {
  std::size_t maxHeaderBytes = std::size_t{16} * 1024;
  std::size_t maxBodyBytes = std::size_t{1024} * 1024;
};

// Incremental parser for one request at a time on a connection.
class RequestParser {
 public:
  enum class State { kNeedMore, kComplete, kError };

  explicit RequestParser(ParseLimits limits = {}) : limits_(limits) {}

  // Appends bytes; returns the new state. After kComplete, take() the request
  // and call feed({}) to parse pipelined bytes already buffered.
  State feed(std::string_view bytes);
  ServerRequest take();
  // On kError: the status to answer (400, 413, 431, 501, 505) and a sentence.
  int errorStatus() const { return errorStatus_; }
  const std::string& errorMessage() const { return errorMessage_; }
  // The request asked to close the connection after the response (HTTP/1.0 or Connection: close).
  bool closeAfter() const { return closeAfter_; }
  bool idle() const { return buffer_.empty() && !inBody_; }

 private:
  State fail(int status, std::string message);
  State parseHead(std::size_t headEnd);

  ParseLimits limits_;
  std::string buffer_;
  std::size_t scanned_ = 0;  // bytes of buffer_ already searched for the end of the head
  ServerRequest current_;
  bool inBody_ = false;
  std::size_t bodyLength_ = 0;
  bool closeAfter_ = false;
  int errorStatus_ = 0;
  std::string errorMessage_;
  State state_ = State::kNeedMore;
};

// Percent-decodes; false on a malformed escape.
bool urlDecode(std::string_view in, std::string& out, bool plusIsSpace);

// Decodes a query ("a=1&b=x%20y", without the '?') into `out`; the first of
// repeated parameters wins. An error (kInvalidArgument) for a malformed
// percent escape or a NUL byte.
Status parseQuery(std::string_view query, std::map<std::string, std::string>& out);

}  // namespace aula::http
