// Cryptography for Aula on mbedTLS: random bytes, hashing, constant-time
// comparison, HMAC, signed expiring tokens, and the small PKI with which the
// broker runs its certificate authority (agent client certificates, SPICE
// server certificates, the broker's own TLS certificate).
//
// No mbedTLS header leaks out of this file: PEM strings go in and out.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::crypto {

using Bytes = std::vector<std::uint8_t>;

// Bytes from the system's CSPRNG (mbedTLS CTR-DRBG seeded from the OS entropy
// source). Safe to call from any thread.
Result<Bytes> randomBytes(std::size_t count);
// A random token of `bytes` bytes, base64url without padding (for session and
// join tokens, SPICE tickets).
Result<std::string> randomToken(std::size_t bytes = 32);

// Compares two strings in time that depends only on their lengths.
bool constantTimeEqual(std::string_view a, std::string_view b);

Bytes sha256(std::string_view data);
std::string sha256Hex(std::string_view data);  // lower-case hex, 64 characters
// The SHA-256 of a file, read in pieces: kNotFound, kIo.
Result<std::string> sha256HexOfFile(const std::filesystem::path& path);
Bytes hmacSha256(std::string_view key, std::string_view data);

std::string toHex(std::span<const std::uint8_t> bytes);
std::string base64UrlEncode(std::span<const std::uint8_t> bytes);
Result<Bytes> base64UrlDecode(std::string_view text);

// Signed expiring tokens: "<base64url payload>.<unix expiry>.<base64url HMAC>".
// The payload is opaque to this code (JSON, an id...).
std::string signToken(std::string_view key, std::string_view payload,
                      std::chrono::system_clock::time_point expiry);
// Returns the payload, or kUnauthenticated when the signature is wrong or the
// token is malformed, or when it has expired at `now`.
Result<std::string> verifyToken(
    std::string_view key, std::string_view token,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// ---- PKI ----------------------------------------------------------------

struct KeyPair {
  std::string privateKeyPem;  // ECDSA P-256, PEM
};

struct Certificate {
  std::string certPem;
  std::string keyPem;
};

enum class CertUsage { kServer, kClient, kServerAndClient };

struct CertRequest {
  std::string commonName;                // subject CN
  std::string organization = "Aula";     // subject O
  std::vector<std::string> dnsNames;     // subjectAltName dNSName entries
  std::vector<std::string> ipAddresses;  // subjectAltName iPAddress entries ("127.0.0.1", "::1")
  CertUsage usage = CertUsage::kServer;
  // Validity; by default from one hour ago (clock skew) for `validFor`.
  std::optional<std::chrono::system_clock::time_point> notBefore;
  std::optional<std::chrono::system_clock::time_point> notAfter;
  std::chrono::hours validFor{24 * 825};
};

// A new self-signed CA certificate with a new key (CA:true, keyCertSign, cRLSign).
Result<Certificate> createCa(std::string_view commonName,
                             std::chrono::hours validFor = std::chrono::hours(24 * 3650));

// A certificate for `request`, with a new key, signed by `ca`.
Result<Certificate> issueCertificate(const Certificate& ca, const CertRequest& request);

// Verifies that `certPem` chains to `caPem`, is valid now and (when
// `expectedName` is given) names it in its SAN or CN. The error says which
// check failed.
Status verifyChain(std::string_view certPem, std::string_view caPem,
                   std::optional<std::string_view> expectedName = std::nullopt);

// SHA-256 over the certificate's DER, as upper-case hex pairs joined by ':'
// ("AB:12:..."), the form `openssl x509 -fingerprint -sha256` prints.
Result<std::string> certificateFingerprint(std::string_view certPem);
// Accepts a fingerprint with or without colons, any case; returns the
// canonical colon form, or kInvalidArgument.
Result<std::string> normalizeFingerprint(std::string_view fingerprint);

// Subject of a certificate as "O=Aula,CN=host1" (the form SPICE's host-subject takes).
Result<std::string> certificateSubject(std::string_view certPem);
// Each certificate in a PEM bundle, in order.
std::vector<std::string> splitPemBundle(std::string_view pem);

}  // namespace aula::crypto
