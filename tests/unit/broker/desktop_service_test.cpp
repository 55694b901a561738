// DesktopService and TemplateService: who sees which desktop and template,
// and the quotas desktops are made within.
#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

using DesktopServiceTest = ServiceTest;

TEST_F(DesktopServiceTest, AStudentSeesOnlyTheirOwnDesktops) {
  auto tpl = makeTemplate();
  makeUser("alice", "user");
  makeUser("bob", "user");
  auto alice = signIn("alice");
  auto bob = signIn("bob");
  auto alicesDesk = makeDesktop(alice, tpl, "alice-desk");
  makeDesktop(bob, tpl, "bob-desk");

  auto mine = must(broker().desktops.list(alice, {}));
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0]["name"], "alice-desk");

  // Someone else's desktop does not exist for bob, whatever he tries.
  for (const auto& r :
       {broker().desktops.get(bob, alicesDesk), broker().desktops.start(bob, alicesDesk),
        broker().desktops.stop(bob, alicesDesk, false)}) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kNotFound);
  }
  auto removed = broker().desktops.remove(bob, alicesDesk);
  ASSERT_FALSE(removed.ok());
  EXPECT_EQ(removed.error().code(), Errc::kNotFound);
  EXPECT_TRUE(broker().desktops.get(alice, alicesDesk).ok());
}

TEST_F(DesktopServiceTest, AStudentCannotListEveryonesDesktops) {
  makeUser("alice", "user");
  auto r = broker().desktops.list(signIn("alice"), {{"scope", "all"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(DesktopServiceTest, ADesktopBeyondTheUsersQuotaIsRefused) {
  must(broker().org.setQuota(admin_, "role:user",
                             Json{{"desktops", 1},
                                  {"running", 1},
                                  {"vcpus", 4},
                                  {"memory_mb", 8192},
                                  {"disk_gb", 100},
                                  {"templates", 0}}));
  auto tpl = makeTemplate();
  makeUser("alice", "user");
  auto alice = signIn("alice");
  makeDesktop(alice, tpl, "first");
  auto second = broker().desktops.create(alice, Json{{"name", "second"}, {"template_id", tpl}});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), Errc::kQuotaExceeded);
  EXPECT_NE(second.error().message().find("limit of 1 desktops"), std::string::npos);
  auto usage = must(broker().org.usage(alice, alice.userId));
  EXPECT_EQ(usage["used"]["desktops"], 1);
}

TEST_F(DesktopServiceTest, ADesktopNeedsATemplateItsOwnerMayUse) {
  // Shared with nobody: only its owner (the admin) may use it.
  auto tpl = must(broker().templates.create(admin_, Json{{"name", "Private"},
                                                         {"base_disk", "private.qcow2"},
                                                         {"disk_gb", 10},
                                                         {"vcpus", 1},
                                                         {"memory_mb", 1024}}))["id"]
                 .get<std::int64_t>();
  makeUser("alice", "user");
  auto r = broker().desktops.create(signIn("alice"), Json{{"name", "d"}, {"template_id", tpl}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().code(), Errc::kInternal);
}

TEST_F(DesktopServiceTest, AStudentMayNotCreateTemplates) {
  makeUser("alice", "user");
  auto r = broker().templates.create(signIn("alice"), Json{{"name", "Mine"},
                                                           {"base_disk", "mine.qcow2"},
                                                           {"disk_gb", 10},
                                                           {"vcpus", 1},
                                                           {"memory_mb", 1024}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(DesktopServiceTest, ATemplateDiskOutsideItsStorageIsRefused) {
  auto r = broker().templates.create(admin_, Json{{"name", "Escape"},
                                                  {"base_disk", "../../etc/shadow"},
                                                  {"disk_gb", 10},
                                                  {"vcpus", 1},
                                                  {"memory_mb", 1024}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace aula::broker::test
