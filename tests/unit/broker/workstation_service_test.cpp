// WorkstationService: what an admin sets for a workstation, checked against
// what its agent reported, and the claims its agent makes for the users its
// greeter logs in.
#include "unit/broker/service_fixture.hpp"

namespace aula::broker::test {
namespace {

class WorkstationServiceTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    pool_ = makePool();
    host_ = must(broker().hosts.create(
        admin_, Json{{"name", "lab-ws1"}, {"kind", "workstation"}, {"pool_id", pool_}}))["id"]
                .get<std::int64_t>();
    report(gpu("2484"));
    template_ = makeTemplate();
    auto physics = makeCategory("Physics");
    makeUser("teacher", "manager", physics);
    researcher_ = makeUser("ada", "user", physics);
    bob_ = makeUser("bob", "user", physics);
    group_ = must(broker().org.createGroup(
        admin_, Json{{"name", "optics"}, {"category_id", physics}}))["id"]
                 .get<std::int64_t>();
    must(broker().org.addMembers(admin_, group_, Json{{"usernames", Json::array({"ada"})}}));
  }

  static Json gpu(const std::string& deviceId) {
    return Json{{"address", "0000:01:00.0"}, {"kind", "GPU"},      {"class", "030000"},
                {"vendor", "10de"},          {"device", deviceId}, {"iommu_group", 1},
                {"driver", "nouveau"},       {"boot_vga", false}};
  }

  // A heartbeat of the workstation's agent with its devices: `first` at
  // 01:00.0, its HDMI audio, a root port and a USB controller.
  void report(const Json& first) {
    Json devices = Json::array(
        {first,
         {{"address", "0000:01:00.1"}, {"kind", "audio"}, {"vendor", "10de"}, {"device", "228b"}},
         {{"address", "0000:00:01.0"}, {"kind", "bridge"}, {"vendor", "8086"}, {"device", "1901"}},
         {{"address", "0000:03:00.0"},
          {"kind", "USB controller"},
          {"vendor", "1912"},
          {"device", "0014"}}});
    Json beat = roomyLoad();
    beat["devices"] = Json{{"iommu_groups", 3}, {"devices", devices}};
    must(broker().hosts.recordHeartbeat(host_, beat));
  }

  Json record() {
    return Json{{"devices", Json::array({"01:00.0", "0000:01:00.1", "0000:03:00.0"})},
                {"template_id", template_},
                {"vcpus", 8},
                {"memory_mb", 16384},
                {"access", Json::array({fmt::format("group:{}", group_)})}};
  }

  std::string sessionOf(const std::string& user) {
    return must(broker().auth.login(user, kPassword, "192.0.2.7"))["token"].get<std::string>();
  }

  Result<Json> claim(const std::string& user, const std::string& session) {
    return broker().workstations.claim(host_, Json{{"user", user}, {"session", session}},
                                       "192.0.2.7");
  }

  std::int64_t pool_ = 0, host_ = 0, template_ = 0, researcher_ = 0, bob_ = 0, group_ = 0;
};

TEST_F(WorkstationServiceTest, AnAdminChoosesReportedDevicesAndTheirIdsAreKept) {
  auto set = must(broker().workstations.set(admin_, host_, record()));
  ASSERT_EQ(set["devices"].size(), 3u);
  EXPECT_EQ(set["devices"][0]["address"], "0000:01:00.0");  // the short form, completed
  EXPECT_EQ(set["devices"][0]["device"], "2484");
  EXPECT_EQ(set["devices"][0]["inventory"], "present");
  EXPECT_EQ(set["vcpus"], 8);
  EXPECT_EQ(set["template"], "Debian");
  EXPECT_EQ(set["access"], Json::array({fmt::format("group:{}", group_)}));
  EXPECT_TRUE(set["claimed_by"].is_null());

  // The card was swapped: the record keeps what the admin chose and says so.
  report(gpu("2204"));
  auto changed = must(broker().workstations.get(admin_, host_));
  EXPECT_EQ(changed["devices"][0]["device"], "2484");
  EXPECT_EQ(changed["devices"][0]["inventory"], "changed");
  auto listed = must(broker().workstations.list(admin_));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["host"], "lab-ws1");
}

TEST_F(WorkstationServiceTest, BadRecordsAreRefusedNamingWhatIsWrongAndTheOldOneStays) {
  must(broker().workstations.set(admin_, host_, record()));
  auto refused = [&](const Json& body, Errc code, const std::string& says) {
    auto r = broker().workstations.set(admin_, host_, body);
    ASSERT_FALSE(r.ok()) << body.dump();
    EXPECT_EQ(r.error().code(), code) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
  };
  auto with = [&](const char* field, Json value) {
    auto body = record();
    body[field] = std::move(value);
    return body;
  };
  refused(with("devices", Json::array({"0000:01:00.0", "0000:07:00.0"})), Errc::kInvalidArgument,
          "no device 0000:07:00.0");
  refused(with("devices", Json::array({"0000:01:00.0", "0000:00:01.0"})), Errc::kInvalidArgument,
          "is a bridge");
  refused(with("devices", Json::array({"0000:03:00.0"})), Errc::kInvalidArgument, "needs a GPU");
  refused(with("devices", Json::array({"01:00.0", "0000:01:00.0"})), Errc::kInvalidArgument,
          "listed twice");
  refused(with("devices", Json::array({"gpu"})), Errc::kInvalidArgument, "not a PCI address");
  refused(with("devices", Json::array({Json{{"address", "01:00.0"}, {"rom", "roms/x.rom"}}})),
          Errc::kInvalidArgument, "absolute path");
  refused(with("vcpus", 17), Errc::kInvalidArgument, "the host's 16 CPUs");
  refused(with("memory_mb", 32768), Errc::kInvalidArgument, "leave the host 1024");
  refused(with("access", Json::array({"group:999"})), Errc::kNotFound, "no group with id 999");
  refused(with("template_id", 999), Errc::kNotFound, "no template with id 999");
  refused(with("hyperv_vendor_id", "not-allowed!"), Errc::kInvalidArgument, "hyperv_vendor_id");
  refused(with("colour", "blue"), Errc::kInvalidArgument, "colour");

  auto kept = must(broker().workstations.get(admin_, host_));
  EXPECT_EQ(kept["devices"].size(), 3u);
  EXPECT_EQ(kept["vcpus"], 8);
  EXPECT_EQ(kept["access"].size(), 1u);

  auto teacher = broker().workstations.set(signIn("teacher"), host_, record());
  ASSERT_FALSE(teacher.ok());
  EXPECT_EQ(teacher.error().code(), Errc::kPermissionDenied);
}

TEST_F(WorkstationServiceTest, OnlyAWorkstationThatReportedItsDevicesGetsARecord) {
  auto hv = must(broker().hosts.create(admin_, Json{{"name", "hv1"}, {"pool_id", pool_}}))["id"]
                .get<std::int64_t>();
  auto r = broker().workstations.set(admin_, hv, record());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kConflict);
  EXPECT_NE(r.error().message().find("hv1' is a hypervisor"), std::string::npos);

  auto quiet = must(broker().hosts.create(
      admin_, Json{{"name", "lab-ws2"}, {"kind", "workstation"}, {"pool_id", pool_}}))["id"]
                   .get<std::int64_t>();
  r = broker().workstations.set(admin_, quiet, record());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("has not reported its devices"), std::string::npos);
  auto none = broker().workstations.get(admin_, quiet);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), Errc::kNotFound);
  EXPECT_NE(none.error().message().find("aulactl workstations set"), std::string::npos);
}

TEST_F(WorkstationServiceTest, AnAllowedUserLoggedInClaimsItAndGetsWhatTheVmNeeds) {
  must(broker().workstations.set(admin_, host_, record()));
  auto grant = must(claim("ada", sessionOf("ada")));
  EXPECT_EQ(grant["user"], "ada");
  EXPECT_EQ(grant["domain"], "aula-ws-lab-ws1");
  ASSERT_EQ(grant["devices"].size(), 3u);
  EXPECT_EQ(
      grant["devices"][0],
      (Json{
          {"address", "0000:01:00.0"}, {"vendor", "10de"}, {"device", "2484"}, {"rom", nullptr}}));
  EXPECT_EQ(grant["vcpus"], 8);
  EXPECT_EQ(grant["memory_mb"], 16384);
  EXPECT_EQ(grant["disk"]["base_disk"], "debian.qcow2");
  EXPECT_EQ(grant["disk"]["storage"], "desktops");
  EXPECT_EQ(grant["disk"]["path"], fmt::format("workstations/lab-ws1/{}.qcow2", researcher_));
  EXPECT_EQ(must(broker().workstations.get(admin_, host_))["claimed_by"], "ada");

  // While someone has it, it stays: neither the record nor the host goes.
  auto removed = broker().workstations.remove(admin_, host_);
  ASSERT_FALSE(removed.ok());
  EXPECT_EQ(removed.error().code(), Errc::kConflict);
  EXPECT_NE(removed.error().message().find("'ada' uses the workstation"), std::string::npos);
  ASSERT_FALSE(broker().hosts.remove(admin_, host_).ok());
  auto t = broker().templates.remove(admin_, template_);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message().find("disk of the workstation 'lab-ws1'"), std::string::npos);

  // A release for someone else changes nothing; ada's frees it.
  must(broker().workstations.release(host_, Json{{"user", "bob"}}));
  EXPECT_EQ(must(broker().workstations.get(admin_, host_))["claimed_by"], "ada");
  must(broker().workstations.release(host_, Json{{"user", "ada"}}));
  EXPECT_TRUE(must(broker().workstations.get(admin_, host_))["claimed_by"].is_null());
  must(broker().workstations.remove(admin_, host_));
  EXPECT_FALSE(broker().workstations.get(admin_, host_).ok());
}

TEST_F(WorkstationServiceTest, ClaimsAreRefusedWithTheSentenceTheGreeterShows) {
  auto refused = [&](const Result<Json>& r, Errc code, const std::string& says) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), code) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
  };
  refused(claim("ada", sessionOf("ada")), Errc::kNotFound, "not set up as a workstation");
  must(broker().workstations.set(admin_, host_, record()));
  refused(claim("bob", sessionOf("bob")), Errc::kPermissionDenied,
          "bob may not use this workstation");
  refused(claim("ada", "not-a-session"), Errc::kUnauthenticated, "log in again");
  refused(claim("ada", sessionOf("bob")), Errc::kUnauthenticated, "not this user's");
  auto session = sessionOf("ada");
  must(broker().auth.logout(must(broker().auth.authenticate(session, "192.0.2.7"))));
  refused(claim("ada", session), Errc::kUnauthenticated, "log in again");

  must(broker().hosts.update(admin_, host_, Json{{"state", "maintenance"}}));
  refused(claim("ada", sessionOf("ada")), Errc::kPermissionDenied, "in maintenance");
  must(broker().hosts.update(admin_, host_, Json{{"state", "online"}}));

  // bob, added by name, may use it.
  auto body = record();
  body["access"].push_back(fmt::format("user:{}", bob_));
  must(broker().workstations.set(admin_, host_, body));
  EXPECT_EQ(must(claim("bob", sessionOf("bob")))["user"], "bob");
  EXPECT_TRUE(broker().workstations.get(admin_, host_)->at("claimed_by") == "bob");

  // A group deleted takes its entry with it.
  must(broker().workstations.release(host_, Json{{"user", "bob"}}));
  must(broker().org.deleteGroup(admin_, group_));
  EXPECT_EQ(must(broker().workstations.get(admin_, host_))["access"].size(), 1u);
  refused(claim("ada", sessionOf("ada")), Errc::kPermissionDenied, "ada may not use");
}

}  // namespace
}  // namespace aula::broker::test
