// AccessService: the audit log and who sees which live event.
#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

using AccessServiceTest = ServiceTest;

TEST_F(AccessServiceTest, EveryChangeLeavesAnAuditEntryOnlyAdminsRead) {
  makeCategory("Physics");
  auto entries = must(broker().access.listAudit(admin_, {{"action", "category."}}));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0]["actor"], "admin");

  makeUser("alice", "user");
  auto r = broker().access.listAudit(signIn("alice"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(AccessServiceTest, ALiveEventReachesItsOwnerTheirTeacherAndAdminsOnly) {
  auto physics = makeCategory("Physics");
  auto music = makeCategory("Music");
  auto aliceId = makeUser("alice", "user", physics);
  makeUser("bob", "user", physics);
  makeUser("teacher", "manager", physics);
  makeUser("other-teacher", "manager", music);
  Event event{.type = "desktop.state", .ownerId = aliceId, .categoryId = physics};
  EXPECT_TRUE(broker().access.canSee(signIn("alice"), event));
  EXPECT_TRUE(broker().access.canSee(signIn("teacher"), event));
  EXPECT_TRUE(broker().access.canSee(admin_, event));
  EXPECT_FALSE(broker().access.canSee(signIn("bob"), event));
  EXPECT_FALSE(broker().access.canSee(signIn("other-teacher"), event));
}

TEST_F(AccessServiceTest, TheGaugesCountUsersAndDesktopsByState) {
  auto tpl = makeTemplate();
  makeUser("alice", "user");
  makeDesktop(signIn("alice"), tpl, "d");
  auto g = must(broker().access.gauges());
  EXPECT_EQ(g["users"], 2);
  EXPECT_EQ(g["desktops"]["stopped"], 1);
}

}  // namespace
}  // namespace aula::broker::test
