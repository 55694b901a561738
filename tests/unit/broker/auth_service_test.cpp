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

// What an open event stream asks at each keep-alive, and the event that
// makes it ask at once.
TEST_F(AuthServiceTest, ASessionHoldsUntilItEndsAndSaysWhyItEnded) {
  auto aliceId = makeUser("alice", "user");
  auto bobId = makeUser("bob", "user");
  makeUser("carol", "user");
  auto alice = signIn("alice");
  auto bob = signIn("bob");
  auto carol = signIn("carol");
  EXPECT_TRUE(broker().auth.checkSession(alice).ok());
  auto why = [&](const Actor& a) {
    auto held = broker().auth.checkSession(a);
    EXPECT_FALSE(held.ok());
    return held.ok() ? std::string() : held.error().message();
  };
  const auto before = events_.lastId();

  must(broker().auth.logout(carol));
  EXPECT_EQ(why(carol), "The session was ended; log in again.");
  must(broker().org.updateUser(admin_, aliceId, Json{{"disabled", true}}));
  EXPECT_EQ(why(alice), "The account was disabled.");
  must(broker().org.deleteUser(admin_, bobId));
  EXPECT_EQ(why(bob), "The account was deleted.");
  // Each told the streams, and no stream shows it.
  int ended = 0;
  for (const auto& e : events_.waitAfter(before, std::chrono::milliseconds(0))) {
    if (e.type == "session.ended") {
      EXPECT_TRUE(e.internal);
      ++ended;
    }
  }
  EXPECT_EQ(ended, 3);

  auto admin = signIn("admin");
  clock_.advance(std::chrono::hours(13));
  EXPECT_EQ(why(admin), "The session has expired; log in again.");
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
