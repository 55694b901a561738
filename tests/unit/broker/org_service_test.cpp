// OrgService: what admins and teachers may do to users, and quotas.
#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

using OrgServiceTest = ServiceTest;

TEST_F(OrgServiceTest, AManagerSeesOnlyTheUsersOfTheirCategory) {
  auto physics = makeCategory("Physics");
  auto music = makeCategory("Music");
  makeUser("teacher", "manager", physics);
  makeUser("alice", "user", physics);
  makeUser("bob", "user", music);
  auto teacher = signIn("teacher");
  auto users = must(broker().org.listUsers(teacher, {}));
  std::vector<std::string> names;
  for (const auto& u : users)
    names.push_back(u["username"].get<std::string>());
  EXPECT_NE(std::find(names.begin(), names.end(), "alice"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "bob"), names.end());
}

TEST_F(OrgServiceTest, AManagerCannotCreateUsersInAnotherCategory) {
  auto physics = makeCategory("Physics");
  auto music = makeCategory("Music");
  makeUser("teacher", "manager", physics);
  auto teacher = signIn("teacher");
  auto r = broker().org.createUser(
      teacher, Json{{"username", "carol"}, {"role", "user"}, {"category_id", music}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
  // In their own category the same user is fine, and lands there.
  auto made = must(broker().org.createUser(teacher, Json{{"username", "carol"}, {"role", "user"}}));
  EXPECT_EQ(made["category_id"], physics);
}

TEST_F(OrgServiceTest, AManagerCannotMakeAnAdmin) {
  auto physics = makeCategory("Physics");
  makeUser("teacher", "manager", physics);
  auto r =
      broker().org.createUser(signIn("teacher"), Json{{"username", "mallory"}, {"role", "admin"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(OrgServiceTest, AStudentCannotListUsers) {
  makeUser("alice", "user");
  auto r = broker().org.listUsers(signIn("alice"), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(OrgServiceTest, AQuotaIsReadBackAsItWasSet) {
  must(broker().org.setQuota(admin_, "role:user",
                             Json{{"desktops", 1},
                                  {"running", 1},
                                  {"vcpus", 2},
                                  {"memory_mb", 4096},
                                  {"disk_gb", 20},
                                  {"templates", 0}}));
  bool found = false;
  for (const auto& q : must(broker().org.listQuotas(admin_))) {
    if (q["subject"] == "role:user") {
      found = true;
      EXPECT_EQ(q["desktops"], 1);
      EXPECT_EQ(q["disk_gb"], 20);
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace aula::broker::test
