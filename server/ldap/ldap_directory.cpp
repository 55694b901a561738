// The libldap adapter behind aula::broker::Directory: finds the user with a
// search as the configured identity, proves the password with a simple bind
// as the entry found, and reads the user's name, mail and group DNs.
//
// Every authenticate() opens its own connection and closes it before it
// returns: a bind changes the identity of the connection it runs on, so a
// shared connection would need a lock around the whole exchange, and a TCP
// connection to the directory costs far less than the bind itself. The
// object therefore holds nothing mutable and may be used from many threads.
//
// No callback is registered with libldap (referrals are not chased, so there
// is no rebind procedure), so no C++ exception can cross the C library.

// The non-deprecated API only: ldap_sasl_bind_s, ldap_search_ext_s,
// ldap_get_values_len.
#define LDAP_DEPRECATED 0
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ldap.h>
#include <sys/time.h>
#include <unistd.h>

#include "aula/broker/directory.hpp"
#include "aula/common/log.hpp"

namespace aula::broker {
namespace {

namespace fs = std::filesystem;

// One sentence for an unknown user, a wrong password and an empty password,
// so that the answer does not tell which names exist.
constexpr std::string_view kWrongCredentials = "The user name or password is wrong.";

struct LdapUnbind {
  void operator()(LDAP* ld) const { ldap_unbind_ext_s(ld, nullptr, nullptr); }
};
using LdapHandle = std::unique_ptr<LDAP, LdapUnbind>;

struct MessageFree {
  void operator()(LDAPMessage* message) const { ldap_msgfree(message); }
};
using MessagePtr = std::unique_ptr<LDAPMessage, MessageFree>;

struct ValuesFree {
  void operator()(berval** values) const { ldap_value_free_len(values); }
};
using ValuesPtr = std::unique_ptr<berval*, ValuesFree>;

struct MemFree {
  void operator()(char* text) const { ldap_memfree(text); }
};
using LdapString = std::unique_ptr<char, MemFree>;

Error wrongCredentials() {
  return Error(Errc::kUnauthenticated, std::string(kWrongCredentials));
}

// The codes with which libldap reports that it never got an answer.
bool isUnreachable(int rc) {
  return rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR;
}

// The codes with which a server says "not now" rather than "never".
bool isBusy(int rc) {
  return rc == LDAP_BUSY || rc == LDAP_UNAVAILABLE || rc == LDAP_TIMELIMIT_EXCEEDED ||
         rc == LDAP_ADMINLIMIT_EXCEEDED;
}

std::string replaceAll(std::string_view text, std::string_view placeholder,
                       std::string_view value) {
  std::string out;
  std::size_t from = 0;
  for (std::size_t at = text.find(placeholder); at != std::string_view::npos;
       at = text.find(placeholder, from)) {
    out.append(text.substr(from, at - from));
    out.append(value);
    from = at + placeholder.size();
  }
  out.append(text.substr(from));
  return out;
}

// DNs are compared case-insensitively by every directory; only ASCII is
// folded, since attribute names and the values of dc/ou/cn that schools use
// are ASCII, and folding UTF-8 would need a locale.
std::string lowerAscii(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z')
      c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

timeval toTimeval(std::chrono::milliseconds duration) {
  const auto ms = std::max<std::chrono::milliseconds::rep>(duration.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

std::string ldapMessage(int rc) {
  return ldap_err2string(rc);
}

// The explanation the server added to its last result; empty when there is
// none.
std::string diagnostic(LDAP* ld) {
  char* raw = nullptr;
  if (ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &raw) != LDAP_OPT_SUCCESS)
    return {};
  LdapString text(raw);
  return text ? std::string(text.get()) : std::string();
}

std::vector<std::string> attributeValues(LDAP* ld, LDAPMessage* entry, const char* attribute) {
  std::vector<std::string> out;
  ValuesPtr values(ldap_get_values_len(ld, entry, attribute));
  if (!values)
    return out;
  for (berval** value = values.get(); *value != nullptr; ++value) {
    out.emplace_back((*value)->bv_val, (*value)->bv_len);
  }
  return out;
}

std::string firstValue(LDAP* ld, LDAPMessage* entry, const char* attribute) {
  auto values = attributeValues(ld, entry, attribute);
  return values.empty() ? std::string() : std::move(values.front());
}

struct UserEntry {
  std::string dn;
  std::string uid;
  std::string displayName;
  std::string email;
  std::vector<std::string> memberOf;
};

// A filter libldap would refuse, or that is not one filter: unbalanced or
// missing parentheses.
std::optional<std::string> filterProblem(std::string_view filter) {
  if (filter.size() < 3 || filter.front() != '(' || filter.back() != ')')
    return std::string("it must be one filter in parentheses, such as (uid={username})");
  int depth = 0;
  for (std::size_t i = 0; i < filter.size(); ++i) {
    if (filter[i] == '\\') {
      ++i;  // an escaped character
    } else if (filter[i] == '(') {
      ++depth;
    } else if (filter[i] == ')') {
      if (--depth < 0)
        return std::string("a ')' closes more than was opened");
      if (depth == 0 && i + 1 != filter.size())
        return std::string("it holds more than one filter; join them with (&...) or (|...)");
    }
  }
  if (depth != 0)
    return std::string("a '(' is never closed");
  return std::nullopt;
}

// kConfig naming the setting when `filter` is not one valid filter.
Status checkFilter(std::string_view what, std::string_view key, const std::string& filter) {
  if (auto problem = filterProblem(filter)) {
    return makeError(Errc::kConfig, "The LDAP {} '{}' ({}) is not valid: {}.", what, filter, key,
                     *problem);
  }
  return {};
}

bool containsAny(std::string_view text, std::initializer_list<std::string_view> placeholders) {
  return std::any_of(placeholders.begin(), placeholders.end(),
                     [&](std::string_view p) { return text.find(p) != std::string_view::npos; });
}

class LdapDirectory final : public Directory {
 public:
  explicit LdapDirectory(LdapSettings settings);
  ~LdapDirectory() override;
  LdapDirectory(const LdapDirectory&) = delete;
  LdapDirectory& operator=(const LdapDirectory&) = delete;

  Result<DirectoryUser> authenticate(std::string_view username, std::string_view password) override;
  Result<DirectoryUser> lookup(std::string_view username) override;

 private:
  Status writeCaFile();
  Result<LdapHandle> connect() const;
  Status bindSearchIdentity(LDAP* ld) const;
  Result<UserEntry> findUser(LDAP* ld, std::string_view username) const;
  Status bindAsUser(LDAP* ld, const std::string& dn, std::string_view password) const;
  Result<std::vector<std::string>> searchGroupDns(LDAP* ld, const std::string& filter,
                                                  const std::string& about) const;
  Status findGroups(LDAP* ld, const UserEntry& entry, std::string_view username,
                    DirectoryUser* user) const;
  Status followNested(LDAP* ld, DirectoryUser* user) const;
  Result<DirectoryUser> userOf(LDAP* ld, UserEntry entry, std::string_view username) const;

  Error unreachable(int rc) const;
  Error searchFailed(LDAP* ld, int rc, const std::string& base, const std::string& filter) const;
  bool usesTls() const;

  LdapSettings settings_;
  std::optional<Error> configError_;  // returned by every call: the settings cannot work
  fs::path caFile_;                   // settings_.caPem, for LDAP_OPT_X_TLS_CACERTFILE
};

LdapDirectory::LdapDirectory(LdapSettings settings) : settings_(std::move(settings)) {
  if (settings_.groupBaseDn.empty())
    settings_.groupBaseDn = settings_.baseDn;
  if (auto checked = checkLdapSettings(settings_); !checked)
    configError_ = std::move(checked).error();
  if (!configError_ && settings_.caPem) {
    if (auto written = writeCaFile(); !written)
      configError_ = std::move(written).error();
  }
  if (configError_) {
    log::error("The LDAP directory cannot be used: {}", configError_->message());
  } else if (settings_.caPem && !usesTls()) {
    log::warn(
        "A CA certificate is configured for the directory at {}, but neither ldaps:// nor "
        "StartTLS is, so passwords travel unencrypted.",
        settings_.uri);
  }
}

LdapDirectory::~LdapDirectory() {
  if (!caFile_.empty())
    ::unlink(caFile_.c_str());
}

bool LdapDirectory::usesTls() const {
  return settings_.startTls || settings_.uri.find("ldaps://") != std::string::npos;
}

// libldap takes trust anchors only from a file (LDAP_OPT_X_TLS_CACERT takes
// an X509* of OpenSSL, and Debian's libldap uses GnuTLS), so the PEM is
// written once to a private file that the destructor removes. It holds only a
// public certificate, so one left behind by a crash leaks nothing.
Status LdapDirectory::writeCaFile() {
  const char* tmp = std::getenv("TMPDIR");
  std::string path =
      (fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / "aula-ldap-ca-XXXXXX.pem")
          .string();
  const int fd = ::mkstemps(path.data(), 4);  // mode 0600
  if (fd < 0) {
    const int err = errno;
    return Error(Errc::kIo,
                 fmt::format("Cannot write the directory's CA certificate to a temporary file "
                             "in {}: {}.",
                             fs::path(path).parent_path().string(), std::strerror(err)),
                 err);
  }
  std::string_view rest = *settings_.caPem;
  while (!rest.empty()) {
    const ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return Error(Errc::kIo,
                   fmt::format("Cannot write the directory's CA certificate to {}: {}.", path,
                               std::strerror(err)),
                   err);
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  ::close(fd);
  caFile_ = path;
  return okStatus();
}

Error LdapDirectory::unreachable(int rc) const {
  if (usesTls()) {
    // libldap reports a refused certificate as it reports a closed port
    // ("Connect error", "Can't contact LDAP server") and keeps the reason in
    // its debug output, so the sentence names both causes.
    return Error(Errc::kUnavailable,
                 fmt::format("The directory at {} is not reachable over TLS: {}; if it is up, "
                             "check that its certificate is signed by the configured CA and "
                             "names the host in the URI.",
                             settings_.uri, ldapMessage(rc)),
                 rc);
  }
  return Error(
      Errc::kUnavailable,
      fmt::format("The directory at {} is not reachable: {}.", settings_.uri, ldapMessage(rc)), rc);
}

Result<LdapHandle> LdapDirectory::connect() const {
  LDAP* raw = nullptr;
  const int rc = ldap_initialize(&raw, settings_.uri.c_str());
  LdapHandle ld(raw);
  if (rc != LDAP_SUCCESS || !ld) {
    return Error(
        Errc::kConfig,
        fmt::format("The directory URI '{}' is not valid: {}.", settings_.uri, ldapMessage(rc)),
        rc);
  }
  const int version = LDAP_VERSION3;
  const timeval timeout = toTimeval(settings_.timeout);
  bool ok = ldap_set_option(ld.get(), LDAP_OPT_PROTOCOL_VERSION, &version) == LDAP_OPT_SUCCESS &&
            // Chasing a referral would send the user's password to a server
            // nobody configured.
            ldap_set_option(ld.get(), LDAP_OPT_REFERRALS, LDAP_OPT_OFF) == LDAP_OPT_SUCCESS &&
            // A signal arriving in the broker must not fail a login.
            ldap_set_option(ld.get(), LDAP_OPT_RESTART, LDAP_OPT_ON) == LDAP_OPT_SUCCESS &&
            ldap_set_option(ld.get(), LDAP_OPT_NETWORK_TIMEOUT, &timeout) == LDAP_OPT_SUCCESS &&
            ldap_set_option(ld.get(), LDAP_OPT_TIMEOUT, &timeout) == LDAP_OPT_SUCCESS;
  if (ok && usesTls()) {
    // ldap.conf may say TLS_REQCERT never; a broker that sends passwords
    // verifies the server whatever the host's defaults are.
    const int demand = LDAP_OPT_X_TLS_DEMAND;
    const int clientContext = 0;
    ok = (caFile_.empty() || ldap_set_option(ld.get(), LDAP_OPT_X_TLS_CACERTFILE,
                                             caFile_.c_str()) == LDAP_OPT_SUCCESS) &&
         ldap_set_option(ld.get(), LDAP_OPT_X_TLS_REQUIRE_CERT, &demand) == LDAP_OPT_SUCCESS &&
         // Options set on a handle take effect only in a new TLS context.
         ldap_set_option(ld.get(), LDAP_OPT_X_TLS_NEWCTX, &clientContext) == LDAP_OPT_SUCCESS;
  }
  if (!ok) {
    return makeError(Errc::kConfig, "libldap refused the connection options for {}.",
                     settings_.uri);
  }
  if (settings_.startTls) {
    const int tlsRc = ldap_start_tls_s(ld.get(), nullptr, nullptr);
    if (tlsRc != LDAP_SUCCESS) {
      if (isUnreachable(tlsRc))
        return unreachable(tlsRc);
      // The server's own words ("TLS not configured") say what to fix.
      const std::string reason = diagnostic(ld.get());
      return Error(Errc::kUnavailable,
                   fmt::format("The directory at {} refused StartTLS: {}.", settings_.uri,
                               reason.empty() ? ldapMessage(tlsRc) : reason),
                   tlsRc);
    }
  }
  return ld;
}

Status LdapDirectory::bindSearchIdentity(LDAP* ld) const {
  berval credentials{};
  const char* dn = nullptr;
  if (settings_.bindDn) {
    dn = settings_.bindDn->c_str();
    credentials.bv_len = settings_.bindPassword.size();
    credentials.bv_val = const_cast<char*>(settings_.bindPassword.data());
  }
  const int rc =
      ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &credentials, nullptr, nullptr, nullptr);
  if (rc == LDAP_SUCCESS)
    return okStatus();
  if (isUnreachable(rc))
    return unreachable(rc);
  if (isBusy(rc)) {
    return Error(Errc::kUnavailable,
                 fmt::format("The directory at {} is too busy to answer: {}.", settings_.uri,
                             ldapMessage(rc)),
                 rc);
  }
  // Not the user's fault: telling them their password is wrong would send
  // them to reset a password that is fine.
  if (settings_.bindDn) {
    return Error(Errc::kConfig,
                 fmt::format("The directory at {} refused the broker's bind as '{}' ({}); check "
                             "the LDAP bind DN and password in the configuration.",
                             settings_.uri, *settings_.bindDn, ldapMessage(rc)),
                 rc);
  }
  return Error(Errc::kConfig,
               fmt::format("The directory at {} refused an anonymous bind ({}); configure an "
                           "LDAP bind DN and password for the broker.",
                           settings_.uri, ldapMessage(rc)),
               rc);
}

Error LdapDirectory::searchFailed(LDAP* ld, int rc, const std::string& base,
                                  const std::string& filter) const {
  if (isUnreachable(rc))
    return unreachable(rc);
  if (isBusy(rc)) {
    return Error(Errc::kUnavailable,
                 fmt::format("The directory at {} is too busy to answer: {}.", settings_.uri,
                             ldapMessage(rc)),
                 rc);
  }
  if (rc == LDAP_NO_SUCH_OBJECT) {
    return Error(
        Errc::kConfig,
        fmt::format("The base DN '{}' does not exist in the directory at {}.", base, settings_.uri),
        rc);
  }
  if (rc == LDAP_FILTER_ERROR) {
    return Error(Errc::kConfig,
                 fmt::format("The LDAP filter '{}' is not valid: {}.", filter, ldapMessage(rc)),
                 rc);
  }
  const std::string reason = diagnostic(ld);
  return Error(Errc::kConfig,
               fmt::format("The directory at {} refused the search for '{}' in '{}': {}.",
                           settings_.uri, filter, base, reason.empty() ? ldapMessage(rc) : reason),
               rc);
}

Result<UserEntry> LdapDirectory::findUser(LDAP* ld, std::string_view username) const {
  const std::string filter =
      replaceAll(settings_.userFilter, "{username}", escapeLdapFilterValue(username));
  // libldap's prototype predates const.
  std::array<char*, 6> attributes = {const_cast<char*>("cn"),
                                     const_cast<char*>("displayName"),
                                     const_cast<char*>("mail"),
                                     const_cast<char*>("memberOf"),
                                     const_cast<char*>(settings_.uidAttribute.c_str()),
                                     nullptr};
  if (settings_.uidAttribute.empty())
    attributes[4] = nullptr;
  timeval timeout = toTimeval(settings_.timeout);
  LDAPMessage* raw = nullptr;
  // Two entries are enough to know that there is more than one.
  const int rc = ldap_search_ext_s(ld, settings_.baseDn.c_str(), LDAP_SCOPE_SUBTREE, filter.c_str(),
                                   attributes.data(), 0, nullptr, nullptr, &timeout, 2, &raw);
  MessagePtr result(raw);
  if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
    return searchFailed(ld, rc, settings_.baseDn, filter);
  }
  const int count = result ? ldap_count_entries(ld, result.get()) : 0;
  if (count == 0) {
    log::debug("No entry in '{}' of the directory matches {}.", settings_.baseDn, filter);
    return wrongCredentials();
  }
  if (count > 1 || rc == LDAP_SIZELIMIT_EXCEEDED) {
    // Logging in as whichever entry came first would be a coin toss between
    // two people; the directory or the filter needs fixing.
    log::warn(
        "More than one entry in '{}' of the directory at {} matches the user filter {}; nobody "
        "can log in under that name until the filter matches exactly one entry.",
        settings_.baseDn, settings_.uri, filter);
    return wrongCredentials();
  }
  LDAPMessage* entry = ldap_first_entry(ld, result.get());
  LdapString dn(entry != nullptr ? ldap_get_dn(ld, entry) : nullptr);
  if (!dn || *dn == '\0') {
    return makeError(Errc::kInternal,
                     "The directory at {} returned an entry without a DN for the filter {}.",
                     settings_.uri, filter);
  }
  UserEntry user;
  user.dn = dn.get();
  user.displayName = firstValue(ld, entry, "displayName");
  if (user.displayName.empty())
    user.displayName = firstValue(ld, entry, "cn");
  user.email = firstValue(ld, entry, "mail");
  user.memberOf = attributeValues(ld, entry, "memberOf");
  if (!settings_.uidAttribute.empty())
    user.uid = firstValue(ld, entry, settings_.uidAttribute.c_str());
  return user;
}

Status LdapDirectory::bindAsUser(LDAP* ld, const std::string& dn, std::string_view password) const {
  berval credentials{};
  credentials.bv_len = password.size();
  credentials.bv_val = const_cast<char*>(password.data());
  const int rc =
      ldap_sasl_bind_s(ld, dn.c_str(), LDAP_SASL_SIMPLE, &credentials, nullptr, nullptr, nullptr);
  if (rc == LDAP_SUCCESS)
    return okStatus();
  if (isUnreachable(rc))
    return unreachable(rc);
  if (isBusy(rc)) {
    return Error(Errc::kUnavailable,
                 fmt::format("The directory at {} is too busy to answer: {}.", settings_.uri,
                             ldapMessage(rc)),
                 rc);
  }
  if (rc == LDAP_INVALID_CREDENTIALS) {
    log::debug("The directory refused the password for '{}'.", dn);
  } else {
    // A locked or disabled account, or an entry without a password: the
    // user hears the usual sentence, the administrator reads why here.
    log::warn("The directory at {} refused the bind as '{}': {}.", settings_.uri, dn,
              ldapMessage(rc));
  }
  return wrongCredentials();
}

// The DNs of the groups `filter` finds in the group base, in lower case.
Result<std::vector<std::string>> LdapDirectory::searchGroupDns(LDAP* ld, const std::string& filter,
                                                               const std::string& about) const {
  std::vector<std::string> groups;
  std::array<char*, 2> attributes = {const_cast<char*>(LDAP_NO_ATTRS), nullptr};
  timeval timeout = toTimeval(settings_.timeout);
  LDAPMessage* raw = nullptr;
  const int rc =
      ldap_search_ext_s(ld, settings_.groupBaseDn.c_str(), LDAP_SCOPE_SUBTREE, filter.c_str(),
                        attributes.data(), 0, nullptr, nullptr, &timeout, 0, &raw);
  MessagePtr result(raw);
  if (rc == LDAP_SIZELIMIT_EXCEEDED) {
    log::warn(
        "The directory at {} returned only part of the groups of '{}' (size limit); roles from "
        "the others are missing.",
        settings_.uri, about);
  } else if (rc != LDAP_SUCCESS) {
    return searchFailed(ld, rc, settings_.groupBaseDn, filter);
  }
  if (!result)
    return groups;
  for (LDAPMessage* entry = ldap_first_entry(ld, result.get()); entry != nullptr;
       entry = ldap_next_entry(ld, entry)) {
    LdapString dn(ldap_get_dn(ld, entry));
    if (dn && *dn != '\0')
      groups.push_back(lowerAscii(dn.get()));
  }
  return groups;
}

// The user's groups: those the group filter finds, those in memberOf, and
// (as configured) the groups above them.
Status LdapDirectory::findGroups(LDAP* ld, const UserEntry& entry, std::string_view username,
                                 DirectoryUser* user) const {
  std::vector<std::string> groups;
  if (!settings_.groupFilter.empty()) {
    std::string filter = settings_.groupFilter;
    if (settings_.nestedGroups == NestedGroups::kInChain) {
      // The directory walks the chain itself: every group the user is in,
      // at any depth, in one search.
      filter = "(member:1.2.840.113556.1.4.1941:={dn})";
      user->nesting = "in-chain";
    }
    if (filter.find("{uid}") != std::string::npos && entry.uid.empty()) {
      log::warn(
          "The directory entry '{}' has no {} attribute, which the group filter's {{uid}} needs; "
          "its groups from that filter are not known.",
          entry.dn, settings_.uidAttribute);
    } else {
      filter = replaceAll(filter, "{dn}", escapeLdapFilterValue(entry.dn));
      filter = replaceAll(filter, "{username}", escapeLdapFilterValue(username));
      filter = replaceAll(filter, "{uid}", escapeLdapFilterValue(entry.uid));
      groups = AULA_TRY(searchGroupDns(ld, filter, entry.dn));
    }
  }
  for (const std::string& group : entry.memberOf)
    groups.push_back(lowerAscii(group));
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  user->groupDns = std::move(groups);
  if (settings_.nestedGroups == NestedGroups::kFollow)
    AULA_TRY_STATUS(followNested(ld, user));
  return okStatus();
}

// Breadth first, one search per group and level: the groups that contain
// each group found so far, up to nestedDepth levels. A group seen before is
// not searched again, so a cycle (A in B in A) ends there.
Status LdapDirectory::followNested(LDAP* ld, DirectoryUser* user) const {
  user->nesting = "followed";
  std::set<std::string> seen(user->groupDns.begin(), user->groupDns.end());
  std::vector<std::string> level = user->groupDns;
  for (int depth = 1; depth <= settings_.nestedDepth && !level.empty(); ++depth) {
    std::vector<std::string> next;
    for (const auto& group : level) {
      const std::string filter =
          replaceAll(settings_.nestedFilter, "{dn}", escapeLdapFilterValue(group));
      for (auto& parent : AULA_TRY(searchGroupDns(ld, filter, group))) {
        if (seen.contains(parent)) {
          // Reached twice: through two paths, or round a cycle.
          bool cycle = false;
          for (auto at = group;;) {
            if (at == parent) {
              cycle = true;
              break;
            }
            auto up = user->via.find(at);
            if (up == user->via.end())
              break;
            at = up->second;
          }
          if (cycle) {
            log::info(
                "The directory groups '{}' and '{}' contain each other; the cycle is "
                "followed once.",
                parent, group);
          }
          continue;
        }
        seen.insert(parent);
        user->via[parent] = group;
        next.push_back(std::move(parent));
      }
    }
    if (depth == settings_.nestedDepth && !next.empty()) {
      // The groups one level further up are not searched.
      log::debug("Groups of '{}' above {} levels are not followed (ldap.nested_depth).", user->dn,
                 depth);
    }
    level = std::move(next);
  }
  user->groupDns.assign(seen.begin(), seen.end());
  return okStatus();
}

// The entry and its groups as the broker sees them.
Result<DirectoryUser> LdapDirectory::userOf(LDAP* ld, UserEntry entry,
                                            std::string_view username) const {
  DirectoryUser user;
  AULA_TRY_STATUS(findGroups(ld, entry, username, &user));
  user.username = std::string(username);
  user.dn = std::move(entry.dn);
  user.uid = std::move(entry.uid);
  user.displayName = std::move(entry.displayName);
  user.email = std::move(entry.email);
  return user;
}

Result<DirectoryUser> LdapDirectory::authenticate(std::string_view username,
                                                  std::string_view password) {
  if (configError_)
    return *configError_;
  // An empty password would make the bind below an anonymous bind, which
  // succeeds on most servers.
  if (username.empty() || password.empty())
    return wrongCredentials();

  LdapHandle ld = AULA_TRY(connect());
  AULA_TRY_STATUS(bindSearchIdentity(ld.get()));
  UserEntry entry = AULA_TRY(findUser(ld.get(), username));
  AULA_TRY_STATUS(bindAsUser(ld.get(), entry.dn, password));
  // Groups are read as the configured identity, like the user's entry: the
  // user's own rights vary between directories, the broker's are known.
  AULA_TRY_STATUS(bindSearchIdentity(ld.get()));
  auto user = AULA_TRY(userOf(ld.get(), std::move(entry), username));
  log::debug("'{}' authenticated against the directory as '{}' with {} groups.", username, user.dn,
             user.groupDns.size());
  return user;
}

Result<DirectoryUser> LdapDirectory::lookup(std::string_view username) {
  if (configError_)
    return *configError_;
  if (username.empty())
    return makeError(Errc::kInvalidArgument, "Give the name of the user to look up.");
  LdapHandle ld = AULA_TRY(connect());
  AULA_TRY_STATUS(bindSearchIdentity(ld.get()));
  auto entry = findUser(ld.get(), username);
  if (!entry && entry.error().code() == Errc::kUnauthenticated) {
    return makeError(Errc::kNotFound,
                     "No single entry under '{}' of the directory at {} matches the user filter "
                     "{} for '{}'.",
                     settings_.baseDn, settings_.uri, settings_.userFilter, username);
  }
  AULA_TRY_STATUS(entry);
  return userOf(ld.get(), std::move(entry).value(), username);
}

}  // namespace

Status checkLdapSettings(const LdapSettings& settings) {
  if (settings.uri.empty()) {
    return makeError(Errc::kConfig, "No LDAP URI is configured for the directory (ldap.uri).");
  }
  if (settings.baseDn.empty()) {
    return makeError(Errc::kConfig,
                     "No base DN is configured for the directory (ldap.base_dn), such as "
                     "\"dc=school,dc=example\".");
  }
  if (settings.userFilter.find("{username}") == std::string::npos) {
    // Without the placeholder every name would find the same entry, and
    // anyone with that entry's password could log in under any name.
    return makeError(
        Errc::kConfig,
        "The LDAP user filter '{}' (ldap.user_filter) does not contain {{username}}; "
        "write it as, for example, (uid={{username}}) or (sAMAccountName={{username}}).",
        settings.userFilter);
  }
  AULA_TRY_STATUS(checkFilter("user filter", "ldap.user_filter", settings.userFilter));
  if (!settings.groupFilter.empty()) {
    if (!containsAny(settings.groupFilter, {"{dn}", "{username}", "{uid}"})) {
      // Without a placeholder every user would be in every group found.
      return makeError(Errc::kConfig,
                       "The LDAP group filter '{}' (ldap.group_filter) names no user: it needs "
                       "{{dn}} (groupOfNames: (member={{dn}})), {{uid}} or {{username}} "
                       "(posixGroup: (memberUid={{uid}})).",
                       settings.groupFilter);
    }
    AULA_TRY_STATUS(checkFilter("group filter", "ldap.group_filter", settings.groupFilter));
  }
  if (settings.groupFilter.find("{uid}") != std::string::npos && settings.uidAttribute.empty()) {
    return makeError(Errc::kConfig,
                     "The LDAP group filter uses {{uid}}, but ldap.uid_attribute is empty; set "
                     "it to the attribute that holds the login name, such as uid.");
  }
  if (settings.nestedGroups == NestedGroups::kFollow) {
    if (settings.nestedFilter.find("{dn}") == std::string::npos) {
      return makeError(Errc::kConfig,
                       "The LDAP nested-group filter '{}' (ldap.nested_filter) does not contain "
                       "{{dn}}, the DN of the group whose parents it finds; write it as, for "
                       "example, (member={{dn}}).",
                       settings.nestedFilter);
    }
    AULA_TRY_STATUS(
        checkFilter("nested-group filter", "ldap.nested_filter", settings.nestedFilter));
    if (settings.nestedDepth < 1 || settings.nestedDepth > 32) {
      return makeError(Errc::kConfig,
                       "ldap.nested_depth is {}; it must be 1 to 32 levels of groups above the "
                       "user's own.",
                       settings.nestedDepth);
    }
  }
  if (settings.nestedGroups == NestedGroups::kInChain && settings.groupFilter.empty()) {
    return makeError(Errc::kConfig,
                     "ldap.nested_groups is \"in_chain\", which searches groups, but "
                     "ldap.group_filter is empty; leave it at its default.");
  }
  if (settings.bindDn && settings.bindPassword.empty()) {
    // A DN with an empty password is an "unauthenticated bind": anonymous on
    // servers that allow it, refused on the others; never what was meant.
    return makeError(Errc::kConfig,
                     "The LDAP bind DN '{}' is configured without a password "
                     "(ldap.bind_password_file is missing or empty).",
                     *settings.bindDn);
  }
  if (settings.startTls && settings.uri.find("ldaps://") != std::string::npos) {
    return makeError(Errc::kConfig,
                     "The directory URI '{}' is ldaps:// and StartTLS is also on; use one.",
                     settings.uri);
  }
  if (settings.caPem && settings.caPem->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return makeError(Errc::kConfig,
                     "The CA certificate for the directory at {} is not a PEM certificate.",
                     settings.uri);
  }
  return {};
}

std::unique_ptr<Directory> makeLdapDirectory(LdapSettings settings) {
  return std::make_unique<LdapDirectory>(std::move(settings));
}

// RFC 4515 requires escaping NUL, '*', '(', ')' and '\'. Control characters
// and every byte outside ASCII are escaped too: the server decodes \xx back to
// the same octets, so UTF-8 names still match, and a name that is not valid
// UTF-8 cannot make the filter invalid.
std::string escapeLdapFilterValue(std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7f || c == '*' || c == '(' || c == ')' || c == '\\') {
      out.push_back('\\');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0x0f]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace aula::broker
