// A user directory the broker may authenticate against (LDAP), and the
// mapping from directory groups to Aula roles and groups.
//
// The broker's policy code sees only this interface; the libldap adapter
// lives in server/ldap/.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::broker {

struct DirectoryUser {
  std::string username;
  std::string dn;
  std::string displayName;
  std::string email;
  std::vector<std::string> groupDns;  // normalised to lower case
};

class Directory {
 public:
  virtual ~Directory() = default;
  // Binds as the user. Errors: kUnauthenticated (no such user or a wrong
  // password: the same sentence for both, so names cannot be probed),
  // kUnavailable (the directory is unreachable or timed out).
  virtual Result<DirectoryUser> authenticate(std::string_view username,
                                             std::string_view password) = 0;
};

struct LdapSettings {
  std::string uri;                              // "ldap://127.0.0.1:3890" or ldaps://
  std::string baseDn;                           // users are searched in this subtree
  std::string userFilter = "(uid={username})";  // {username} is escaped (RFC 4515)
  std::optional<std::string> bindDn;            // service account for the search; none: anonymous
  std::string bindPassword;
  std::string groupBaseDn;                                          // empty: baseDn
  std::string groupFilter = "(|(member={dn})(uniqueMember={dn}))";  // {dn} is escaped
  std::optional<std::string> caPem;  // trust for ldaps:// or StartTLS
  bool startTls = false;
  std::chrono::milliseconds timeout{5000};
};

std::unique_ptr<Directory> makeLdapDirectory(LdapSettings settings);

// RFC 4515 escaping of a value placed in a search filter.
std::string escapeLdapFilterValue(std::string_view value);

}  // namespace aula::broker
