// DeploymentService, and DesktopService's start through it: a teacher hands
// a class its desktops and starts them on the hosts that reported in.
#include <gmock/gmock.h>

#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

using ::testing::HasSubstr;

class DeploymentServiceTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    physics_ = makeCategory("Physics");
    makeUser("teacher", "manager", physics_);
    makeUser("alice", "user", physics_);
    makeUser("bob", "user", physics_);
    teacher_ = signIn("teacher");
    group_ =
        must(broker().org.createGroup(teacher_, Json{{"name", "7b"}}))["id"].get<std::int64_t>();
    must(broker().org.addMembers(teacher_, group_,
                                 Json{{"usernames", Json::array({"alice", "bob"})}}));
    template_ = makeTemplate();
  }

  // A hypervisor that reported room for the class, with `desktopsFreeGb` free
  // in its desktop storage.
  std::int64_t onlineHost(const std::string& name = "hv1", std::int64_t desktopsFreeGb = 500) {
    if (pool_ == 0)
      pool_ = makePool();
    auto host = must(broker().hosts.create(
        admin_, Json{{"name", name}, {"pool_id", pool_}, {"address", "10.0.0.1"}}))["id"]
                    .get<std::int64_t>();
    reportStorage(host, desktopsFreeGb);
    return host;
  }

  void reportStorage(std::int64_t host, std::int64_t desktopsFreeGb) {
    auto load = roomyLoad();
    load["storage_free_gb"] = Json{{"desktops", desktopsFreeGb}, {"templates", 500}};
    must(broker().hosts.recordHeartbeat(host, load));
  }

  std::int64_t pool_ = 0;

  std::int64_t physics_ = 0;
  std::int64_t group_ = 0;
  std::int64_t template_ = 0;
  Actor teacher_;
};

TEST_F(DeploymentServiceTest, ADeploymentGivesEveryMemberADesktopAndStartsThemTogether) {
  auto deployment = must(broker().deployments.create(
      teacher_, Json{{"name", "Lesson 1"}, {"template_id", template_}, {"group_id", group_}}));
  EXPECT_EQ(deployment["desktops"], 2);
  auto alice = signIn("alice");
  auto hers = must(broker().desktops.list(alice, {}));
  ASSERT_EQ(hers.size(), 1u);
  EXPECT_EQ(hers[0]["state"], "stopped");

  onlineHost();
  auto started = must(broker().deployments.start(teacher_, deployment["id"].get<std::int64_t>()));
  EXPECT_EQ(started["succeeded"], 2);
  EXPECT_TRUE(started["failed"].empty());
  EXPECT_EQ(must(broker().desktops.get(alice, hers[0]["id"].get<std::int64_t>()))["state"],
            "running");
  EXPECT_EQ(broker().counters.desktopStarts.load(), 2u);
}

TEST_F(DeploymentServiceTest, ADesktopWithNoHostOnlineDoesNotStart) {
  auto alice = signIn("alice");
  auto id = makeDesktop(alice, template_, "alice-desk");
  auto r = broker().desktops.start(alice, id);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().code(), Errc::kInternal);
  EXPECT_EQ(must(broker().desktops.get(alice, id))["state"], "stopped");
}

TEST_F(DeploymentServiceTest, ADesktopStartsOnAHostWithRoomInItsDesktopStorage) {
  // The template's disk is 10 GiB: hv-full has 4 GiB left, hv-roomy 200.
  onlineHost("hv-full", 4);
  auto roomy = onlineHost("hv-roomy", 200);
  auto alice = signIn("alice");
  for (int i = 0; i < 3; ++i) {  // her quota of desktops
    auto id = makeDesktop(alice, template_, fmt::format("desk-{}", i));
    auto started = must(broker().desktops.start(alice, id));
    EXPECT_EQ(started["state"], "running");
    EXPECT_EQ(must(broker().desktops.get(admin_, id))["host_id"], roomy) << "desktop " << i;
    must(broker().desktops.stop(alice, id, true));  // a student runs one at a time
  }
}

TEST_F(DeploymentServiceTest, WithNoRoomInAnyDesktopStorageTheStartSaysWhatIsMissing) {
  auto host = onlineHost("hv1", 4);
  auto alice = signIn("alice");
  auto id = makeDesktop(alice, template_, "alice-desk");
  auto r = broker().desktops.start(alice, id);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnavailable);
  EXPECT_THAT(r.error().message(), HasSubstr("lack 10 GiB in storage 'desktops'"));
  EXPECT_EQ(must(broker().desktops.get(alice, id))["state"], "stopped");

  // Once the admin frees space and the next heartbeat says so, it starts.
  reportStorage(host, 40);
  EXPECT_EQ(must(broker().desktops.start(alice, id))["state"], "running");
}

TEST_F(DeploymentServiceTest, TheGroupsAndTheCategorysTotalsHoldForDeployments) {
  onlineHost();
  auto deployment = must(broker().deployments.create(
      teacher_, Json{{"name", "Lesson 1"}, {"template_id", template_}, {"group_id", group_}}));
  const auto id = deployment["id"].get<std::int64_t>();
  // The students' own limits do not hold for a teacher's deployment; the
  // class's total does.
  must(broker().org.setQuota(admin_, fmt::format("group:{}", group_), Json{{"running", 1}}));
  auto started = must(broker().deployments.start(teacher_, id));
  EXPECT_EQ(started["succeeded"], 1);
  ASSERT_EQ(started["failed"].size(), 1u) << started.dump();
  EXPECT_THAT(started["failed"][0]["error"].get<std::string>(),
              HasSubstr("The group '7b' has reached the limit of 1 running desktops"));

  must(broker().deployments.stop(teacher_, id, true));
  must(broker().org.deleteQuota(admin_, fmt::format("group:{}", group_)));
  must(broker().org.setQuota(admin_, fmt::format("category:{}", physics_),
                             Json{{"vcpus", 2}}));  // one desktop of 2 vCPUs
  started = must(broker().deployments.start(teacher_, id));
  EXPECT_EQ(started["succeeded"], 1);
  ASSERT_EQ(started["failed"].size(), 1u) << started.dump();
  EXPECT_THAT(started["failed"][0]["error"].get<std::string>(),
              HasSubstr("Your category has reached the limit of 2 vCPUs in use"));
}

TEST_F(DeploymentServiceTest, ATeacherOfAnotherCategoryCannotDeployToTheClass) {
  auto music = makeCategory("Music");
  makeUser("other-teacher", "manager", music);
  auto r = broker().deployments.create(
      signIn("other-teacher"),
      Json{{"name", "Not mine"}, {"template_id", template_}, {"group_id", group_}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(DeploymentServiceTest, OnlyTheClasssTeachersMayStartItsDeployment) {
  auto deployment = must(broker().deployments.create(
      teacher_, Json{{"name", "Lesson 1"}, {"template_id", template_}, {"group_id", group_}}));
  const auto id = deployment["id"].get<std::int64_t>();
  onlineHost();
  auto music = makeCategory("Music");
  makeUser("other-teacher", "manager", music);
  auto r = broker().deployments.start(signIn("other-teacher"), id);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  EXPECT_THAT(r.error().message(), HasSubstr(fmt::format("no deployment with id {}", id)));
  auto missing = broker().deployments.start(teacher_, id + 100);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  // Neither started anything.
  EXPECT_EQ(broker().counters.desktopStarts.load(), 0u);
  auto hers = must(broker().desktops.list(signIn("alice"), {}));
  ASSERT_EQ(hers.size(), 1u);
  EXPECT_EQ(hers[0]["state"], "stopped");
}

TEST_F(DeploymentServiceTest, AStudentCannotDeploy) {
  auto r = broker().deployments.create(
      signIn("alice"), Json{{"name", "Mine"}, {"template_id", template_}, {"group_id", group_}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

}  // namespace
}  // namespace aula::broker::test
