// Directory logins against a real Active Directory: Debian's Samba in AD DC
// mode, provisioned by the test (support/samba_dc), with a teacher whose role
// comes through a nested group (the in-chain rule), the scheduled sync and
// aulactl's directory commands. Its own program, so that CTest can keep its
// tests apart: AD's LDAP port (389) is one per machine.
#include <chrono>
#include <stdexcept>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/common/process.hpp"

#include "support/broker_fixture.hpp"
#include "support/samba_dc.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

using json::Json;
using ::testing::HasSubstr;

}  // namespace
}  // namespace aula::test

namespace aula::test {
namespace {

// ---- Active Directory: a real Samba AD DC, nested groups by the in-chain rule ----

class BrokerActiveDirectoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!SambaDc::available(&skipReason_))
      return;
    try {
      dc_ = std::make_unique<SambaDc>();
      // Science is inside Teachers: Tom is a teacher only through it.
      dc_->addUser("tom", "Teacher-Pass1", "Tom Teacher");
      dc_->addUser("anna", "Student-Pass1", "Anna Student");
      dc_->addGroup("Teachers");
      dc_->addGroup("Science");
      dc_->addGroup("Class-1A");
      dc_->addMembers("Science", {"tom"});
      dc_->addMembers("Teachers", {"Science"});
      dc_->addMembers("Class-1A", {"anna"});
    } catch (const std::exception& e) {
      startError_ = e.what();
      dc_.reset();
    }
  }
  static void TearDownTestSuite() { dc_.reset(); }

  void SetUp() override {
    if (!startError_.empty())
      FAIL() << "the Samba AD DC did not start: " << startError_;
    if (!dc_)
      GTEST_SKIP() << skipReason_;
    broker_ = std::make_unique<BrokerFixture>(
        BrokerOptions{.extraToml = dc_->brokerToml(dir_.path() / "bind.password") + R"toml(
[ldap.group_roles]
"CN=Teachers,CN=Users,DC=aula,DC=test" = "manager"

[ldap.group_map]
"CN=Class-1A,CN=Users,DC=aula,DC=test" = "School A/1A"
"CN=Science,CN=Users,DC=aula,DC=test" = "School A/Science"
)toml"});
    broker_->seed();
  }

  ApiResponse login(const std::string& user, const std::string& password) {
    return broker_->api().call("POST", "/api/v1/session", {},
                               Json{{"username", user}, {"password", password}});
  }

  TempDir dir_;
  std::unique_ptr<BrokerFixture> broker_;
  static inline std::unique_ptr<SambaDc> dc_;
  static inline std::string skipReason_;
  static inline std::string startError_;
};

TEST_F(BrokerActiveDirectoryTest, ATeacherThroughANestedGroupIsAManagerAndAStudentAUser) {
  auto tom = login("tom", "Teacher-Pass1");
  ASSERT_EQ(tom.status, 201) << tom.describe();
  EXPECT_EQ(tom.body["user"]["role"], "manager") << "Science is inside Teachers";
  EXPECT_EQ(tom.body["user"]["display_name"], "Tom Teacher");
  auto check = broker_->adminCall("GET", "/api/v1/directory/check?username=tom");
  EXPECT_EQ(check["nesting"], "in-chain") << check.dump();
  EXPECT_EQ(check["role_from"], "cn=teachers,cn=users,dc=aula,dc=test") << check.dump();
  EXPECT_EQ(check["aula_groups"], Json::array({"School A/Science"})) << check.dump();

  auto anna = login("anna", "Student-Pass1");
  ASSERT_EQ(anna.status, 201) << anna.describe();
  EXPECT_EQ(anna.body["user"]["role"], "user");
  auto me = broker_->api().call("GET", "/api/v1/me", anna.body["token"].get<std::string>());
  ASSERT_EQ(me.body["groups"].size(), 1U) << me.describe();
  EXPECT_EQ(me.body["groups"][0]["id"], broker_->ids().group1A);

  auto wrong = login("anna", "not-annas");
  EXPECT_EQ(wrong.status, 401) << wrong.describe();
}

TEST_F(BrokerActiveDirectoryTest, AulactlShowsAnAdminWhatTheBrokerSeesAndSyncsNow) {
  auto aulactl = [&](std::vector<std::string> args) {
    return broker_->runAulactl(AULA_AULACTL_BIN, std::move(args), broker_->adminToken(),
                               dir_.path());
  };

  auto check = aulactl({"directory", "check", "tom"});
  EXPECT_EQ(check.exitCode, 0) << check.err;
  EXPECT_THAT(check.out, HasSubstr("manager")) << check.out;
  EXPECT_THAT(check.out, HasSubstr("cn=teachers,cn=users,dc=aula,dc=test")) << check.out;
  EXPECT_THAT(check.out, HasSubstr("School A/Science")) << check.out;

  auto sync = aulactl({"directory", "sync"});
  EXPECT_EQ(sync.exitCode, 0) << sync.err;
  EXPECT_THAT(sync.out, HasSubstr("directory user(s)")) << sync.out;

  auto nobody = aulactl({"directory", "check", "nobody"});
  EXPECT_NE(nobody.exitCode, 0);
  EXPECT_THAT(nobody.err + nobody.out, HasSubstr("nobody")) << "the error names who was not found";
}

TEST_F(BrokerActiveDirectoryTest, TheSyncFollowsTheDomainsChangesAndDisablesWhoLeft) {
  dc_->addUser("leo", "Student-Pass1", "Leo Leaving");
  dc_->addMembers("Class-1A", {"leo"});
  auto leo = login("leo", "Student-Pass1");
  ASSERT_EQ(leo.status, 201) << leo.describe();
  const auto token = leo.body["token"].get<std::string>();

  dc_->removeMembers("Class-1A", {"leo"});
  auto synced = broker_->adminCall("POST", "/api/v1/directory/sync", Json::object(), 200);
  EXPECT_EQ(synced["disabled"], Json::array()) << synced.dump();
  auto me = broker_->api().call("GET", "/api/v1/me", token);
  EXPECT_EQ(me.body["groups"], Json::array()) << me.describe();

  dc_->deleteUser("leo");
  synced = broker_->adminCall("POST", "/api/v1/directory/sync", Json::object(), 200);
  EXPECT_EQ(synced["disabled"], Json::array({"leo"})) << synced.dump();
  EXPECT_EQ(broker_->api().call("GET", "/api/v1/me", token).status, 401);
}

}  // namespace
}  // namespace aula::test
