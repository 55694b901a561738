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
  std::string uid;  // the entry's uid attribute (LdapSettings::uidAttribute); may be empty
  std::string displayName;
  std::string email;
  // Every group the user is in, directly or through groups inside groups,
  // normalised to lower case and sorted.
  std::vector<std::string> groupDns;
  // For a group reached through another: that other group (the member of
  // it on the way from the user). Direct groups are not in it. Following
  // `via` from a group back to a direct one gives the path.
  std::map<std::string, std::string> via;
  // How the nested groups were found: "" (direct only), "followed" (one
  // search per group, up to the depth), "in-chain" (the directory did it).
  std::string nesting;
};

class Directory {
 public:
  virtual ~Directory() = default;
  // Binds as the user. Errors: kUnauthenticated (no such user or a wrong
  // password: the same sentence for both, so names cannot be probed),
  // kUnavailable (the directory is unreachable or timed out).
  virtual Result<DirectoryUser> authenticate(std::string_view username,
                                             std::string_view password) = 0;
  // The user's entry and groups as a login would find them, read as the
  // broker's own identity, without a password: for `aulactl directory
  // check` and the scheduled sync. Errors: kNotFound (no entry, or more
  // than one), kUnavailable, kConfig.
  virtual Result<DirectoryUser> lookup(std::string_view username) = 0;
};

// How groups inside groups count.
enum class NestedGroups {
  kOff,     // only the groups that name the user
  kFollow,  // search for the groups that name each group, up to nestedDepth levels
  kInChain  // Active Directory's LDAP_MATCHING_RULE_IN_CHAIN (1.2.840.113556.1.4.1941)
};

struct LdapSettings {
  std::string uri;                              // "ldap://127.0.0.1:3890" or ldaps://
  std::string baseDn;                           // users are searched in this subtree
  std::string userFilter = "(uid={username})";  // {username} is escaped (RFC 4515)
  std::optional<std::string> bindDn;            // service account for the search; none: anonymous
  std::string bindPassword;
  std::string groupBaseDn;  // empty: baseDn
  // Placeholders, each escaped: {dn} the user's DN, {username} the name
  // given at login, {uid} the entry's uidAttribute. posixGroup layouts use
  // (memberUid={uid}); groupOfNames and groupOfUniqueNames use {dn}.
  std::string groupFilter = "(|(member={dn})(uniqueMember={dn}))";
  std::string uidAttribute = "uid";  // sAMAccountName on Active Directory
  NestedGroups nestedGroups = NestedGroups::kOff;
  int nestedDepth = 5;  // kFollow: levels of groups above the user's own
  // kFollow: the groups that contain the group {dn}.
  std::string nestedFilter = "(|(member={dn})(uniqueMember={dn}))";
  std::optional<std::string> caPem;  // trust for ldaps:// or StartTLS
  bool startTls = false;
  std::chrono::milliseconds timeout{5000};
};

// Whether the settings can work at all, before any connection: kConfig with
// the sentence that says what to change. The broker refuses to start on it.
Status checkLdapSettings(const LdapSettings& settings);

std::unique_ptr<Directory> makeLdapDirectory(LdapSettings settings);

// RFC 4515 escaping of a value placed in a search filter.
std::string escapeLdapFilterValue(std::string_view value);

}  // namespace aula::broker
