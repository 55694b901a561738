// HTTP client transport errors: refused, timeout, missing trust, size limit.
#include "aula/common/http_client.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace aula::http {
namespace {

using namespace std::chrono_literals;

// A loopback socket that listens but never accepts: connections complete in
// the kernel's backlog and then hear nothing.
struct SilentListener {
  int fd = -1;
  int port = 0;
  SilentListener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~SilentListener() { ::close(fd); }
};

int closedPort() {
  SilentListener l;
  int port = l.port;
  return port;  // closed when l goes out of scope
}

TEST(HttpClientTest, RefusedConnectionIsNamed) {
  int port = closedPort();
  Client client;
  auto r = client.get("http://127.0.0.1:" + std::to_string(port) + "/healthz");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kConnectionRefused);
  EXPECT_NE(r.error().message().find("127.0.0.1:" + std::to_string(port)), std::string::npos);
}

TEST(HttpClientTest, SilentServerTimesOut) {
  SilentListener listener;
  Client client({.connectTimeout = 1000ms, .totalTimeout = 300ms});
  auto r = client.get("http://127.0.0.1:" + std::to_string(listener.port) + "/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kTimeout);
}

TEST(HttpClientTest, HttpsWithoutTrustIsRefusedBeforeConnecting) {
  Client client;
  auto r = client.get("https://127.0.0.1:1/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(r.error().message(),
            "No CA is configured for 127.0.0.1:1; give the broker's CA certificate or its SHA-256 "
            "fingerprint.");
}

TEST(HttpClientTest, MalformedUrl) {
  Client client;
  auto r = client.get("gopher://example/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
}

TEST(HttpClientTest, UrlEncode) {
  EXPECT_EQ(urlEncode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
  EXPECT_EQ(urlEncode("Safe-_.~09"), "Safe-_.~09");
}

}  // namespace
}  // namespace aula::http
