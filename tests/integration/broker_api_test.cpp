// The broker's HTTP API end to end, over real HTTPS, as aulactl and the
// greeter use it: logging in, a student's desktop from creation to console,
// who may do what to which object (a table over every resource and role),
// quotas under concurrent requests, refused input that changes nothing, a
// teacher's class deployment, the live event stream, health and metrics, a
// PostgreSQL outage, and LDAP sign-in. One suite, run on SQLite and on a
// throw-away PostgreSQL, because both must pass the same tests.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <latch>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "aula/common/crypto.hpp"
#include "aula/common/process.hpp"

#include "support/broker_backend_test.hpp"
#include "support/broker_fixture.hpp"
#include "support/event_stream.hpp"
#include "support/postgres_server.hpp"
#include "support/slapd_server.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

using json::Json;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

constexpr std::string_view kWrongCredentials = "The user name or password is wrong.";

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void replaceAll(std::string& text, std::string_view from, std::string_view to) {
  for (auto pos = text.find(from); pos != std::string::npos;
       pos = text.find(from, pos + to.size())) {
    text.replace(pos, from.size(), to);
  }
}

std::string fill(std::string text, const std::map<std::string, std::string>& values) {
  for (const auto& [key, value] : values)
    replaceAll(text, "{" + key + "}", value);
  return text;
}

// The status of a streaming GET (server-sent events), which never ends by
// itself: curl reports the status it got before its time runs out.
long streamStatus(const BrokerFixture& broker, const std::string& path, const std::string& token) {
  std::vector<std::string> argv = {
      "curl",         "-s",         "-o",  "/dev/null", "-w",
      "%{http_code}", "--max-time", "0.5", "--cacert",  broker.caFile().string()};
  if (!token.empty()) {
    argv.push_back("-H");
    argv.push_back("Authorization: Bearer " + token);
  }
  argv.push_back(broker.baseUrl() + path);
  process::SystemRunner runner;
  auto ran = runner.run({.argv = argv, .timeout = 10s});
  if (!ran)
    throw std::runtime_error("curl did not run: " + ran.error().message());
  return std::atol(ran->out.c_str());
}

// A remote-viewer connection file read the way virt-viewer's GKeyFile reads
// it: the keys of the [virt-viewer] group, values unescaped. A key twice, or
// a line that is neither, fails the test.
std::map<std::string, std::string> parseVv(const std::string& text) {
  std::map<std::string, std::string> keys;
  bool inGroup = false;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#')
      continue;
    if (line[0] == '[') {
      inGroup = line == "[virt-viewer]";
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos) {
      ADD_FAILURE() << "not a key=value line: " << line;
      continue;
    }
    if (!inGroup)
      continue;
    std::string value;
    for (std::size_t i = eq + 1; i < line.size(); ++i) {
      if (line[i] != '\\' || i + 1 == line.size()) {
        value.push_back(line[i]);
        continue;
      }
      switch (line[++i]) {
        case 'n':
          value.push_back('\n');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 's':
          value.push_back(' ');
          break;
        case '\\':
          value.push_back('\\');
          break;
        default:
          ADD_FAILURE() << "GKeyFile knows no escape \\" << line[i] << " in: " << line;
      }
    }
    if (!keys.emplace(line.substr(0, eq), value).second)
      ADD_FAILURE() << "key twice: " << line.substr(0, eq);
  }
  return keys;
}

class BrokerApiTest : public BrokerBackendTest {
 protected:
  ApiResponse login(std::string_view username, std::string_view password) {
    return api().call("POST", "/api/v1/session", {},
                      Json{{"username", username}, {"password", password}});
  }

  // What an admin sees of each kind of object: the number of rows in each list.
  std::map<std::string, std::size_t> rowCounts() {
    std::map<std::string, std::size_t> counts;
    for (const char* path :
         {"/api/v1/categories", "/api/v1/groups", "/api/v1/users?limit=10000", "/api/v1/quotas",
          "/api/v1/templates", "/api/v1/desktops?scope=all", "/api/v1/deployments", "/api/v1/pools",
          "/api/v1/hosts", "/api/v1/enrolment-tokens", "/api/v1/boot-hosts", "/api/v1/api-tokens",
          "/api/v1/images", "/api/v1/image-channels", "/api/v1/audit?limit=10000"}) {
      counts[path] = broker().adminCall("GET", path, std::nullopt, 200).size();
    }
    return counts;
  }
};

// ---- sessions ----

TEST_P(BrokerApiTest, LoginGivesATokenThatWorksUntilLogout) {
  const auto& ids = seed();
  auto r = login("alice", BrokerFixture::kPassword);
  ASSERT_EQ(r.status, 201) << r.describe();
  const auto token = r.body["token"].get<std::string>();
  EXPECT_THAT(token, StartsWith("aula_s_"));
  EXPECT_EQ(r.body["user"]["username"], "alice");
  EXPECT_EQ(r.body["user"]["role"], "user");
  EXPECT_GT(r.body["expires_at"].get<std::int64_t>(), unixNow());

  auto me = api().call("GET", "/api/v1/me", token);
  ASSERT_EQ(me.status, 200) << me.describe();
  EXPECT_EQ(me.body["id"], ids.alice);
  ASSERT_EQ(me.body["groups"].size(), 1u) << me.body.dump();
  EXPECT_EQ(me.body["groups"][0]["name"], "1A");
  EXPECT_EQ(me.body["groups"][0]["category"], "School A");

  auto out = api().call("DELETE", "/api/v1/session", token);
  EXPECT_EQ(out.status, 204) << out.describe();
  auto after = api().call("GET", "/api/v1/me", token);
  EXPECT_EQ(after.status, 401) << after.describe();
  EXPECT_EQ(after.errorCode(), "unauthenticated");
  EXPECT_EQ(after.errorMessage(), "The session has expired or was ended; log in again.");
}

TEST_P(BrokerApiTest, AHostsAddressIsAHostAndItsAgentPortAField) {
  auto pool = broker().adminCall("POST", "/api/v1/pools", Json{{"name", "p"}}, 201)["id"];
  auto refused = api().call("POST", "/api/v1/hosts", broker().adminToken(),
                            Json{{"name", "hv8"}, {"pool_id", pool}, {"address", "10.0.0.8:9443"}});
  EXPECT_EQ(refused.status, 400);
  EXPECT_THAT(refused.errorMessage(), HasSubstr("'agent_port'"));
  for (const char* good : {"10.0.0.8", "fe80::8", "hv8.school.lan"}) {
    auto made = api().call("POST", "/api/v1/hosts", broker().adminToken(),
                           Json{{"name", fmt::format("hv-{}", std::string(good).size())},
                                {"pool_id", pool},
                                {"address", good},
                                {"agent_port", 9443}});
    EXPECT_EQ(made.status, 201) << good << ": " << made.describe();
  }
  // The reserved name of the broker's own certificate.
  auto reserved = api().call("POST", "/api/v1/hosts", broker().adminToken(),
                             Json{{"name", "aula-broker"}, {"pool_id", pool}});
  EXPECT_EQ(reserved.status, 400);
  EXPECT_THAT(reserved.errorMessage(), HasSubstr("reserved"));
}

TEST_P(BrokerApiTest, AHostsReportedDevicesAreKeptAndShownToAdminsOnly) {
  const auto& ids = seed();
  const std::string route = fmt::format("/api/v1/hosts/{}/devices", ids.hosts[0]);
  auto before = broker().adminCall("GET", route, std::nullopt, 200);
  EXPECT_TRUE(before["reported_at"].is_null());
  EXPECT_EQ(before["devices"], Json::array());

  const Json devices{{"iommu_groups", 2},
                     {"devices",
                      {{{"address", "0000:01:00.0"}, {"kind", "GPU"}, {"iommu_group", 1}},
                       {{"address", "0000:01:00.1"}, {"kind", "audio"}, {"iommu_group", 1}}}}};
  Json beat{{"cpus", 16}, {"memory_mb", 65536}, {"free_memory_mb", 60000}, {"devices", devices}};
  broker().adminCall("POST", fmt::format("/api/v1/hosts/{}/heartbeat", ids.hosts[0]), beat, 204);
  auto after = broker().adminCall("GET", route, std::nullopt, 200);
  EXPECT_TRUE(after["reported_at"].is_number_integer());
  EXPECT_EQ(after["iommu_groups"], 2);
  EXPECT_EQ(after["devices"], devices["devices"]);
  // A heartbeat without them keeps the last report.
  beat.erase("devices");
  broker().adminCall("POST", fmt::format("/api/v1/hosts/{}/heartbeat", ids.hosts[0]), beat, 204);
  EXPECT_EQ(broker().adminCall("GET", route, std::nullopt, 200)["devices"], devices["devices"]);
  // A malformed report is refused whole, and the stored one stays.
  beat["devices"] = Json{{"iommu_groups", 2}, {"devices", {{{"kind", "GPU"}}}}};
  auto bad = api().call("POST", fmt::format("/api/v1/hosts/{}/heartbeat", ids.hosts[0]),
                        broker().adminToken(), beat);
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.errorMessage(), HasSubstr("with its PCI 'address'"));
  EXPECT_EQ(broker().adminCall("GET", route, std::nullopt, 200)["devices"], devices["devices"]);

  auto teacher = api().call("GET", route, broker().tokenOf("teacher-a"));
  EXPECT_EQ(teacher.status, 403);
  auto missing = api().call("GET", "/api/v1/hosts/999999/devices", broker().adminToken());
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.errorMessage(), HasSubstr("There is no host with id 999999."));
}

TEST_P(BrokerApiTest, WrongPasswordAndUnknownUserGetTheSame401) {
  seed();
  for (auto [user, password] : {std::pair{"alice", "not-her-password"},
                                std::pair{"mallory", "any-password-1"}, std::pair{"alice", ""}}) {
    auto r = login(user, password);
    EXPECT_EQ(r.status, 401) << user << ": " << r.describe();
    EXPECT_EQ(r.errorCode(), "unauthenticated") << user;
    EXPECT_EQ(r.errorMessage(), kWrongCredentials) << user;
    EXPECT_TRUE(r.body["error"].is_object() && !r.body.contains("token")) << r.text;
  }
}

TEST_P(BrokerApiTest, RequestsWithoutAValidTokenGet401) {
  const auto& ids = seed();
  auto none = api().call("GET", "/api/v1/desktops");
  EXPECT_EQ(none.status, 401) << none.describe();
  EXPECT_EQ(none.errorCode(), "unauthenticated");
  EXPECT_THAT(none.errorMessage(), HasSubstr("Log in first"));

  for (const std::string header :
       {"Bearer garbage", "Basic YWxpY2U6c3R1ZGVudC1zZWNyZXQtMQ==", "Bearer ",
        "Bearer aula_s_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}) {
    auto r = api().call("GET", fmt::format("/api/v1/users/{}", ids.alice), {}, std::nullopt,
                        {{"Authorization", header}});
    EXPECT_EQ(r.status, 401) << "'" << header << "': " << r.describe();
    EXPECT_EQ(r.errorCode(), "unauthenticated") << header;
    EXPECT_FALSE(r.errorMessage().empty()) << header;
  }
}

TEST_P(BrokerApiTest, RepeatedWrongPasswordsAreThrottled) {
  options_.settings = {{"auth.max_failures_per_user", "3"}, {"auth.lockout_seconds", "30"}};
  seed();
  for (int i = 0; i < 3; ++i) {
    auto r = login("bob", "guess-number-" + std::to_string(i));
    ASSERT_EQ(r.status, 401) << "attempt " << i << ": " << r.describe();
  }
  auto blocked = login("bob", "guess-number-4");
  ASSERT_EQ(blocked.status, 429) << blocked.describe();
  EXPECT_EQ(blocked.errorCode(), "rate_limited");
  const auto retryAfter = blocked.header("Retry-After");
  ASSERT_FALSE(retryAfter.empty()) << "no Retry-After header";
  const int seconds = std::atoi(retryAfter.c_str());
  EXPECT_GE(seconds, 1);
  EXPECT_LE(seconds, 30);
  EXPECT_THAT(blocked.errorMessage(), HasSubstr(fmt::format("try again in {} s", seconds)));

  // Not even the right password gets through while the block lasts...
  auto right = login("bob", BrokerFixture::kPassword);
  EXPECT_EQ(right.status, 429) << right.describe();
  // ...and other users are not affected.
  auto alice = login("alice", BrokerFixture::kPassword);
  EXPECT_EQ(alice.status, 201) << alice.describe();
}

// ---- a student's desktop ----

TEST_P(BrokerApiTest, StudentCreatesStartsConnectsStopsAndDeletesADesktop) {
  const auto& ids = seed();
  const auto& alice = token("alice");

  auto templates = api().call("GET", "/api/v1/templates", alice);
  ASSERT_EQ(templates.status, 200) << templates.describe();
  ASSERT_EQ(templates.body.size(), 1u) << templates.body.dump();
  EXPECT_EQ(templates.body[0]["name"], "Debian");
  EXPECT_EQ(templates.body[0]["id"], ids.debian);

  auto created = api().call("POST", "/api/v1/desktops", alice,
                            Json{{"name", "My desktop"}, {"template_id", ids.debian}});
  ASSERT_EQ(created.status, 201) << created.describe();
  const auto id = created.body["id"].get<std::int64_t>();
  EXPECT_EQ(created.body["state"], "stopped");
  EXPECT_EQ(created.body["owner"], "alice");
  EXPECT_EQ(created.body["template"], "Debian");

  auto started = api().call("POST", fmt::format("/api/v1/desktops/{}/start", id), alice);
  ASSERT_EQ(started.status, 200) << started.describe();
  EXPECT_EQ(started.body["state"], "running");
  ASSERT_TRUE(started.body["host_id"].is_number_integer()) << started.body.dump();
  EXPECT_THAT(ids.hosts, ::testing::Contains(started.body["host_id"].get<std::int64_t>()));
  EXPECT_TRUE(broker().hosts().running(id));

  auto list = api().call("GET", "/api/v1/desktops", alice);
  ASSERT_EQ(list.status, 200) << list.describe();
  ASSERT_EQ(list.body.size(), 1u) << list.body.dump();
  EXPECT_EQ(list.body[0]["id"], id);
  EXPECT_EQ(list.body[0]["state"], "running");

  const auto before = unixNow();
  auto console = api().call("POST", fmt::format("/api/v1/desktops/{}/console", id), alice);
  ASSERT_EQ(console.status, 200) << console.describe();
  const auto host = console.body["host"].get<std::string>();
  EXPECT_THAT(host, StartsWith("10.0.0."));
  EXPECT_GT(console.body["tls_port"].get<int>(), 0);
  const auto ticket = console.body["ticket"].get<std::string>();
  EXPECT_GE(ticket.size(), 16u);
  const auto expires = console.body["expires_at"].get<std::int64_t>();
  EXPECT_GT(expires, before);
  EXPECT_LE(expires, unixNow() + 60) << "a SPICE ticket is valid for at most 60 s";
  EXPECT_EQ(console.body["ca"], broker().caPem());
  EXPECT_THAT(console.body["host_subject"].get<std::string>(), HasSubstr("CN=hv"));
  EXPECT_EQ(console.header("Cache-Control"), "no-store");

  auto again = api().call("POST", fmt::format("/api/v1/desktops/{}/console", id), alice);
  ASSERT_EQ(again.status, 200) << again.describe();
  EXPECT_NE(again.body["ticket"], ticket) << "each console gets a new one-time ticket";
  EXPECT_EQ(again.body["console_number"], console.body["console_number"].get<int>() + 1)
      << "a viewer whose link dropped can tell that another viewer took the desktop";
  auto counted = api().call("GET", fmt::format("/api/v1/desktops/{}", id), alice);
  EXPECT_EQ(counted.body["consoles"], again.body["console_number"]);

  auto vv = api().call("POST", fmt::format("/api/v1/desktops/{}/console", id), alice, std::nullopt,
                       {{"Accept", "application/x-virt-viewer"}});
  ASSERT_EQ(vv.status, 200) << vv.describe();
  EXPECT_THAT(vv.header("Content-Type"), StartsWith("application/x-virt-viewer"));
  EXPECT_THAT(vv.text, StartsWith("[virt-viewer]\n"));
  EXPECT_THAT(vv.text, HasSubstr("\ntype=spice\n"));
  EXPECT_THAT(vv.text, HasSubstr("\nhost=" + host + "\n"));
  EXPECT_THAT(vv.text, HasSubstr("\ntls-port="));
  EXPECT_THAT(vv.text, HasSubstr("\npassword="));
  EXPECT_THAT(vv.text, HasSubstr("\ndelete-this-file=1\n"));

  auto stopped = api().call("POST", fmt::format("/api/v1/desktops/{}/stop", id), alice);
  ASSERT_EQ(stopped.status, 200) << stopped.describe();
  EXPECT_EQ(stopped.body["state"], "stopped");
  EXPECT_FALSE(broker().hosts().running(id));

  auto deleted = api().call("DELETE", fmt::format("/api/v1/desktops/{}", id), alice);
  EXPECT_EQ(deleted.status, 204) << deleted.describe();
  auto gone = api().call("GET", fmt::format("/api/v1/desktops/{}", id), alice);
  EXPECT_EQ(gone.status, 404) << gone.describe();
  auto empty = api().call("GET", "/api/v1/desktops", alice);
  EXPECT_EQ(empty.body, Json::array()) << empty.describe();
}

TEST_P(BrokerApiTest, ConsoleAsAVirtViewerFileCarriesTheTicketCaAndHostSubject) {
  const auto& ids = seed();
  const auto& alice = token("alice");
  const auto id = broker().createDesktop(ids.alice, "Informatik 7b");
  const auto path = fmt::format("/api/v1/desktops/{}/console", id);

  auto console = api().call("POST", path, alice);
  ASSERT_EQ(console.status, 200) << console.describe();
  EXPECT_EQ(console.body["ca"], broker().caPem()) << "the viewer checks SPICE against the CA";
  EXPECT_TRUE(console.body["port"].is_null()) << "no plain SPICE port outside of tests";

  auto vv =
      api().call("POST", path, alice, std::nullopt, {{"Accept", "application/x-virt-viewer"}});
  ASSERT_EQ(vv.status, 200) << vv.describe();
  EXPECT_EQ(vv.header("Content-Type"), "application/x-virt-viewer");
  EXPECT_EQ(vv.header("Cache-Control"), "no-store");
  EXPECT_EQ(vv.header("Content-Disposition"), "attachment; filename=\"desktop.vv\"");
  EXPECT_THAT(vv.text, StartsWith("[virt-viewer]\n"));
  auto file = parseVv(vv.text);
  EXPECT_EQ(file["type"], "spice");
  EXPECT_EQ(file["host"], console.body["host"].get<std::string>());
  EXPECT_EQ(file["tls-port"], std::to_string(console.body["tls_port"].get<int>()));
  EXPECT_FALSE(file.contains("port")) << vv.text;
  EXPECT_GE(file["password"].size(), 16u);
  EXPECT_NE(file["password"], console.body["ticket"].get<std::string>())
      << "each console, in either form, gets a new one-time ticket";
  EXPECT_EQ(file["ca"], broker().caPem());
  EXPECT_EQ(file["host-subject"], console.body["host_subject"].get<std::string>());
  EXPECT_EQ(file["title"], "Informatik 7b");
  EXPECT_EQ(file["delete-this-file"], "1");
  EXPECT_EQ(file["secure-channels"], "all");

  // The template's USB policy: USB sticks by default; what an admin sets
  // after that; a policy that is not one is refused and changes nothing.
  EXPECT_EQ(console.body["usb"], "storage");
  EXPECT_EQ(file["usb-filter"], "0x08,-1,-1,-1,1|-1,-1,-1,-1,0");
  EXPECT_EQ(file["usb-autoshare"], "1");
  const auto templatePath = fmt::format("/api/v1/templates/{}", ids.debian);
  auto none = api().call("PATCH", templatePath, broker().adminToken(), Json{{"usb", "none"}});
  ASSERT_EQ(none.status, 200) << none.describe();
  EXPECT_EQ(none.body["usb"], "none");
  auto wrong = api().call("PATCH", templatePath, broker().adminToken(), Json{{"usb", "sticks"}});
  EXPECT_EQ(wrong.status, 400) << wrong.describe();
  EXPECT_EQ(wrong.errorMessage(),
            "The field 'usb' must be 'none', 'storage' (USB sticks and disks only) or 'all', not "
            "'sticks'.");
  auto afterNone = api().call("POST", path, alice);
  ASSERT_EQ(afterNone.status, 200) << afterNone.describe();
  EXPECT_EQ(afterNone.body["usb"], "none");
  auto vvNone = parseVv(
      api()
          .call("POST", path, alice, std::nullopt, {{"Accept", "application/x-virt-viewer"}})
          .text);
  EXPECT_EQ(vvNone["usb-filter"], "-1,-1,-1,-1,0");
  EXPECT_FALSE(vvNone.contains("usb-autoshare"));

  // Errors stay JSON whatever the client accepts.
  auto unknown = api().call("POST", "/api/v1/desktops/999999/console", alice, std::nullopt,
                            {{"Accept", "application/x-virt-viewer"}});
  EXPECT_EQ(unknown.status, 404) << unknown.describe();
  EXPECT_EQ(unknown.errorMessage(), "There is no desktop with id 999999.");
  auto notHers = api().call("POST", path, token("bob"), std::nullopt,
                            {{"Accept", "application/x-virt-viewer"}});
  EXPECT_EQ(notHers.status, 404) << notHers.describe();
  EXPECT_EQ(notHers.errorMessage(), fmt::format("There is no desktop with id {}.", id));
}

// ---- rights ----

// One request and what each role gets for it. Names in braces in the path and
// body are ids of the seeded school; {role} and {me} are the caller's name and
// id; {fresh} is made anew (as admin) before each caller, for requests that
// use up their target.
struct Access {
  std::string what;
  std::string method;
  std::string path;
  std::string body;              // JSON; empty: none
  std::array<long, 4> expected;  // admin, teacher-a, adv, alice
  std::function<std::string()> fresh = nullptr;
  bool stream = false;
};

TEST_P(BrokerApiTest, EachRoleMayDoExactlyWhatItsRightsAllow) {
  const auto& ids = seed();
  auto& b = broker();
  auto id = [](const Json& j) { return std::to_string(j["id"].get<std::int64_t>()); };
  // Students' default limits would end the table early; limits have tests of their own.
  b.adminCall("PUT", "/api/v1/quotas/role:user", Json::object(), 200);
  const auto templateB = id(b.adminCall("POST", "/api/v1/templates",
                                        Json{{"name", "B only"},
                                             {"base_disk", "b.qcow2"},
                                             {"disk_gb", 10},
                                             {"vcpus", 1},
                                             {"memory_mb", 1024},
                                             {"category_id", ids.categoryB}},
                                        201));
  const auto bobDesk = b.createDesktop(ids.bob, "bob-desk");
  const auto dep1B = id(b.adminCall(
      "POST", "/api/v1/deployments",
      Json{{"name", "Class 1B"}, {"template_id", ids.debian}, {"group_id", ids.group1B}}, 201));
  const std::map<std::string, std::string> values = {
      {"catA", std::to_string(ids.categoryA)},
      {"catB", std::to_string(ids.categoryB)},
      {"g1A", std::to_string(ids.group1A)},
      {"g1B", std::to_string(ids.group1B)},
      {"alice", std::to_string(ids.alice)},
      {"bob", std::to_string(ids.bob)},
      {"carol", std::to_string(ids.carol)},
      {"adv", std::to_string(ids.adv)},
      {"debian", std::to_string(ids.debian)},
      {"templateB", templateB},
      {"pool", std::to_string(ids.pool)},
      {"host1", std::to_string(ids.hosts[0])},
      {"host3", std::to_string(ids.hosts[2])},
      {"bobDesk", std::to_string(bobDesk)},
      {"aliceDesk", std::to_string(b.createDesktop(ids.alice, "alice-desk"))},
      {"carolDesk", std::to_string(b.createDesktop(ids.carol, "carol-desk"))},
      {"dep1B", dep1B},
  };

  // Makers of fresh targets.
  int n = 0;
  auto freshName = [&n] { return fmt::format("fresh-{}", ++n); };
  auto post = [&](const std::string& path, Json body) {
    return [&b, &id, path, body, &freshName]() mutable {
      if (body.contains("name"))
        body["name"] = freshName();
      if (body.contains("username"))
        body["username"] = freshName();
      if (body.contains("host_name"))
        body["host_name"] = freshName();
      return id(b.adminCall("POST", path, body, 201));
    };
  };
  auto freshCategory = post("/api/v1/categories", Json{{"name", ""}});
  auto freshGroup = [&](std::int64_t category) {
    return post("/api/v1/groups", Json{{"name", ""}, {"category_id", category}});
  };
  auto freshUser = [&](std::int64_t category) {
    return post("/api/v1/users", Json{{"username", ""}, {"category_id", category}});
  };
  auto freshTemplate = post("/api/v1/templates", Json{{"name", ""},
                                                      {"base_disk", "f.qcow2"},
                                                      {"disk_gb", 1},
                                                      {"vcpus", 1},
                                                      {"memory_mb", 512},
                                                      {"category_id", ids.categoryA}});
  auto freshDesktop = [&](std::int64_t owner) {
    return post("/api/v1/desktops",
                Json{{"name", ""}, {"template_id", ids.debian}, {"owner_id", owner}});
  };
  auto freshDeployment = [&](std::int64_t group) {
    return post("/api/v1/deployments",
                Json{{"name", ""}, {"template_id", ids.debian}, {"group_id", group}});
  };
  auto freshQuota = [&](std::int64_t group) {
    return [&b, group] {
      b.adminCall("PUT", fmt::format("/api/v1/quotas/group:{}", group), Json{{"desktops", 1000}},
                  200);
      return std::string();
    };
  };
  auto advIn1A = [&] {
    b.adminCall("POST", fmt::format("/api/v1/groups/{}/members", ids.group1A),
                Json{{"user_ids", {ids.adv}}}, 200);
    return std::string();
  };
  auto freshBootHost = [&] {
    auto mac = fmt::format("52:54:00:00:01:{:02x}", ++n);
    b.adminCall("PUT", "/api/v1/boot-hosts/" + mac, Json{{"kind", "thin_client"}}, 200);
    return mac;
  };

  // A teacher may set numbers, not lift limits: every limit is given.
  const std::string kAllLimits =
      R"({"desktops":1000,"running":1000,"vcpus":1000,"memory_mb":1000000,"disk_gb":100000,"templates":100})";
  // clang-format off
  const std::vector<Access> table = {
      // what, method, path, body, {admin, teacher-a, adv, alice}
      {"list categories", "GET", "/api/v1/categories", "", {200, 200, 200, 200}},
      {"create a category", "POST", "/api/v1/categories", R"({"name":"Cat {role}"})", {201, 403, 403, 403}},
      {"change category B", "PATCH", "/api/v1/categories/{catB}", R"({"description":"by {role}"})", {200, 403, 403, 403}},
      {"delete an empty category", "DELETE", "/api/v1/categories/{fresh}", "", {204, 403, 403, 403}, freshCategory},

      {"list groups", "GET", "/api/v1/groups", "", {200, 200, 200, 200}},
      {"read group 1A", "GET", "/api/v1/groups/{g1A}", "", {200, 200, 404, 200}},
      {"read group 1B", "GET", "/api/v1/groups/{g1B}", "", {200, 404, 404, 404}},
      {"create a group in A", "POST", "/api/v1/groups", R"({"name":"G {role}","category_id":{catA}})", {201, 201, 403, 403}},
      {"create a group in B", "POST", "/api/v1/groups", R"({"name":"G {role}","category_id":{catB}})", {201, 403, 403, 403}},
      {"change group 1B", "PATCH", "/api/v1/groups/{g1B}", R"({"description":"by {role}"})", {200, 403, 403, 403}},
      {"delete a group of A", "DELETE", "/api/v1/groups/{fresh}", "", {204, 204, 403, 403}, freshGroup(ids.categoryA)},
      {"delete a group of B", "DELETE", "/api/v1/groups/{fresh}", "", {204, 403, 403, 403}, freshGroup(ids.categoryB)},

      {"add adv to 1A", "POST", "/api/v1/groups/{g1A}/members", R"({"user_ids":[{adv}]})", {200, 200, 403, 403}},
      {"add carol to 1B", "POST", "/api/v1/groups/{g1B}/members", R"({"user_ids":[{carol}]})", {200, 403, 403, 403}},
      {"remove adv from 1A", "DELETE", "/api/v1/groups/{g1A}/members/{adv}", "", {204, 204, 403, 403}, advIn1A},

      {"list users", "GET", "/api/v1/users", "", {200, 200, 403, 403}},
      {"read oneself", "GET", "/api/v1/users/{me}", "", {200, 200, 200, 200}},
      {"read bob", "GET", "/api/v1/users/{bob}", "", {200, 200, 404, 404}},
      {"read carol", "GET", "/api/v1/users/{carol}", "", {200, 404, 404, 404}},
      {"create a student in A", "POST", "/api/v1/users", R"({"username":"new-{role}","category_id":{catA}})", {201, 201, 403, 403}},
      {"create a manager", "POST", "/api/v1/users", R"({"username":"boss-{role}","role":"manager","category_id":{catA}})", {201, 403, 403, 403}},
      {"rename bob", "PATCH", "/api/v1/users/{bob}", R"({"display_name":"Bob by {role}"})", {200, 200, 403, 403}},
      {"rename carol", "PATCH", "/api/v1/users/{carol}", R"({"display_name":"Carol by {role}"})", {200, 403, 403, 403}},
      {"make oneself admin", "PATCH", "/api/v1/users/{me}", R"({"role":"admin"})", {200, 403, 403, 403}},
      {"delete a user of A", "DELETE", "/api/v1/users/{fresh}", "", {204, 204, 403, 403}, freshUser(ids.categoryA)},
      {"delete a user of B", "DELETE", "/api/v1/users/{fresh}", "", {204, 403, 403, 403}, freshUser(ids.categoryB)},
      {"read own profile", "GET", "/api/v1/me", "", {200, 200, 200, 200}},
      {"read own usage", "GET", "/api/v1/me/usage", "", {200, 200, 200, 200}},
      {"read bob's usage", "GET", "/api/v1/users/{bob}/usage", "", {200, 200, 403, 403}},
      {"read carol's usage", "GET", "/api/v1/users/{carol}/usage", "", {200, 403, 403, 403}},

      {"list quotas", "GET", "/api/v1/quotas", "", {200, 200, 403, 403}},
      {"set group 1A's quota", "PUT", "/api/v1/quotas/group:{g1A}", kAllLimits, {200, 200, 403, 403}},
      {"set group 1B's quota", "PUT", "/api/v1/quotas/group:{g1B}", kAllLimits, {200, 403, 403, 403}},
      {"lift a limit of group 1A", "PUT", "/api/v1/quotas/group:{g1A}", R"({"desktops":1000})", {200, 403, 403, 403}},
      {"set alice's own quota", "PUT", "/api/v1/quotas/user:{alice}", R"({"desktops":1000})", {200, 403, 403, 403}},
      {"raise the students' quota", "PUT", "/api/v1/quotas/role:user", "{}", {200, 403, 403, 403}},
      {"delete group 1A's quota", "DELETE", "/api/v1/quotas/group:{g1A}", "", {204, 204, 403, 403}, freshQuota(ids.group1A)},
      {"delete group 1B's quota", "DELETE", "/api/v1/quotas/group:{g1B}", "", {204, 403, 403, 403}, freshQuota(ids.group1B)},

      {"list templates", "GET", "/api/v1/templates", "", {200, 200, 200, 200}},
      {"read Debian", "GET", "/api/v1/templates/{debian}", "", {200, 200, 200, 200}},
      {"read category B's template", "GET", "/api/v1/templates/{templateB}", "", {200, 404, 404, 404}},
      {"create a template", "POST", "/api/v1/templates", R"({"name":"T {role}","base_disk":"t.qcow2","disk_gb":10,"vcpus":1,"memory_mb":1024})", {201, 201, 201, 403}},
      {"change Debian", "PATCH", "/api/v1/templates/{debian}", R"({"description":"by {role}"})", {200, 403, 403, 403}},
      {"change category B's template", "PATCH", "/api/v1/templates/{templateB}", R"({"description":"by {role}"})", {200, 403, 403, 403}},
      {"delete a template of A", "DELETE", "/api/v1/templates/{fresh}", "", {204, 204, 403, 403}, freshTemplate},

      {"list own desktops", "GET", "/api/v1/desktops", "", {200, 200, 200, 200}},
      {"list every desktop", "GET", "/api/v1/desktops?scope=all", "", {200, 200, 403, 403}},
      {"create an own desktop", "POST", "/api/v1/desktops", R"({"name":"own {role}","template_id":{debian}})", {201, 201, 201, 201}},
      {"create a desktop for bob", "POST", "/api/v1/desktops", R"({"name":"for bob by {role}","template_id":{debian},"owner_id":{bob}})", {201, 201, 403, 403}},
      {"create a desktop for carol", "POST", "/api/v1/desktops", R"({"name":"for carol by {role}","template_id":{debian},"owner_id":{carol}})", {201, 403, 403, 403}},
      {"read bob's desktop", "GET", "/api/v1/desktops/{bobDesk}", "", {200, 200, 404, 404}},
      {"start bob's desktop", "POST", "/api/v1/desktops/{bobDesk}/start", "", {200, 200, 404, 404}},
      {"open bob's console", "POST", "/api/v1/desktops/{bobDesk}/console", "", {200, 200, 404, 404}},
      {"stop bob's desktop", "POST", "/api/v1/desktops/{bobDesk}/stop", "", {200, 200, 404, 404}},
      {"delete bob's desktop", "DELETE", "/api/v1/desktops/{fresh}", "", {204, 204, 404, 404}, freshDesktop(ids.bob)},
      {"read alice's desktop", "GET", "/api/v1/desktops/{aliceDesk}", "", {200, 200, 404, 200}},
      {"start alice's desktop", "POST", "/api/v1/desktops/{aliceDesk}/start", "", {200, 200, 404, 200}},
      {"open alice's console", "POST", "/api/v1/desktops/{aliceDesk}/console", "", {200, 200, 404, 200}},
      {"stop alice's desktop", "POST", "/api/v1/desktops/{aliceDesk}/stop", "", {200, 200, 404, 200}},
      {"delete alice's desktop", "DELETE", "/api/v1/desktops/{fresh}", "", {204, 204, 404, 204}, freshDesktop(ids.alice)},
      {"read carol's desktop", "GET", "/api/v1/desktops/{carolDesk}", "", {200, 404, 404, 404}},
      {"start carol's desktop", "POST", "/api/v1/desktops/{carolDesk}/start", "", {200, 404, 404, 404}},
      {"open carol's console", "POST", "/api/v1/desktops/{carolDesk}/console", "", {200, 404, 404, 404}},
      {"stop carol's desktop", "POST", "/api/v1/desktops/{carolDesk}/stop", "", {200, 404, 404, 404}},
      {"delete carol's desktop", "DELETE", "/api/v1/desktops/{fresh}", "", {204, 404, 404, 404}, freshDesktop(ids.carol)},

      {"list deployments", "GET", "/api/v1/deployments", "", {200, 200, 403, 403}},
      {"deploy to 1A", "POST", "/api/v1/deployments", R"({"name":"Dep {role}","template_id":{debian},"group_id":{g1A}})", {201, 201, 403, 403}},
      {"deploy to 1B", "POST", "/api/v1/deployments", R"({"name":"Dep B {role}","template_id":{debian},"group_id":{g1B}})", {201, 403, 403, 403}},
      {"read 1B's deployment", "GET", "/api/v1/deployments/{dep1B}", "", {200, 404, 403, 403}},
      {"start 1B's deployment", "POST", "/api/v1/deployments/{dep1B}/start", "", {200, 404, 403, 403}},
      {"stop 1B's deployment", "POST", "/api/v1/deployments/{dep1B}/stop", "", {200, 404, 403, 403}},
      {"delete a deployment of 1A", "DELETE", "/api/v1/deployments/{fresh}", "", {204, 204, 403, 403}, freshDeployment(ids.group1A)},
      {"delete a deployment of 1B", "DELETE", "/api/v1/deployments/{fresh}", "", {204, 404, 403, 403}, freshDeployment(ids.group1B)},

      {"list pools", "GET", "/api/v1/pools", "", {200, 200, 403, 403}},
      {"create a pool", "POST", "/api/v1/pools", R"({"name":"Pool {role}"})", {201, 403, 403, 403}},
      {"delete an empty pool", "DELETE", "/api/v1/pools/{fresh}", "", {204, 403, 403, 403}, post("/api/v1/pools", Json{{"name", ""}})},

      {"list hosts", "GET", "/api/v1/hosts", "", {200, 403, 403, 403}},
      {"read a host", "GET", "/api/v1/hosts/{host1}", "", {200, 403, 403, 403}},
      {"add a host", "POST", "/api/v1/hosts", R"({"name":"hv-{role}","pool_id":{pool}})", {201, 403, 403, 403}},
      {"change a host", "PATCH", "/api/v1/hosts/{host3}", R"({"address":"10.0.0.33"})", {200, 403, 403, 403}},
      {"delete an empty host", "DELETE", "/api/v1/hosts/{fresh}", "", {204, 403, 403, 403}, post("/api/v1/hosts", Json{{"name", ""}, {"pool_id", ids.pool}})},
      {"report a heartbeat", "POST", "/api/v1/hosts/{host1}/heartbeat", R"({"cpu_idle":0.9,"free_memory_mb":60000,"cpus":16,"memory_mb":65536})", {204, 403, 403, 403}},

      {"list enrolment tokens", "GET", "/api/v1/enrolment-tokens", "", {200, 403, 403, 403}},
      {"create an enrolment token", "POST", "/api/v1/enrolment-tokens", R"({"host_name":"new-{role}","pool_id":{pool}})", {201, 403, 403, 403}},
      {"delete an enrolment token", "DELETE", "/api/v1/enrolment-tokens/{fresh}", "", {204, 403, 403, 403}, post("/api/v1/enrolment-tokens", Json{{"host_name", ""}, {"pool_id", ids.pool}})},

      {"list boot hosts", "GET", "/api/v1/boot-hosts", "", {200, 403, 403, 403}},
      {"set a boot host", "PUT", "/api/v1/boot-hosts/52:54:00:00:00:01", R"({"kind":"thin_client"})", {200, 403, 403, 403}},
      {"delete a boot host", "DELETE", "/api/v1/boot-hosts/{fresh}", "", {204, 403, 403, 403}, freshBootHost},
      {"list images", "GET", "/api/v1/images", "", {200, 403, 403, 403}},
      {"list image channels", "GET", "/api/v1/image-channels", "", {200, 403, 403, 403}},
      {"promote an image", "POST", "/api/v1/image-channels/stable/promote", R"({"version":"none"})", {404, 403, 403, 403}},
      {"roll a channel back", "POST", "/api/v1/image-channels/stable/rollback", "", {404, 403, 403, 403}},
      {"upload an image", "PUT", "/api/v1/images/thin/v1/files/vmlinuz", "", {400, 403, 403, 403}},
      {"add an image", "POST", "/api/v1/images", R"({"flavour":"thin","version":"v1","artefacts":[]})", {400, 403, 403, 403}},
      {"delete an image", "DELETE", "/api/v1/images/thin/v1", "", {404, 403, 403, 403}},
      {"pin PCs", "POST", "/api/v1/boot-hosts/pin", R"({"macs":["52:54:00:00:00:99"],"channel":"testing"})", {404, 403, 403, 403}},

      {"read the audit log", "GET", "/api/v1/audit", "", {200, 403, 403, 403}},
      {"create an API token", "POST", "/api/v1/api-tokens", R"({"name":"token {role}"})", {201, 201, 201, 201}},
      {"list own API tokens", "GET", "/api/v1/api-tokens", "", {200, 200, 200, 200}},
      {"follow the live events", "GET", "/api/v1/events", "", {200, 200, 200, 200}, nullptr, true},
  };
  // clang-format on

  const std::array<std::string, 4> roles = {"admin", "teacher-a", "adv", "alice"};
  const std::array<std::int64_t, 4> roleIds = {ids.admin, ids.teacherA, ids.adv, ids.alice};
  for (const auto& row : table) {
    // The four roles, then nobody (no token), who always gets 401.
    for (std::size_t r = 0; r <= roles.size(); ++r) {
      const bool anonymous = r == roles.size();
      auto v = values;
      v["role"] = anonymous ? "nobody" : roles[r];
      v["me"] = std::to_string(anonymous ? ids.alice : roleIds[r]);
      if (row.fresh)
        v["fresh"] = row.fresh();
      const auto path = fill(row.path, v);
      const std::string tok = anonymous ? std::string() : token(roles[r]);
      const long expected = anonymous ? 401 : row.expected[r];
      long status = 0;
      std::string answer;
      if (row.stream) {
        status = streamStatus(b, path, tok);
        answer = std::to_string(status);
      } else {
        std::optional<Json> body;
        if (!row.body.empty())
          body = Json::parse(fill(row.body, v));
        auto response = api().call(row.method, path, tok, body);
        status = response.status;
        answer = response.describe();
      }
      if (status != expected) {
        ADD_FAILURE() << "'" << row.what << "' as " << v["role"] << " (" << row.method << " "
                      << path << "): expected " << expected << ", got " << answer;
      }
    }
  }

  // A student probing someone else's desktop learns nothing: the answer is
  // word for word that for an id nobody has.
  const auto& alice = token("alice");
  auto bobs = api().call("GET", fmt::format("/api/v1/desktops/{}", bobDesk), alice);
  EXPECT_EQ(bobs.errorMessage(), fmt::format("There is no desktop with id {}.", bobDesk));
  auto missing = api().call("GET", "/api/v1/desktops/999999", alice);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.errorMessage(), "There is no desktop with id 999999.");

  // Lists show no more than single reads do: nothing of School B to a
  // teacher of School A, nothing of others to a student.
  auto field = [&](const std::string& user, const std::string& path, const std::string& name) {
    auto r = api().call("GET", path, token(user));
    EXPECT_EQ(r.status, 200) << user << " " << path << ": " << r.describe();
    std::set<std::string> out;
    for (const auto& item : r.body)
      out.insert(item[name].is_string() ? item[name].get<std::string>() : item[name].dump());
    return out;
  };
  const auto catB = std::to_string(ids.categoryB);
  EXPECT_FALSE(field("teacher-a", "/api/v1/desktops?scope=all", "owner").contains("carol"));
  EXPECT_FALSE(field("teacher-a", "/api/v1/templates", "name").contains("B only"));
  EXPECT_FALSE(field("alice", "/api/v1/templates", "name").contains("B only"));
  EXPECT_FALSE(field("teacher-a", "/api/v1/groups", "category_id").contains(catB));
  EXPECT_FALSE(field("teacher-a", "/api/v1/users", "username").contains("carol"));
  EXPECT_FALSE(field("teacher-a", "/api/v1/users", "username").contains("teacher-b"));
  EXPECT_FALSE(field("teacher-a", "/api/v1/deployments", "category_id").contains(catB));
  EXPECT_FALSE(field("teacher-a", "/api/v1/quotas", "subject")
                   .contains(fmt::format("group:{}", ids.group1B)));
  EXPECT_EQ(field("alice", "/api/v1/desktops", "owner"), std::set<std::string>{"alice"});
  EXPECT_EQ(field("alice", "/api/v1/groups", "name"), std::set<std::string>{"1A"});
  EXPECT_EQ(field("alice", "/api/v1/categories", "name"), std::set<std::string>{"School A"});
  EXPECT_EQ(field("adv", "/api/v1/desktops", "owner"), std::set<std::string>{"adv"});
}

// ---- quotas under concurrency ----

// Runs `count` requests at once, each on its own connection.
std::vector<ApiResponse> concurrently(BrokerFixture& broker, int count,
                                      const std::function<ApiResponse(ApiClient&, int)>& request) {
  std::vector<ApiResponse> results(static_cast<std::size_t>(count));
  std::vector<std::string> failures(static_cast<std::size_t>(count));
  std::latch ready(count);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      auto client = broker.newClient();
      ready.arrive_and_wait();
      try {
        results[static_cast<std::size_t>(i)] = request(client, i);
      } catch (const std::exception& e) {
        failures[static_cast<std::size_t>(i)] = e.what();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (const auto& f : failures)
    EXPECT_EQ(f, "");
  return results;
}

TEST_P(BrokerApiTest, DesktopQuotaHoldsUnderConcurrentCreates) {
  const auto& ids = seed();
  broker().adminCall("PUT", fmt::format("/api/v1/quotas/user:{}", ids.alice), Json{{"desktops", 5}},
                     200);
  const std::string alice = token("alice");

  auto results = concurrently(broker(), 20, [&](ApiClient& client, int i) {
    return client.call("POST", "/api/v1/desktops", alice,
                       Json{{"name", fmt::format("Desk {}", i)}, {"template_id", ids.debian}});
  });
  int created = 0;
  int refused = 0;
  for (const auto& r : results) {
    if (r.status == 201) {
      ++created;
    } else if (r.status == 403 && r.errorCode() == "quota_exceeded") {
      ++refused;
      EXPECT_EQ(
          r.errorMessage(),
          "You have reached the limit of 5 desktops; free some up first or ask your teacher.");
    } else {
      ADD_FAILURE() << "unexpected answer: " << r.describe();
    }
  }
  EXPECT_EQ(created, 5);
  EXPECT_EQ(refused, 15);
  auto list = api().call("GET", "/api/v1/desktops", alice);
  EXPECT_EQ(list.body.size(), 5u) << list.describe();
  auto usage = api().call("GET", "/api/v1/me/usage", alice);
  EXPECT_EQ(usage.body["used"]["desktops"], 5) << usage.describe();
}

TEST_P(BrokerApiTest, RunningQuotaHoldsUnderConcurrentStarts) {
  const auto& ids = seed();
  broker().adminCall("PUT", fmt::format("/api/v1/quotas/user:{}", ids.alice), Json{{"running", 2}},
                     200);
  const std::string alice = token("alice");
  std::vector<std::int64_t> desktops;
  for (int i = 0; i < 6; ++i) {
    auto r = api().call("POST", "/api/v1/desktops", alice,
                        Json{{"name", fmt::format("Desk {}", i)}, {"template_id", ids.debian}});
    ASSERT_EQ(r.status, 201) << r.describe();
    desktops.push_back(r.body["id"].get<std::int64_t>());
  }

  auto results = concurrently(broker(), 6, [&](ApiClient& client, int i) {
    return client.call(
        "POST", fmt::format("/api/v1/desktops/{}/start", desktops[static_cast<std::size_t>(i)]),
        alice);
  });
  int started = 0;
  int refused = 0;
  for (const auto& r : results) {
    if (r.status == 200 && r.body["state"] == "running") {
      ++started;
    } else if (r.status == 403 && r.errorCode() == "quota_exceeded") {
      ++refused;
      EXPECT_EQ(r.errorMessage(),
                "You have reached the limit of 2 running desktops; free some up first or ask your "
                "teacher.");
    } else {
      ADD_FAILURE() << "unexpected answer: " << r.describe();
    }
  }
  EXPECT_EQ(started, 2);
  EXPECT_EQ(refused, 4);
  auto running = api().call("GET", "/api/v1/desktops?state=running", alice);
  EXPECT_EQ(running.body.size(), 2u) << running.describe();
  EXPECT_EQ(broker().hosts().runningCount(), 2u);
  auto stopped = api().call("GET", "/api/v1/desktops?state=stopped", alice);
  EXPECT_EQ(stopped.body.size(), 4u)
      << "refused starts leave their desktops stopped: " << stopped.describe();
}

// Hosts with room for exactly two 1-vCPU desktops each take six racing
// starts, never more than their limit, and have the room again once they stop.
TEST_P(BrokerApiTest, RacingStartsFillHostsExactlyAndGiveTheRoomBack) {
  const auto& ids = seed();
  broker().adminCall("PUT", fmt::format("/api/v1/quotas/user:{}", ids.alice), Json::object(), 200);
  for (auto host : ids.hosts) {
    broker().adminCall("PATCH", fmt::format("/api/v1/hosts/{}", host),
                       Json{{"vcpu_ratio_limit", 0.125}}, 200);
  }
  const std::string alice = token("alice");
  std::vector<std::int64_t> desktops;
  desktops.reserve(6);
  for (int i = 0; i < 6; ++i)
    desktops.push_back(broker().createDesktop(ids.alice, fmt::format("Desk {}", i)));
  auto startAll = [&] {
    return concurrently(broker(), 6, [&](ApiClient& client, int i) {
      return client.call(
          "POST", fmt::format("/api/v1/desktops/{}/start", desktops[static_cast<std::size_t>(i)]),
          alice);
    });
  };

  for (int round = 1; round <= 3; ++round) {
    for (const auto& r : startAll())
      EXPECT_EQ(r.status, 200) << "round " << round << ": " << r.describe();
    std::map<std::int64_t, int> perHost;
    for (const auto& d : api().call("GET", "/api/v1/desktops?state=running", alice).body) {
      perHost[d["host_id"].get<std::int64_t>()]++;
    }
    for (const auto& [host, count] : perHost)
      EXPECT_LE(count, 2) << "round " << round << ": host " << host;
    EXPECT_EQ(broker().hosts().runningCount(), 6u) << "round " << round;
    for (auto id : desktops) {
      auto r = api().call("POST", fmt::format("/api/v1/desktops/{}/stop", id), alice);
      ASSERT_EQ(r.status, 200) << r.describe();
    }
  }
}

// ---- refused input ----

struct BadRequest {
  std::string what;
  std::string user;
  std::string method;
  std::string path;
  std::string contentType;
  std::string body;
  long status;
  std::string message;  // a part of the message that says what is wrong
};

TEST_P(BrokerApiTest, BadInputIsRefusedWithAReasonAndChangesNothing) {
  options_.settings = {{"limits.max_body_bytes", "65536"}};
  const auto& ids = seed();
  const auto debian = std::to_string(ids.debian);
  std::string nested = R"({"name":)" + std::string(100, '[') + std::string(100, ']') + "}";
  std::string big = R"({"name":"Big","description":")" + std::string(70000, 'a') + R"("})";
  const std::string json = "application/json";
  const std::vector<BadRequest> cases = {
      {"malformed JSON", "alice", "POST", "/api/v1/desktops", json,
       R"({"name": "x", "template_id": )", 400, "The body is not valid JSON"},
      {"a body over limits.max_body_bytes", "admin", "POST", "/api/v1/categories", json, big, 413,
       "larger than the limit of 65536 bytes"},
      {"JSON nested 100 deep", "alice", "POST", "/api/v1/desktops", json, nested, 400,
       "nests deeper than 32 levels"},
      {"an unknown field", "alice", "POST", "/api/v1/desktops", json,
       R"({"name":"x","template_id":)" + debian + R"(,"colour":"red"})", 400,
       "The field 'colour' is not known here"},
      {"a wrong type", "alice", "POST", "/api/v1/desktops", json,
       R"({"name":"x","template_id":"one"})", 400, "'template_id'"},
      {"a string where a number belongs", "admin", "PUT",
       fmt::format("/api/v1/quotas/user:{}", ids.alice), json, R"({"desktops":"many"})", 400,
       "The limit 'desktops' must be a whole number"},
      {"a name with '/'", "alice", "POST", "/api/v1/desktops", json,
       R"({"name":"a/b","template_id":)" + debian + "}", 400,
       "The desktop name 'a/b' is not allowed"},
      {"a category name with SQL in it", "admin", "POST", "/api/v1/categories", json,
       R"({"name":"x'; DROP TABLE users; --"})", 400,
       "The category name 'x'; DROP TABLE users; --' is not allowed"},
      {"a user name with SQL in it", "admin", "POST", "/api/v1/users", json,
       R"({"username":"x'; DROP TABLE users; --"})", 400,
       "The user name 'x'; DROP TABLE users; --' is not allowed"},
      {"a base disk climbing out of the storage", "admin", "POST", "/api/v1/templates", json,
       R"({"name":"Evil","base_disk":"../../etc/shadow","disk_gb":1,"vcpus":1,"memory_mb":512})",
       400, "The base disk '../../etc/shadow' lies outside the storage 'templates'"},
      {"an absolute base disk elsewhere", "admin", "POST", "/api/v1/templates", json,
       R"({"name":"Evil","base_disk":"/etc/shadow","disk_gb":1,"vcpus":1,"memory_mb":512})", 400,
       "The base disk '/etc/shadow' lies outside the storage 'templates'"},
      {"a new base disk outside the storage", "admin", "PATCH", "/api/v1/templates/" + debian, json,
       R"({"base_disk":"/etc/shadow"})", 400, "lies outside the storage"},
      {"a MAC that is not one", "admin", "PUT", "/api/v1/boot-hosts/zz:zz", json,
       R"({"kind":"thin_client"})", 400, "'zz:zz' is not a MAC address"},
      {"a non-numeric id", "alice", "GET", "/api/v1/desktops/abc", "", "", 400,
       "The id 'abc' in the path is not a positive number."},
      {"a non-numeric id to delete", "admin", "DELETE", "/api/v1/users/1x", "", "", 400,
       "The id '1x' in the path is not a positive number."},
      {"a body that is not JSON by its Content-Type", "alice", "POST", "/api/v1/desktops",
       "text/plain", R"({"name":"x","template_id":)" + debian + "}", 400,
       "Content-Type: application/json"},
      {"a JSON array instead of an object", "alice", "POST", "/api/v1/desktops", json, "[1,2,3]",
       400, "The body must be a JSON object."},
  };

  const auto before = rowCounts();
  for (const auto& c : cases) {
    http::Request request{.method = c.method, .url = c.path, .body = c.body};
    if (!c.contentType.empty())
      request.headers.emplace_back("Content-Type", c.contentType);
    auto r = api().send(request, token(c.user));
    EXPECT_EQ(r.status, c.status) << c.what << ": " << r.describe();
    EXPECT_THAT(r.errorMessage(), HasSubstr(c.message)) << c.what << ": " << r.describe();
    EXPECT_EQ(rowCounts(), before) << c.what << " changed something";
  }
}

// ---- deployments ----

TEST_P(BrokerApiTest, TeacherDeploysATemplateToAClassOfThirty) {
  const auto& ids = seed();
  const auto& teacher = token("teacher-a");
  for (int i = 1; i <= 28; ++i) {
    auto r = api().call(
        "POST", "/api/v1/users", teacher,
        Json{{"username", fmt::format("student{:02}", i)}, {"group_ids", {ids.group1A}}});
    ASSERT_EQ(r.status, 201) << r.describe();
  }
  auto group = api().call("GET", fmt::format("/api/v1/groups/{}", ids.group1A), teacher);
  ASSERT_EQ(group.body["members"], 30) << group.describe();

  auto created =
      api().call("POST", "/api/v1/deployments", teacher,
                 Json{{"name", "Exam"}, {"template_id", ids.debian}, {"group_id", ids.group1A}});
  ASSERT_EQ(created.status, 201) << created.describe();
  const auto id = created.body["id"].get<std::int64_t>();
  EXPECT_EQ(created.body["desktops"], 30);
  EXPECT_EQ(created.body["running"], 0);

  auto started = api().call("POST", fmt::format("/api/v1/deployments/{}/start", id), teacher);
  ASSERT_EQ(started.status, 200) << started.describe();
  EXPECT_EQ(started.body["succeeded"], 30);
  EXPECT_EQ(started.body["failed"], Json::array());
  auto running = api().call("GET", fmt::format("/api/v1/deployments/{}", id), teacher);
  ASSERT_EQ(running.status, 200) << running.describe();
  EXPECT_EQ(running.body["running"], 30);
  ASSERT_EQ(running.body["desktop_list"].size(), 30u);
  std::set<std::string> owners;
  std::set<std::int64_t> hosts;
  for (const auto& d : running.body["desktop_list"]) {
    EXPECT_EQ(d["state"], "running") << d.dump();
    owners.insert(d["owner"].get<std::string>());
    if (d["host_id"].is_number_integer())
      hosts.insert(d["host_id"].get<std::int64_t>());
  }
  EXPECT_EQ(owners.size(), 30u) << "one desktop per student";
  EXPECT_GT(hosts.size(), 1u) << "a class is spread over the hosts";
  EXPECT_EQ(broker().hosts().runningCount(), 30u);
  // A student sees the deployed desktop as their own.
  auto mine = api().call("GET", "/api/v1/desktops", token("alice"));
  ASSERT_EQ(mine.body.size(), 1u) << mine.describe();
  EXPECT_EQ(mine.body[0]["deployment_id"], id);

  auto stopped = api().call("POST", fmt::format("/api/v1/deployments/{}/stop", id), teacher);
  ASSERT_EQ(stopped.status, 200) << stopped.describe();
  EXPECT_EQ(stopped.body["succeeded"], 30);
  auto after = api().call("GET", fmt::format("/api/v1/deployments/{}", id), teacher);
  EXPECT_EQ(after.body["running"], 0) << after.describe();
  EXPECT_EQ(broker().hosts().runningCount(), 0u);

  auto deleted = api().call("DELETE", fmt::format("/api/v1/deployments/{}", id), teacher);
  EXPECT_EQ(deleted.status, 204) << deleted.describe();
  auto gone = api().call("GET", fmt::format("/api/v1/deployments/{}", id), teacher);
  EXPECT_EQ(gone.status, 404) << gone.describe();
  auto left =
      api().call("GET", fmt::format("/api/v1/desktops?scope=all&deployment_id={}", id), teacher);
  EXPECT_EQ(left.body, Json::array()) << left.describe();
}

// ---- the live event stream ----

TEST_P(BrokerApiTest, EventStreamShowsAStudentOnlyTheirOwnDesktops) {
  const auto& ids = seed();
  const auto aliceDesk = broker().createDesktop(ids.alice, "alice-desk");
  const auto bobDesk = broker().createDesktop(ids.bob, "bob-desk");
  const std::string alice = token("alice");
  const std::string bob = token("bob");
  TempDir scratch;
  const auto file = scratch / "events.txt";

  Result<process::Outcome> curl = process::Outcome{};
  std::thread stream([&] {
    process::SystemRunner runner;
    curl = runner.run({.argv = {"curl", "-sN", "--cacert", broker().caFile().string(), "-H",
                                "Authorization: Bearer " + alice, "--max-time", "3", "-o",
                                file.string(), broker().baseUrl() + "/api/v1/events"},
                       .timeout = 15s});
  });
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (readIfThere(file).find(": connected") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_THAT(readIfThere(file), HasSubstr(": connected")) << "the stream did not open";
  auto bobStarted = api().call("POST", fmt::format("/api/v1/desktops/{}/start", bobDesk), bob);
  EXPECT_EQ(bobStarted.status, 200) << bobStarted.describe();
  auto aliceStarted =
      api().call("POST", fmt::format("/api/v1/desktops/{}/start", aliceDesk), alice);
  EXPECT_EQ(aliceStarted.status, 200) << aliceStarted.describe();
  stream.join();
  ASSERT_TRUE(curl.ok()) << curl.error().message();

  const auto text = readIfThere(file);
  std::vector<std::string> aliceStates;
  for (const auto& e : parseEvents(text)) {
    ASSERT_TRUE(e.data.is_object()) << text;
    EXPECT_NE(e.data.value("id", std::int64_t{0}), bobDesk)
        << "alice saw bob's desktop: " << e.type << " " << e.data.dump();
    if (e.type == "desktop.state" && e.data["id"] == aliceDesk)
      aliceStates.push_back(e.data["state"].get<std::string>());
  }
  EXPECT_THAT(aliceStates, ::testing::ElementsAre("starting", "running")) << text;
  EXPECT_THAT(text, HasSubstr("event: desktop.state\n"));
}

// ---- health and metrics ----

TEST_P(BrokerApiTest, HealthAndMetricsReportTheBroker) {
  const auto& ids = seed();
  const auto& alice = token("alice");
  auto created = api().call("POST", "/api/v1/desktops", alice,
                            Json{{"name", "Mine"}, {"template_id", ids.debian}});
  ASSERT_EQ(created.status, 201) << created.describe();
  auto started = api().call(
      "POST", fmt::format("/api/v1/desktops/{}/start", created.body["id"].get<std::int64_t>()),
      alice);
  ASSERT_EQ(started.status, 200) << started.describe();

  auto health = api().call("GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, (Json{{"status", "ok"}})) << health.text;

  auto metrics = api().call("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.header("Content-Type"), StartsWith("text/plain"));
  // admin and alice logged in.
  EXPECT_THAT(metrics.text, HasSubstr("\naula_logins_total 2\n"));
  EXPECT_THAT(metrics.text, HasSubstr("\naula_desktops{state=\"running\"} 1\n"));
  EXPECT_THAT(metrics.text, HasSubstr("\naula_hosts{state=\"online\"} 3\n"));
  EXPECT_THAT(metrics.text, HasSubstr("\naula_database_up 1\n"));
  EXPECT_THAT(metrics.text, HasSubstr("\naula_desktop_starts_total 1\n"));
}

// ---- the database goes away ----

TEST_P(BrokerApiTest, BrokerAnswers503WhileTheDatabaseIsAwayAndRecovers) {
  if (GetParam() != Backend::kPostgres)
    GTEST_SKIP() << "Only a PostgreSQL server can be stopped under a running broker.";
  const auto& ids = seed();
  const auto& alice = token("alice");
  broker().createDesktop(ids.alice, "alice-desk");
  ASSERT_EQ(api().call("GET", "/api/v1/desktops", alice).status, 200);

  postgres_->stop();
  // The next tests need the server, whatever happens here.
  struct Restart {
    PostgresServer& server;
    ~Restart() {
      if (!server.running())
        server.start();
    }
  } restart{*postgres_};

  auto list = api().call("GET", "/api/v1/desktops", alice);
  EXPECT_EQ(list.status, 503) << list.describe();
  EXPECT_EQ(list.errorCode(), "unavailable");
  EXPECT_THAT(list.errorMessage(), HasSubstr("is not reachable"));
  auto health = api().call("GET", "/healthz");
  EXPECT_EQ(health.status, 503) << health.text;
  EXPECT_EQ(health.body["status"], "unavailable") << health.text;

  postgres_->start();
  auto back = api().call("GET", "/api/v1/desktops", alice);
  EXPECT_EQ(back.status, 200) << back.describe();
  EXPECT_EQ(back.body.size(), 1u);
  auto healthy = api().call("GET", "/healthz");
  EXPECT_EQ(healthy.status, 200) << healthy.text;
}

INSTANTIATE_TEST_SUITE_P(Engines, BrokerApiTest, kBothBackends, backendTestName);

// ---- LDAP sign-in (SQLite: the directory is independent of the engine) ----

// A student and a teacher in nested units; the class is a groupOfNames.
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

dn: uid=dora,ou=students,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: dora
cn: Dora Directory
sn: Directory
displayName: Dora D.
mail: dora@school.test
userPassword: dora-secret-1

dn: uid=tom,ou=teachers,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: tom
cn: Tom Teacher
sn: Teacher
userPassword: tom-secret-1

dn: ou=Groups,dc=school,dc=test
objectClass: organizationalUnit
ou: Groups

dn: cn=Class-1A,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Class-1A
member: uid=dora,ou=students,ou=school-a,ou=people,dc=school,dc=test

dn: cn=Teachers-A,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Teachers-A
member: uid=tom,ou=teachers,ou=school-a,ou=people,dc=school,dc=test

dn: uid=nora,ou=teachers,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: nora
cn: Nora Nested
sn: Nested
userPassword: nora-secret-1

dn: uid=gus,ou=students,ou=school-a,ou=people,dc=school,dc=test
objectClass: inetOrgPerson
uid: gus
cn: Gus Gone
sn: Gone
userPassword: gus-secret-1

dn: cn=Maths,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: Maths
member: uid=nora,ou=teachers,ou=school-a,ou=people,dc=school,dc=test

dn: cn=All-Teachers,ou=Groups,dc=school,dc=test
objectClass: groupOfNames
cn: All-Teachers
member: cn=Maths,ou=Groups,dc=school,dc=test

dn: cn=Class-1A,ou=Groups,dc=school,dc=test
changetype: modify
add: member
member: uid=gus,ou=students,ou=school-a,ou=people,dc=school,dc=test
)";

// The [ldap] section of the tests' broker.toml, at `uri`, with `extra`
// lines in it.
std::string ldapToml(const std::string& uri, const std::string& extra = "") {
  // Mixed case on purpose: DNs are compared without case.
  return fmt::format(R"toml(
[ldap]
enabled = true
uri = "{}"
base_dn = "dc=school,dc=test"
nested_groups = "follow"
{}
[ldap.group_roles]
"cn=Teachers-A,ou=Groups,dc=school,dc=test" = "manager"
"cn=All-Teachers,ou=Groups,dc=school,dc=test" = "manager"

[ldap.group_map]
"cn=class-1a,ou=groups,dc=school,dc=test" = "School A/1A"
"CN=Teachers-A,OU=Groups,DC=school,DC=test" = "School A/Teachers"
)toml",
                     uri, extra);
}

class BrokerLdapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!SlapdServer::available(&skipReason_))
      return;
    try {
      slapd_ = std::make_unique<SlapdServer>();
      slapd_->addLdif(kDirectoryLdif);
    } catch (const std::exception& e) {
      startError_ = e.what();
      slapd_.reset();
    }
  }
  static void TearDownTestSuite() { slapd_.reset(); }

  void SetUp() override {
    if (!startError_.empty())
      FAIL() << "slapd did not start: " << startError_;
    if (!slapd_)
      GTEST_SKIP() << skipReason_;
    broker_ = std::make_unique<BrokerFixture>(BrokerOptions{.extraToml = ldapToml(slapd_->uri())});
  }

  std::unique_ptr<BrokerFixture> broker_;
  static inline std::unique_ptr<SlapdServer> slapd_;
  static inline std::string skipReason_;
  static inline std::string startError_;
};

TEST_F(BrokerLdapTest, DirectoryStudentLogsInWithMappedRoleAndClass) {
  const auto& ids = broker_->seed();
  auto& api = broker_->api();
  auto r = api.call("POST", "/api/v1/session", {},
                    Json{{"username", "dora"}, {"password", "dora-secret-1"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  EXPECT_EQ(r.body["user"]["role"], "user");
  EXPECT_EQ(r.body["user"]["auth_source"], "ldap");
  EXPECT_EQ(r.body["user"]["display_name"], "Dora D.");
  EXPECT_EQ(r.body["user"]["category_id"], ids.categoryA);
  const auto dora = r.body["token"].get<std::string>();

  auto me = api.call("GET", "/api/v1/me", dora);
  ASSERT_EQ(me.status, 200) << me.describe();
  ASSERT_EQ(me.body["groups"].size(), 1u) << me.body.dump();
  EXPECT_EQ(me.body["groups"][0]["id"], ids.group1A) << "joins the existing class, not a copy";
  auto group = broker_->adminCall("GET", fmt::format("/api/v1/groups/{}", ids.group1A));
  std::vector<std::string> members;
  for (const auto& m : group["member_list"])
    members.push_back(m["username"].get<std::string>());
  EXPECT_THAT(members, ::testing::ElementsAre("alice", "bob", "dora"));

  // A second login finds the same user.
  auto again = api.call("POST", "/api/v1/session", {},
                        Json{{"username", "dora"}, {"password", "dora-secret-1"}});
  ASSERT_EQ(again.status, 201) << again.describe();
  EXPECT_EQ(again.body["user"]["id"], r.body["user"]["id"]);
  auto doras = broker_->adminCall("GET", "/api/v1/users?q=dora");
  EXPECT_EQ(doras.size(), 1u) << doras.dump();

  // The desktop she may have is the school's.
  auto templates = api.call("GET", "/api/v1/templates", dora);
  EXPECT_EQ(templates.body.size(), 1u) << templates.describe();
}

TEST_F(BrokerLdapTest, DirectoryTeacherGetsTheManagerRoleOfTheirSchool) {
  const auto& ids = broker_->seed();
  auto& api = broker_->api();
  auto r = api.call("POST", "/api/v1/session", {},
                    Json{{"username", "tom"}, {"password", "tom-secret-1"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  EXPECT_EQ(r.body["user"]["role"], "manager");
  EXPECT_EQ(r.body["user"]["category_id"], ids.categoryA);
  const auto tom = r.body["token"].get<std::string>();
  // A manager of School A reaches its students and not School B's.
  EXPECT_EQ(api.call("GET", fmt::format("/api/v1/users/{}", ids.alice), tom).status, 200);
  EXPECT_EQ(api.call("GET", fmt::format("/api/v1/users/{}", ids.carol), tom).status, 404);
}

TEST_F(BrokerLdapTest, WrongDirectoryPasswordGets401AndNoUser) {
  broker_->seed();
  auto& api = broker_->api();
  for (auto [user, password] :
       {std::pair{"dora", "not-doras"}, std::pair{"nobody", "whatever-1"}}) {
    auto r =
        api.call("POST", "/api/v1/session", {}, Json{{"username", user}, {"password", password}});
    EXPECT_EQ(r.status, 401) << user << ": " << r.describe();
    EXPECT_EQ(r.errorCode(), "unauthenticated") << user;
    EXPECT_EQ(r.errorMessage(), kWrongCredentials) << user;
  }
  auto users = broker_->adminCall("GET", "/api/v1/users?q=dora");
  EXPECT_EQ(users, Json::array()) << "a failed login creates no user";
}

TEST_F(BrokerLdapTest, ATeacherWhoseRoleComesThroughAParentGroupIsAManager) {
  const auto& ids = broker_->seed();
  auto r = broker_->api().call("POST", "/api/v1/session", {},
                               Json{{"username", "nora"}, {"password", "nora-secret-1"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  EXPECT_EQ(r.body["user"]["role"], "manager") << "Maths is inside All-Teachers";

  // What the admin sees before and after: the path through the groups.
  auto check = broker_->adminCall("GET", "/api/v1/directory/check?username=nora");
  EXPECT_EQ(check["dn"], "uid=nora,ou=teachers,ou=school-a,ou=people,dc=school,dc=test");
  EXPECT_EQ(check["nesting"], "followed");
  EXPECT_EQ(check["role"], "manager");
  EXPECT_EQ(check["role_from"], "cn=all-teachers,ou=groups,dc=school,dc=test");
  ASSERT_EQ(check["groups"].size(), 2U) << check.dump();
  EXPECT_EQ(check["groups"][0]["path"],
            Json::array({"cn=maths,ou=groups,dc=school,dc=test",
                         "cn=all-teachers,ou=groups,dc=school,dc=test"}));
  EXPECT_EQ(check["groups"][0]["role"], "manager");
  EXPECT_EQ(check["aula_user"]["id"], r.body["user"]["id"]);
  // Someone the directory does not have.
  broker_->adminCall("GET", "/api/v1/directory/check?username=nobody", std::nullopt, 404);
  // Not for teachers.
  auto asTeacher = broker_->api().call("GET", "/api/v1/directory/check?username=dora",
                                       r.body["token"].get<std::string>());
  EXPECT_EQ(asTeacher.status, 403) << asTeacher.describe();
  (void)ids;
}

TEST_F(BrokerLdapTest, TheSyncFollowsClassChangesAndDisablesUsersGoneFromTheDirectory) {
  const auto& ids = broker_->seed();
  auto& api = broker_->api();
  auto r = api.call("POST", "/api/v1/session", {},
                    Json{{"username", "gus"}, {"password", "gus-secret-1"}});
  ASSERT_EQ(r.status, 201) << r.describe();
  const auto gusId = r.body["user"]["id"].get<std::int64_t>();
  const auto gus = r.body["token"].get<std::string>();
  auto me = api.call("GET", "/api/v1/me", gus);
  ASSERT_EQ(me.body["groups"].size(), 1U) << me.describe();
  auto desktop = api.call("POST", "/api/v1/desktops", gus,
                          Json{{"name", "gus-desk"}, {"template_id", ids.debian}});
  ASSERT_EQ(desktop.status, 201) << desktop.describe();

  // Gus changes class in the directory: the sync takes him out of 1A.
  slapd_->addLdif(R"(dn: cn=Class-1A,ou=Groups,dc=school,dc=test
changetype: modify
delete: member
member: uid=gus,ou=students,ou=school-a,ou=people,dc=school,dc=test
)");
  auto synced = broker_->adminCall("POST", "/api/v1/directory/sync", Json::object(), 200);
  EXPECT_EQ(synced["disabled"], Json::array()) << synced.dump();
  EXPECT_GE(synced["checked"].get<int>(), 1);
  me = api.call("GET", "/api/v1/me", gus);
  ASSERT_EQ(me.status, 200) << me.describe();
  EXPECT_EQ(me.body["groups"], Json::array()) << me.describe();

  // Gus leaves the school: disabled, his session ended, his desktop kept.
  slapd_->addLdif(R"(dn: uid=gus,ou=students,ou=school-a,ou=people,dc=school,dc=test
changetype: delete
)");
  synced = broker_->adminCall("POST", "/api/v1/directory/sync", Json::object(), 200);
  EXPECT_EQ(synced["disabled"], Json::array({"gus"})) << synced.dump();
  EXPECT_EQ(api.call("GET", "/api/v1/me", gus).status, 401);
  auto user = broker_->adminCall("GET", fmt::format("/api/v1/users/{}", gusId));
  EXPECT_EQ(user["disabled"], true);
  auto desktops =
      broker_->adminCall("GET", fmt::format("/api/v1/desktops?scope=all&owner_id={}", gusId));
  EXPECT_EQ(desktops.size(), 1U) << "his desktop is kept";
  // Others are untouched.
  auto dora = api.call("POST", "/api/v1/session", {},
                       Json{{"username", "dora"}, {"password", "dora-secret-1"}});
  EXPECT_EQ(dora.status, 201) << dora.describe();
}

TEST_F(BrokerLdapTest, ADirectoryThatIsDownOrRefusesTheBrokerGives503WithTheReason) {
  broker_.reset();
  // Nothing listens on port 1.
  BrokerFixture down(BrokerOptions{.extraToml = ldapToml("ldap://127.0.0.1:1")});
  down.seed();
  auto r = down.api().call("POST", "/api/v1/session", {},
                           Json{{"username", "dora"}, {"password", "dora-secret-1"}});
  EXPECT_EQ(r.status, 503) << r.describe();
  EXPECT_THAT(r.errorMessage(),
              ::testing::HasSubstr("Directory logins are not possible right now"));
  EXPECT_THAT(r.errorMessage(), ::testing::HasSubstr("ldap://127.0.0.1:1"));
  // Local accounts still log in.
  EXPECT_EQ(
      down.api()
          .call("POST", "/api/v1/session", {},
                Json{{"username", "alice"}, {"password", std::string(BrokerFixture::kPassword)}})
          .status,
      201);

  // The broker's own bind refused: a setting to fix, said as such.
  test::TempDir dir;
  writeFile(dir / "bind.pw", "not-the-password\n");
  BrokerFixture refused(BrokerOptions{
      .extraToml = ldapToml(slapd_->uri(), fmt::format("bind_dn = \"cn=nobody,dc=school,dc=test\"\n"
                                                       "bind_password_file = \"{}\"\n",
                                                       (dir / "bind.pw").string()))});
  refused.seed();
  r = refused.api().call("POST", "/api/v1/session", {},
                         Json{{"username", "dora"}, {"password", "dora-secret-1"}});
  EXPECT_EQ(r.status, 503) << r.describe();
  EXPECT_THAT(r.errorMessage(), ::testing::HasSubstr("the broker's directory settings"));
  EXPECT_THAT(r.errorMessage(), ::testing::HasSubstr("cn=nobody,dc=school,dc=test"));
  EXPECT_THAT(r.errorMessage(), ::testing::Not(::testing::HasSubstr("not-the-password")));
}

TEST_F(BrokerLdapTest, ADirectorySettingThatCannotWorkStopsTheBrokerAtStart) {
  for (const auto& [extra, says] : std::vector<std::pair<std::string, std::string>>{
           {"group_filter = \"(memberUid=pia)\"\n", "names no user"},
           {"user_filter = \"uid={username}\"\n", "one filter in parentheses"},
       }) {
    try {
      BrokerFixture bad(BrokerOptions{.extraToml = ldapToml(slapd_->uri(), extra)});
      ADD_FAILURE() << "The broker started with " << extra;
    } catch (const std::runtime_error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("The broker did not start")) << extra;
      EXPECT_THAT(e.what(), ::testing::HasSubstr(says)) << extra;
      EXPECT_THAT(e.what(), ::testing::HasSubstr("broker.toml")) << extra;
    }
  }
  // A role that does not exist, and a group map without its category.
  try {
    BrokerFixture bad(BrokerOptions{.extraToml = ldapToml(slapd_->uri()) +
                                                 "\"cn=x,dc=school,dc=test\" = \"Teachers\"\n"});
    ADD_FAILURE() << "The broker started with a group map target without a category";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("\"Category/Group\""));
  }
}

// ---- aulactl: a desktop's console from a PC (SQLite; the CLI does not care) ----

// Runs the aulactl binary as alice would from her shell: logged in through
// AULA_URL, AULA_TOKEN and AULA_CA_FILE, with a home, a runtime dir and a
// PATH of the test's own.
class AulactlConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ids_ = broker_.seed();
    std::filesystem::create_directories(dir_ / "bin");
    std::filesystem::create_directories(dir_ / "run");
    std::filesystem::permissions(dir_ / "run", std::filesystem::perms::owner_all);
  }

  process::Outcome aulactl(const std::vector<std::string>& args, const std::string& user = "alice",
                           const std::string& path = "") {
    return broker_.runAulactl(
        AULA_AULACTL_BIN, args, broker_.tokenOf(user), dir_.path(),
        {{"XDG_RUNTIME_DIR", (dir_ / "run").string()},
         {"PATH", path.empty() ? (dir_ / "bin").string() + ":/usr/bin:/bin" : path}});
  }

  // A stand-in for remote-viewer: notes the mode and place of the file it is
  // given, keeps a copy, and deletes it as delete-this-file=1 asks.
  void installFakeRemoteViewer() {
    auto script = dir_ / "bin" / "remote-viewer";
    writeFile(script, fmt::format("#!/bin/sh\n"
                                  "stat -c '%a %n' \"$1\" > '{0}/viewer-saw'\n"
                                  "cp \"$1\" '{0}/viewer-copy.vv'\n"
                                  "rm -f \"$1\"\n",
                                  dir_.path().string()));
    std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  }

  static unsigned modeOf(const std::filesystem::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0)
      return 0;
    return st.st_mode & 07777u;
  }

  TempDir dir_;
  BrokerFixture broker_;
  SeedIds ids_;
};

TEST_F(AulactlConsoleTest, HostsDevicesShowsWhatTheAgentReported) {
  const std::string host = std::to_string(ids_.hosts[1]);
  auto asAdmin = [&](const std::vector<std::string>& args) {
    return broker_.runAulactl(AULA_AULACTL_BIN, args, broker_.adminToken(), dir_.path());
  };
  auto none = asAdmin({"hosts", "devices", host});
  ASSERT_EQ(none.exitCode, 0) << none.err;
  EXPECT_THAT(none.out, HasSubstr("has not reported its devices yet"));
  broker_.adminCall("POST", "/api/v1/hosts/" + host + "/heartbeat",
                    Json{{"cpus", 8},
                         {"memory_mb", 32768},
                         {"free_memory_mb", 30000},
                         {"devices",
                          {{"iommu_groups", 14},
                           {"devices",
                            {{{"address", "0000:01:00.0"},
                              {"kind", "GPU"},
                              {"vendor", "10de"},
                              {"device", "2484"},
                              {"driver", "nvidia"},
                              {"iommu_group", 1},
                              {"reset_methods", {"flr", "bus"}},
                              {"boot_vga", false},
                              {"held_by", nullptr}}}}}}},
                    204);
  auto shown = asAdmin({"hosts", "devices", host});
  ASSERT_EQ(shown.exitCode, 0) << shown.err;
  EXPECT_THAT(shown.out, HasSubstr("(hypervisor), reported "));
  EXPECT_THAT(shown.out, HasSubstr("14 IOMMU groups."));
  EXPECT_THAT(shown.out,
              ::testing::ContainsRegex("0000:01:00.0 +GPU +10de +2484 +nvidia +1 +flr,bus +no +-"));
  auto student = aulactl({"hosts", "devices", host});
  EXPECT_NE(student.exitCode, 0);
  EXPECT_THAT(student.out + student.err, HasSubstr("admin"));
}

// An admin sets up a workstation from what its agent reported, and sees it.
TEST_F(AulactlConsoleTest, WorkstationsSetShowListAndRemove) {
  auto host =
      broker_
          .adminCall("POST", "/api/v1/hosts",
                     Json{{"name", "lab-ws1"}, {"kind", "workstation"}, {"pool_id", ids_.pool}},
                     201)["id"]
          .get<std::int64_t>();
  const std::string id = std::to_string(host);
  auto asAdmin = [&](const std::vector<std::string>& args) {
    return broker_.runAulactl(AULA_AULACTL_BIN, args, broker_.adminToken(), dir_.path());
  };
  const std::vector<std::string> set{"workstations",
                                     "set",
                                     id,
                                     "--device",
                                     "01:00.0",
                                     "--device",
                                     "0000:01:00.1",
                                     "--template",
                                     std::to_string(ids_.debian),
                                     "--vcpus",
                                     "4",
                                     "--access",
                                     fmt::format("user:{},group:{}", ids_.alice, ids_.group1A)};
  auto early = asAdmin(set);
  EXPECT_NE(early.exitCode, 0);
  EXPECT_THAT(early.err, HasSubstr("has not reported its devices yet"));

  broker_.adminCall("POST", "/api/v1/hosts/" + id + "/heartbeat",
                    Json{{"cpus", 8},
                         {"memory_mb", 32768},
                         {"free_memory_mb", 30000},
                         {"devices",
                          {{"iommu_groups", 2},
                           {"devices",
                            {{{"address", "0000:01:00.0"},
                              {"kind", "GPU"},
                              {"vendor", "10de"},
                              {"device", "2484"}},
                             {{"address", "0000:01:00.1"},
                              {"kind", "audio"},
                              {"vendor", "10de"},
                              {"device", "228b"}}}}}}},
                    204);
  auto made = asAdmin(set);
  ASSERT_EQ(made.exitCode, 0) << made.err;
  EXPECT_THAT(made.out, HasSubstr("Workstation lab-ws1 (host " + id));
  EXPECT_THAT(made.out, HasSubstr("4 vCPUs, 1024 MiB, disk from template Debian"));
  EXPECT_THAT(made.out, HasSubstr(fmt::format("group:{}, user:{}", ids_.group1A, ids_.alice)));
  EXPECT_THAT(made.out, ::testing::ContainsRegex("0000:01:00.1 +audio +10de +228b +- +present"));

  auto wrong = asAdmin({"workstations", "set", id, "--device", "0000:09:00.0", "--template",
                        std::to_string(ids_.debian)});
  EXPECT_NE(wrong.exitCode, 0);
  EXPECT_THAT(wrong.err, HasSubstr("has no device 0000:09:00.0"));
  auto rom = asAdmin({"workstations", "set", id, "--device", "01:00.0", "--rom", "02:00.0=/x.rom",
                      "--template", std::to_string(ids_.debian)});
  EXPECT_EQ(rom.exitCode, 2);
  EXPECT_THAT(rom.err, HasSubstr("names no --device"));

  auto listed = asAdmin({"workstations", "list"});
  ASSERT_EQ(listed.exitCode, 0) << listed.err;
  EXPECT_THAT(listed.out, ::testing::ContainsRegex("lab-ws1 +online +Debian +4 +1024 +2 "));
  auto student = aulactl({"workstations", "show", id});
  EXPECT_NE(student.exitCode, 0);

  auto removed = asAdmin({"workstations", "remove", id});
  ASSERT_EQ(removed.exitCode, 0) << removed.err;
  auto gone = asAdmin({"workstations", "show", id});
  EXPECT_NE(gone.exitCode, 0);
  EXPECT_THAT(gone.err, HasSubstr("has no workstation set up"));
}

TEST_F(AulactlConsoleTest, OpenWithVvOutWritesAPrivateFileWithTheConsole) {
  const auto id = broker_.createDesktop(ids_.alice, "Informatik");
  const auto out = dir_ / "desktop.vv";
  writeFile(out, "an older file anyone could read\n");
  std::filesystem::permissions(
      out, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
               std::filesystem::perms::group_read | std::filesystem::perms::others_read);

  auto ran = aulactl({"desktops", "open", std::to_string(id), "--vv-out", out.string()});
  ASSERT_EQ(ran.exitCode, 0) << ran.err;
  EXPECT_EQ(ran.out, out.string() + "\n");
  EXPECT_EQ(modeOf(out), 0600u) << "the file holds a live ticket";

  auto file = parseVv(readFile(out));
  EXPECT_EQ(file["type"], "spice");
  EXPECT_GE(file["password"].size(), 16u);
  EXPECT_EQ(file["ca"], broker_.caPem());
  EXPECT_EQ(file["title"], "Informatik");
  EXPECT_EQ(file["delete-this-file"], "1");
  auto console = broker_.api().call("POST", fmt::format("/api/v1/desktops/{}/console", id),
                                    broker_.tokenOf("alice"));
  ASSERT_EQ(console.status, 200) << console.describe();
  EXPECT_EQ(file["host"], console.body["host"].get<std::string>());
  EXPECT_EQ(file["tls-port"], std::to_string(console.body["tls_port"].get<int>()));
  EXPECT_EQ(file["host-subject"], console.body["host_subject"].get<std::string>());
  EXPECT_EQ(console.body["desktop"]["state"], "running") << "open starts the desktop";
}

TEST_F(AulactlConsoleTest, OpenRunsRemoteViewerOnAPrivateFileInTheRuntimeDir) {
  installFakeRemoteViewer();
  const auto id = broker_.createDesktop(ids_.alice, "Informatik");

  auto ran = aulactl({"desktops", "open", std::to_string(id)});
  ASSERT_EQ(ran.exitCode, 0) << ran.err;
  const auto saw = readIfThere(dir_ / "viewer-saw");
  ASSERT_FALSE(saw.empty()) << "remote-viewer did not run; aulactl said: " << ran.out << ran.err;
  EXPECT_THAT(saw, StartsWith("600 " + (dir_ / "run").string() + "/aula-desktop-"));
  auto file = parseVv(readIfThere(dir_ / "viewer-copy.vv"));
  EXPECT_GE(file["password"].size(), 16u);
  EXPECT_EQ(file["ca"], broker_.caPem());
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "run")) << "remote-viewer deleted it";
}

TEST_F(AulactlConsoleTest, PrintCommandWritesTheFileAndShowsTheViewerCommand) {
  const auto id = broker_.createDesktop(ids_.alice, "Informatik");
  auto ran = aulactl({"desktops", "open", std::to_string(id), "--print-command"});
  ASSERT_EQ(ran.exitCode, 0) << ran.err;
  const std::string prefix = "remote-viewer " + (dir_ / "run").string() + "/aula-desktop-";
  ASSERT_THAT(ran.out, StartsWith(prefix));
  const auto file = ran.out.substr(std::string("remote-viewer ").size(),
                                   ran.out.size() - std::string("remote-viewer ").size() - 1);
  EXPECT_EQ(modeOf(file), 0600u);
  EXPECT_GE(parseVv(readFile(file))["password"].size(), 16u);
}

TEST_F(AulactlConsoleTest, OpenWithoutRemoteViewerSaysHowToInstallItAndStartsNothing) {
  const auto id = broker_.createDesktop(ids_.alice, "Informatik");
  auto ran = aulactl({"desktops", "open", std::to_string(id)}, "alice", (dir_ / "bin").string());
  EXPECT_NE(ran.exitCode, 0);
  EXPECT_THAT(ran.err, HasSubstr("remote-viewer is not installed"));
  EXPECT_THAT(ran.err, HasSubstr("apt-get install virt-viewer"));
  auto desktop = broker_.adminCall("GET", fmt::format("/api/v1/desktops/{}", id));
  EXPECT_EQ(desktop["state"], "stopped") << "no desktop is started for a viewer that is missing";
}

TEST_F(AulactlConsoleTest, UnknownOrForeignDesktopGivesTheBrokersReasonAndFails) {
  const auto bobs = broker_.createDesktop(ids_.bob, "Bobs");
  const auto out = dir_ / "never.vv";
  for (const auto& id : {std::string("999999"), std::to_string(bobs)}) {
    auto open = aulactl({"desktops", "open", id, "--vv-out", out.string()});
    EXPECT_EQ(open.exitCode, 1) << id;
    EXPECT_EQ(open.err, fmt::format("aulactl: There is no desktop with id {}. (HTTP 404)\n", id));
    EXPECT_FALSE(std::filesystem::exists(out)) << id;
    auto console = aulactl({"desktops", "console", id});
    EXPECT_EQ(console.exitCode, 1) << id;
    EXPECT_THAT(console.err, HasSubstr(fmt::format("There is no desktop with id {}.", id)));
  }
}

TEST_F(AulactlConsoleTest, ABrokerThatCannotStartTheDesktopIsQuotedWith503) {
  const auto id = broker_.createDesktop(ids_.alice, "Informatik");
  for (auto host : ids_.hosts)
    broker_.hosts().setReachable(host, false);
  auto ran =
      aulactl({"desktops", "open", std::to_string(id), "--vv-out", (dir_ / "x.vv").string()});
  EXPECT_EQ(ran.exitCode, 1);
  EXPECT_THAT(ran.err, StartsWith("aulactl: The desktop could not start on host 'hv"));
  EXPECT_THAT(ran.err, HasSubstr("(HTTP 503)"));
}

TEST_F(AulactlConsoleTest, ConsoleShowsTheTicketAndSecondsLeft) {
  const auto id = broker_.createDesktop(ids_.alice, "Informatik");
  auto ran = aulactl({"desktops", "console", std::to_string(id)});
  ASSERT_EQ(ran.exitCode, 0) << ran.err;
  EXPECT_THAT(ran.out, HasSubstr(fmt::format("Desktop       {} 'Informatik' (running on hv", id)));
  EXPECT_THAT(ran.out, ::testing::ContainsRegex("\nTicket +[A-Za-z0-9_-]{16,}\n"));
  EXPECT_THAT(ran.out, ::testing::ContainsRegex("\nExpires +[0-9-]+ [0-9:]+Z \\(in [0-9]+ s\\)\n"));
  EXPECT_THAT(ran.out, HasSubstr("\nHost subject  O=Aula,CN=hv"));

  auto asJson = aulactl({"--json", "desktops", "console", std::to_string(id)});
  ASSERT_EQ(asJson.exitCode, 0) << asJson.err;
  auto j = Json::parse(asJson.out, nullptr, false);
  EXPECT_EQ(j["ca"], broker_.caPem()) << asJson.out;
  EXPECT_GE(j["ticket"].get<std::string>().size(), 16u);
}

}  // namespace
}  // namespace aula::test

namespace aula::test {
namespace {

// ---- what lab PCs' greeters are told before anyone logs in ----

TEST(BrokerGreeterSettings, AnyoneGetsTheSchoolsNameLogoAndIdleTimeWithTheServersDate) {
  TempDir dir;
  // The smallest PNG: the signature and enough to be one.
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + std::string(40, '\0');
  writeFile(dir.path() / "logo.png", png);
  BrokerFixture broker(
      BrokerOptions{.settings = {{"greeter.school_name", "Institut Joan Miró"},
                                 {"greeter.logo_file", (dir.path() / "logo.png").string()},
                                 {"greeter.idle_logout_minutes", "7"}}});
  auto r = broker.api().call("GET", "/api/v1/greeter");
  ASSERT_EQ(r.status, 200) << r.describe();
  EXPECT_EQ(r.body["school_name"], "Institut Joan Miró");
  EXPECT_EQ(r.body["idle_logout_seconds"], 420);
  auto logo = crypto::base64UrlDecode(r.body["logo_png"].get<std::string>());
  ASSERT_TRUE(logo);
  EXPECT_EQ(std::string(logo->begin(), logo->end()), png);
  EXPECT_THAT(r.header("date"), ::testing::EndsWith(" GMT")) << "greeters compare their clock";
}

TEST(BrokerGreeterSettings, ALogoThatIsNotAPngStopsTheBrokerWithWhatIsWrong) {
  TempDir dir;
  writeFile(dir.path() / "logo.jpg", "\xff\xd8\xff\xe0 a JPEG");
  try {
    BrokerFixture broker(
        BrokerOptions{.settings = {{"greeter.logo_file", (dir.path() / "logo.jpg").string()}}});
    FAIL() << "the broker started with a JPEG logo";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("must be a PNG of at most 256 KiB"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("not a PNG"));
  }
}

}  // namespace
}  // namespace aula::test
