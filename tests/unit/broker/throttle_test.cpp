// Failed-login throttling and password hashing.
#include "aula/broker/throttle.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/broker/password.hpp"

namespace aula::broker {
namespace {

using namespace std::chrono_literals;

TEST(ThrottleTest, BlocksAUserAfterTheAllowanceAndDoublesTheWait) {
  ManualClock clock;
  LoginThrottle t(clock,
                  {.maxFailuresPerUser = 3, .maxFailuresPerAddress = 100, .firstLockout = 30s});
  for (int i = 0; i < 2; ++i)
    t.recordFailure("alice", "10.0.0.1");
  EXPECT_FALSE(t.check("alice", "10.0.0.1").has_value());
  t.recordFailure("alice", "10.0.0.1");
  auto block = t.check("alice", "10.0.0.2");  // another PC: the account is what is blocked
  ASSERT_TRUE(block.has_value());
  EXPECT_FALSE(block->byAddress);
  EXPECT_EQ(block->retryAfter, 30s);
  EXPECT_FALSE(t.check("bob", "10.0.0.1").has_value());
  clock.advance(31s);
  EXPECT_FALSE(t.check("alice", "10.0.0.1").has_value());
  t.recordFailure("alice", "10.0.0.1");  // one more past the allowance: twice as long
  ASSERT_TRUE(t.check("alice", "10.0.0.1").has_value());
  EXPECT_EQ(t.check("alice", "10.0.0.1")->retryAfter, 60s);
}

TEST(ThrottleTest, BlocksAnAddressSprayingManyNames) {
  ManualClock clock;
  LoginThrottle t(clock,
                  {.maxFailuresPerUser = 5, .maxFailuresPerAddress = 10, .firstLockout = 30s});
  for (int i = 0; i < 10; ++i)
    t.recordFailure("user" + std::to_string(i), "10.0.0.9");
  auto block = t.check("someone-else", "10.0.0.9");
  ASSERT_TRUE(block.has_value());
  EXPECT_TRUE(block->byAddress);
  EXPECT_FALSE(t.check("someone-else", "10.0.0.8").has_value());
}

TEST(ThrottleTest, SuccessClearsTheUsersCountAndOldFailuresAreForgotten) {
  ManualClock clock;
  LoginThrottle t(clock, {.maxFailuresPerUser = 3, .window = 300s});
  t.recordFailure("alice", "a");
  t.recordFailure("alice", "a");
  t.recordSuccess("alice");
  t.recordFailure("alice", "a");
  EXPECT_FALSE(t.check("alice", "a").has_value());
  t.recordFailure("alice", "a");
  clock.advance(301s);
  t.recordFailure("alice", "a");  // the window restarted: one failure, not three
  EXPECT_FALSE(t.check("alice", "a").has_value());
}

TEST(PasswordTest, HashesAreArgon2idAndVerify) {
  Argon2Params fast{.memoryKib = 1024, .iterations = 1};
  auto h = hashPassword("correct horse", fast);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->rfind("$argon2id$v=19$m=1024,t=1,p=1$", 0), 0u) << *h;
  EXPECT_TRUE(*verifyPassword("correct horse", *h));
  EXPECT_FALSE(*verifyPassword("correct horsE", *h));
  EXPECT_NE(*h, *hashPassword("correct horse", fast)) << "salts must differ";
  EXPECT_FALSE(verifyPassword("x", "not-a-hash").ok());
}

TEST(PasswordTest, PolicyNamesTheRule) {
  EXPECT_EQ(checkPasswordPolicy("short").error().message(),
            "The password must have at least 8 characters.");
  EXPECT_TRUE(checkPasswordPolicy("long enough").ok());
  EXPECT_FALSE(checkPasswordPolicy(std::string(2000, 'x')).ok());
}

}  // namespace
}  // namespace aula::broker
