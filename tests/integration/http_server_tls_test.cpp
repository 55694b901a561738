// The HTTP server on real sockets (127.0.0.1, port 0): plain HTTP with
// keep-alive, HTTPS trusted by CA or by CA fingerprint, mutual TLS, limits,
// handler failures, streaming, timeouts, and a stop() that does not hang.
#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"
#include "aula/common/http_client.hpp"
#include "aula/common/http_server.hpp"

#include "support/temp_dir.hpp"

namespace aula::http {
namespace {

using test::TempDir;
using test::writeFile;

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// ---- helpers -----------------------------------------------------------------

// A blocking loopback client socket for what curl will not send.
class RawSocket {
 public:
  explicit RawSocket(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~RawSocket() { ::close(fd_); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view data) {
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }

  // Reads until `done` says enough, the peer closes, or `timeout` passes.
  std::string readUntil(const std::function<bool(const std::string&)>& done,
                        std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!done(received_) && !closed_) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left <= 0ms) {
        break;
      }
      pollfd entry{fd_, POLLIN, 0};
      if (::poll(&entry, 1, static_cast<int>(left.count())) <= 0) {
        continue;
      }
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      received_.append(buffer, static_cast<std::size_t>(n));
    }
    return received_;
  }

  std::string readAll(std::chrono::milliseconds timeout = 5s) {
    return readUntil([](const std::string&) { return false; }, timeout);
  }

  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string received_;
};

std::string urlFor(const Server& server, std::string_view scheme, std::string_view path) {
  return fmt::format("{}://127.0.0.1:{}{}", scheme, server.port(), path);
}

std::unique_ptr<Server> startServer(ServerOptions options, Handler handler) {
  auto server = Server::start(std::move(options), std::move(handler));
  if (!server.ok()) {
    ADD_FAILURE() << server.error().message();
    return nullptr;
  }
  return std::move(server).value();
}

Handler echoHandler() {
  auto router = std::make_shared<Router>();
  router->add("GET", "/hello", [](ServerRequest& request) {
    return ServerResponse::text(200, fmt::format("hello {}", request.query["name"]));
  });
  router->add("POST", "/echo",
              [](ServerRequest& request) { return ServerResponse::json(200, request.body); });
  router->add("GET", "/whoami", [](ServerRequest& request) {
    nlohmann::json body = {
        {"remote", request.remoteAddress},
        {"cn", request.clientCommonName.value_or("")},
        {"fingerprint", request.clientCertFingerprint.value_or("")},
    };
    return ServerResponse::json(200, body.dump());
  });
  router->add("GET", "/throw",
              [](ServerRequest&) -> ServerResponse { throw std::runtime_error("boom"); });
  return [router](ServerRequest& request) { return router->dispatch(request); };
}

// One CA, a server certificate for 127.0.0.1, client certificates.
struct Pki {
  crypto::Certificate ca;
  crypto::Certificate server;
  crypto::Certificate client;
  crypto::Certificate otherCa;
  crypto::Certificate otherClient;

  Pki() {
    ca = crypto::createCa("Aula Test CA").value();
    server = crypto::issueCertificate(ca, {.commonName = "broker",
                                           .ipAddresses = {"127.0.0.1"},
                                           .usage = crypto::CertUsage::kServer})
                 .value();
    client =
        crypto::issueCertificate(ca, {.commonName = "agent-7", .usage = crypto::CertUsage::kClient})
            .value();
    otherCa = crypto::createCa("Someone Else's CA").value();
    otherClient = crypto::issueCertificate(
                      otherCa, {.commonName = "agent-7", .usage = crypto::CertUsage::kClient})
                      .value();
  }

  ServerTls serverTls() const {
    return {.certChainPem = server.certPem + ca.certPem, .keyPem = server.keyPem};
  }
};

const Pki& pki() {
  static const Pki instance;
  return instance;
}

// ---- plain HTTP -----------------------------------------------------------------

TEST(HttpServerTest, ServesGetAndPostOnOneKeptAliveConnection) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  EXPECT_EQ(server->address(), fmt::format("127.0.0.1:{}", server->port()));

  Client client;
  for (int i = 0; i < 3; ++i) {
    auto get = client.get(urlFor(*server, "http", fmt::format("/hello?name=n{}", i)));
    ASSERT_TRUE(get.ok()) << get.error().message();
    EXPECT_EQ(get->status, 200);
    EXPECT_EQ(get->body, fmt::format("hello n{}", i));
    EXPECT_EQ(get->header("content-type"), "text/plain; charset=utf-8");
    EXPECT_EQ(get->header("connection"), "keep-alive");

    auto post = client.postJson(urlFor(*server, "http", "/echo"), R"({"n":1})");
    ASSERT_TRUE(post.ok()) << post.error().message();
    EXPECT_EQ(post->status, 200);
    EXPECT_EQ(post->body, R"({"n":1})");
    EXPECT_EQ(post->header("content-type"), "application/json");
  }
  // Six requests, one connection still open.
  EXPECT_EQ(server->activeConnections(), 1U);

  auto whoami = client.get(urlFor(*server, "http", "/whoami"));
  ASSERT_TRUE(whoami.ok());
  auto body = nlohmann::json::parse(whoami->body);
  EXPECT_EQ(body["remote"], "127.0.0.1");
  EXPECT_EQ(body["cn"], "") << "no TLS, no client identity";
}

TEST(HttpServerTest, RouterErrorsReachTheClient) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  Client client;
  auto missing = client.get(urlFor(*server, "http", "/nowhere"));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body,
            R"({"error":{"code":"not_found","message":"No resource at /nowhere."}})");

  auto wrongMethod = client.send({.method = "DELETE", .url = urlFor(*server, "http", "/echo")});
  ASSERT_TRUE(wrongMethod.ok());
  EXPECT_EQ(wrongMethod->status, 405);
  EXPECT_EQ(wrongMethod->header("allow"), "POST");
}

TEST(HttpServerTest, HeadSendsLengthButNoBody) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(socket.send("HEAD /hello?name=x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  const std::string response = socket.readAll();
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Length: 7\r\n"));
  EXPECT_THAT(response, HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(response.ends_with("\r\n\r\n")) << response;
}

TEST(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(
      socket.send("GET /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                  "GET /hello?name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  const std::string response = socket.readAll();
  const auto a = response.find("hello a");
  const auto echo = response.find("\r\n\r\n{}");
  const auto b = response.find("hello b");
  ASSERT_NE(a, std::string::npos) << response;
  ASSERT_NE(echo, std::string::npos) << response;
  ASSERT_NE(b, std::string::npos) << response;
  EXPECT_LT(a, echo);
  EXPECT_LT(echo, b);
  EXPECT_TRUE(socket.closed());
}

TEST(HttpServerTest, OversizedBodyIs413) {
  auto server = startServer({.maxBodyBytes = 1024}, echoHandler());
  ASSERT_TRUE(server);
  Client client;
  auto response = client.postJson(urlFor(*server, "http", "/echo"), std::string(4096, 'x'));
  ASSERT_TRUE(response.ok()) << response.error().message();
  EXPECT_EQ(response->status, 413);
  auto body = nlohmann::json::parse(response->body);
  EXPECT_EQ(body["error"]["code"], "payload_too_large");
  EXPECT_EQ(body["error"]["message"], "The request body is larger than the limit of 1024 bytes.");

  // The client can go on with a new connection.
  auto next = client.postJson(urlFor(*server, "http", "/echo"), "{}");
  ASSERT_TRUE(next.ok()) << next.error().message();
  EXPECT_EQ(next->status, 200);
}

TEST(HttpServerTest, MalformedRequestGetsJsonErrorAndClose) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(socket.send("GET / HTTP/2.0\r\n\r\n"));
  const std::string response = socket.readAll();
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 505 HTTP Version Not Supported\r\n"));
  EXPECT_THAT(response, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(response, HasSubstr(R"("code":"http_version_not_supported")"));
  EXPECT_TRUE(socket.closed());
}

TEST(HttpServerTest, ThrowingHandlerIs500AndTheServerGoesOn) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  Client client;
  auto thrown = client.get(urlFor(*server, "http", "/throw"));
  ASSERT_TRUE(thrown.ok()) << thrown.error().message();
  EXPECT_EQ(thrown->status, 500);
  auto body = nlohmann::json::parse(thrown->body);
  EXPECT_EQ(body["error"]["code"], "internal");
  EXPECT_EQ(body["error"]["message"].get<std::string>().find("boom"), std::string::npos)
      << "the exception's text stays in the log";

  auto next = client.get(urlFor(*server, "http", "/hello?name=again"));
  ASSERT_TRUE(next.ok()) << next.error().message();
  EXPECT_EQ(next->body, "hello again");
}

TEST(HttpServerTest, SlowRequestIs408) {
  auto server = startServer({.requestTimeout = 300ms}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(socket.send("GET /hello HTTP/1.1\r\nHost: x\r\n"));
  const auto begin = Clock::now();
  const std::string response = socket.readAll(5s);
  EXPECT_LT(Clock::now() - begin, 3s);
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 408 Request Timeout\r\n"));
  EXPECT_THAT(response, HasSubstr(R"("code":"request_timeout")"));
  EXPECT_TRUE(socket.closed());
}

TEST(HttpServerTest, IdleConnectionIsClosedSilently) {
  auto server = startServer({.idleTimeout = 300ms}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(socket.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string first =
      socket.readUntil([](const std::string& s) { return s.ends_with("hello "); }, 5s);
  ASSERT_TRUE(first.ends_with("hello ")) << first;
  const std::string all = socket.readAll(5s);
  EXPECT_TRUE(socket.closed());
  EXPECT_EQ(all, first) << "nothing is written when an idle connection times out";
}

TEST(HttpServerTest, OverTheConnectionCapIs503) {
  auto server = startServer({.maxConnections = 1}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket first(server->port());
  ASSERT_TRUE(first.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  first.readUntil([](const std::string& s) { return s.ends_with("hello "); }, 5s);
  ASSERT_EQ(server->activeConnections(), 1U);

  RawSocket second(server->port());
  const std::string response = second.readAll(5s);
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_THAT(response, HasSubstr(R"("code":"unavailable")"));
}

TEST(HttpServerTest, StreamDeliversChunksAndStopEndsIt) {
  std::atomic<bool> streamEnded{false};
  auto server = startServer({}, [&](ServerRequest&) {
    ServerResponse response;
    response.headers.emplace_back("Content-Type", "text/event-stream");
    response.stream = [&](StreamWriter& writer) {
      for (int i = 0; !writer.stopping(); ++i) {
        if (!writer.write(fmt::format("data: {}\n\n", i))) {
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
      streamEnded = true;
    };
    return response;
  });
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(socket.send("GET /events HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string start = socket.readUntil(
      [](const std::string& s) { return s.find("data: 2\n\n") != std::string::npos; }, 5s);
  EXPECT_THAT(start, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(start, HasSubstr("Content-Type: text/event-stream\r\n"));
  EXPECT_THAT(start, HasSubstr("Cache-Control: no-cache\r\n"));
  EXPECT_THAT(start, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(start, ::testing::Not(HasSubstr("Content-Length")));
  EXPECT_THAT(start, HasSubstr("data: 0\n\ndata: 1\n\ndata: 2\n\n"));

  const auto begin = Clock::now();
  server->stop();
  EXPECT_LT(Clock::now() - begin, 1s);
  EXPECT_TRUE(streamEnded);
  socket.readAll(2s);
  EXPECT_TRUE(socket.closed());
}

TEST(HttpServerTest, StreamEndsWhenThePeerLeaves) {
  std::atomic<bool> writeFailed{false};
  auto server = startServer({}, [&](ServerRequest&) {
    ServerResponse response;
    response.stream = [&](StreamWriter& writer) {
      const std::string chunk(4096, 'x');
      while (!writer.stopping()) {
        if (!writer.write(chunk)) {
          writeFailed = true;
          return;
        }
      }
    };
    return response;
  });
  ASSERT_TRUE(server);
  {
    RawSocket socket(server->port());
    ASSERT_TRUE(socket.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    socket.readUntil([](const std::string& s) { return s.size() > 10000; }, 5s);
  }
  const auto deadline = Clock::now() + 5s;
  while (!writeFailed && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(writeFailed) << "a peer that left makes write() false, without SIGPIPE";
}

TEST(HttpServerTest, StopWithAnIdleKeepAliveConnectionIsPrompt) {
  auto server = startServer({}, echoHandler());
  ASSERT_TRUE(server);
  Client client;
  auto response = client.get(urlFor(*server, "http", "/hello"));
  ASSERT_TRUE(response.ok());
  ASSERT_EQ(server->activeConnections(), 1U);
  const auto begin = Clock::now();
  server->stop();
  EXPECT_LT(Clock::now() - begin, 1s);
  EXPECT_EQ(server->activeConnections(), 0U);
  server->stop();  // idempotent

  auto after = client.get(urlFor(*server, "http", "/hello"));
  EXPECT_FALSE(after.ok()) << "nothing listens after stop()";
}

TEST(HttpServerTest, StopWaitsForAnInFlightRequest) {
  std::atomic<bool> entered{false};
  auto server = startServer({}, [&](ServerRequest&) {
    entered = true;
    std::this_thread::sleep_for(300ms);
    return ServerResponse::text(200, "finished");
  });
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  ASSERT_TRUE(socket.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  while (!entered) {
    std::this_thread::sleep_for(5ms);
  }
  server->stop();
  const std::string response = socket.readAll(2s);
  EXPECT_THAT(response, HasSubstr("Connection: close\r\n"));
  EXPECT_TRUE(response.ends_with("finished")) << response;
}

TEST(HttpServerTest, BadListenAddressesAreRefused) {
  for (const char* listen : {"127.0.0.1", "localhost:80", "127.0.0.1:70000", "[::1:80", "::1:80",
                             "127.0.0.1:", "1.2.3:80", "127.0.0.1:8x"}) {
    auto server = Server::start({.listen = listen}, echoHandler());
    ASSERT_FALSE(server.ok()) << listen;
    EXPECT_EQ(server.error().code(), Errc::kInvalidArgument);
    EXPECT_THAT(server.error().message(), HasSubstr(fmt::format("'{}'", listen)));
  }
}

TEST(HttpServerTest, PortInUseIsAnIoErrorNamingTheAddress) {
  auto first = startServer({}, echoHandler());
  ASSERT_TRUE(first);
  auto second = Server::start({.listen = first->address()}, echoHandler());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), Errc::kIo);
  EXPECT_THAT(second.error().message(), HasSubstr(first->address()));
  EXPECT_NE(second.error().native(), 0);
}

TEST(HttpServerTest, ListensOnIpv6Loopback) {
  auto server = Server::start({.listen = "[::1]:0"}, echoHandler());
  if (!server.ok()) {
    GTEST_SKIP() << "No IPv6 loopback here: " << server.error().message();
  }
  EXPECT_EQ((*server)->address(), fmt::format("[::1]:{}", (*server)->port()));
  Client client;
  auto response = client.get(fmt::format("http://[::1]:{}/whoami", (*server)->port()));
  ASSERT_TRUE(response.ok()) << response.error().message();
  EXPECT_EQ(nlohmann::json::parse(response->body)["remote"], "::1");
}

// ---- files ----------------------------------------------------------------------

// A file of `size` bytes that differ from their neighbours, so a range from
// the wrong offset shows.
std::string patterned(std::size_t size) {
  std::string data(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    data[i] = static_cast<char>((i * 7 + i / 251) & 0xff);
  return data;
}

Handler fileHandler(const std::filesystem::path& path) {
  return [path](ServerRequest& request) {
    return serveFile(request, path, {.cacheControl = "public, max-age=60"});
  };
}

// Whole file, a range, a conditional GET and HEAD, over one connection: what
// iPXE, curl and a caching proxy do with a boot image.
void servesFilesWith(Client& client, const Server& server, std::string_view scheme,
                     const std::string& data) {
  auto whole = client.get(urlFor(server, scheme, "/f"));
  ASSERT_TRUE(whole.ok()) << whole.error().message();
  EXPECT_EQ(whole->status, 200);
  EXPECT_TRUE(whole->body == data) << "the body differs from the file";
  EXPECT_EQ(whole->header("content-length"), std::to_string(data.size()));
  EXPECT_EQ(whole->header("accept-ranges"), "bytes");
  EXPECT_EQ(whole->header("cache-control"), "public, max-age=60");
  const std::string etag = whole->header("etag");
  ASSERT_FALSE(etag.empty());

  auto part = client.send(
      {.url = urlFor(server, scheme, "/f"), .headers = {{"Range", "bytes=1000000-1000099"}}});
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(part->status, 206);
  EXPECT_TRUE(part->body == data.substr(1000000, 100));
  EXPECT_EQ(part->header("content-range"), fmt::format("bytes 1000000-1000099/{}", data.size()));

  auto tail = client.send({.url = urlFor(server, scheme, "/f"),
                           .headers = {{"Range", "bytes=-5"}, {"If-Range", etag}}});
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->status, 206);
  EXPECT_TRUE(tail->body == data.substr(data.size() - 5));

  auto stale = client.send({.url = urlFor(server, scheme, "/f"),
                            .headers = {{"Range", "bytes=0-9"}, {"If-Range", "\"old\""}}});
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(stale->status, 200) << "a stale If-Range gets the whole file";
  EXPECT_EQ(stale->body.size(), data.size());

  auto past = client.send(
      {.url = urlFor(server, scheme, "/f"), .headers = {{"Range", "bytes=999999999-"}}});
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(past->status, 416);
  EXPECT_EQ(past->header("content-range"), fmt::format("bytes */{}", data.size()));

  auto same =
      client.send({.url = urlFor(server, scheme, "/f"), .headers = {{"If-None-Match", etag}}});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->status, 304);
  EXPECT_TRUE(same->body.empty());

  auto head = client.send({.method = "HEAD", .url = urlFor(server, scheme, "/f")});
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());

  // The connection survived all of it.
  EXPECT_EQ(server.activeConnections(), 1U);
}

TEST(HttpServerTest, ServesAFileWithRangesAndValidators) {
  TempDir dir;
  const std::string data = patterned(3 * 1024 * 1024 + 17);
  writeFile(dir.path() / "f", data);
  auto server = startServer({}, fileHandler(dir.path() / "f"));
  ASSERT_TRUE(server);
  Client client;
  servesFilesWith(client, *server, "http", data);
}

TEST(HttpServerTlsTest, ServesAFileWithRangesAndValidators) {
  TempDir dir;
  const std::string data = patterned(3 * 1024 * 1024 + 17);
  writeFile(dir.path() / "f", data);
  auto server = startServer({.tls = pki().serverTls()}, fileHandler(dir.path() / "f"));
  ASSERT_TRUE(server);
  Client client({.tls = {.caPem = pki().ca.certPem}});
  servesFilesWith(client, *server, "https", data);
}

TEST(HttpServerTest, AMissingFileIs404) {
  TempDir dir;
  auto server = startServer({}, fileHandler(dir.path() / "absent"));
  ASSERT_TRUE(server);
  Client client;
  auto missing = client.get(urlFor(*server, "http", "/f"));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
}

// ---- TLS ------------------------------------------------------------------------

TEST(HttpServerTlsTest, ClientTrustingTheCaConnects) {
  auto server = startServer({.tls = pki().serverTls()}, echoHandler());
  ASSERT_TRUE(server);
  Client client({.tls = {.caPem = pki().ca.certPem}});
  for (int i = 0; i < 3; ++i) {
    auto response = client.get(urlFor(*server, "https", "/hello?name=tls"));
    ASSERT_TRUE(response.ok()) << response.error().message();
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body, "hello tls");
  }
  EXPECT_EQ(server->activeConnections(), 1U);
  auto whoami = client.get(urlFor(*server, "https", "/whoami"));
  ASSERT_TRUE(whoami.ok());
  EXPECT_EQ(nlohmann::json::parse(whoami->body)["cn"], "")
      << "no client CA configured: no client identity";
}

TEST(HttpServerTlsTest, ClientPinningTheCaFingerprintConnects) {
  auto server = startServer({.tls = pki().serverTls()}, echoHandler());
  ASSERT_TRUE(server);
  const std::string fingerprint = crypto::certificateFingerprint(pki().ca.certPem).value();
  Client client({.tls = {.caFingerprint = fingerprint}});
  auto response = client.get(urlFor(*server, "https", "/hello?name=pinned"));
  ASSERT_TRUE(response.ok()) << response.error().message();
  EXPECT_EQ(response->body, "hello pinned");
  ASSERT_TRUE(client.pinnedCaPem());
  EXPECT_EQ(crypto::certificateFingerprint(*client.pinnedCaPem()).value(), fingerprint);
}

TEST(HttpServerTlsTest, ClientTrustingAnotherCaIsRefused) {
  auto server = startServer({.tls = pki().serverTls()}, echoHandler());
  ASSERT_TRUE(server);
  Client client({.tls = {.caPem = pki().otherCa.certPem}});
  auto response = client.get(urlFor(*server, "https", "/hello"));
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.error().code(), Errc::kTls);
}

TEST(HttpServerTlsTest, PlainHttpToATlsServerFails) {
  auto server = startServer({.tls = pki().serverTls(), .requestTimeout = 1000ms}, echoHandler());
  ASSERT_TRUE(server);
  Client client({.totalTimeout = 3000ms});
  auto response = client.get(urlFor(*server, "http", "/hello"));
  EXPECT_FALSE(response.ok() && response->status == 200);
  // And the server still serves TLS afterwards.
  Client tlsClient({.tls = {.caPem = pki().ca.certPem}});
  auto good = tlsClient.get(urlFor(*server, "https", "/hello"));
  ASSERT_TRUE(good.ok()) << good.error().message();
}

TEST(HttpServerTlsTest, SilentTlsClientIsCutAtTheRequestTimeout) {
  auto server = startServer({.tls = pki().serverTls(), .requestTimeout = 300ms}, echoHandler());
  ASSERT_TRUE(server);
  RawSocket socket(server->port());
  const auto begin = Clock::now();
  socket.readAll(5s);
  EXPECT_TRUE(socket.closed());
  EXPECT_LT(Clock::now() - begin, 3s);
}

TEST(HttpServerTlsTest, MutualTlsGivesTheClientIdentity) {
  ServerTls tls = pki().serverTls();
  tls.clientCaPem = pki().ca.certPem;
  tls.requireClientCert = true;
  auto server = startServer({.tls = tls}, echoHandler());
  ASSERT_TRUE(server);

  Client client({.tls = {.caPem = pki().ca.certPem,
                         .clientCertPem = pki().client.certPem,
                         .clientKeyPem = pki().client.keyPem}});
  auto response = client.get(urlFor(*server, "https", "/whoami"));
  ASSERT_TRUE(response.ok()) << response.error().message();
  auto body = nlohmann::json::parse(response->body);
  EXPECT_EQ(body["cn"], "agent-7");
  EXPECT_EQ(body["fingerprint"], crypto::certificateFingerprint(pki().client.certPem).value());
  EXPECT_EQ(body["remote"], "127.0.0.1");
}

TEST(HttpServerTlsTest, MutualTlsRefusesAClientWithoutACertificate) {
  ServerTls tls = pki().serverTls();
  tls.clientCaPem = pki().ca.certPem;
  tls.requireClientCert = true;
  auto server = startServer({.tls = tls}, echoHandler());
  ASSERT_TRUE(server);
  Client client({.tls = {.caPem = pki().ca.certPem}});
  auto response = client.get(urlFor(*server, "https", "/whoami"));
  ASSERT_FALSE(response.ok()) << response->status;
  EXPECT_THAT(response.error().code(), ::testing::AnyOf(Errc::kTls, Errc::kUnavailable));
}

TEST(HttpServerTlsTest, MutualTlsRefusesACertificateFromAnotherCa) {
  ServerTls tls = pki().serverTls();
  tls.clientCaPem = pki().ca.certPem;
  tls.requireClientCert = true;
  auto server = startServer({.tls = tls}, echoHandler());
  ASSERT_TRUE(server);
  Client client({.tls = {.caPem = pki().ca.certPem,
                         .clientCertPem = pki().otherClient.certPem,
                         .clientKeyPem = pki().otherClient.keyPem}});
  auto response = client.get(urlFor(*server, "https", "/whoami"));
  ASSERT_FALSE(response.ok()) << response->status;
  EXPECT_THAT(response.error().code(), ::testing::AnyOf(Errc::kTls, Errc::kUnavailable));
}

TEST(HttpServerTlsTest, OptionalClientCertificateThatFailsCountsAsNone) {
  ServerTls tls = pki().serverTls();
  tls.clientCaPem = pki().ca.certPem;
  tls.requireClientCert = false;
  auto server = startServer({.tls = tls}, echoHandler());
  ASSERT_TRUE(server);

  const auto whoami = [&](TlsOptions options) {
    Client client({.tls = std::move(options)});
    auto response = client.get(urlFor(*server, "https", "/whoami"));
    EXPECT_TRUE(response.ok()) << response.error().message();
    return response.ok() ? nlohmann::json::parse(response->body) : nlohmann::json();
  };
  EXPECT_EQ(whoami({.caPem = pki().ca.certPem})["cn"], "");
  auto foreign = whoami({.caPem = pki().ca.certPem,
                         .clientCertPem = pki().otherClient.certPem,
                         .clientKeyPem = pki().otherClient.keyPem});
  EXPECT_EQ(foreign["cn"], "");
  EXPECT_EQ(foreign["fingerprint"], "");
  EXPECT_EQ(whoami({.caPem = pki().ca.certPem,
                    .clientCertPem = pki().client.certPem,
                    .clientKeyPem = pki().client.keyPem})["cn"],
            "agent-7");
}

TEST(HttpServerTlsTest, StopWithAnIdleTlsConnectionIsPrompt) {
  auto server = startServer({.tls = pki().serverTls()}, echoHandler());
  ASSERT_TRUE(server);
  Client client({.tls = {.caPem = pki().ca.certPem}});
  ASSERT_TRUE(client.get(urlFor(*server, "https", "/hello")).ok());
  const auto begin = Clock::now();
  server->stop();
  EXPECT_LT(Clock::now() - begin, 1s);
}

TEST(HttpServerTlsTest, BadTlsMaterialIsRefusedAtStart) {
  auto noPem =
      Server::start({.tls = ServerTls{.certChainPem = "junk", .keyPem = "junk"}}, echoHandler());
  ASSERT_FALSE(noPem.ok());
  EXPECT_EQ(noPem.error().code(), Errc::kInvalidArgument);

  auto wrongKey = Server::start(
      {.tls = ServerTls{.certChainPem = pki().server.certPem, .keyPem = pki().client.keyPem}},
      echoHandler());
  ASSERT_FALSE(wrongKey.ok());
  EXPECT_EQ(wrongKey.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(wrongKey.error().message(),
            "The server's TLS private key does not belong to the first certificate of its chain.");

  ServerTls noCa = pki().serverTls();
  noCa.requireClientCert = true;
  auto missingCa = Server::start({.tls = noCa}, echoHandler());
  ASSERT_FALSE(missingCa.ok());
  EXPECT_EQ(missingCa.error().code(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace aula::http
