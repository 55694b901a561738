// Directory logins per layout, each beside a local login on the same broker
// in the same run (a Markdown table; docs/performance.md explains it):
//
//  - posixGroup (memberUid = {uid}) on a throw-away slapd;
//  - groupOfNames with a nested group followed level by level, on slapd;
//  - Active Directory with the in-chain rule, on a throw-away Samba AD DC
//    (skipped, with the reason, where Samba's AD DC is not installed).
//
// A login is POST /api/v1/session over HTTPS, as a greeter sends it; the
// local login pays argon2id, the directory login two binds and the group
// searches instead.
//
//   build/dev/bench/directory_bench [--logins N]
#include <algorithm>
#include <chrono>
#include <iostream>

#include <CLI/CLI.hpp>

#include "figures.hpp"
#include "support/broker_fixture.hpp"
#include "support/samba_dc.hpp"
#include "support/slapd_server.hpp"
#include "support/temp_dir.hpp"

using namespace aula;
using namespace aula::test;
using json::Json;
using Steady = std::chrono::steady_clock;

namespace {

using aula::bench::median;

constexpr std::string_view kPeople = R"(dn: ou=people,dc=school,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=anna,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: anna
cn: Anna Student
sn: Student
uidNumber: 2001
gidNumber: 2001
homeDirectory: /home/anna
userPassword: anna-secret-1

dn: uid=tom,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: tom
cn: Tom Teacher
sn: Teacher
uidNumber: 2002
gidNumber: 2002
homeDirectory: /home/tom
userPassword: tom-secret-1

dn: ou=groups,dc=school,dc=test
objectClass: organizationalUnit
ou: groups

dn: cn=class-1a,ou=groups,dc=school,dc=test
objectClass: posixGroup
cn: class-1a
gidNumber: 3001
memberUid: anna

dn: cn=teachers,ou=groups,dc=school,dc=test
objectClass: posixGroup
cn: teachers
gidNumber: 3002
memberUid: tom

dn: cn=maths,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: maths
member: uid=tom,ou=people,dc=school,dc=test

dn: cn=all-teachers,ou=groups,dc=school,dc=test
objectClass: groupOfNames
cn: all-teachers
member: cn=maths,ou=groups,dc=school,dc=test
)";

// Median milliseconds of `n` logins of `user`; -1 when one fails.
double logins(BrokerFixture& broker, const std::string& user, const std::string& password, int n) {
  ApiClient client = broker.newClient();
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    const auto start = Steady::now();
    auto r = client.call("POST", "/api/v1/session", {},
                         Json{{"username", user}, {"password", password}});
    times.push_back(std::chrono::duration<double, std::milli>(Steady::now() - start).count());
    if (r.status != 201) {
      std::cerr << "directory_bench: " << user << " could not log in: " << r.describe() << "\n";
      return -1;
    }
  }
  return median(times);
}

struct Row {
  std::string layout;
  double directory = 0;
  double local = 0;
};

Row measure(const std::string& layout, const std::string& toml, const std::string& user,
            const std::string& password, int n) {
  // The broker's default argon2id cost (the test fixture's is cheaper).
  BrokerFixture broker(BrokerOptions{
      .settings = {{"auth.argon2_memory_kib", "19456"}, {"auth.argon2_iterations", "2"}},
      .extraToml = toml});
  broker.seed();
  const double local = logins(broker, "alice", std::string(BrokerFixture::kPassword), n);
  const double directory = logins(broker, user, password, n);
  return {layout, directory, local};
}

}  // namespace

int runBench(int argc, char** argv) {
  int n = 20;
  CLI::App app{"directory_bench: directory logins per layout beside a local login."};
  app.add_option("--logins", n, "logins per figure (the median is shown)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<Row> rows;
    std::string why;
    if (!SlapdServer::available(&why)) {
      std::cerr << "directory_bench: skipped: " << why << "\n";
      return 0;
    }
    SlapdServer slapd;
    slapd.addLdif(kPeople);
    rows.push_back(measure("posixGroup, memberUid={uid}",
                           fmt::format(R"toml(
[ldap]
enabled = true
uri = "{}"
base_dn = "dc=school,dc=test"
group_filter = "(&(objectClass=posixGroup)(memberUid={{uid}}))"
[ldap.group_map]
"cn=class-1a,ou=groups,dc=school,dc=test" = "School A/1A"
)toml",
                                       slapd.uri()),
                           "anna", "anna-secret-1", n));
    rows.push_back(measure("groupOfNames, nested (follow)",
                           fmt::format(R"toml(
[ldap]
enabled = true
uri = "{}"
base_dn = "dc=school,dc=test"
group_filter = "(member={{dn}})"
nested_groups = "follow"
[ldap.group_roles]
"cn=all-teachers,ou=groups,dc=school,dc=test" = "manager"
)toml",
                                       slapd.uri()),
                           "tom", "tom-secret-1", n));
    if (SambaDc::available(&why)) {
      SambaDc dc;
      dc.addUser("tom", "Teacher-Pass1", "Tom Teacher");
      dc.addGroup("Teachers");
      dc.addGroup("Science");
      dc.addMembers("Science", {"tom"});
      dc.addMembers("Teachers", {"Science"});
      TempDir dir;
      rows.push_back(measure("Active Directory (Samba), in_chain",
                             dc.brokerToml(dir.path() / "bind.password") + R"toml(
[ldap.group_roles]
"CN=Teachers,CN=Users,DC=aula,DC=test" = "manager"
)toml",
                             "tom", "Teacher-Pass1", n));
    } else {
      std::cerr << "directory_bench: Active Directory skipped: " << why << "\n";
    }
    std::cout << "| layout | directory login | local login (argon2id) | ratio |\n"
                 "|---|---|---|---|\n";
    for (const Row& row : rows) {
      std::cout << fmt::format("| {} | {:.1f} ms | {:.1f} ms | {:.2f} |\n", row.layout,
                               row.directory, row.local,
                               row.directory / std::max(row.local, 0.001));
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "directory_bench: " << e.what() << "\n";
    return 1;
  }
}

int main(int argc, char** argv) {
  return aula::bench::guardedMain("directory_bench", [&] { return runBench(argc, argv); });
}
