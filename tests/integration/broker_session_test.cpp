// Session expiry as a user lives it: idle sessions end, busy ones end at the
// absolute limit, and a disabled account's sessions stop working. Runs the
// Broker over a real SQLite database with a clock the test moves.
#include <gtest/gtest.h>

#include "aula/broker/broker.hpp"
#include "aula/broker/schema.hpp"

#include "support/temp_dir.hpp"

namespace aula::broker {
namespace {

using namespace std::chrono_literals;

class BrokerSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = db::openSqlite({.path = (dir_.path() / "aula.db").string()});
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    db_ = std::move(opened).value();
    ASSERT_TRUE(db_->migrate(migrations()).ok());
    BrokerSettings settings;
    settings.argon2 = {.memoryKib = 1024, .iterations = 1};
    settings.sessionIdle = 60min;
    settings.sessionMax = 12h;
    broker_ = std::make_unique<Broker>(*db_, settings, clock_, events_, hosts_, nullptr);
    ASSERT_TRUE(broker_->auth.bootstrap("admin", "admin-password").ok());
  }

  std::string login() {
    auto r = broker_->auth.login("admin", "admin-password", "127.0.0.1");
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? (*r)["token"].get<std::string>() : std::string();
  }

  test::TempDir dir_;
  ManualClock clock_;
  EventBus events_;
  SimulatedHostLink hosts_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerSessionTest, AnIdleSessionEndsAfterTheIdleTimeout) {
  auto token = login();
  clock_.advance(59min);
  EXPECT_TRUE(broker_->auth.authenticate(token, "127.0.0.1").ok());
  clock_.advance(59min);  // used a minute ago: still alive
  EXPECT_TRUE(broker_->auth.authenticate(token, "127.0.0.1").ok());
  clock_.advance(61min);
  auto r = broker_->auth.authenticate(token, "127.0.0.1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnauthenticated);
  EXPECT_EQ(r.error().message(), "The session has expired or was ended; log in again.");
}

TEST_F(BrokerSessionTest, ABusySessionEndsAtTheAbsoluteLimit) {
  auto token = login();
  for (int i = 0; i < 23; ++i) {  // used every 30 minutes for 11.5 hours
    clock_.advance(30min);
    ASSERT_TRUE(broker_->auth.authenticate(token, "127.0.0.1").ok())
        << "after " << (i + 1) * 30 << " min";
  }
  clock_.advance(31min);
  EXPECT_FALSE(broker_->auth.authenticate(token, "127.0.0.1").ok());
}

TEST_F(BrokerSessionTest, ApiTokensDoNotIdleOutButExpire) {
  auto session = broker_->auth.authenticate(login(), "127.0.0.1");
  ASSERT_TRUE(session.ok());
  auto created =
      broker_->auth.createToken(*session, json::Json{{"name", "backup"}, {"valid_days", 2}});
  ASSERT_TRUE(created.ok()) << created.error().message();
  auto token = (*created)["token"].get<std::string>();
  EXPECT_EQ(token.rfind("aula_t_", 0), 0u);
  clock_.advance(36h);  // no use for a day and a half: an API token stays valid
  EXPECT_TRUE(broker_->auth.authenticate(token, "127.0.0.1").ok());
  clock_.advance(13h);
  EXPECT_FALSE(broker_->auth.authenticate(token, "127.0.0.1").ok());
}

TEST_F(BrokerSessionTest, TokensAreStoredOnlyAsHashes) {
  auto token = login();
  auto found = db_->transactValue<std::int64_t>(db::TxMode::kRead, [&](db::Transaction& tx) {
    return tx.queryInt("SELECT COUNT(*) FROM sessions WHERE token_hash = ?", {token});
  });
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, 0) << "the raw token must not be in the database";
}

}  // namespace
}  // namespace aula::broker
