// AuthService: sign-in, its throttle, and API tokens, as users meet them.
#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

using AuthServiceTest = ServiceTest;

TEST_F(AuthServiceTest, AWrongPasswordIsRefusedWithoutSayingWhichPartWasWrong) {
  makeUser("alice", "user");
  auto r = broker().auth.login("alice", "not-her-password", "192.0.2.1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnauthenticated);
  auto unknown = broker().auth.login("nobody", "not-her-password", "192.0.2.1");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message(), r.error().message());
}

TEST_F(AuthServiceTest, TooManyFailedLoginsLockTheUserOutEvenWithTheRightPassword) {
  makeUser("alice", "user");
  for (int i = 0; i < 5; ++i)
    EXPECT_FALSE(broker().auth.login("alice", "guessing-" + std::to_string(i), "192.0.2.1").ok());
  auto r = broker().auth.login("alice", kPassword, "192.0.2.1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kRateLimited);
  EXPECT_NE(r.error().message().find("try again in"), std::string::npos);
  EXPECT_EQ(broker().counters.loginsThrottled.load(), 1u);
  // The lockout ends.
  clock_.advance(std::chrono::minutes(20));
  EXPECT_TRUE(broker().auth.login("alice", kPassword, "192.0.2.1").ok());
}

TEST_F(AuthServiceTest, ASignedInUserIsWhoTheyLoggedInAs) {
  auto id = makeUser("alice", "advanced");
  auto alice = signIn("alice");
  EXPECT_EQ(alice.userId, id);
  EXPECT_EQ(alice.role, Role::kAdvanced);
  auto me = must(broker().auth.me(alice));
  EXPECT_EQ(me["username"], "alice");
}

TEST_F(AuthServiceTest, ALoggedOutSessionNoLongerAuthenticates) {
  makeUser("alice", "user");
  auto session = must(broker().auth.login("alice", kPassword, "192.0.2.1"));
  auto token = session["token"].get<std::string>();
  auto alice = must(broker().auth.authenticate(token, "192.0.2.1"));
  must(broker().auth.logout(alice));
  auto r = broker().auth.authenticate(token, "192.0.2.1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnauthenticated);
}

TEST_F(AuthServiceTest, AnApiTokenAuthenticatesUntilItIsDeleted) {
  auto made = must(broker().auth.createToken(admin_, Json{{"name", "backup"}, {"valid_days", 2}}));
  auto token = made["token"].get<std::string>();
  EXPECT_TRUE(broker().auth.authenticate(token, "192.0.2.9").ok());
  must(broker().auth.deleteToken(admin_, made["id"].get<std::int64_t>()));
  EXPECT_FALSE(broker().auth.authenticate(token, "192.0.2.9").ok());
}

TEST_F(AuthServiceTest, BootstrapHappensOnce) {
  auto again = broker().auth.bootstrap("root", kPassword);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kConflict);
}

}  // namespace
}  // namespace aula::broker::test
