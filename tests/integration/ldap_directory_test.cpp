// The LDAP adapter of aula::broker::Directory against a real slapd: users in
// nested organisational units, groupOfNames and groupOfUniqueNames, memberOf,
// a service account, filter injection, a directory that is stopped or never
// answers, and StartTLS and ldaps:// with a CA of the test's own.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aula/broker/directory.hpp"
#include "aula/common/crypto.hpp"
#include "aula/common/log.hpp"

#include "support/slapd_server.hpp"

namespace aula::test {
namespace {

using broker::DirectoryUser;
using broker::escapeLdapFilterValue;
using broker::LdapSettings;
using broker::makeLdapDirectory;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using namespace std::chrono_literals;

constexpr std::string_view kWrongCredentials = "The user name or password is wrong.";
constexpr std::string_view kServiceDn = "cn=broker,ou=services,dc=school,dc=test";
constexpr std::string_view kServicePassword = "broker-secret";
constexpr std::string_view kAliceDn =
    "uid=alice,ou=students,ou=school-a,ou=people,dc=school,dc=test";
constexpr std::string_view kAlicePassword = "alice-secret";

// Groups are spelt in mixed case on purpose: the adapter must hand them back
// in lower case. class-1b is a groupOfUniqueNames, which memberof does not
// follow, so carol's group can only come from the group search.
constexpr std::string_view kDirectoryLdif = R"(dn: ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: people

dn: ou=school-a,ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: school-a

dn: ou=students,ou=school-a,ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: students

dn: ou=teachers,ou=school-a,ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: teachers

dn: ou=school-b,ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: school-b

dn: ou=students,ou=school-b,ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: students

dn: uid=alice,ou=students,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
displayName: Alice Anders
mail: alice@school.test
userPassword: alice-secret

dn: uid=bob,ou=students,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob Berger
sn: Berger
userPassword: bob-secret

dn: uid=tom,ou=teachers,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: tom
cn: Tom Teacher
sn: Teacher
displayName: Herr Teacher
mail: tom@school.test
userPassword: tom-secret

dn: uid=carol,ou=students,ou=school-b,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: carol
cn: Carol Clark
sn: Clark
mail: carol@school.test
userPassword: carol-secret

dn: uid=jose,ou=students,ou=school-b,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: jose
cn: José Núñez
sn: Núñez
userPassword: jose-secret

dn: ou=services,dc=school,dc=test
objectClass: organizationalUnit
ou: services

dn: cn=broker,ou=services,dc=school,dc=test
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: broker
userPassword: broker-secret

dn: ou=Groups,dc=school,dc=test
objectClass: organizationalUnit
ou: Groups

dn: cn=Teachers-A,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Teachers-A
member: uid=tom,ou=teachers,ou=school-a,ou=people,dc=school,dc=test

dn: cn=Class-1A,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Class-1A
member: uid=alice,ou=students,ou=school-a,ou=people,dc=school,dc=test
member: uid=bob,ou=students,ou=school-a,ou=people,dc=school,dc=test

dn: cn=Class-1B,ou=Groups,dc=school,dc=test
objectClass: groupOfUniqueNames
cn: Class-1B
uniqueMember: uid=carol,ou=students,ou=school-b,ou=people,dc=school,dc=test
)";

// The two other layouts schools run, beside the tree above: a classic
// OpenLDAP school with posixAccount users and posixGroup classes listing
// memberUid, and nested groupOfNames (a class inside a year inside a stage,
// as Active Directory schools have them), with a cycle on top.
constexpr std::string_view kLayoutsLdif = R"(dn: ou=posix,dc=school,dc=test
objectClass: organizationalUnit
ou: posix

dn: uid=pia,ou=posix,dc=school,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: pia
cn: Pia Posix
sn: Posix
uidNumber: 2001
gidNumber: 2001
homeDirectory: /home/pia
userPassword: pia-secret

dn: cn=class-2c,ou=posix,dc=school,dc=test
objectClass: posixGroup
cn: class-2c
gidNumber: 3001
memberUid: pia
memberUid: someone-else

dn: cn=staff,ou=posix,dc=school,dc=test
objectClass: posixGroup
cn: staff
gidNumber: 3002
memberUid: someone-else

dn: ou=nested,dc=school,dc=test
objectClass: organizationalUnit
ou: nested

dn: uid=nina,ou=nested,dc=school,dc=test
objectClass: inetOrgPerson
uid: nina
cn: Nina Nested
sn: Nested
userPassword: nina-secret

dn: cn=Class-3A,ou=nested,dc=school,dc=test
objectClass: groupOfNames
cn: Class-3A
member: uid=nina,ou=nested,dc=school,dc=test

dn: cn=Year-3,ou=nested,dc=school,dc=test
objectClass: groupOfNames
cn: Year-3
member: cn=Class-3A,ou=nested,dc=school,dc=test

dn: cn=Primary,ou=nested,dc=school,dc=test
objectClass: groupOfNames
cn: Primary
member: cn=Year-3,ou=nested,dc=school,dc=test

dn: cn=Loop-A,ou=nested,dc=school,dc=test
objectClass: groupOfNames
cn: Loop-A
member: cn=Primary,ou=nested,dc=school,dc=test

dn: cn=Loop-B,ou=nested,dc=school,dc=test
objectClass: groupOfNames
cn: Loop-B
member: cn=Loop-A,ou=nested,dc=school,dc=test

dn: cn=Loop-A,ou=nested,dc=school,dc=test
changetype: modify
add: member
member: cn=Loop-B,ou=nested,dc=school,dc=test
)";

// Class lists are not for students: only the broker's account (and, for
// the tests without one, anonymous) reads the groups. Groups must therefore
// be read as the search identity, not as the user who just logged in.
constexpr std::string_view kGroupsAcl = R"(access to dn.subtree="ou=Groups,dc=school,dc=test"
  by dn.exact="cn=broker,ou=services,dc=school,dc=test" read
  by anonymous read
  by * none
)";

// Collects log lines while it lives.
class LogCapture {
 public:
  LogCapture() {
    log::setSink([this](log::Level, std::string_view, std::string_view message) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(message);
    });
  }
  ~LogCapture() { log::setSink(nullptr); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::string text() const {
    std::lock_guard lock(mutex_);
    std::string all;
    for (const auto& line : lines_)
      all += line + "\n";
    return all;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> lines_;
};

// A TCP port that accepts connections (the kernel does, up to the backlog)
// and never answers: a directory that hangs.
class SilentPort {
 public:
  SilentPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    auto* generic = reinterpret_cast<sockaddr*>(&address);
    if (fd_ < 0 || ::bind(fd_, generic, sizeof address) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, generic, &length) != 0) {
      throw std::runtime_error("Cannot listen on 127.0.0.1.");
    }
    port_ = ntohs(address.sin_port);
  }
  ~SilentPort() { ::close(fd_); }
  SilentPort(const SilentPort&) = delete;
  SilentPort& operator=(const SilentPort&) = delete;

  std::string uri() const { return "ldap://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// One slapd for the whole suite; each test builds the settings it needs.
class LdapDirectoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!SlapdServer::available(&skipReason_))
      return;
    try {
      server_ = std::make_unique<SlapdServer>(SlapdOptions{.accessRules = std::string(kGroupsAcl)});
      server_->addLdif(kDirectoryLdif);
      server_->addLdif(kLayoutsLdif);
    } catch (const std::exception& e) {
      // Reported by each test as a failure: a server that cannot start is a
      // broken fixture, not a reason to skip.
      startError_ = e.what();
      server_.reset();
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (!startError_.empty())
      FAIL() << "slapd did not start: " << startError_;
    if (!server_)
      GTEST_SKIP() << skipReason_;
  }

  static LdapSettings settings() {
    LdapSettings settings;
    settings.uri = server_->uri();
    settings.baseDn = std::string(SlapdServer::kSuffix);
    settings.timeout = 5s;
    return settings;
  }

  static Result<DirectoryUser> login(const LdapSettings& settings, std::string_view username,
                                     std::string_view password) {
    return makeLdapDirectory(settings)->authenticate(username, password);
  }

  static inline std::unique_ptr<SlapdServer> server_;
  static inline std::string skipReason_;
  static inline std::string startError_;
};

void expectWrongCredentials(const Result<DirectoryUser>& result, std::string_view what) {
  ASSERT_FALSE(result.ok()) << what << " logged in";
  EXPECT_EQ(result.error().code(), Errc::kUnauthenticated)
      << what << ": " << result.error().message();
  EXPECT_EQ(result.error().message(), kWrongCredentials) << what;
}

TEST_F(LdapDirectoryTest, AliceGetsHerEntryAndGroupsInLowerCase) {
  auto user = login(settings(), "alice", kAlicePassword);
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->username, "alice");
  EXPECT_EQ(user->dn, kAliceDn);
  EXPECT_EQ(user->displayName, "Alice Anders");
  EXPECT_EQ(user->email, "alice@school.test");
  // Found twice, by the group search and in memberOf, and listed once.
  EXPECT_THAT(user->groupDns, ElementsAre("cn=class-1a,ou=groups,dc=school,dc=test"));
}

TEST_F(LdapDirectoryTest, WithoutDisplayNameTheCnIsShown) {
  auto user = login(settings(), "bob", "bob-secret");
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->displayName, "Bob Berger");
  EXPECT_EQ(user->email, "");
  EXPECT_THAT(user->groupDns, ElementsAre("cn=class-1a,ou=groups,dc=school,dc=test"));
}

TEST_F(LdapDirectoryTest, UserInAnotherSchoolGetsHerGroupOfUniqueNames) {
  auto user = login(settings(), "carol", "carol-secret");
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->dn, "uid=carol,ou=students,ou=school-b,ou=people,dc=school,dc=test");
  EXPECT_THAT(user->groupDns, ElementsAre("cn=class-1b,ou=groups,dc=school,dc=test"));
}

TEST_F(LdapDirectoryTest, TeacherGetsTheTeachersGroup) {
  auto user = login(settings(), "tom", "tom-secret");
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->displayName, "Herr Teacher");
  EXPECT_THAT(user->groupDns, ElementsAre("cn=teachers-a,ou=groups,dc=school,dc=test"));
}

TEST_F(LdapDirectoryTest, SeparateUserAndGroupBasesWork) {
  auto custom = settings();
  custom.baseDn = "ou=school-a,ou=people,dc=school,dc=test";
  custom.groupBaseDn = "ou=groups,dc=school,dc=test";
  auto tom = login(custom, "tom", "tom-secret");
  ASSERT_TRUE(tom.ok()) << tom.error().message();
  EXPECT_THAT(tom->groupDns, ElementsAre("cn=teachers-a,ou=groups,dc=school,dc=test"));
  // carol is outside the user base.
  expectWrongCredentials(login(custom, "carol", "carol-secret"), "carol outside the base");
}

TEST_F(LdapDirectoryTest, WrongPasswordUnknownUserAndEmptyPasswordLookTheSame) {
  LogCapture logs;
  auto directory = makeLdapDirectory(settings());
  expectWrongCredentials(directory->authenticate("alice", "wrong-password"), "wrong password");
  expectWrongCredentials(directory->authenticate("alice", "bob-secret"), "bob's password");
  expectWrongCredentials(directory->authenticate("mallory", "wrong-password"), "unknown user");
  // An empty simple bind is an anonymous bind, which slapd accepts.
  expectWrongCredentials(directory->authenticate("alice", ""), "empty password");
  expectWrongCredentials(directory->authenticate("", kAlicePassword), "empty name");
  EXPECT_THAT(logs.text(), Not(HasSubstr("wrong-password")));
  EXPECT_THAT(logs.text(), Not(HasSubstr("bob-secret")));
}

TEST_F(LdapDirectoryTest, FilterInjectionNeverMatchesAnyone) {
  auto directory = makeLdapDirectory(settings());
  // Unescaped, "ali*" would match alice and her password would let it in,
  // and "*" or "*)(uid=*" would match everyone.
  for (std::string_view name :
       {"ali*", "*", "*)(uid=*", "alice)(|(uid=*", "alice)(uid=alice", "alice\\", "(uid=alice)"}) {
    expectWrongCredentials(directory->authenticate(name, kAlicePassword), name);
  }
  expectWrongCredentials(directory->authenticate(std::string_view("alice\0x", 7), kAlicePassword),
                         "a name with NUL");
}

TEST_F(LdapDirectoryTest, NonAsciiNamesMatchThroughTheEscaping) {
  auto byCn = settings();
  byCn.userFilter = "(cn={username})";
  auto user = login(byCn,
                    "Jos\xc3\xa9 N\xc3\xba\xc3\xb1"
                    "ez",
                    "jose-secret");
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->dn, "uid=jose,ou=students,ou=school-b,ou=people,dc=school,dc=test");
}

TEST_F(LdapDirectoryTest, ServiceAccountSearchWorksLikeAnonymous) {
  auto service = settings();
  service.bindDn = std::string(kServiceDn);
  service.bindPassword = std::string(kServicePassword);
  auto viaService = login(service, "alice", kAlicePassword);
  auto anonymous = login(settings(), "alice", kAlicePassword);
  ASSERT_TRUE(viaService.ok()) << viaService.error().message();
  ASSERT_TRUE(anonymous.ok()) << anonymous.error().message();
  EXPECT_EQ(viaService->dn, anonymous->dn);
  EXPECT_EQ(viaService->displayName, anonymous->displayName);
  EXPECT_EQ(viaService->email, anonymous->email);
  EXPECT_EQ(viaService->groupDns, anonymous->groupDns);
  expectWrongCredentials(login(service, "alice", "nope"), "wrong password");
}

TEST_F(LdapDirectoryTest, WrongServicePasswordIsAConfigurationErrorNotTheUsers) {
  auto service = settings();
  service.bindDn = std::string(kServiceDn);
  service.bindPassword = "not-the-service-password";
  auto result = login(service, "alice", kAlicePassword);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kConfig);
  EXPECT_THAT(result.error().message(), HasSubstr(std::string(kServiceDn)));
  EXPECT_THAT(result.error().message(), Not(HasSubstr("not-the-service-password")));
  EXPECT_THAT(result.error().message(), Not(HasSubstr(kAlicePassword)));
}

TEST_F(LdapDirectoryTest, FilterMatchingSeveralEntriesIsRefusedAndLogged) {
  auto ambiguous = settings();
  ambiguous.userFilter = "(|(uid={username})(objectClass=inetOrgPerson))";
  LogCapture logs;
  expectWrongCredentials(login(ambiguous, "alice", kAlicePassword), "ambiguous filter");
  EXPECT_THAT(logs.text(), HasSubstr("(|(uid=alice)(objectClass=inetOrgPerson))"));
  EXPECT_THAT(logs.text(), HasSubstr("More than one entry"));
}

TEST_F(LdapDirectoryTest, GroupsComeFromMemberOfWhenThereIsNoGroupSearch) {
  auto memberOfOnly = settings();
  memberOfOnly.groupFilter = "";
  auto alice = login(memberOfOnly, "alice", kAlicePassword);
  ASSERT_TRUE(alice.ok()) << alice.error().message();
  EXPECT_THAT(alice->groupDns, ElementsAre("cn=class-1a,ou=groups,dc=school,dc=test"));
  // memberof does not follow groupOfUniqueNames.
  auto carol = login(memberOfOnly, "carol", "carol-secret");
  ASSERT_TRUE(carol.ok()) << carol.error().message();
  EXPECT_THAT(carol->groupDns, IsEmpty());
}

TEST_F(LdapDirectoryTest, SettingsThatCannotWorkAreConfigurationErrors) {
  auto noPlaceholder = settings();
  noPlaceholder.userFilter = "(uid=alice)";
  auto allGroups = settings();
  allGroups.groupFilter = "(objectClass=groupOfNames)";
  auto noBase = settings();
  noBase.baseDn = "ou=nowhere,dc=school,dc=test";
  auto badFilter = settings();
  badFilter.userFilter = "(uid={username}";
  auto noPassword = settings();
  noPassword.bindDn = std::string(kServiceDn);
  auto noUri = settings();
  noUri.uri = "";
  for (const auto& [what, bad] :
       std::vector<std::pair<std::string, LdapSettings>>{{"user filter", noPlaceholder},
                                                         {"group filter", allGroups},
                                                         {"base", noBase},
                                                         {"filter syntax", badFilter},
                                                         {"bind password", noPassword},
                                                         {"uri", noUri}}) {
    auto result = login(bad, "alice", kAlicePassword);
    ASSERT_FALSE(result.ok()) << what;
    EXPECT_EQ(result.error().code(), Errc::kConfig) << what << ": " << result.error().message();
    EXPECT_EQ(result.error().message().back(), '.') << result.error().message();
  }
}

TEST_F(LdapDirectoryTest, PosixGroupsListingMemberUidGiveTheirGroups) {
  auto posix = settings();
  posix.groupFilter = "(&(objectClass=posixGroup)(memberUid={uid}))";
  auto pia = login(posix, "pia", "pia-secret");
  ASSERT_TRUE(pia.ok()) << pia.error().message();
  EXPECT_EQ(pia->uid, "pia");
  EXPECT_THAT(pia->groupDns, ElementsAre("cn=class-2c,ou=posix,dc=school,dc=test"));
  // {username} is the name as given at login; the same here.
  posix.groupFilter = "(&(objectClass=posixGroup)(memberUid={username}))";
  pia = login(posix, "pia", "pia-secret");
  ASSERT_TRUE(pia.ok()) << pia.error().message();
  EXPECT_THAT(pia->groupDns, ElementsAre("cn=class-2c,ou=posix,dc=school,dc=test"));
  // A name that is not in the group's list gets none of it.
  auto alice = login(posix, "alice", kAlicePassword);
  ASSERT_TRUE(alice.ok()) << alice.error().message();
  EXPECT_THAT(alice->groupDns, ElementsAre("cn=class-1a,ou=groups,dc=school,dc=test"))
      << "memberOf still counts";
}

TEST_F(LdapDirectoryTest, NestedGroupsAreFollowedToTheTopWithTheirPathAndCyclesEnd) {
  auto nested = settings();
  auto direct = login(nested, "nina", "nina-secret");
  ASSERT_TRUE(direct.ok()) << direct.error().message();
  EXPECT_THAT(direct->groupDns, ElementsAre("cn=class-3a,ou=nested,dc=school,dc=test"))
      << "without nesting, only the class";

  nested.nestedGroups = broker::NestedGroups::kFollow;
  LogCapture logs;
  auto nina = login(nested, "nina", "nina-secret");
  ASSERT_TRUE(nina.ok()) << nina.error().message();
  EXPECT_EQ(nina->nesting, "followed");
  EXPECT_THAT(nina->groupDns, ElementsAre("cn=class-3a,ou=nested,dc=school,dc=test",
                                          "cn=loop-a,ou=nested,dc=school,dc=test",
                                          "cn=loop-b,ou=nested,dc=school,dc=test",
                                          "cn=primary,ou=nested,dc=school,dc=test",
                                          "cn=year-3,ou=nested,dc=school,dc=test"));
  EXPECT_EQ(nina->via.at("cn=year-3,ou=nested,dc=school,dc=test"),
            "cn=class-3a,ou=nested,dc=school,dc=test");
  EXPECT_EQ(nina->via.at("cn=primary,ou=nested,dc=school,dc=test"),
            "cn=year-3,ou=nested,dc=school,dc=test");
  EXPECT_EQ(nina->via.at("cn=loop-b,ou=nested,dc=school,dc=test"),
            "cn=loop-a,ou=nested,dc=school,dc=test");
  EXPECT_FALSE(nina->via.contains("cn=class-3a,ou=nested,dc=school,dc=test")) << "direct";
  EXPECT_THAT(logs.text(), HasSubstr("contain each other"));

  // Two levels up: the class, its year and the stage; not the loop above.
  nested.nestedDepth = 2;
  auto shallow = login(nested, "nina", "nina-secret");
  ASSERT_TRUE(shallow.ok()) << shallow.error().message();
  EXPECT_THAT(shallow->groupDns, ElementsAre("cn=class-3a,ou=nested,dc=school,dc=test",
                                             "cn=primary,ou=nested,dc=school,dc=test",
                                             "cn=year-3,ou=nested,dc=school,dc=test"));
}

TEST_F(LdapDirectoryTest, LookupFindsTheEntryAndGroupsWithoutAPassword) {
  auto nested = settings();
  nested.nestedGroups = broker::NestedGroups::kFollow;
  auto directory = makeLdapDirectory(nested);
  auto nina = directory->lookup("nina");
  ASSERT_TRUE(nina.ok()) << nina.error().message();
  EXPECT_EQ(nina->dn, "uid=nina,ou=nested,dc=school,dc=test");
  EXPECT_EQ(nina->displayName, "Nina Nested");
  EXPECT_EQ(nina->groupDns.size(), 5U);
  auto nobody = directory->lookup("nobody");
  ASSERT_FALSE(nobody.ok());
  EXPECT_EQ(nobody.error().code(), Errc::kNotFound);
  EXPECT_THAT(nobody.error().message(), HasSubstr("(uid={username})"));
  // An injected name finds nobody either.
  auto star = directory->lookup("*");
  ASSERT_FALSE(star.ok());
  EXPECT_EQ(star.error().code(), Errc::kNotFound);
}

TEST_F(LdapDirectoryTest, CheckedSettingsSayWhatToChange) {
  struct Case {
    std::string what;
    std::function<void(LdapSettings&)> change;
    std::string says;
  };
  const std::vector<Case> cases{
      {"group filter naming nobody",
       [](LdapSettings& s) { s.groupFilter = "(objectClass=posixGroup)"; }, "names no user"},
      {"posix filter written without parentheses",
       [](LdapSettings& s) { s.groupFilter = "memberUid={uid}"; }, "one filter in parentheses"},
      {"two filters side by side",
       [](LdapSettings& s) { s.groupFilter = "(memberUid={uid})(member={dn})"; },
       "more than one filter"},
      {"an unclosed parenthesis", [](LdapSettings& s) { s.userFilter = "(&(uid={username})"; },
       "never closed"},
      {"nested filter without {dn}",
       [](LdapSettings& s) {
         s.nestedGroups = broker::NestedGroups::kFollow;
         s.nestedFilter = "(member=x)";
       },
       "ldap.nested_filter"},
      {"nesting depth 0",
       [](LdapSettings& s) {
         s.nestedGroups = broker::NestedGroups::kFollow;
         s.nestedDepth = 0;
       },
       "1 to 32"},
      {"{uid} without the attribute",
       [](LdapSettings& s) {
         s.groupFilter = "(memberUid={uid})";
         s.uidAttribute = "";
       },
       "ldap.uid_attribute"},
  };
  for (const auto& c : cases) {
    auto bad = settings();
    c.change(bad);
    auto checked = broker::checkLdapSettings(bad);
    ASSERT_FALSE(checked.ok()) << c.what;
    EXPECT_EQ(checked.error().code(), Errc::kConfig) << c.what;
    EXPECT_THAT(checked.error().message(), HasSubstr(c.says)) << c.what;
    // The directory built on them answers every login with the same sentence.
    auto result = login(bad, "alice", kAlicePassword);
    ASSERT_FALSE(result.ok()) << c.what;
    EXPECT_EQ(result.error().message(), checked.error().message()) << c.what;
  }
  // The three layouts' filters pass.
  for (const char* filter : {"(|(member={dn})(uniqueMember={dn}))", "(memberUid={uid})",
                             "(&(objectClass=posixGroup)(memberUid={username}))"}) {
    auto good = settings();
    good.groupFilter = filter;
    EXPECT_TRUE(broker::checkLdapSettings(good).ok()) << filter;
  }
}

TEST_F(LdapDirectoryTest, StartTlsAgainstADirectoryWithoutTlsIsRefused) {
  auto tls = settings();
  tls.startTls = true;
  auto result = login(tls, "alice", kAlicePassword);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kUnavailable);
  EXPECT_THAT(result.error().message(),
              HasSubstr("The directory at " + server_->uri() + " refused StartTLS"));
}

TEST_F(LdapDirectoryTest, ConcurrentLoginsDoNotInterfere) {
  auto directory = makeLdapDirectory(settings());
  std::vector<std::thread> threads;
  threads.reserve(4);
  std::atomic<int> failures = 0;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const bool right = (t + i) % 2 == 0;
        auto user = directory->authenticate(
            t % 2 == 0 ? "alice" : "carol",
            right ? (t % 2 == 0 ? "alice-secret" : "carol-secret") : "wrong");
        if (user.ok() != right)
          ++failures;
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  EXPECT_EQ(failures, 0);
}

// A directory of its own, since this one is stopped.
TEST(LdapDirectoryAvailabilityTest, StoppedDirectoryIsUnavailableAndSaysWhere) {
  std::string why;
  if (!SlapdServer::available(&why))
    GTEST_SKIP() << why;
  SlapdServer server;
  server.addLdif(kDirectoryLdif);
  LdapSettings settings;
  settings.uri = server.uri();
  settings.baseDn = std::string(SlapdServer::kSuffix);
  settings.timeout = 3s;
  auto directory = makeLdapDirectory(settings);
  ASSERT_TRUE(directory->authenticate("alice", kAlicePassword).ok());

  server.stop();
  const auto start = std::chrono::steady_clock::now();
  auto result = directory->authenticate("alice", kAlicePassword);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kUnavailable);
  EXPECT_THAT(result.error().message(),
              HasSubstr("The directory at " + server.uri() + " is not reachable: "));
  EXPECT_LT(elapsed, settings.timeout);
}

TEST(LdapDirectoryAvailabilityTest, DirectoryThatNeverAnswersTimesOut) {
  SilentPort silent;
  LdapSettings settings;
  settings.uri = silent.uri();
  settings.baseDn = std::string(SlapdServer::kSuffix);
  settings.timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  auto result = makeLdapDirectory(settings)->authenticate("alice", kAlicePassword);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code(), Errc::kUnavailable);
  EXPECT_THAT(result.error().message(), HasSubstr(silent.uri()));
  EXPECT_LT(elapsed, 3s);
}

// slapd with a certificate from a CA made for the test.
class LdapTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!SlapdServer::available(&skipReason_))
      return;
    try {
      auto ca = crypto::createCa("Aula LDAP test CA");
      if (!ca)
        throw std::runtime_error(ca.error().message());
      auto cert = crypto::issueCertificate(
          *ca,
          {.commonName = "127.0.0.1", .dnsNames = {"localhost"}, .ipAddresses = {"127.0.0.1"}});
      if (!cert)
        throw std::runtime_error(cert.error().message());
      caPem_ = ca->certPem;
      server_ = std::make_unique<SlapdServer>(
          SlapdOptions{.tlsCertPem = cert->certPem, .tlsKeyPem = cert->keyPem});
      server_->addLdif(kDirectoryLdif);
    } catch (const std::exception& e) {
      startError_ = e.what();
      server_.reset();
    }
  }
  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (!startError_.empty())
      FAIL() << "slapd with TLS did not start: " << startError_;
    if (!server_)
      GTEST_SKIP() << skipReason_;
  }

  static LdapSettings settings() {
    LdapSettings settings;
    settings.baseDn = std::string(SlapdServer::kSuffix);
    settings.caPem = caPem_;
    settings.timeout = 5s;
    return settings;
  }

  static inline std::unique_ptr<SlapdServer> server_;
  static inline std::string caPem_;
  static inline std::string skipReason_;
  static inline std::string startError_;
};

TEST_F(LdapTlsTest, StartTlsWithTheCaWorks) {
  auto tls = settings();
  tls.uri = server_->uri();
  tls.startTls = true;
  auto user = makeLdapDirectory(tls)->authenticate("alice", kAlicePassword);
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_EQ(user->dn, kAliceDn);
}

TEST_F(LdapTlsTest, LdapsWithTheCaWorks) {
  auto tls = settings();
  tls.uri = server_->ldapsUri();
  auto user = makeLdapDirectory(tls)->authenticate("alice", kAlicePassword);
  ASSERT_TRUE(user.ok()) << user.error().message();
  EXPECT_THAT(user->groupDns, ElementsAre("cn=class-1a,ou=groups,dc=school,dc=test"));
}

TEST_F(LdapTlsTest, AServerFromAnotherCaIsRefused) {
  auto otherCa = crypto::createCa("Somebody else's CA");
  ASSERT_TRUE(otherCa.ok()) << otherCa.error().message();
  for (bool startTls : {true, false}) {
    auto tls = settings();
    tls.caPem = otherCa->certPem;
    tls.startTls = startTls;
    tls.uri = startTls ? server_->uri() : server_->ldapsUri();
    auto result = makeLdapDirectory(tls)->authenticate("alice", kAlicePassword);
    ASSERT_FALSE(result.ok()) << tls.uri;
    EXPECT_EQ(result.error().code(), Errc::kUnavailable) << result.error().message();
    EXPECT_THAT(result.error().message(), HasSubstr(tls.uri));
  }
}

TEST_F(LdapTlsTest, TheCaFileIsPrivateAndRemovedWithTheDirectory) {
  TempDir tmp;
  const char* saved = std::getenv("TMPDIR");
  const std::string previous = saved != nullptr ? saved : "";
  ::setenv("TMPDIR", tmp.path().c_str(), 1);
  auto tls = settings();
  tls.uri = server_->ldapsUri();
  auto directory = makeLdapDirectory(tls);
  if (saved != nullptr) {
    ::setenv("TMPDIR", previous.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path())) {
    files.push_back(entry.path());
  }
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(std::filesystem::status(files[0]).permissions(),
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(readFile(files[0]), caPem_);
  ASSERT_TRUE(directory->authenticate("alice", kAlicePassword).ok());
  directory.reset();
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));
}

TEST(EscapeLdapFilterValueTest, EscapesWhatRfc4515Requires) {
  EXPECT_EQ(escapeLdapFilterValue("*"), "\\2a");
  EXPECT_EQ(escapeLdapFilterValue("("), "\\28");
  EXPECT_EQ(escapeLdapFilterValue(")"), "\\29");
  EXPECT_EQ(escapeLdapFilterValue("\\"), "\\5c");
  EXPECT_EQ(escapeLdapFilterValue(std::string_view("\0", 1)), "\\00");
  EXPECT_EQ(escapeLdapFilterValue("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
}

TEST(EscapeLdapFilterValueTest, LeavesOrdinaryNamesAlone) {
  EXPECT_EQ(escapeLdapFilterValue(""), "");
  EXPECT_EQ(escapeLdapFilterValue("alice.smith-2@school.test"), "alice.smith-2@school.test");
  EXPECT_EQ(escapeLdapFilterValue("O'Brien & Sons"), "O'Brien & Sons");
}

TEST(EscapeLdapFilterValueTest, EscapesControlAndNonAsciiBytes) {
  // The server decodes \xx to the same octets, so "José" still matches.
  EXPECT_EQ(escapeLdapFilterValue("Jos\xc3\xa9"), "Jos\\c3\\a9");
  EXPECT_EQ(escapeLdapFilterValue("a\nb\x7f"), "a\\0ab\\7f");
}

}  // namespace
}  // namespace aula::test
