// Two brokers on one PostgreSQL, set up as the admin guide says (init on the
// first, broker.toml, ca/ and tls/ copied to the second): an event raised on
// one broker reaches the live streams on the other, with ids that keep
// growing, and a stream closes when its session ends, whichever broker ended
// it. The streams are read by curl, as a greeter or a script would.
#include <chrono>
#include <csignal>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/broker_fixture.hpp"
#include "support/child_process.hpp"
#include "support/event_stream.hpp"
#include "support/postgres_server.hpp"
#include "support/temp_dir.hpp"

namespace aula::test {
namespace {

using json::Json;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

// GET /api/v1/events on one broker, open until the broker closes it or the
// test ends.
class EventStream {
 public:
  EventStream(const BrokerFixture& broker, const std::string& token)
      : file_(dir_ / "events.txt"),
        curl_({"/usr/bin/curl", "-sN", "--cacert", broker.caFile().string(), "-H",
               "Authorization: Bearer " + token, "-o", file_.string(),
               broker.baseUrl() + "/api/v1/events"},
              dir_ / "curl.log") {
    if (!waitFor(": connected"))
      throw std::runtime_error("The event stream did not open: " + curl_.log());
  }

  std::string text() const { return readIfThere(file_); }
  std::vector<StreamEvent> events() const { return parseEvents(text()); }

  // Whether the stream has said `what` within `limit`.
  bool waitFor(std::string_view what, std::chrono::milliseconds limit = 10s) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (text().find(what) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline)
        return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

  // Whether the broker closed the stream (curl ended) within `limit`.
  bool closedWithin(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (curl_.running()) {
      if (std::chrono::steady_clock::now() > deadline)
        return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

 private:
  TempDir dir_;
  std::filesystem::path file_;
  ChildProcess curl_;
};

class BrokerClusterTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { postgres_.reset(); }

  void SetUp() override {
    std::string why;
    if (!PostgresServer::available(&why))
      GTEST_SKIP() << why;
    if (!postgres_)
      postgres_ = std::make_unique<PostgresServer>();
    const std::string name = "c_" + std::to_string(++databases_);
    postgres_->createDatabase(name);
    BrokerOptions options{.backend = Backend::kPostgres,
                          .postgresConninfo = postgres_->conninfo(name)};
    a_ = std::make_unique<BrokerFixture>(options);
    options.joinDataDir = a_->dataDir();
    b_ = std::make_unique<BrokerFixture>(options);
    a_->seed();
  }

  void TearDown() override {
    b_.reset();
    a_.reset();
  }

  std::unique_ptr<BrokerFixture> a_;
  std::unique_ptr<BrokerFixture> b_;
  static inline std::unique_ptr<PostgresServer> postgres_;
  static inline int databases_ = 0;
};

TEST_F(BrokerClusterTest, AStreamOnOneBrokerSeesADesktopStartedThroughTheOther) {
  const auto& ids = a_->ids();
  const auto desk = a_->createDesktop(ids.alice, "alice-desk");
  // One session, valid on both brokers: they share the database.
  const auto alice = a_->tokenOf("alice");
  EventStream onB(*b_, alice);

  auto started = a_->api().call("POST", fmt::format("/api/v1/desktops/{}/start", desk), alice);
  ASSERT_EQ(started.status, 200) << started.describe();
  ASSERT_TRUE(onB.waitFor("\"state\":\"running\"")) << onB.text();

  std::vector<std::string> states;
  std::uint64_t lastId = 0;
  for (const auto& e : onB.events()) {
    EXPECT_GT(e.id, lastId) << "ids must keep growing: " << onB.text();
    lastId = e.id;
    if (e.type == "desktop.state" && e.data["id"] == desk)
      states.push_back(e.data["state"].get<std::string>());
  }
  EXPECT_THAT(states, ::testing::ElementsAre("starting", "running")) << onB.text();

  // An event raised on B itself comes after those of A.
  auto stopped = b_->api().call("POST", fmt::format("/api/v1/desktops/{}/stop", desk), alice);
  ASSERT_EQ(stopped.status, 200) << stopped.describe();
  ASSERT_TRUE(onB.waitFor("\"state\":\"stopped\"")) << onB.text();
  EXPECT_GT(onB.events().back().id, lastId) << onB.text();
}

TEST_F(BrokerClusterTest, DisablingAUserOnOneBrokerClosesTheirStreamOnTheOther) {
  const auto& ids = a_->ids();
  EventStream alicesOnB(*b_, a_->tokenOf("alice"));
  EventStream bobsOnB(*b_, a_->tokenOf("bob"));

  a_->adminCall("PATCH", fmt::format("/api/v1/users/{}", ids.alice), Json{{"disabled", true}});

  ASSERT_TRUE(alicesOnB.closedWithin(10s)) << "alice's stream stayed open: " << alicesOnB.text();
  auto events = alicesOnB.events();
  ASSERT_FALSE(events.empty()) << alicesOnB.text();
  EXPECT_EQ(events.back().type, "session.ended");
  EXPECT_THAT(events.back().data.value("reason", ""), HasSubstr("disabled")) << alicesOnB.text();
  // Bob's account is untouched, and so is his stream.
  EXPECT_FALSE(bobsOnB.closedWithin(500ms)) << bobsOnB.text();
}

TEST_F(BrokerClusterTest, LoggingOutOnOneBrokerClosesThatSessionsStreamOnTheOther) {
  const auto& ids = a_->ids();
  const auto leaving = a_->newClient().login("alice", BrokerFixture::kPassword);
  const auto staying = a_->tokenOf("alice");
  EventStream leavingOnB(*b_, leaving);
  EventStream stayingOnB(*b_, staying);

  auto out = a_->api().call("DELETE", "/api/v1/session", leaving);
  ASSERT_EQ(out.status, 204) << out.describe();

  ASSERT_TRUE(leavingOnB.closedWithin(10s)) << leavingOnB.text();
  EXPECT_THAT(leavingOnB.text(), HasSubstr("event: session.ended\n"));
  // Her other session goes on.
  EXPECT_FALSE(stayingOnB.closedWithin(500ms)) << stayingOnB.text();
  (void)ids;
}

}  // namespace
}  // namespace aula::test
