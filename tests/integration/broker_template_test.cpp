// Templates made from desktops, through the broker's API over HTTPS with
// simulated hosts: who may make one of which desktop, which desktops cannot
// give one (running, never started, not persistent), what the new template
// copies and where it may run, the audit entry, and deletion: a template
// re-based on another keeps that one, and only images Aula made are deleted,
// after the row, with a warning when the host keeps them. On SQLite and on a
// throw-away PostgreSQL, like the other API tests.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/common/process.hpp"

#include "support/broker_backend_test.hpp"
#include "support/broker_fixture.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

using json::Json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class TemplateFromDesktopApiTest : public BrokerBackendTest {
 protected:
  // A desktop of `owner` that has run once and is stopped: its disk is on a host.
  std::int64_t usedDesktop(std::int64_t owner, const std::string& name, bool persistent = true) {
    auto id = broker()
                  .adminCall("POST", "/api/v1/desktops",
                             Json{{"name", name},
                                  {"template_id", seed().debian},
                                  {"owner_id", owner},
                                  {"persistent", persistent}},
                             201)["id"]
                  .get<std::int64_t>();
    broker().adminCall("POST", fmt::format("/api/v1/desktops/{}/start", id), std::nullopt, 200);
    broker().adminCall("POST", fmt::format("/api/v1/desktops/{}/stop", id), std::nullopt, 200);
    return id;
  }

  ApiResponse makeTemplate(const std::string& user, std::int64_t desktop, const Json& body) {
    return api().call("POST", fmt::format("/api/v1/desktops/{}/template", desktop), token(user),
                      body);
  }

  Json audit(const std::string& action) {
    return broker().adminCall("GET", "/api/v1/audit?action=" + action, std::nullopt, 200);
  }

  std::int64_t hostOf(std::int64_t desktop) {
    return broker()
        .adminCall("GET", fmt::format("/api/v1/desktops/{}", desktop), std::nullopt, 200)["host_id"]
        .get<std::int64_t>();
  }
};

TEST_P(TemplateFromDesktopApiTest, AnAdvancedUserMakesATemplateOfTheirOwnStoppedDesktop) {
  const auto& ids = seed();
  const auto desktop = usedDesktop(ids.adv, "my setup");
  const auto host = hostOf(desktop);
  broker().adminCall("PATCH", fmt::format("/api/v1/templates/{}", ids.debian), Json{{"usb", "all"}},
                     200);

  auto made = makeTemplate("adv", desktop, Json{{"name", "My setup"}, {"description", "mine"}});
  ASSERT_EQ(made.status, 201) << made.describe();
  const auto& t = made.body;
  EXPECT_EQ(t["name"], "My setup");
  EXPECT_EQ(t["description"], "mine");
  EXPECT_EQ(t["owner_id"], ids.adv);
  EXPECT_EQ(t["category_id"], ids.categoryA) << "the maker's category, as for any template";
  EXPECT_EQ(t["storage"], "templates");
  EXPECT_THAT(t["base_disk"].get<std::string>(),
              StartsWith(fmt::format("from-desktop/{}-", desktop)));
  EXPECT_THAT(t["base_disk"].get<std::string>(), ::testing::EndsWith(".qcow2"));
  // The source template's size, not the desktop's own copy of it.
  EXPECT_EQ(t["vcpus"], 1);
  EXPECT_EQ(t["memory_mb"], 1024);
  EXPECT_EQ(t["disk_gb"], 20);
  EXPECT_EQ(t["video"], "qxl");
  EXPECT_EQ(t["usb"], "all") << "the source template's USB policy";
  EXPECT_EQ(t["enabled"], true);
  EXPECT_EQ(t["pools"], Json::array({ids.pool})) << "only where the host's storage reaches";
  EXPECT_EQ(t["from_desktop_id"], desktop);
  EXPECT_EQ(t["origin_host_id"], host);
  EXPECT_TRUE(t["backing"].is_null()) << "a flattened image depends on nothing";

  auto asked = broker().hosts().madeTemplates();
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].hostId, host);
  EXPECT_EQ(asked[0].desktopId, desktop);
  EXPECT_EQ(asked[0].disk, t["base_disk"].get<std::string>());
  EXPECT_EQ(asked[0].mode, broker::TemplateMode::kFlatten);

  // Its maker sees and uses it.
  auto mine = api().call("GET", "/api/v1/templates", token("adv"));
  ASSERT_EQ(mine.status, 200) << mine.describe();
  EXPECT_NE(mine.text.find("\"My setup\""), std::string::npos) << mine.text;

  auto entries = audit("template.from_desktop");
  ASSERT_EQ(entries.size(), 1u) << entries.dump();
  EXPECT_EQ(entries[0]["actor"], "adv");
  EXPECT_EQ(entries[0]["object"], fmt::format("template:{}", t["id"].get<std::int64_t>()));
  EXPECT_EQ(entries[0]["detail"]["desktop_id"], desktop);
  EXPECT_EQ(entries[0]["detail"]["source_template_id"], ids.debian);
  EXPECT_EQ(entries[0]["detail"]["mode"], "flatten");
  EXPECT_EQ(entries[0]["detail"]["base_disk"], t["base_disk"]);

  // The desktop is the user's again.
  auto started =
      api().call("POST", fmt::format("/api/v1/desktops/{}/start", desktop), token("adv"));
  EXPECT_EQ(started.status, 200) << started.describe();
}

TEST_P(TemplateFromDesktopApiTest, OwnersOfRoleAdvancedTheirTeachersAndAdminsMayOthersMayNot) {
  const auto& ids = seed();
  const auto alices = usedDesktop(ids.alice, "alice-desk");
  const auto carols = usedDesktop(ids.carol, "carol-desk");

  auto student = makeTemplate("alice", alices, Json{{"name", "by alice"}});
  EXPECT_EQ(student.status, 403) << student.describe();
  EXPECT_THAT(student.errorMessage(), HasSubstr("ask your teacher"));
  // Another's desktop is not there for an advanced user or another school's teacher.
  auto advanced = makeTemplate("adv", alices, Json{{"name", "by adv"}});
  EXPECT_EQ(advanced.status, 404) << advanced.describe();
  auto otherTeacher = makeTemplate("teacher-b", alices, Json{{"name", "by teacher b"}});
  EXPECT_EQ(otherTeacher.status, 404) << otherTeacher.describe();
  auto anonymous =
      api().call("POST", fmt::format("/api/v1/desktops/{}/template", alices), "", Json::object());
  EXPECT_EQ(anonymous.status, 401) << anonymous.describe();
  EXPECT_TRUE(broker().hosts().madeTemplates().empty());

  auto teacher = makeTemplate("teacher-a", alices, Json{{"name", "by teacher a"}});
  ASSERT_EQ(teacher.status, 201) << teacher.describe();
  EXPECT_EQ(teacher.body["owner_id"], ids.teacherA);
  EXPECT_EQ(teacher.body["category_id"], ids.categoryA);
  // An admin's template of a student's desktop belongs with the student's school.
  auto admin = makeTemplate("admin", carols, Json{{"name", "by admin"}, {"mode", "rebase"}});
  ASSERT_EQ(admin.status, 201) << admin.describe();
  EXPECT_EQ(admin.body["owner_id"], ids.admin);
  EXPECT_EQ(admin.body["category_id"], ids.categoryB);
  EXPECT_EQ(broker().hosts().madeTemplates().size(), 2u);
}

TEST_P(TemplateFromDesktopApiTest, ARunningNeverStartedOrThrowAwayDesktopGivesNoTemplate) {
  const auto& ids = seed();
  auto& b = broker();
  const auto running = usedDesktop(ids.alice, "running");
  b.adminCall("POST", fmt::format("/api/v1/desktops/{}/start", running), std::nullopt, 200);
  const auto fresh = b.createDesktop(ids.alice, "never started");
  const auto throwAway = usedDesktop(ids.bob, "throw-away", false);
  const auto templatesBefore = b.adminCall("GET", "/api/v1/templates").size();

  auto r = makeTemplate("admin", running, Json{{"name", "from running"}});
  EXPECT_EQ(r.status, 409) << r.describe();
  EXPECT_EQ(r.errorMessage(),
            "The desktop 'running' is running; stop it first, since the disk of a running guest "
            "is not consistent.");
  r = makeTemplate("admin", fresh, Json{{"name", "from fresh"}});
  EXPECT_EQ(r.status, 409) << r.describe();
  EXPECT_THAT(r.errorMessage(), HasSubstr("has no disk yet: start it once"));
  r = makeTemplate("admin", throwAway, Json{{"name", "from throw-away"}});
  EXPECT_EQ(r.status, 409) << r.describe();
  EXPECT_THAT(r.errorMessage(), HasSubstr("is not persistent"));
  r = makeTemplate("admin", 999999, Json{{"name", "from nothing"}});
  EXPECT_EQ(r.status, 404) << r.describe();

  EXPECT_TRUE(b.hosts().madeTemplates().empty());
  EXPECT_EQ(b.adminCall("GET", "/api/v1/templates").size(), templatesBefore);
  EXPECT_TRUE(audit("template.from_desktop").empty());
  EXPECT_EQ(b.adminCall("GET", fmt::format("/api/v1/desktops/{}", running))["state"], "running");
}

TEST_P(TemplateFromDesktopApiTest, BadInputOrAHostThatFailsMakesNothing) {
  const auto& ids = seed();
  auto& b = broker();
  const auto desktop = usedDesktop(ids.adv, "desk");
  struct Case {
    std::string user;
    Json body;
    long status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"adv", Json::object(), 400, "name"},
      {"adv", Json{{"name", "x"}, {"mode", "copy"}}, 400, "'flatten' or 'rebase', not 'copy'"},
      {"adv", Json{{"name", "x"}, {"size", 3}}, 400, "'size' is not known here"},
      {"adv", Json{{"name", "../x"}}, 400, "name"},
      {"adv", Json{{"name", "Debian"}}, 409, "A template named 'Debian' exists already."},
      {"adv", Json{{"name", "x"}, {"access", Json::array({"everyone"})}}, 403,
       "Only an admin may share a template with everyone."},
      {"adv", Json{{"name", "x"}, {"access", "group:1"}}, 400, "array of strings"},
  };
  for (const auto& c : cases) {
    auto r = makeTemplate(c.user, desktop, c.body);
    EXPECT_EQ(r.status, c.status) << c.body.dump() << ": " << r.describe();
    EXPECT_THAT(r.errorMessage(), HasSubstr(c.says)) << c.body.dump();
  }
  // The templates quota of the maker.
  b.adminCall("PUT", fmt::format("/api/v1/quotas/user:{}", ids.adv), Json{{"templates", 0}}, 200);
  auto quota = makeTemplate("adv", desktop, Json{{"name", "over quota"}});
  EXPECT_EQ(quota.status, 403) << quota.describe();
  EXPECT_EQ(quota.errorCode(), "quota_exceeded");
  b.adminCall("DELETE", fmt::format("/api/v1/quotas/user:{}", ids.adv), std::nullopt, 204);
  // A host whose agent is away.
  b.hosts().setReachable(hostOf(desktop), false);
  auto away = makeTemplate("adv", desktop, Json{{"name", "host away"}});
  EXPECT_EQ(away.status, 503) << away.describe();
  EXPECT_THAT(away.errorMessage(), HasSubstr("could not make the template's image"));
  b.hosts().setReachable(hostOf(desktop), true);

  EXPECT_TRUE(b.hosts().madeTemplates().empty());
  EXPECT_TRUE(audit("template.from_desktop").empty());
  EXPECT_EQ(b.adminCall("GET", "/api/v1/templates").size(), 1u);
  // Nothing holds the desktop after a refusal.
  auto started =
      api().call("POST", fmt::format("/api/v1/desktops/{}/start", desktop), token("adv"));
  EXPECT_EQ(started.status, 200) << started.describe();
}

TEST_P(TemplateFromDesktopApiTest, ARebasedTemplateKeepsItsSourceAndOnlyAulasImagesAreDeleted) {
  const auto& ids = seed();
  auto& b = broker();
  const auto desktop = usedDesktop(ids.alice, "to copy");
  const auto host = hostOf(desktop);
  auto rebased = makeTemplate("admin", desktop, Json{{"name", "Rebased"}, {"mode", "rebase"}});
  ASSERT_EQ(rebased.status, 201) << rebased.describe();
  EXPECT_EQ(rebased.body["backing"], (Json{{"storage", "templates"}, {"disk", "debian-12.qcow2"}}));
  auto flat = makeTemplate("admin", desktop, Json{{"name", "Flat"}});
  ASSERT_EQ(flat.status, 201) << flat.describe();
  EXPECT_NE(flat.body["base_disk"], rebased.body["base_disk"]) << "one file per template";
  const auto made = b.hosts().madeTemplates();
  ASSERT_EQ(made.size(), 2u);
  EXPECT_EQ(made[0].mode, broker::TemplateMode::kRebase);
  EXPECT_EQ(made[1].mode, broker::TemplateMode::kFlatten);

  b.adminCall("DELETE", fmt::format("/api/v1/desktops/{}", desktop), std::nullopt, 204);
  auto refused =
      api().call("DELETE", fmt::format("/api/v1/templates/{}", ids.debian), token("admin"));
  EXPECT_EQ(refused.status, 409) << refused.describe();
  EXPECT_EQ(refused.errorMessage(),
            "The template 'Debian' is kept while the template 'Rebased' is re-based on its image "
            "and needs it; delete that one first.");

  // Aula's own images go after their rows, on the host that made them.
  for (const auto& t : {flat.body, rebased.body}) {
    b.adminCall("DELETE", fmt::format("/api/v1/templates/{}", t["id"].get<std::int64_t>()),
                std::nullopt, 204);
  }
  auto deleted = b.hosts().deletedBases();
  ASSERT_EQ(deleted.size(), 2u);
  EXPECT_EQ(deleted[0].disk, flat.body["base_disk"].get<std::string>());
  EXPECT_EQ(deleted[1].disk, rebased.body["base_disk"].get<std::string>());
  for (const auto& d : deleted) {
    EXPECT_EQ(d.hostId, host);
    EXPECT_EQ(d.storage, "templates");
  }
  // The admin placed Debian's image: the broker forgets the template, not the file.
  b.adminCall("DELETE", fmt::format("/api/v1/templates/{}", ids.debian), std::nullopt, 204);
  EXPECT_EQ(b.hosts().deletedBases().size(), 2u);

  auto outcomes = audit("template.image_delete");
  ASSERT_EQ(outcomes.size(), 2u) << outcomes.dump();
  for (const auto& e : outcomes)
    EXPECT_EQ(e["detail"]["result"], "deleted") << e.dump();
}

TEST_P(TemplateFromDesktopApiTest, AnImageInUseOrOnAnAbsentHostIsKeptWithAWarningTheRowStillGoes) {
  const auto& ids = seed();
  auto& b = broker();
  const auto desktop = usedDesktop(ids.alice, "to copy");
  const auto host = hostOf(desktop);
  auto make = [&](const std::string& name) {
    auto r = makeTemplate("admin", desktop, Json{{"name", name}});
    EXPECT_EQ(r.status, 201) << r.describe();
    return r.body;
  };
  auto gone = [&](const Json& t) {
    b.adminCall("DELETE", fmt::format("/api/v1/templates/{}", t["id"].get<std::int64_t>()),
                std::nullopt, 204);
    auto after = api().call("GET", fmt::format("/api/v1/templates/{}", t["id"].get<std::int64_t>()),
                            token("admin"));
    EXPECT_EQ(after.status, 404) << after.describe();
  };

  // The agent still finds an image on it.
  auto inUse = make("In use");
  b.hosts().setBaseInUse(inUse["base_disk"].get<std::string>(), true);
  gone(inUse);
  // The host's agent is away.
  auto away = make("Host away");
  b.hosts().setReachable(host, false);
  gone(away);
  b.hosts().setReachable(host, true);
  EXPECT_TRUE(b.hosts().deletedBases().empty());
  auto outcomes = audit("template.image_delete");
  ASSERT_EQ(outcomes.size(), 2u) << outcomes.dump();
  // Newest first.
  EXPECT_EQ(outcomes[0]["detail"]["result"], "kept");
  EXPECT_THAT(outcomes[0]["detail"]["reason"].get<std::string>(), HasSubstr("not reachable"));
  EXPECT_EQ(outcomes[1]["detail"]["result"], "kept");
  EXPECT_THAT(outcomes[1]["detail"]["reason"].get<std::string>(),
              HasSubstr("cannot be deleted while"));

  // Another template an admin pointed at the same image keeps it.
  auto shared = make("Shared");
  auto byHand = b.adminCall("POST", "/api/v1/templates",
                            Json{{"name", "By hand"},
                                 {"base_disk", shared["base_disk"]},
                                 {"disk_gb", 20},
                                 {"vcpus", 1},
                                 {"memory_mb", 1024}},
                            201);
  EXPECT_TRUE(byHand["from_desktop_id"].is_null());
  gone(shared);
  auto deletes = audit("template.delete");
  ASSERT_FALSE(deletes.empty());
  EXPECT_EQ(deletes[0]["detail"]["image_kept"], "other desktops or templates use it");
  // ...and is not Aula's to delete itself.
  gone(byHand);
  // A made template pointed at an image of the admin's is no longer Aula's either.
  auto repointed = make("Repointed");
  auto patched =
      b.adminCall("PATCH", fmt::format("/api/v1/templates/{}", repointed["id"].get<std::int64_t>()),
                  Json{{"base_disk", "admins-own.qcow2"}}, 200);
  EXPECT_TRUE(patched["from_desktop_id"].is_null());
  EXPECT_TRUE(patched["backing"].is_null());
  gone(patched);
  EXPECT_TRUE(b.hosts().deletedBases().empty());
  EXPECT_EQ(audit("template.image_delete").size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Engines, TemplateFromDesktopApiTest, kBothBackends, backendTestName);

// aulactl desktops make-template, the real binary against a broker on SQLite.
TEST(AulactlMakeTemplateTest, MakesATemplateAndRefusesAnUnknownModeOrNoName) {
  BrokerFixture broker;
  const auto& ids = broker.seed();
  auto desktop =
      broker
          .adminCall("POST", "/api/v1/desktops",
                     Json{{"name", "desk"}, {"template_id", ids.debian}, {"owner_id", ids.adv}},
                     201)["id"]
          .get<std::int64_t>();
  broker.adminCall("POST", fmt::format("/api/v1/desktops/{}/start", desktop), std::nullopt, 200);
  broker.adminCall("POST", fmt::format("/api/v1/desktops/{}/stop", desktop), std::nullopt, 200);
  TempDir home;
  auto aulactl = [&](std::vector<std::string> args) {
    return broker.runAulactl(AULA_AULACTL_BIN, std::move(args), broker.tokenOf("adv"), home.path(),
                             {{"PATH", "/usr/bin:/bin"}});
  };

  const auto id = std::to_string(desktop);

  auto wrongMode = aulactl({"desktops", "make-template", id, "--name", "X", "--mode", "copy"});
  EXPECT_NE(wrongMode.exitCode, 0) << wrongMode.out << wrongMode.err;
  EXPECT_THAT(wrongMode.err, HasSubstr("--mode"));
  auto noName = aulactl({"desktops", "make-template", id});
  EXPECT_NE(noName.exitCode, 0) << noName.out << noName.err;
  EXPECT_THAT(noName.err, HasSubstr("--name"));
  EXPECT_TRUE(broker.hosts().madeTemplates().empty());

  auto made = aulactl(
      {"--json", "desktops", "make-template", id, "--name", "Lab setup", "--mode", "rebase"});
  ASSERT_EQ(made.exitCode, 0) << made.out << made.err;
  auto t = Json::parse(made.out, nullptr, false);
  ASSERT_TRUE(t.is_object()) << made.out;
  EXPECT_EQ(t["name"], "Lab setup");
  EXPECT_EQ(t["from_desktop_id"], desktop);
  EXPECT_FALSE(t["backing"].is_null());
  ASSERT_EQ(broker.hosts().madeTemplates().size(), 1u);
  EXPECT_EQ(broker.hosts().madeTemplates()[0].mode, broker::TemplateMode::kRebase);

  // The broker's sentence, and a failing exit.
  auto again = aulactl({"desktops", "make-template", id, "--name", "Lab setup"});
  EXPECT_EQ(again.exitCode, 1) << again.out << again.err;
  EXPECT_THAT(again.err, HasSubstr("A template named 'Lab setup' exists already. (HTTP 409)"));
}

}  // namespace
}  // namespace aula::test
