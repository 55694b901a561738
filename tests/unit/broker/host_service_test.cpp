// HostService, EnrolmentService, BootHostService: hosts as an admin and the
// agents see them.
#include "aula/common/crypto.hpp"

#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

using HostServiceTest = ServiceTest;

TEST_F(HostServiceTest, AHeartbeatBringsANewHostOnlineAndSilenceMakesItLost) {
  auto pool = makePool();
  auto host = must(broker().hosts.create(
      admin_, Json{{"name", "hv1"}, {"pool_id", pool}, {"address", "10.0.0.1"}}))["id"]
                  .get<std::int64_t>();
  EXPECT_EQ(must(broker().hosts.get(admin_, host))["state"], "new");

  must(broker().hosts.recordHeartbeat(host, roomyLoad()));
  auto online = must(broker().hosts.get(admin_, host));
  EXPECT_EQ(online["state"], "online");
  EXPECT_EQ(online["cpus"], 16);

  clock_.advance(std::chrono::minutes(5));
  EXPECT_EQ(must(broker().hosts.markLost()), 1);
  EXPECT_EQ(must(broker().hosts.get(admin_, host))["state"], "lost");
  must(broker().hosts.recordHeartbeat(host, roomyLoad()));
  EXPECT_EQ(must(broker().hosts.get(admin_, host))["state"], "online");
}

TEST_F(HostServiceTest, OnlyAnAdminManagesHosts) {
  auto physics = makeCategory("Physics");
  makeUser("teacher", "manager", physics);
  auto r = broker().hosts.list(signIn("teacher"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPermissionDenied);
}

TEST_F(HostServiceTest, AHostNameReservedForTheBrokerIsRefused) {
  auto r =
      broker().hosts.create(admin_, Json{{"name", kBrokerClientName}, {"pool_id", makePool()}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
}

class EnrolmentServiceTest : public ServiceTest {
 protected:
  void adjust(BrokerSettings& settings) override {
    auto ca = crypto::createCa("Test CA");
    ASSERT_TRUE(ca.ok()) << ca.error().message();
    settings.ca = {.certPem = ca->certPem, .keyPem = ca->keyPem};
  }
};

TEST_F(EnrolmentServiceTest, AJoinTokenEnrolsOneHostOnce) {
  auto pool = makePool();
  auto made =
      must(broker().enrolment.createToken(admin_, Json{{"host_name", "hv7"}, {"pool_id", pool}}));
  auto token = made["token"].get<std::string>();
  auto enrolled = must(broker().enrolment.enroll(token, {.remoteAddress = "10.0.0.7"}));
  EXPECT_EQ(enrolled["host_name"], "hv7");
  EXPECT_FALSE(enrolled["client_cert"].get<std::string>().empty());

  auto again = broker().enrolment.enroll(token, {.remoteAddress = "10.0.0.8"});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kUnauthenticated);
}

TEST_F(EnrolmentServiceTest, AnExpiredJoinTokenIsRefused) {
  auto made = must(broker().enrolment.createToken(
      admin_, Json{{"host_name", "hv8"}, {"pool_id", makePool()}, {"valid_minutes", 5}}));
  clock_.advance(std::chrono::minutes(6));
  auto r =
      broker().enrolment.enroll(made["token"].get<std::string>(), {.remoteAddress = "10.0.0.8"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnauthenticated);
}

TEST_F(EnrolmentServiceTest, GuessingJoinTokensGetsAnAddressLockedOut) {
  Result<Json> r = Error(Errc::kInternal, "not tried");
  for (int i = 0; i < 11; ++i)
    r = broker().enrolment.enroll("aula_j_guess" + std::to_string(i),
                                  {.remoteAddress = "10.6.6.6"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kRateLimited);
}

using BootHostServiceTest = ServiceTest;

TEST_F(BootHostServiceTest, AMacAddressIsStoredInOneSpelling) {
  auto put =
      must(broker().bootHosts.put(admin_, "52-54-00-AB-CD-EF", Json{{"kind", "thin_client"}}));
  EXPECT_EQ(put["mac"], "52:54:00:ab:cd:ef");
  // The same machine written differently is the same boot host.
  must(broker().bootHosts.put(admin_, "52:54:00:Ab:Cd:eF", Json{{"kind", "workstation"}}));
  auto all = must(broker().bootHosts.list(admin_));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0]["kind"], "workstation");
  must(broker().bootHosts.remove(admin_, "52:54:00:AB:CD:EF"));
  EXPECT_TRUE(must(broker().bootHosts.list(admin_)).empty());
}

TEST_F(BootHostServiceTest, SomethingThatIsNotAMacAddressIsRefused) {
  auto r = broker().bootHosts.put(admin_, "52:54:00:zz:cd:ef", Json{{"kind", "thin_client"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace aula::broker::test
