// A throw-away OpenLDAP server for tests: slapd with an mdb database for
// "dc=school,dc=test" in a temporary directory, listening on a free port on
// 127.0.0.1, stopped and removed when the object goes away.
//
// The directory holds the suffix entry only; tests load their tree with
// addLdif(). Users may bind as themselves and everyone may read everything
// but passwords, unless the options add stricter rules. A DN with an empty
// password binds (unauthenticated, RFC 4513 5.1.2), as some directories
// allow, so that clients must refuse empty passwords themselves. The
// memberof overlay is on, so entries named as `member` of a groupOfNames
// carry memberOf, as in Active Directory.
//
// Like the other test helpers it fails by throwing, which GoogleTest reports
// as a failure of the running test. Tests call available() first and skip,
// with the reason, where slapd and ldap-utils are not installed.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "support/temp_dir.hpp"

namespace aula::test {

struct SlapdOptions {
  // A PEM certificate and key (the certificate may be followed by its chain).
  // With them slapd offers StartTLS on uri() and also listens on ldapsUri().
  std::optional<std::string> tlsCertPem;
  std::optional<std::string> tlsKeyPem;
  // slapd.conf access rules placed before the defaults, which let users
  // bind, hide userPassword and let everyone read everything else.
  std::string accessRules;
};

class SlapdServer {
 public:
  static constexpr std::string_view kSuffix = "dc=school,dc=test";

  // False, with the reason in `why`, when slapd, its mdb and memberof
  // modules, the schema files, ldapsearch or ldapadd are missing.
  static bool available(std::string* why);

  // Writes the configuration, starts slapd, waits until it answers and adds
  // the suffix entry. Throws std::runtime_error with slapd's log.
  explicit SlapdServer(SlapdOptions options = {});
  // Stops slapd and removes its files.
  ~SlapdServer();
  SlapdServer(const SlapdServer&) = delete;
  SlapdServer& operator=(const SlapdServer&) = delete;

  int port() const { return port_; }
  std::string uri() const;       // "ldap://127.0.0.1:<port>"
  std::string ldapsUri() const;  // "ldaps://127.0.0.1:<tls port>"; only with TLS options
  std::string rootDn() const;
  std::string rootPassword() const;

  // Adds the entries of `ldif` with ldapadd as the root DN; throws with
  // ldapadd's message.
  void addLdif(std::string_view ldif);

  // SIGTERM, then waits for slapd to exit (SIGKILL after 10 s). Idempotent.
  void stop();
  bool running() const { return pid_ > 0; }

 private:
  void writeConfig();
  void start();
  std::string logTail() const;

  SlapdOptions options_;
  TempDir dir_;
  int port_ = 0;
  int tlsPort_ = 0;
  pid_t pid_ = -1;
};

}  // namespace aula::test
