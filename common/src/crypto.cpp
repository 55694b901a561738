// Cryptography for Aula on mbedTLS 2.28: the process-wide random generator,
// hashes, HMAC, signed tokens and the broker's small PKI (see crypto.hpp).
//
// mbedTLS 2.28 cannot write subjectAltName or extendedKeyUsage extensions, nor
// match a certificate against an IP address; this file does those by hand.
#include "aula/common/crypto.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <charconv>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <utility>

#include <arpa/inet.h>
#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>
#include <sys/types.h>
#include <unistd.h>

#include "aula/common/callback_guard.hpp"
#include "aula/common/mbedtls_handle.hpp"

// mbedTLS 2.28 forgot the C++ guard in this one header.
extern "C" {
#include <mbedtls/constant_time.h>
}

namespace aula::crypto {
namespace {

using tls::CtrDrbgContext;
using tls::EntropyContext;
using tls::Handle;
using tls::PkContext;
using tls::SslConfig;
using tls::SslContext;
using tls::TicketContext;
using tls::X509Crt;

using std::chrono::system_clock;

using X509WriteCert =
    Handle<mbedtls_x509write_cert, mbedtls_x509write_crt_init, mbedtls_x509write_crt_free>;
using Mpi = Handle<mbedtls_mpi, mbedtls_mpi_init, mbedtls_mpi_free>;

// ---- Random ---------------------------------------------------------------

// The process's one CTR-DRBG. Seeding reads the OS entropy source, which is
// slow and can fail, so it happens once, on first use, and is retried if it
// failed.
class Drbg {
 public:
  static Drbg& instance() {
    static Drbg drbg;
    return drbg;
  }

  Status fill(unsigned char* out, std::size_t size) {
    std::lock_guard lock(mutex_);
    const pid_t pid = getpid();
    if (seededFor_ == 0) {
      static constexpr std::string_view kPersonalization = "aula crypto";
      const int rc = mbedtls_ctr_drbg_seed(
          drbg_.get(), mbedtls_entropy_func, entropy_.get(),
          reinterpret_cast<const unsigned char*>(kPersonalization.data()), kPersonalization.size());
      if (rc != 0) {
        return Error(Errc::kInternal,
                     "The random number generator could not be seeded from the operating "
                     "system's entropy source.",
                     rc);
      }
      seededFor_ = pid;
    } else if (seededFor_ != pid) {
      // A forked child starts with a copy of its parent's generator state and
      // would otherwise hand out the same "random" bytes as the parent.
      const int rc = mbedtls_ctr_drbg_reseed(drbg_.get(), nullptr, 0);
      if (rc != 0) {
        return Error(Errc::kInternal,
                     "The random number generator could not be reseeded after a fork.", rc);
      }
      seededFor_ = pid;
    }
    while (size > 0) {
      const std::size_t chunk = std::min<std::size_t>(size, MBEDTLS_CTR_DRBG_MAX_REQUEST);
      const int rc = mbedtls_ctr_drbg_random(drbg_.get(), out, chunk);
      if (rc != 0) {
        return Error(Errc::kInternal, "The random number generator failed to produce bytes.", rc);
      }
      out += chunk;
      size -= chunk;
    }
    return okStatus();
  }

 private:
  Drbg() = default;

  std::mutex mutex_;
  EntropyContext entropy_;
  CtrDrbgContext drbg_;
  pid_t seededFor_ = 0;  // 0 until seeded
};

// The f_rng callback mbedTLS takes for key generation and signing; it goes
// through the same lock as randomBytes.
int drbgCallback(void* /*unused*/, unsigned char* out, std::size_t size) noexcept {
  return guardCallback("mbedTLS random source", MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED, [&] {
    const Status status = Drbg::instance().fill(out, size);
    if (status.ok()) {
      return 0;
    }
    return status.error().native() != 0 ? status.error().native()
                                        : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
  });
}

// ---- Encodings --------------------------------------------------------------

constexpr std::string_view kBase64UrlAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '-') {
    return 62;
  }
  if (c == '_') {
    return 63;
  }
  return -1;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

std::span<const std::uint8_t> asBytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::string_view asText(std::span<const std::uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::string colonHex(std::span<const std::uint8_t> bytes) {
  static constexpr std::string_view kDigits = "0123456789ABCDEF";
  std::string out;
  out.reserve(bytes.size() * 3);
  for (const std::uint8_t byte : bytes) {
    if (!out.empty()) {
      out += ':';
    }
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0x0f];
  }
  return out;
}

// Names from outside end up in error messages; control characters must not.
std::string printable(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  return out;
}

// ---- PEM and X.509 helpers ----------------------------------------------------

// mbedTLS wants PEM text NUL-terminated, with the NUL counted in the length.
int parseCertificates(mbedtls_x509_crt* crt, std::string_view pem) {
  const std::string text(pem);
  return mbedtls_x509_crt_parse(crt, reinterpret_cast<const unsigned char*>(text.c_str()),
                                text.size() + 1);
}

int parsePrivateKey(mbedtls_pk_context* key, std::string_view pem) {
  const std::string text(pem);
  return mbedtls_pk_parse_key(key, reinterpret_cast<const unsigned char*>(text.c_str()),
                              text.size() + 1, nullptr, 0);
}

std::string formatX509Time(const mbedtls_x509_time& time) {
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", time.year, time.mon, time.day,
                     time.hour, time.min, time.sec);
}

// mbedTLS takes validity as "YYYYMMDDhhmmss" in UTC, and encodes years before
// 2050 as two-digit UTCTime, so years before 1950 cannot be represented.
Result<std::string> x509ValidityTime(system_clock::time_point when) {
  const std::time_t seconds = system_clock::to_time_t(when);
  std::tm utc{};
  if (gmtime_r(&seconds, &utc) == nullptr || utc.tm_year + 1900 < 1950 ||
      utc.tm_year + 1900 > 9999) {
    return Error(Errc::kInvalidArgument,
                 "A certificate's validity must lie between the years 1950 and 9999.");
  }
  return fmt::format("{:04}{:02}{:02}{:02}{:02}{:02}", utc.tm_year + 1900, utc.tm_mon + 1,
                     utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
}

// Subject attributes are written from an "O=...,CN=..." string, which mbedTLS
// splits on ',' and '=' and unescapes on '\\'; such characters, and anything a
// SPICE host-subject or a log line would mangle, are refused rather than
// escaped.
Status checkNameAttribute(std::string_view role, std::string_view value) {
  static constexpr std::size_t kMaxLength = 64;  // ub-common-name, ub-organization-name
  bool ok =
      !value.empty() && value.size() <= kMaxLength && value.front() != ' ' && value.back() != ' ';
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == ',' || c == '=' || c == '+' || c == '/' || c == '\\') {
      ok = false;
    }
  }
  if (ok) {
    return okStatus();
  }
  return Error(Errc::kInvalidArgument,
               fmt::format("The {} '{}' cannot be put in a certificate; use 1 to 64 characters "
                           "without ',', '=', '+', '/', '\\', control characters or surrounding "
                           "spaces.",
                           role, printable(value)));
}

Status checkDnsName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 253;
  std::string_view rest = name;
  if (rest.starts_with("*.")) {
    rest.remove_prefix(2);  // a wildcard only as the whole leftmost label
  }
  while (ok) {
    const std::size_t dot = rest.find('.');
    const std::string_view label = rest.substr(0, dot);
    ok = !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-' &&
         std::all_of(label.begin(), label.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
         });
    if (dot == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(dot + 1);
  }
  if (ok) {
    return okStatus();
  }
  return Error(Errc::kInvalidArgument,
               fmt::format("The DNS name '{}' in the certificate request is not a valid host name.",
                           printable(name)));
}

// The 4 or 16 address bytes of an IPv4 or IPv6 address in text form.
std::optional<Bytes> parseIpAddress(std::string_view text) {
  std::string address(text);
  if (address.size() > 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);  // "[::1]" as in URLs
  }
  std::array<std::uint8_t, 16> raw{};
  if (inet_pton(AF_INET, address.c_str(), raw.data()) == 1) {
    return Bytes(raw.begin(), raw.begin() + 4);
  }
  if (inet_pton(AF_INET6, address.c_str(), raw.data()) == 1) {
    return Bytes(raw.begin(), raw.end());
  }
  return std::nullopt;
}

std::string formatIpAddress(std::span<const std::uint8_t> raw) {
  std::array<char, INET6_ADDRSTRLEN> text{};
  const int family = raw.size() == 4 ? AF_INET : AF_INET6;
  if ((raw.size() != 4 && raw.size() != 16) ||
      inet_ntop(family, raw.data(), text.data(), text.size()) == nullptr) {
    return "(malformed IP address)";
  }
  return text.data();
}

// asn1write fills a buffer from its end towards its start; this keeps the
// write pointer, the length written so far and the first error together.
class DerWriter {
 public:
  explicit DerWriter(std::size_t capacity)
      : buffer_(capacity), p_(buffer_.data() + buffer_.size()) {}

  void taggedBytes(int tag, std::span<const std::uint8_t> bytes) {
    add(mbedtls_asn1_write_tagged_string(&p_, buffer_.data(), tag, asText(bytes).data(),
                                         bytes.size()));
  }
  void oid(std::string_view oid) {
    add(mbedtls_asn1_write_oid(&p_, buffer_.data(), oid.data(), oid.size()));
  }
  // Wraps everything written so far in a SEQUENCE.
  void sequence() {
    const std::size_t contentLength = length_;
    add(mbedtls_asn1_write_len(&p_, buffer_.data(), contentLength));
    add(mbedtls_asn1_write_tag(&p_, buffer_.data(),
                               MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
  }

  Result<Bytes> finish() const {
    if (rc_ != 0) {
      return Error(Errc::kInternal, "A certificate extension could not be encoded.", rc_);
    }
    return Bytes(static_cast<const unsigned char*>(p_), buffer_.data() + buffer_.size());
  }

 private:
  void add(int rc) {
    if (rc_ != 0) {
      return;
    }
    if (rc < 0) {
      rc_ = rc;
    } else {
      length_ += static_cast<std::size_t>(rc);
    }
  }

  Bytes buffer_;
  unsigned char* p_;
  std::size_t length_ = 0;
  int rc_ = 0;
};

std::string_view oidView(const char* oid, std::size_t size) {
  return {oid, size};
}

// GeneralNames ::= SEQUENCE OF GeneralName, with dNSName [2] IA5String and
// iPAddress [7] OCTET STRING, both implicitly tagged.
Result<Bytes> subjectAltNameDer(const std::vector<std::string>& dnsNames,
                                const std::vector<Bytes>& ipAddresses) {
  std::size_t capacity = 16;
  for (const auto& name : dnsNames) {
    capacity += name.size() + 8;
  }
  capacity += ipAddresses.size() * (16 + 8);
  DerWriter writer(capacity);
  // Written backwards, so the last entry first: the extension keeps the
  // request's order, DNS names before addresses.
  for (auto it = ipAddresses.rbegin(); it != ipAddresses.rend(); ++it) {
    writer.taggedBytes(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7, *it);
  }
  for (auto it = dnsNames.rbegin(); it != dnsNames.rend(); ++it) {
    writer.taggedBytes(MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2, asBytes(*it));
  }
  writer.sequence();
  return writer.finish();
}

// ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId
Result<Bytes> extendedKeyUsageDer(CertUsage usage) {
  DerWriter writer(64);
  if (usage == CertUsage::kClient || usage == CertUsage::kServerAndClient) {
    writer.oid(oidView(MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
  }
  if (usage == CertUsage::kServer || usage == CertUsage::kServerAndClient) {
    writer.oid(oidView(MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
  }
  writer.sequence();
  return writer.finish();
}

Status generateKey(mbedtls_pk_context* key) {
  int rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
  if (rc == 0) {
    rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), drbgCallback, nullptr);
  }
  if (rc != 0) {
    return Error(Errc::kInternal, "A new ECDSA P-256 key could not be generated.", rc);
  }
  return okStatus();
}

Result<std::string> keyToPem(mbedtls_pk_context* key) {
  std::array<unsigned char, 4096> buffer{};
  const int rc = mbedtls_pk_write_key_pem(key, buffer.data(), buffer.size());
  if (rc != 0) {
    return Error(Errc::kInternal, "A private key could not be written as PEM.", rc);
  }
  return std::string(reinterpret_cast<const char*>(buffer.data()));
}

// The parts that differ between a CA and an issued certificate.
struct CertificateSpec {
  std::string subject;  // "O=...,CN=..." already checked
  system_clock::time_point notBefore;
  system_clock::time_point notAfter;
  bool isCa = false;
  unsigned int keyUsage = 0;
  std::optional<Bytes> extendedKeyUsage;
  std::optional<Bytes> subjectAltName;
};

// Writes a certificate for `subjectKey` signed by `issuerKey`. `issuer` is the
// issuing CA's parsed certificate, or null for a self-signed one.
Result<std::string> writeCertificate(const CertificateSpec& spec, mbedtls_pk_context* subjectKey,
                                     mbedtls_pk_context* issuerKey, mbedtls_x509_crt* issuer) {
  if (spec.notAfter <= spec.notBefore) {
    return Error(Errc::kInvalidArgument, "A certificate's validity must end after it begins.");
  }
  const std::string notBefore = AULA_TRY(x509ValidityTime(spec.notBefore));
  const std::string notAfter = AULA_TRY(x509ValidityTime(spec.notAfter));

  // Serial numbers are random so that two certificates from one CA never
  // share one (RFC 5280 wants them unpredictable too). The first byte keeps its
  // top bit clear, so the DER INTEGER is positive, and is never zero, so every
  // serial is 16 bytes long.
  auto serialBytes = AULA_TRY(randomBytes(16));
  serialBytes[0] = static_cast<std::uint8_t>((serialBytes[0] & 0x7f) | 0x01);
  Mpi serial;

  X509WriteCert writer;
  mbedtls_x509write_crt_set_version(writer.get(), MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(writer.get(), MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(writer.get(), subjectKey);
  mbedtls_x509write_crt_set_issuer_key(writer.get(), issuerKey);

  auto fail = [](const char* sentence, int rc) { return Error(Errc::kInternal, sentence, rc); };
  int rc = mbedtls_mpi_read_binary(serial.get(), serialBytes.data(), serialBytes.size());
  if (rc == 0) {
    rc = mbedtls_x509write_crt_set_serial(writer.get(), serial.get());
  }
  if (rc != 0) {
    return fail("The certificate's serial number could not be set.", rc);
  }
  rc = mbedtls_x509write_crt_set_validity(writer.get(), notBefore.c_str(), notAfter.c_str());
  if (rc != 0) {
    return fail("The certificate's validity could not be set.", rc);
  }
  rc = mbedtls_x509write_crt_set_subject_name(writer.get(), spec.subject.c_str());
  if (rc != 0) {
    return fail("The certificate's subject name could not be set.", rc);
  }
  if (issuer == nullptr) {
    rc = mbedtls_x509write_crt_set_issuer_name(writer.get(), spec.subject.c_str());
  } else {
    // The issuer name is copied attribute by attribute, string types
    // included, because verifiers compare it with the CA's subject and a
    // round trip through text could change either.
    for (const mbedtls_x509_name* name = &issuer->subject; name != nullptr && rc == 0;
         name = name->next) {
      if (name->oid.p == nullptr) {
        continue;
      }
      mbedtls_asn1_named_data* stored = mbedtls_asn1_store_named_data(
          &writer.get()->issuer, reinterpret_cast<const char*>(name->oid.p), name->oid.len,
          name->val.p, name->val.len);
      if (stored == nullptr) {
        rc = MBEDTLS_ERR_X509_ALLOC_FAILED;
      } else {
        stored->val.tag = name->val.tag;
      }
    }
  }
  if (rc != 0) {
    return fail("The certificate's issuer name could not be set.", rc);
  }
  rc = mbedtls_x509write_crt_set_basic_constraints(writer.get(), spec.isCa ? 1 : 0, -1);
  if (rc != 0) {
    return fail("The certificate's basic constraints could not be set.", rc);
  }
  rc = mbedtls_x509write_crt_set_key_usage(writer.get(), spec.keyUsage);
  if (rc != 0) {
    return fail("The certificate's key usage could not be set.", rc);
  }
  rc = mbedtls_x509write_crt_set_subject_key_identifier(writer.get());
  if (rc != 0) {
    return fail("The certificate's subject key identifier could not be set.", rc);
  }
  rc = mbedtls_x509write_crt_set_authority_key_identifier(writer.get());
  if (rc != 0) {
    return fail("The certificate's authority key identifier could not be set.", rc);
  }
  if (spec.extendedKeyUsage) {
    rc = mbedtls_x509write_crt_set_extension(writer.get(), MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                             MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0,
                                             spec.extendedKeyUsage->data(),
                                             spec.extendedKeyUsage->size());
    if (rc != 0) {
      return fail("The certificate's extended key usage could not be set.", rc);
    }
  }
  if (spec.subjectAltName) {
    rc = mbedtls_x509write_crt_set_extension(
        writer.get(), MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME),
        0, spec.subjectAltName->data(), spec.subjectAltName->size());
    if (rc != 0) {
      return fail("The certificate's subject alternative names could not be set.", rc);
    }
  }

  const std::size_t size = 8192 + 2 * (spec.subjectAltName ? spec.subjectAltName->size() : 0);
  std::vector<unsigned char> buffer(size);
  rc = mbedtls_x509write_crt_pem(writer.get(), buffer.data(), buffer.size(), drbgCallback, nullptr);
  if (rc != 0) {
    return Error(Errc::kInternal, "The certificate could not be signed and written as PEM.", rc);
  }
  return std::string(reinterpret_cast<const char*>(buffer.data()));
}

// The names a certificate claims, for an error message: its SAN entries, or
// its CN when it has none.
std::string describeNames(const mbedtls_x509_crt& crt) {
  std::vector<std::string> names;
  for (const mbedtls_x509_sequence* entry = &crt.subject_alt_names; entry != nullptr;
       entry = entry->next) {
    if (entry->buf.p == nullptr) {
      continue;
    }
    const std::span<const std::uint8_t> value(entry->buf.p, entry->buf.len);
    if (entry->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME)) {
      names.emplace_back(asText(value));
    } else if (entry->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS)) {
      names.push_back(formatIpAddress(value));
    }
  }
  if (names.empty()) {
    for (const mbedtls_x509_name* name = &crt.subject; name != nullptr; name = name->next) {
      if (name->oid.p != nullptr && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &name->oid) == 0) {
        names.emplace_back(asText({name->val.p, name->val.len}));
      }
    }
  }
  if (names.empty()) {
    return "no name";
  }
  std::string out;
  for (const auto& name : names) {
    out += out.empty() ? "" : ", ";
    out += fmt::format("'{}'", printable(name));
  }
  return out;
}

// mbedTLS 2.28 matches expected names against dNSName entries and the CN only,
// so an IP address is looked up among the iPAddress entries here. (2.28 keeps
// every SAN entry in subject_alt_names with its raw tag, IP ones included.)
bool hasIpAddress(const mbedtls_x509_crt& crt, std::span<const std::uint8_t> address) {
  for (const mbedtls_x509_sequence* entry = &crt.subject_alt_names; entry != nullptr;
       entry = entry->next) {
    if (entry->buf.p != nullptr &&
        entry->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS) &&
        entry->buf.len == address.size() &&
        std::memcmp(entry->buf.p, address.data(), address.size()) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

// ---- Random -------------------------------------------------------------------

Result<Bytes> randomBytes(std::size_t count) {
  Bytes bytes(count);
  AULA_TRY_STATUS(Drbg::instance().fill(bytes.data(), bytes.size()));
  return bytes;
}

Result<std::string> randomToken(std::size_t bytes) {
  const Bytes random = AULA_TRY(randomBytes(bytes));
  return base64UrlEncode(random);
}

bool constantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  return mbedtls_ct_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---- Hashes -------------------------------------------------------------------

Bytes sha256(std::string_view data) {
  Bytes digest(32);
  const int rc = mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(data.data()),
                                    data.size(), digest.data(), 0);
  assert(rc == 0 && "SHA-256 over memory cannot fail");
  static_cast<void>(rc);
  return digest;
}

std::string sha256Hex(std::string_view data) {
  return toHex(sha256(data));
}

Result<std::string> sha256HexOfFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return makeError(Errc::kNotFound, "Cannot open '{}' to hash it.", path.string());
  mbedtls_sha256_context context;
  mbedtls_sha256_init(&context);
  mbedtls_sha256_starts_ret(&context, 0);
  std::vector<char> buffer(std::size_t{1} << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    mbedtls_sha256_update_ret(&context, reinterpret_cast<const unsigned char*>(buffer.data()),
                              static_cast<std::size_t>(in.gcount()));
  }
  const bool failed = in.bad();
  Bytes digest(32);
  mbedtls_sha256_finish_ret(&context, digest.data());
  mbedtls_sha256_free(&context);
  if (failed)
    return makeError(Errc::kIo, "Reading '{}' to hash it failed.", path.string());
  return toHex(digest);
}

Bytes hmacSha256(std::string_view key, std::string_view data) {
  Bytes mac(32);
  const int rc =
      mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                      reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                      reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data());
  assert(rc == 0 && "HMAC-SHA256 over memory cannot fail");
  static_cast<void>(rc);
  return mac;
}

// ---- Encodings ------------------------------------------------------------------

std::string toHex(std::span<const std::uint8_t> bytes) {
  static constexpr std::string_view kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const std::uint8_t byte : bytes) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0x0f];
  }
  return out;
}

std::string base64UrlEncode(std::span<const std::uint8_t> bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t group =
        (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    out += kBase64UrlAlphabet[(group >> 18) & 0x3f];
    out += kBase64UrlAlphabet[(group >> 12) & 0x3f];
    out += kBase64UrlAlphabet[(group >> 6) & 0x3f];
    out += kBase64UrlAlphabet[group & 0x3f];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    const std::uint32_t group = std::uint32_t{bytes[i]} << 16;
    out += kBase64UrlAlphabet[(group >> 18) & 0x3f];
    out += kBase64UrlAlphabet[(group >> 12) & 0x3f];
  } else if (rest == 2) {
    const std::uint32_t group =
        (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8);
    out += kBase64UrlAlphabet[(group >> 18) & 0x3f];
    out += kBase64UrlAlphabet[(group >> 12) & 0x3f];
    out += kBase64UrlAlphabet[(group >> 6) & 0x3f];
  }
  return out;
}

Result<Bytes> base64UrlDecode(std::string_view text) {
  const Error malformed(Errc::kParse, "The text is not valid base64url.");
  // Padding is optional, but when present it must complete the last group.
  if (text.ends_with('=')) {
    if (text.size() % 4 != 0) {
      return malformed;
    }
    text.remove_suffix(text.ends_with("==") ? 2 : 1);
  }
  if (text.size() % 4 == 1) {
    return malformed;
  }
  Bytes out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t accumulator = 0;
  int bits = 0;
  for (const char c : text) {
    const int value = base64UrlValue(c);
    if (value < 0) {
      return malformed;
    }
    accumulator = (accumulator << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((accumulator >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero, so that each byte string has one encoding.
  if ((accumulator & ((1U << bits) - 1)) != 0) {
    return malformed;
  }
  return out;
}

// ---- Tokens ---------------------------------------------------------------------

std::string signToken(std::string_view key, std::string_view payload,
                      system_clock::time_point expiry) {
  const auto seconds = std::chrono::floor<std::chrono::seconds>(expiry.time_since_epoch()).count();
  const std::string signedPart = fmt::format("{}.{}", base64UrlEncode(asBytes(payload)), seconds);
  return fmt::format("{}.{}", signedPart, base64UrlEncode(hmacSha256(key, signedPart)));
}

Result<std::string> verifyToken(std::string_view key, std::string_view token,
                                system_clock::time_point now) {
  const Error malformed(Errc::kUnauthenticated, "The token is malformed.");
  const std::size_t firstDot = token.find('.');
  const std::size_t secondDot =
      firstDot == std::string_view::npos ? firstDot : token.find('.', firstDot + 1);
  if (secondDot == std::string_view::npos ||
      token.find('.', secondDot + 1) != std::string_view::npos) {
    return malformed;
  }
  const std::string_view signedPart = token.substr(0, secondDot);
  const std::string_view payloadText = token.substr(0, firstDot);
  const std::string_view expiryText = token.substr(firstDot + 1, secondDot - firstDot - 1);
  const std::string_view signature = token.substr(secondDot + 1);

  std::int64_t expiry = 0;
  const auto [end, ec] =
      std::from_chars(expiryText.data(), expiryText.data() + expiryText.size(), expiry);
  const bool digitsOnly = std::all_of(expiryText.begin(), expiryText.end(),
                                      [](char c) { return c >= '0' && c <= '9'; });
  if (expiryText.empty() || !digitsOnly || ec != std::errc() ||
      end != expiryText.data() + expiryText.size()) {
    return malformed;
  }
  // Comparing the encoded MACs keeps the comparison constant-time and refuses
  // any second encoding of the same MAC.
  const std::string expected = base64UrlEncode(hmacSha256(key, signedPart));
  if (!constantTimeEqual(expected, signature)) {
    return Error(Errc::kUnauthenticated, "The token's signature is not valid.");
  }
  const auto payload = base64UrlDecode(payloadText);
  if (!payload.ok()) {
    return malformed;
  }
  const auto nowSeconds = std::chrono::floor<std::chrono::seconds>(now.time_since_epoch()).count();
  if (nowSeconds >= expiry) {
    return Error(Errc::kUnauthenticated, "The token has expired.");
  }
  return std::string(asText(*payload));
}

// ---- PKI ----------------------------------------------------------------------------

Result<Certificate> createCa(std::string_view commonName, std::chrono::hours validFor) {
  AULA_TRY_STATUS(checkNameAttribute("common name", commonName));
  PkContext key;
  AULA_TRY_STATUS(generateKey(key.get()));

  const auto now = system_clock::now();
  CertificateSpec spec;
  spec.subject = fmt::format("O=Aula,CN={}", commonName);
  spec.notBefore = now - std::chrono::hours(1);  // tolerate clocks a little behind
  spec.notAfter = now + validFor;
  spec.isCa = true;
  spec.keyUsage = MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN;

  Certificate ca;
  ca.certPem = AULA_TRY(writeCertificate(spec, key.get(), key.get(), nullptr));
  ca.keyPem = AULA_TRY(keyToPem(key.get()));
  return ca;
}

Result<Certificate> issueCertificate(const Certificate& ca, const CertRequest& request) {
  AULA_TRY_STATUS(checkNameAttribute("common name", request.commonName));
  AULA_TRY_STATUS(checkNameAttribute("organization", request.organization));
  for (const auto& name : request.dnsNames) {
    AULA_TRY_STATUS(checkDnsName(name));
  }
  std::vector<Bytes> addresses;
  for (const auto& text : request.ipAddresses) {
    auto address = parseIpAddress(text);
    if (!address) {
      return Error(Errc::kInvalidArgument,
                   fmt::format("The IP address '{}' in the certificate request is not a valid "
                               "IPv4 or IPv6 address.",
                               printable(text)));
    }
    addresses.push_back(std::move(*address));
  }

  X509Crt caCert;
  int rc = parseCertificates(caCert.get(), ca.certPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The CA certificate is not a valid PEM certificate.", rc);
  }
  if (caCert.get()->ca_istrue == 0) {
    return Error(Errc::kInvalidArgument, "The issuing certificate is not a CA certificate.");
  }
  PkContext caKey;
  rc = parsePrivateKey(caKey.get(), ca.keyPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The CA private key is not a valid PEM private key.", rc);
  }
  rc = mbedtls_pk_check_pair(&caCert.get()->pk, caKey.get());
  if (rc != 0) {
    return Error(Errc::kInvalidArgument,
                 "The CA private key does not belong to the CA certificate.", rc);
  }

  PkContext key;
  AULA_TRY_STATUS(generateKey(key.get()));

  const auto now = system_clock::now();
  CertificateSpec spec;
  spec.subject = fmt::format("O={},CN={}", request.organization, request.commonName);
  spec.notBefore = request.notBefore.value_or(now - std::chrono::hours(1));
  spec.notAfter = request.notAfter.value_or(spec.notBefore + request.validFor);
  spec.isCa = false;
  // keyEncipherment is left out: RFC 5480 reserves it for RSA, and our keys
  // are always EC (ECDHE-ECDSA needs digitalSignature only).
  spec.keyUsage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE | MBEDTLS_X509_KU_KEY_AGREEMENT;
  spec.extendedKeyUsage = AULA_TRY(extendedKeyUsageDer(request.usage));
  if (!request.dnsNames.empty() || !addresses.empty()) {
    spec.subjectAltName = AULA_TRY(subjectAltNameDer(request.dnsNames, addresses));
  }

  Certificate issued;
  issued.certPem = AULA_TRY(writeCertificate(spec, key.get(), caKey.get(), caCert.get()));
  issued.keyPem = AULA_TRY(keyToPem(key.get()));
  return issued;
}

Status verifyChain(std::string_view certPem, std::string_view caPem,
                   std::optional<std::string_view> expectedName) {
  X509Crt cert;
  int rc = parseCertificates(cert.get(), certPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The certificate is not a valid PEM certificate.", rc);
  }
  X509Crt ca;
  rc = parseCertificates(ca.get(), caPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The CA certificate is not a valid PEM certificate.", rc);
  }

  std::optional<Bytes> expectedIp;
  std::optional<std::string> expectedDns;
  if (expectedName) {
    expectedIp = parseIpAddress(*expectedName);
    if (!expectedIp) {
      expectedDns = std::string(*expectedName);
    }
  }

  std::uint32_t flags = 0;
  rc = mbedtls_x509_crt_verify(cert.get(), ca.get(), nullptr,
                               expectedDns ? expectedDns->c_str() : nullptr, &flags, nullptr,
                               nullptr);
  if (rc != 0 && flags == 0) {
    return Error(Errc::kTls, "The certificate could not be verified.", rc);
  }
  const auto native = static_cast<int>(flags);
  const mbedtls_x509_crt& leaf = *cert.get();
  if ((flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) != 0) {
    return Error(Errc::kTls, "The certificate is not signed by the given CA.", native);
  }
  if (mbedtls_x509_time_is_past(&ca.get()->valid_to) != 0) {
    return Error(
        Errc::kTls,
        fmt::format("The CA certificate expired on {}.", formatX509Time(ca.get()->valid_to)),
        native);
  }
  if ((flags & MBEDTLS_X509_BADCERT_EXPIRED) != 0) {
    return Error(Errc::kTls,
                 fmt::format("The certificate expired on {}.", formatX509Time(leaf.valid_to)),
                 native);
  }
  if ((flags & MBEDTLS_X509_BADCERT_FUTURE) != 0) {
    return Error(
        Errc::kTls,
        fmt::format("The certificate is not valid before {}.", formatX509Time(leaf.valid_from)),
        native);
  }
  const bool nameMismatch = (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) != 0 ||
                            (expectedIp && !hasIpAddress(leaf, *expectedIp));
  if (nameMismatch) {
    return Error(Errc::kTls,
                 fmt::format("The certificate is for {}, not for '{}'.", describeNames(leaf),
                             printable(*expectedName)),
                 native);
  }
  if ((flags & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE)) != 0) {
    return Error(Errc::kTls, "The certificate's key usage does not allow this use.", native);
  }
  if ((flags & (MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK |
                MBEDTLS_X509_BADCERT_BAD_KEY)) != 0) {
    return Error(Errc::kTls,
                 "The certificate uses a signature algorithm or key that is not allowed.", native);
  }
  if (flags != 0) {
    return Error(Errc::kTls,
                 fmt::format("The certificate failed verification (mbedTLS flags 0x{:x}).", flags),
                 native);
  }
  return okStatus();
}

Result<std::string> certificateFingerprint(std::string_view certPem) {
  X509Crt cert;
  const int rc = parseCertificates(cert.get(), certPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The certificate is not a valid PEM certificate.", rc);
  }
  const auto digest = sha256(asText({cert.get()->raw.p, cert.get()->raw.len}));
  return colonHex(digest);
}

Result<std::string> normalizeFingerprint(std::string_view fingerprint) {
  auto trimmed = fingerprint;
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.front())) != 0) {
    trimmed.remove_prefix(1);
  }
  while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back())) != 0) {
    trimmed.remove_suffix(1);
  }
  // Also accept what people paste: "sha256:AB...", "SHA256 Fingerprint=AB..."
  // (the openssl x509 -fingerprint line).
  for (const std::string_view prefix : {"sha256:", "sha256 fingerprint="}) {
    if (trimmed.size() >= prefix.size() &&
        std::equal(prefix.begin(), prefix.end(), trimmed.begin(), [](char a, char b) {
          return a == std::tolower(static_cast<unsigned char>(b));
        })) {
      trimmed.remove_prefix(prefix.size());
      break;
    }
  }
  // Either 64 digits, or 32 pairs each followed by ':' but the last.
  const bool colons = trimmed.find(':') != std::string_view::npos;
  bool ok = trimmed.size() == (colons ? 32 * 3 - 1 : 64);
  Bytes digest;
  for (std::size_t i = 0; ok && i < trimmed.size(); i += colons ? 3 : 2) {
    const int high = hexValue(trimmed[i]);
    const int low = hexValue(trimmed[i + 1]);
    const bool separated = !colons || i + 2 == trimmed.size() || trimmed[i + 2] == ':';
    ok = high >= 0 && low >= 0 && separated;
    digest.push_back(static_cast<std::uint8_t>(high * 16 + low));
  }
  if (!ok) {
    return Error(Errc::kInvalidArgument,
                 fmt::format("'{}' is not a SHA-256 fingerprint; expected 64 hexadecimal digits, "
                             "optionally in pairs separated by ':'.",
                             printable(fingerprint)));
  }
  return colonHex(digest);
}

Result<std::string> certificateSubject(std::string_view certPem) {
  X509Crt cert;
  int rc = parseCertificates(cert.get(), certPem);
  if (rc != 0) {
    return Error(Errc::kParse, "The certificate is not a valid PEM certificate.", rc);
  }
  std::array<char, 1024> buffer{};
  rc = mbedtls_x509_dn_gets(buffer.data(), buffer.size(), &cert.get()->subject);
  if (rc < 0) {
    return Error(Errc::kInternal, "The certificate's subject could not be formatted.", rc);
  }
  // mbedTLS separates attributes with ", "; SPICE's host-subject uses ",".
  std::string subject;
  const std::string_view text(buffer.data(), static_cast<std::size_t>(rc));
  for (std::size_t i = 0; i < text.size(); ++i) {
    subject += text[i];
    if (text[i] == ',' && i + 1 < text.size() && text[i + 1] == ' ') {
      ++i;
    }
  }
  return subject;
}

std::vector<std::string> splitPemBundle(std::string_view pem) {
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> certificates;
  std::size_t position = 0;
  while (true) {
    const std::size_t begin = pem.find(kBegin, position);
    if (begin == std::string_view::npos) {
      break;
    }
    const std::size_t end = pem.find(kEnd, begin + kBegin.size());
    if (end == std::string_view::npos) {
      break;
    }
    position = end + kEnd.size();
    certificates.push_back(std::string(pem.substr(begin, position - begin)) + "\n");
  }
  return certificates;
}

}  // namespace aula::crypto
