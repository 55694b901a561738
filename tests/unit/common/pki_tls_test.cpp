// The PKI proven by real TLS handshakes: certificates from aula::crypto, served
// by an mbedTLS test server and checked by aula::http::Client (libcurl), so two
// independent TLS stacks agree on what is trusted and what is refused.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/common/crypto.hpp"
#include "aula/common/http_client.hpp"

#include "support/tls_test_server.hpp"

namespace aula {
namespace {

using crypto::Certificate;
using crypto::CertRequest;
using crypto::CertUsage;
using std::chrono::hours;
using std::chrono::system_clock;
using test::TlsTestServer;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

constexpr std::string_view kBody = "hello from the test server";
constexpr std::chrono::milliseconds kServerWait{5000};

class PkiTlsTest : public ::testing::Test {
 protected:
  static Certificate mustCreateCa(std::string_view name) {
    auto ca = crypto::createCa(name);
    EXPECT_TRUE(ca.ok()) << ca.error().message();
    return ca.ok() ? *ca : Certificate{};
  }

  static Certificate mustIssue(const Certificate& ca, const CertRequest& request) {
    auto issued = crypto::issueCertificate(ca, request);
    EXPECT_TRUE(issued.ok()) << issued.error().message();
    return issued.ok() ? *issued : Certificate{};
  }

  // A server certificate for this machine's loopback, by address and by name.
  static CertRequest serverRequest() {
    CertRequest request;
    request.commonName = "test-server";
    request.dnsNames = {"localhost"};
    request.ipAddresses = {"127.0.0.1"};
    request.usage = CertUsage::kServer;
    return request;
  }

  static CertRequest clientRequest(std::string commonName) {
    CertRequest request;
    request.commonName = std::move(commonName);
    request.usage = CertUsage::kClient;
    return request;
  }

  static std::unique_ptr<TlsTestServer> startServer(
      const std::string& chainPem, const std::string& keyPem,
      std::optional<std::string> clientCaPem = std::nullopt) {
    auto server = TlsTestServer::start({.certChainPem = chainPem,
                                        .keyPem = keyPem,
                                        .clientCaPem = std::move(clientCaPem),
                                        .responseBody = std::string(kBody)});
    EXPECT_TRUE(server.ok()) << server.error().message();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  static http::ClientOptions trustingCa(const std::string& caPem) {
    http::ClientOptions options;
    options.tls.caPem = caPem;
    return options;
  }

  static http::ClientOptions pinnedTo(const std::string& caFingerprint) {
    http::ClientOptions options;
    options.tls.caFingerprint = caFingerprint;
    return options;
  }

  static void expectOk(const Result<http::Response>& response) {
    ASSERT_TRUE(response.ok()) << response.error().message();
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body, kBody);
  }

  static void expectTlsError(const Result<http::Response>& response) {
    ASSERT_FALSE(response.ok()) << "the request succeeded with status " << response->status;
    EXPECT_EQ(response.error().code(), Errc::kTls) << response.error().message();
  }

  // Two unrelated CAs, made once for the test program.
  static const Certificate& caA() {
    static const Certificate ca = mustCreateCa("Aula Test CA A");
    return ca;
  }
  static const Certificate& caB() {
    static const Certificate ca = mustCreateCa("Aula Test CA B");
    return ca;
  }
};

// (a) A server certificate from CA A is accepted by a client that trusts CA A.
TEST_F(PkiTlsTest, ServerCertificateFromTrustedCaIsAccepted) {
  const Certificate leaf = mustIssue(caA(), serverRequest());
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(trustingCa(caA().certPem));
  expectOk(client.get(server->url("/x")));
  EXPECT_THAT(server->lastRequest(), StartsWith("GET /x HTTP/1.1\r\n"));
  EXPECT_THAT(server->lastClientSubject(), IsEmpty());
}

// The same certificate by host name instead of address.
TEST_F(PkiTlsTest, ServerCertificateIsAcceptedByDnsName) {
  const Certificate leaf = mustIssue(caA(), serverRequest());
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(trustingCa(caA().certPem));
  expectOk(client.get(fmt::format("https://localhost:{}/by-name", server->port())));
}

// A certificate that does not name the address the client dialled is refused,
// even from the trusted CA.
TEST_F(PkiTlsTest, ServerCertificateForAnotherHostIsRefused) {
  CertRequest request = serverRequest();
  request.dnsNames = {"elsewhere.example"};
  request.ipAddresses = {"10.9.8.7"};
  const Certificate leaf = mustIssue(caA(), request);
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(trustingCa(caA().certPem));
  expectTlsError(client.get(server->url("/x")));
}

// (b) The same server is refused by a client that trusts CA B only.
TEST_F(PkiTlsTest, ServerCertificateFromOtherCaIsRefused) {
  const Certificate leaf = mustIssue(caA(), serverRequest());
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(trustingCa(caB().certPem));
  expectTlsError(client.get(server->url("/x")));
  EXPECT_THAT(server->lastRequest(), IsEmpty());
}

// (c) An expired server certificate from CA A is refused.
TEST_F(PkiTlsTest, ExpiredServerCertificateIsRefused) {
  CertRequest request = serverRequest();
  request.notBefore = system_clock::now() - hours(48);
  request.notAfter = system_clock::now() - hours(24);
  const Certificate leaf = mustIssue(caA(), request);
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(trustingCa(caA().certPem));
  expectTlsError(client.get(server->url("/x")));
}

// A certificate made for clients only cannot serve: its extended key usage
// says clientAuth, and mbedTLS will not offer it to a client at all.
TEST_F(PkiTlsTest, ClientOnlyCertificateCannotServe) {
  CertRequest request = serverRequest();
  request.usage = CertUsage::kClient;
  const Certificate leaf = mustIssue(caA(), request);
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(trustingCa(caA().certPem));
  expectTlsError(client.get(server->url("/x")));
}

// (d) Trust by fingerprint: the server presents leaf + CA A; a client pinned
// to CA A's fingerprint accepts it and learns CA A, one pinned to CA B's
// refuses it.
TEST_F(PkiTlsTest, CaFingerprintPinsTheCaFromThePresentedChain) {
  const Certificate leaf = mustIssue(caA(), serverRequest());
  const auto server = startServer(leaf.certPem + caA().certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);
  const auto fingerprintA = crypto::certificateFingerprint(caA().certPem);
  const auto fingerprintB = crypto::certificateFingerprint(caB().certPem);
  ASSERT_TRUE(fingerprintA.ok());
  ASSERT_TRUE(fingerprintB.ok());

  http::Client pinnedToA(pinnedTo(*fingerprintA));
  expectOk(pinnedToA.get(server->url("/pinned")));
  const auto learned = pinnedToA.pinnedCaPem();
  ASSERT_TRUE(learned.has_value());
  EXPECT_EQ(*crypto::certificateFingerprint(*learned), *fingerprintA);

  http::Client pinnedToB(pinnedTo(*fingerprintB));
  expectTlsError(pinnedToB.get(server->url("/pinned")));
  EXPECT_FALSE(pinnedToB.pinnedCaPem().has_value());
}

// Pinning is to the CA, not to whatever the server sends: a server that
// presents only its leaf gives a fingerprint-pinned client nothing to match.
TEST_F(PkiTlsTest, CaFingerprintNeedsTheCaInTheChain) {
  const Certificate leaf = mustIssue(caA(), serverRequest());
  const auto server = startServer(leaf.certPem, leaf.keyPem);
  ASSERT_NE(server, nullptr);

  http::Client client(pinnedTo(*crypto::certificateFingerprint(caA().certPem)));
  expectTlsError(client.get(server->url("/x")));
}

// (e) Mutual TLS: a server that requires client certificates from CA A.
class MutualTlsTest : public PkiTlsTest {
 protected:
  void SetUp() override {
    serverCert_ = mustIssue(caA(), serverRequest());
    server_ = startServer(serverCert_.certPem, serverCert_.keyPem, caA().certPem);
    ASSERT_NE(server_, nullptr);
  }

  http::ClientOptions presenting(const Certificate& clientCert) const {
    http::ClientOptions options = trustingCa(caA().certPem);
    options.tls.clientCertPem = clientCert.certPem;
    options.tls.clientKeyPem = clientCert.keyPem;
    return options;
  }

  // The client sees the refusal first; the server records it just after.
  void expectServerRefusedHandshake() const {
    ASSERT_TRUE(server_->waitForConnections(1, kServerWait));
    EXPECT_THAT(server_->lastHandshakeError(), Not(IsEmpty()));
    EXPECT_THAT(server_->lastRequest(), IsEmpty());
  }

  Certificate serverCert_;
  std::unique_ptr<TlsTestServer> server_;
};

TEST_F(MutualTlsTest, ClientCertificateFromTheCaIsAccepted) {
  const Certificate agent = mustIssue(caA(), clientRequest("agent-1"));
  http::Client client(presenting(agent));
  expectOk(client.postJson(server_->url("/register"), R"({"hello":"world"})"));
  EXPECT_EQ(server_->lastClientSubject(), "agent-1");
  EXPECT_THAT(server_->lastRequest(), StartsWith("POST /register HTTP/1.1\r\n"));
  EXPECT_THAT(server_->lastRequest(), HasSubstr(R"({"hello":"world"})"));
}

TEST_F(MutualTlsTest, ClientWithoutCertificateIsRefused) {
  http::Client client(trustingCa(caA().certPem));
  expectTlsError(client.get(server_->url("/x")));
  expectServerRefusedHandshake();
  EXPECT_THAT(server_->lastHandshakeError(), HasSubstr("Certificate was missing"));
}

TEST_F(MutualTlsTest, ClientCertificateFromOtherCaIsRefused) {
  const Certificate stranger = mustIssue(caB(), clientRequest("agent-1"));
  http::Client client(presenting(stranger));
  expectTlsError(client.get(server_->url("/x")));
  expectServerRefusedHandshake();
  EXPECT_THAT(server_->lastHandshakeError(), HasSubstr("not correctly signed"));
}

// A server-only certificate from the right CA is not a client certificate.
TEST_F(MutualTlsTest, ServerOnlyCertificateCannotAuthenticateAClient) {
  CertRequest request = clientRequest("agent-1");
  request.usage = CertUsage::kServer;
  const Certificate serverOnly = mustIssue(caA(), request);
  http::Client client(presenting(serverOnly));
  expectTlsError(client.get(server_->url("/x")));
  expectServerRefusedHandshake();
  EXPECT_THAT(server_->lastHandshakeError(), HasSubstr("extendedKeyUsage"));
}

TEST_F(MutualTlsTest, CertificateForBothUsesAuthenticatesAClient) {
  CertRequest request = clientRequest("broker");
  request.usage = CertUsage::kServerAndClient;
  const Certificate both = mustIssue(caA(), request);
  http::Client client(presenting(both));
  expectOk(client.get(server_->url("/x")));
  EXPECT_EQ(server_->lastClientSubject(), "broker");
}

}  // namespace
}  // namespace aula
