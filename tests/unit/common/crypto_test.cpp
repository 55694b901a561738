// Tests of aula::crypto: random bytes, hashes and HMAC against published
// vectors, base64url, signed tokens, and the PKI, whose certificates are also
// checked by the openssl command-line tool as an independent parser.
#include "aula/common/crypto.hpp"

#include <array>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/temp_dir.hpp"

namespace aula::crypto {
namespace {

using std::chrono::hours;
using std::chrono::system_clock;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::span<const std::uint8_t> bytesOf(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

struct CommandResult {
  int exitCode = -1;
  std::string output;  // stdout and stderr
};

// Runs a shell command; used to ask the openssl tool for a second opinion.
CommandResult runCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return result;
  }
  std::array<char, 4096> buffer{};
  std::size_t read = 0;
  while ((read = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), read);
  }
  const int status = ::pclose(pipe);
  result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

bool haveOpenssl() {
  return runCommand("openssl version").exitCode == 0;
}

// ---- Random, hashes, encodings ------------------------------------------------

TEST(CryptoRandomTest, BytesHaveTheRequestedLengthAndDiffer) {
  for (const std::size_t size :
       {std::size_t{0}, std::size_t{1}, std::size_t{32}, std::size_t{5000}}) {
    const auto bytes = randomBytes(size);
    ASSERT_TRUE(bytes.ok()) << bytes.error().message();
    EXPECT_EQ(bytes->size(), size);
  }
  const auto first = randomBytes(32);
  const auto second = randomBytes(32);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  EXPECT_NE(*first, *second);
}

TEST(CryptoRandomTest, IsSafeFromManyThreads) {
  std::vector<std::thread> threads;
  std::vector<std::string> tokens(8);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    threads.emplace_back([&tokens, i] {
      for (int round = 0; round < 50; ++round) {
        const auto token = randomToken(16);
        if (token.ok()) {
          tokens[i] = *token;
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  const std::set<std::string> distinct(tokens.begin(), tokens.end());
  EXPECT_EQ(distinct.size(), tokens.size());
}

// Without a reseed, a forked child would repeat its parent's next bytes.
TEST(CryptoRandomTest, ForkedChildDoesNotRepeatItsParent) {
  ASSERT_TRUE(randomBytes(1).ok());  // the generator is seeded before the fork
  std::array<int, 2> pipeFds{};
  ASSERT_EQ(::pipe(pipeFds.data()), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const auto bytes = randomBytes(32);
    const bool sent = bytes.ok() && ::write(pipeFds[1], bytes->data(), bytes->size()) == 32;
    ::_exit(sent ? 0 : 1);
  }
  ::close(pipeFds[1]);
  const auto parentBytes = randomBytes(32);
  Bytes childBytes(32);
  std::size_t received = 0;
  while (received < childBytes.size()) {
    const ssize_t n =
        ::read(pipeFds[0], childBytes.data() + received, childBytes.size() - received);
    if (n <= 0) {
      break;
    }
    received += static_cast<std::size_t>(n);
  }
  ::close(pipeFds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(received, childBytes.size());
  ASSERT_TRUE(parentBytes.ok());
  EXPECT_NE(*parentBytes, childBytes);
}

TEST(CryptoRandomTest, TokenIsUnpaddedBase64Url) {
  const auto token = randomToken();
  ASSERT_TRUE(token.ok()) << token.error().message();
  EXPECT_EQ(token->size(), 43U);  // 32 bytes
  EXPECT_EQ(
      token->find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
      std::string::npos);
  const auto decoded = base64UrlDecode(*token);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->size(), 32U);
  EXPECT_NE(*token, *randomToken());
}

TEST(CryptoCompareTest, ConstantTimeEqual) {
  EXPECT_TRUE(constantTimeEqual("", ""));
  EXPECT_TRUE(constantTimeEqual("secret", "secret"));
  EXPECT_FALSE(constantTimeEqual("secret", "secreT"));
  EXPECT_FALSE(constantTimeEqual("Secret", "secret"));
  EXPECT_FALSE(constantTimeEqual("secret", "secret2"));
  EXPECT_FALSE(constantTimeEqual("", "x"));
}

TEST(CryptoHashTest, Sha256OfKnownInputs) {
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256("abc").size(), 32U);
}

TEST(CryptoHashTest, HmacSha256Rfc4231TestCase2) {
  EXPECT_EQ(toHex(hmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(CryptoEncodingTest, ToHexIsLowerCase) {
  const std::vector<std::uint8_t> bytes{0x00, 0x0f, 0xab, 0xff};
  EXPECT_EQ(toHex(bytes), "000fabff");
  EXPECT_EQ(toHex({}), "");
}

TEST(CryptoEncodingTest, Base64UrlKnownValues) {
  EXPECT_EQ(base64UrlEncode(bytesOf("")), "");
  EXPECT_EQ(base64UrlEncode(bytesOf("f")), "Zg");
  EXPECT_EQ(base64UrlEncode(bytesOf("fo")), "Zm8");
  EXPECT_EQ(base64UrlEncode(bytesOf("foobar")), "Zm9vYmFy");
  const std::vector<std::uint8_t> urlUnsafe{0xfb, 0xff, 0xbf};
  EXPECT_EQ(base64UrlEncode(urlUnsafe), "-_-_");
}

TEST(CryptoEncodingTest, Base64UrlRoundTripsEveryLength) {
  for (std::size_t size = 0; size < 40; ++size) {
    const auto bytes = randomBytes(size);
    ASSERT_TRUE(bytes.ok());
    const auto decoded = base64UrlDecode(base64UrlEncode(*bytes));
    ASSERT_TRUE(decoded.ok()) << "size " << size;
    EXPECT_EQ(*decoded, *bytes);
  }
}

TEST(CryptoEncodingTest, Base64UrlAcceptsPadding) {
  const auto decoded = base64UrlDecode("Zm8=");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(std::string(decoded->begin(), decoded->end()), "fo");
}

TEST(CryptoEncodingTest, Base64UrlRefusesBadInput) {
  for (const std::string_view bad : {"Zm9v!", "Z", "Zm8==", "Zm9", "+/8=", "Zg=", "Zm 8"}) {
    const auto decoded = base64UrlDecode(bad);
    ASSERT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(decoded.error().code(), Errc::kParse);
  }
}

// ---- Tokens -----------------------------------------------------------------------

class CryptoTokenTest : public ::testing::Test {
 protected:
  const std::string key_ = "0123456789abcdef0123456789abcdef";
  const system_clock::time_point now_ = system_clock::now();
};

TEST_F(CryptoTokenTest, RoundTrips) {
  const std::string payload = R"({"user":"alice","session":"a.b.c"})";
  const std::string token = signToken(key_, payload, now_ + hours(1));
  EXPECT_EQ(std::count(token.begin(), token.end(), '.'), 2);
  const auto verified = verifyToken(key_, token, now_);
  ASSERT_TRUE(verified.ok()) << verified.error().message();
  EXPECT_EQ(*verified, payload);
}

TEST_F(CryptoTokenTest, RoundTripsBinaryAndEmptyPayloads) {
  const std::string binary("\0\xff.\x01", 4);
  auto verified = verifyToken(key_, signToken(key_, binary, now_ + hours(1)), now_);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(*verified, binary);
  verified = verifyToken(key_, signToken(key_, "", now_ + hours(1)), now_);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(*verified, "");
}

TEST_F(CryptoTokenTest, RefusesTamperedPayload) {
  const std::string token = signToken(key_, "user=alice", now_ + hours(1));
  const std::string forged = signToken(key_, "user=admin", now_ + hours(1));
  // alice's signature on admin's payload
  const std::string spliced = forged.substr(0, forged.find('.')) + token.substr(token.find('.'));
  const auto verified = verifyToken(key_, spliced, now_);
  ASSERT_FALSE(verified.ok());
  EXPECT_EQ(verified.error().code(), Errc::kUnauthenticated);
  EXPECT_THAT(verified.error().message(), HasSubstr("signature"));
}

TEST_F(CryptoTokenTest, RefusesTamperedExpiry) {
  const std::string token = signToken(key_, "p", now_ + hours(1));
  const std::size_t first = token.find('.');
  const std::size_t second = token.find('.', first + 1);
  const std::string extended = token.substr(0, first + 1) + "9999999999" + token.substr(second);
  const auto verified = verifyToken(key_, extended, now_);
  ASSERT_FALSE(verified.ok());
  EXPECT_THAT(verified.error().message(), HasSubstr("signature"));
}

TEST_F(CryptoTokenTest, RefusesTamperedSignatureAndWrongKey) {
  std::string token = signToken(key_, "p", now_ + hours(1));
  const auto wrongKey = verifyToken("another key", token, now_);
  ASSERT_FALSE(wrongKey.ok());
  EXPECT_EQ(wrongKey.error().code(), Errc::kUnauthenticated);
  EXPECT_THAT(wrongKey.error().message(), HasSubstr("signature"));

  token.back() = token.back() == 'A' ? 'B' : 'A';
  const auto tampered = verifyToken(key_, token, now_);
  ASSERT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.error().code(), Errc::kUnauthenticated);
  EXPECT_THAT(tampered.error().message(), HasSubstr("signature"));
}

TEST_F(CryptoTokenTest, RefusesExpired) {
  const auto expiry = now_ + hours(1);
  const std::string token = signToken(key_, "p", expiry);
  EXPECT_TRUE(verifyToken(key_, token, expiry - std::chrono::seconds(1)).ok());
  for (const auto at : {expiry, expiry + hours(1)}) {
    const auto verified = verifyToken(key_, token, at);
    ASSERT_FALSE(verified.ok());
    EXPECT_EQ(verified.error().code(), Errc::kUnauthenticated);
    EXPECT_THAT(verified.error().message(), HasSubstr("expired"));
  }
}

TEST_F(CryptoTokenTest, RefusesMalformed) {
  for (const std::string_view bad : {"", "abc", "a.b", "a.b.c.d", "cA.notanumber.sig", "cA..sig",
                                     "cA.-5.sig", "..", "cA.12 .sig"}) {
    const auto verified = verifyToken(key_, bad, now_);
    ASSERT_FALSE(verified.ok()) << bad;
    EXPECT_EQ(verified.error().code(), Errc::kUnauthenticated);
    EXPECT_THAT(verified.error().message(), HasSubstr("malformed")) << bad;
  }
}

// ---- PKI --------------------------------------------------------------------------

// A CA made once for the whole test program: key generation is the slow part.
Certificate mustCreateCa(std::string_view name) {
  auto ca = createCa(name);
  EXPECT_TRUE(ca.ok()) << ca.error().message();
  return ca.ok() ? *ca : Certificate{};
}

class CryptoPkiTest : public ::testing::Test {
 protected:
  // Two unrelated CAs.
  static const Certificate& caA() {
    static const Certificate ca = mustCreateCa("Aula Test CA");
    return ca;
  }
  static const Certificate& caB() {
    static const Certificate ca = mustCreateCa("Other CA");
    return ca;
  }

  static CertRequest serverRequest() {
    CertRequest request;
    request.commonName = "host1";
    request.dnsNames = {"localhost", "host1.example.com"};
    request.ipAddresses = {"127.0.0.1", "::1"};
    return request;
  }

  static Certificate issue(const CertRequest& request) {
    auto issued = issueCertificate(caA(), request);
    EXPECT_TRUE(issued.ok()) << issued.error().message();
    return issued.ok() ? *issued : Certificate{};
  }

  // Writes PEM files for openssl and returns their paths.
  std::string file(std::string_view name, std::string_view content) {
    const auto path = dir_ / name;
    test::writeFile(path, content);
    return path.string();
  }

 private:
  test::TempDir dir_;  // for files handed to openssl
};

TEST_F(CryptoPkiTest, CreatesCa) {
  EXPECT_THAT(caA().certPem, StartsWith("-----BEGIN CERTIFICATE-----\n"));
  EXPECT_THAT(caA().keyPem, HasSubstr("PRIVATE KEY-----"));
  EXPECT_TRUE(verifyChain(caA().certPem, caA().certPem).ok());
  EXPECT_EQ(*certificateSubject(caA().certPem), "O=Aula,CN=Aula Test CA");
  EXPECT_NE(*certificateFingerprint(caA().certPem), *certificateFingerprint(caB().certPem));
}

TEST_F(CryptoPkiTest, CaExtensionsAsOpensslSeesThem) {
  if (!haveOpenssl()) {
    GTEST_SKIP() << "The openssl command is not installed.";
  }
  const auto text = runCommand("openssl x509 -noout -text -in " + file("ca.pem", caA().certPem));
  ASSERT_EQ(text.exitCode, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("CA:TRUE"));
  EXPECT_THAT(text.output, HasSubstr("Certificate Sign, CRL Sign"));
  EXPECT_THAT(text.output, HasSubstr("Subject Key Identifier"));
  EXPECT_THAT(text.output, HasSubstr("ecdsa-with-SHA256"));
  EXPECT_THAT(text.output, HasSubstr("prime256v1"));
}

TEST_F(CryptoPkiTest, IssuedCertificateVerifiesAgainstItsCaOnly) {
  const Certificate server = issue(serverRequest());
  EXPECT_THAT(server.keyPem, HasSubstr("PRIVATE KEY-----"));
  const Status good = verifyChain(server.certPem, caA().certPem);
  EXPECT_TRUE(good.ok()) << good.error().message();

  const Status wrongCa = verifyChain(server.certPem, caB().certPem);
  ASSERT_FALSE(wrongCa.ok());
  EXPECT_EQ(wrongCa.error().code(), Errc::kTls);
  EXPECT_EQ(wrongCa.error().message(), "The certificate is not signed by the given CA.");
}

TEST_F(CryptoPkiTest, ExpiredCertificateIsRefused) {
  CertRequest request = serverRequest();
  request.notBefore = system_clock::now() - hours(48);
  request.notAfter = system_clock::now() - hours(24);
  const Certificate expired = issue(request);
  const Status status = verifyChain(expired.certPem, caA().certPem);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), Errc::kTls);
  EXPECT_THAT(status.error().message(), HasSubstr("expired"));
}

TEST_F(CryptoPkiTest, NotYetValidCertificateIsRefused) {
  CertRequest request = serverRequest();
  request.notBefore = system_clock::now() + hours(24);
  const Certificate future = issue(request);
  const Status status = verifyChain(future.certPem, caA().certPem);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.error().message(), StartsWith("The certificate is not valid before "));
}

TEST_F(CryptoPkiTest, RefusesValidityThatEndsBeforeItBegins) {
  CertRequest request = serverRequest();
  request.notBefore = system_clock::now();
  request.notAfter = system_clock::now() - hours(1);
  const auto backwards = issueCertificate(caA(), request);
  ASSERT_FALSE(backwards.ok());
  EXPECT_EQ(backwards.error().code(), Errc::kInvalidArgument);
}

TEST_F(CryptoPkiTest, NameIsCheckedAgainstDnsSans) {
  const Certificate server = issue(serverRequest());
  for (const std::string_view name : {"localhost", "LOCALHOST", "host1.example.com"}) {
    const Status status = verifyChain(server.certPem, caA().certPem, name);
    EXPECT_TRUE(status.ok()) << name << ": " << status.error().message();
  }
  const Status other = verifyChain(server.certPem, caA().certPem, "other.example.com");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code(), Errc::kTls);
  EXPECT_EQ(other.error().message(),
            "The certificate is for 'localhost', 'host1.example.com', '127.0.0.1', '::1', not "
            "for 'other.example.com'.");
  EXPECT_FALSE(verifyChain(server.certPem, caA().certPem, "").ok());
  // With SANs present the CN does not count (RFC 6125).
  EXPECT_FALSE(verifyChain(server.certPem, caA().certPem, "host1").ok());
}

TEST_F(CryptoPkiTest, NameIsCheckedAgainstIpSans) {
  const Certificate server = issue(serverRequest());
  for (const std::string_view address : {"127.0.0.1", "::1", "[::1]", "0:0:0:0:0:0:0:1"}) {
    const Status status = verifyChain(server.certPem, caA().certPem, address);
    EXPECT_TRUE(status.ok()) << address << ": " << status.error().message();
  }
  const Status other = verifyChain(server.certPem, caA().certPem, "127.0.0.2");
  ASSERT_FALSE(other.ok());
  EXPECT_THAT(other.error().message(), HasSubstr("not for '127.0.0.2'."));
}

TEST_F(CryptoPkiTest, NameFallsBackToCnWithoutSans) {
  CertRequest request;
  request.commonName = "agent-7";
  request.usage = CertUsage::kClient;
  const Certificate client = issue(request);
  EXPECT_TRUE(verifyChain(client.certPem, caA().certPem, "agent-7").ok());
  const Status other = verifyChain(client.certPem, caA().certPem, "agent-8");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().message(), "The certificate is for 'agent-7', not for 'agent-8'.");
}

TEST_F(CryptoPkiTest, WildcardDnsName) {
  CertRequest request;
  request.commonName = "wildcard";
  request.dnsNames = {"*.desk.example"};
  const Certificate server = issue(request);
  EXPECT_TRUE(verifyChain(server.certPem, caA().certPem, "a.desk.example").ok());
  EXPECT_FALSE(verifyChain(server.certPem, caA().certPem, "a.b.desk.example").ok());
}

TEST_F(CryptoPkiTest, UnparsablePemIsReported) {
  const Status badCert = verifyChain("not a certificate", caA().certPem);
  ASSERT_FALSE(badCert.ok());
  EXPECT_EQ(badCert.error().code(), Errc::kParse);
  EXPECT_EQ(badCert.error().message(), "The certificate is not a valid PEM certificate.");
  const Status badCa = verifyChain(caA().certPem, "-----BEGIN CERTIFICATE-----\nAAAA\n");
  ASSERT_FALSE(badCa.ok());
  EXPECT_EQ(badCa.error().message(), "The CA certificate is not a valid PEM certificate.");
  EXPECT_FALSE(certificateFingerprint("garbage").ok());
  EXPECT_FALSE(certificateSubject("garbage").ok());
}

TEST_F(CryptoPkiTest, IssuingNeedsAMatchingCaKeyAndACaCertificate) {
  const Certificate mixed{caA().certPem, caB().keyPem};
  const auto wrongKey = issueCertificate(mixed, serverRequest());
  ASSERT_FALSE(wrongKey.ok());
  EXPECT_EQ(wrongKey.error().code(), Errc::kInvalidArgument);

  const Certificate leaf = issue(serverRequest());
  const auto notCa = issueCertificate(leaf, serverRequest());
  ASSERT_FALSE(notCa.ok());
  EXPECT_EQ(notCa.error().code(), Errc::kInvalidArgument);

  const auto garbage = issueCertificate({"garbage", caA().keyPem}, serverRequest());
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code(), Errc::kParse);
}

TEST_F(CryptoPkiTest, InvalidNamesAreRefused) {
  const std::vector<std::string> badNames = {
      "", "a,b", "CN=x", "a/b", "a\\b", "a+b", "a\nb", " lead", "trail ", std::string(65, 'x')};
  for (const std::string& bad : badNames) {
    CertRequest request = serverRequest();
    request.commonName = bad;
    const auto issued = issueCertificate(caA(), request);
    ASSERT_FALSE(issued.ok()) << bad;
    EXPECT_EQ(issued.error().code(), Errc::kInvalidArgument);
    EXPECT_THAT(issued.error().message(), StartsWith("The common name '"));
  }
  const auto badCa = createCa("evil,O=x");
  ASSERT_FALSE(badCa.ok());
  EXPECT_EQ(badCa.error().message(),
            "The common name 'evil,O=x' cannot be put in a certificate; use 1 to 64 characters "
            "without ',', '=', '+', '/', '\\', control characters or surrounding spaces.");

  CertRequest badOrg = serverRequest();
  badOrg.organization = "A=B";
  EXPECT_EQ(issueCertificate(caA(), badOrg).error().code(), Errc::kInvalidArgument);

  CertRequest controlChar = serverRequest();
  controlChar.commonName = std::string("a\x01z");
  EXPECT_THAT(issueCertificate(caA(), controlChar).error().message(), HasSubstr("'a\\x01z'"));
}

TEST_F(CryptoPkiTest, InvalidSansAreRefused) {
  for (const std::string_view bad : {"bad name", "a..b", "-a.example", "", "a.*.example"}) {
    CertRequest request = serverRequest();
    request.dnsNames = {std::string(bad)};
    const auto issued = issueCertificate(caA(), request);
    ASSERT_FALSE(issued.ok()) << bad;
    EXPECT_EQ(issued.error().code(), Errc::kInvalidArgument);
    EXPECT_EQ(
        issued.error().message(),
        fmt::format("The DNS name '{}' in the certificate request is not a valid host name.", bad));
  }
  for (const std::string_view bad : {"300.1.1.1", "1.2.3", "localhost", "::g", ""}) {
    CertRequest request = serverRequest();
    request.ipAddresses = {std::string(bad)};
    const auto issued = issueCertificate(caA(), request);
    ASSERT_FALSE(issued.ok()) << bad;
    EXPECT_EQ(issued.error().code(), Errc::kInvalidArgument);
    EXPECT_EQ(issued.error().message(),
              fmt::format("The IP address '{}' in the certificate request is not a valid IPv4 or "
                          "IPv6 address.",
                          bad));
  }
}

TEST_F(CryptoPkiTest, CertificateSubject) {
  CertRequest request = serverRequest();
  EXPECT_EQ(*certificateSubject(issue(request).certPem), "O=Aula,CN=host1");
  request.organization = "Example Org";
  request.commonName = "desk-42.lab";
  EXPECT_EQ(*certificateSubject(issue(request).certPem), "O=Example Org,CN=desk-42.lab");
}

TEST_F(CryptoPkiTest, FingerprintMatchesOpenssl) {
  if (!haveOpenssl()) {
    GTEST_SKIP() << "The openssl command is not installed.";
  }
  const auto fingerprint = certificateFingerprint(caA().certPem);
  ASSERT_TRUE(fingerprint.ok()) << fingerprint.error().message();
  EXPECT_EQ(fingerprint->size(), 32U * 3 - 1);

  const auto result =
      runCommand("openssl x509 -noout -fingerprint -sha256 -in " + file("ca.pem", caA().certPem));
  ASSERT_EQ(result.exitCode, 0) << result.output;
  // "sha256 Fingerprint=AB:CD:...\n" (OpenSSL 1.1 writes "SHA256").
  const std::size_t equals = result.output.find('=');
  ASSERT_NE(equals, std::string::npos) << result.output;
  std::string expected = result.output.substr(equals + 1);
  while (!expected.empty() && (expected.back() == '\n' || expected.back() == '\r')) {
    expected.pop_back();
  }
  EXPECT_EQ(*fingerprint, expected);
  // The whole openssl line is accepted too.
  EXPECT_EQ(*normalizeFingerprint(result.output), expected);
}

TEST_F(CryptoPkiTest, NormalizeFingerprint) {
  const std::string canonical = *certificateFingerprint(caA().certPem);
  std::string bare;
  for (const char c : canonical) {
    if (c != ':') {
      bare += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  EXPECT_EQ(*normalizeFingerprint(canonical), canonical);
  EXPECT_EQ(*normalizeFingerprint(bare), canonical);
  EXPECT_EQ(*normalizeFingerprint("sha256:" + bare), canonical);
  EXPECT_EQ(*normalizeFingerprint("  SHA256:" + canonical + "\n"), canonical);

  for (const std::string& bad : {std::string(), bare.substr(2), bare + "00", "zz" + bare.substr(2),
                                 canonical.substr(0, 2) + canonical.substr(3),  // one colon missing
                                 ":" + bare.substr(0, 63), "md5:" + bare}) {
    const auto normalized = normalizeFingerprint(bad);
    ASSERT_FALSE(normalized.ok()) << bad;
    EXPECT_EQ(normalized.error().code(), Errc::kInvalidArgument);
    EXPECT_THAT(normalized.error().message(), HasSubstr("is not a SHA-256 fingerprint"));
  }
}

TEST_F(CryptoPkiTest, SplitsPemBundles) {
  const Certificate server = issue(serverRequest());
  const auto parts = splitPemBundle(server.certPem + caA().certPem);
  ASSERT_EQ(parts.size(), 2U);
  EXPECT_EQ(parts[0], server.certPem);
  EXPECT_EQ(parts[1], caA().certPem);
  EXPECT_TRUE(splitPemBundle("no certificates here").empty());
  EXPECT_EQ(splitPemBundle(server.keyPem + caA().certPem).size(), 1U);
}

// openssl, an independent implementation, agrees on our hand-built
// extensions: SAN entries, extended key usage, and the chain.
TEST_F(CryptoPkiTest, OpensslAcceptsIssuedCertificates) {
  if (!haveOpenssl()) {
    GTEST_SKIP() << "The openssl command is not installed.";
  }
  const std::string caFile = file("ca.pem", caA().certPem);
  const std::string serverFile = file("server.pem", issue(serverRequest()).certPem);
  CertRequest clientRequest;
  clientRequest.commonName = "agent-1";
  clientRequest.usage = CertUsage::kClient;
  const std::string clientFile = file("client.pem", issue(clientRequest).certPem);

  const auto text = runCommand("openssl x509 -noout -text -in " + serverFile);
  ASSERT_EQ(text.exitCode, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("DNS:localhost, DNS:host1.example.com, IP Address:127.0.0.1, "
                                     "IP Address:0:0:0:0:0:0:0:1"));
  EXPECT_THAT(text.output, HasSubstr("TLS Web Server Authentication"));
  EXPECT_THAT(text.output, HasSubstr("CA:FALSE"));
  EXPECT_THAT(text.output, HasSubstr("Digital Signature"));
  EXPECT_THAT(text.output, HasSubstr("Authority Key Identifier"));

  const std::string verify = "openssl verify -CAfile " + caFile;
  auto result = runCommand(verify + " -purpose sslserver -verify_ip 127.0.0.1 " + serverFile);
  EXPECT_EQ(result.exitCode, 0) << result.output;
  result = runCommand(verify + " -purpose sslserver -verify_hostname localhost " + serverFile);
  EXPECT_EQ(result.exitCode, 0) << result.output;
  result = runCommand(verify + " -purpose sslserver -verify_ip 10.0.0.1 " + serverFile);
  EXPECT_NE(result.exitCode, 0) << result.output;
  result = runCommand(verify + " -purpose sslclient " + clientFile);
  EXPECT_EQ(result.exitCode, 0) << result.output;
  // The extended key usage is honoured: a client certificate cannot serve.
  result = runCommand(verify + " -purpose sslserver " + clientFile);
  EXPECT_NE(result.exitCode, 0) << result.output;
  result =
      runCommand("openssl verify -CAfile " + file("other.pem", caB().certPem) + " " + serverFile);
  EXPECT_NE(result.exitCode, 0) << result.output;
}

}  // namespace
}  // namespace aula::crypto
