// The broker-agent protocol: one golden JSON file per message
// (tests/golden/protocol/, AULA_REGENERATE_GOLDEN=1 rewrites them), every
// message read back to what was written, and refusals that name the field.
#include "aula/common/agent_protocol.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/golden.hpp"

namespace aula::proto {
namespace {

using ::testing::HasSubstr;

// Writes the message, compares it with its golden file, parses the golden
// text back and checks it serialises to the same JSON.
template <typename M, typename Parse>
void roundTrip(const M& message, Parse parse, const std::string& golden) {
  std::string text = toJson(message).dump(2) + "\n";
  test::expectMatchesGolden(text, AULA_PROTOCOL_GOLDEN_DIR, golden);
  auto parsed = parse(json::Json::parse(text));
  ASSERT_TRUE(parsed.ok()) << golden << ": " << parsed.error().message();
  EXPECT_EQ(toJson(*parsed).dump(2) + "\n", text) << golden << " does not read back the same";
}

TEST(AgentProtocolTest, RoutesAreSpelledOnceForBothSides) {
  EXPECT_EQ(domainCommandPattern(DomainCommand::kStart), "/v1/domains/{name}/start");
  EXPECT_EQ(domainCommandPath(DomainCommand::kPowerOff, "aula-42"), "/v1/domains/aula-42/poweroff");
  EXPECT_EQ(domainCommandPath(DomainCommand::kTicket, "aula-7"), "/v1/domains/aula-7/ticket");
  EXPECT_EQ(kHeartbeatRoute, "/api/v1/agent/heartbeat");
}

TEST(AgentProtocolTest, EnrolmentMessagesMatchTheirGoldenFiles) {
  roundTrip(EnrolRequest{.token = "aula_j_abc", .address = "10.0.0.5:9443"}, parseEnrolRequest,
            "enrol_request.json");
  roundTrip(EnrolAnswer{.hostId = 3,
                        .hostName = "hv1",
                        .ca = "CA PEM",
                        .clientCert = "CLIENT PEM",
                        .clientKey = "CLIENT KEY",
                        .spiceCert = "SPICE PEM",
                        .spiceKey = "SPICE KEY",
                        .spiceSubject = "CN=hv1"},
            parseEnrolAnswer, "enrol_answer.json");
}

TEST(AgentProtocolTest, CommandsMatchTheirGoldenFiles) {
  roundTrip(StartRequest{.desktopId = 42,
                         .owner = "alice",
                         .vcpus = 2,
                         .memoryMb = 2048,
                         .video = "qxl",
                         .baseStorage = "templates",
                         .baseDisk = "debian12.qcow2",
                         .diskPath = "7/42.qcow2",
                         .persistent = false,
                         .macAddress = "52:54:00:ab:cd:ef",
                         .limits = DesktopLimits{.cpuShares = 512, .diskIops = 200}},
            parseStartRequest, "start_request.json");
  roundTrip(DomainStatus{.name = "aula-42",
                         .desktopId = 42,
                         .state = "running",
                         .running = true,
                         .spiceTlsPort = 5901,
                         .vcpus = 2,
                         .memoryMb = 2048,
                         .seq = 1764750000123456},
            parseDomainStatus, "domain_status.json");
  roundTrip(StopRequest{.persistent = false, .diskPath = "7/42.qcow2", .graceSeconds = 60},
            parseStopRequest, "stop_request.json");
  roundTrip(DeleteRequest{.diskPath = "7/42.qcow2"}, parseDeleteRequest, "delete_request.json");
  roundTrip(TicketRequest{.validForSeconds = 60}, parseTicketRequest, "ticket_request.json");
  roundTrip(TicketAnswer{.name = "aula-42",
                         .host = "hv1.school.lan",
                         .tlsPort = 5901,
                         .ticket = "t0ps3cret",
                         .expiresAt = 1764750060},
            parseTicketAnswer, "ticket_answer.json");
  roundTrip(TemplateRequest{.domain = "aula-42",
                            .diskPath = "7/42.qcow2",
                            .templateDisk = "from-desktops/12.qcow2",
                            .mode = TemplateMode::kRebase},
            parseTemplateRequest, "template_request.json");
  roundTrip(TemplateAnswer{.templateDisk = "from-desktops/12.qcow2",
                           .sizeBytes = 67108864,
                           .backing = "/var/lib/aula/templates/debian12.qcow2"},
            parseTemplateAnswer, "template_answer.json");
  roundTrip(DeleteBaseRequest{.storage = "templates", .disk = "debian12.qcow2"},
            parseDeleteBaseRequest, "delete_base_request.json");
}

TEST(AgentProtocolTest, ReportsMatchTheirGoldenFiles) {
  roundTrip(
      Heartbeat{.cpus = 16,
                .memoryMb = 64000,
                .freeMemoryMb = 30000,
                .cpuIdle = 0.75,
                .allocatedVcpus = 8,
                .runningGuests = 4,
                .storageFreeGb = {{"desktops", 812}, {"templates", 120}},
                .guests =
                    std::vector<GuestReport>{
                        {.name = "aula-42", .desktopId = 42, .state = "running", .running = true},
                        {.name = "stray", .state = "shut off"}},
                .seq = 1764750000123456,
                .devices = json::Json{{"iommu_groups", 14},
                                      {"devices",
                                       {{{"address", "0000:01:00.0"},
                                         {"kind", "GPU"},
                                         {"vendor", "10de"},
                                         {"device", "2484"},
                                         {"iommu_group", 1}}}}}},
      parseHeartbeat, "heartbeat.json");
  roundTrip(EventBatch{.events = {{.domain = "aula-42",
                                   .desktopId = 42,
                                   .event = "crashed",
                                   .detail = "panicked",
                                   .at = 1764750001,
                                   .seq = 1764750001000001}}},
            parseEventBatch, "event_batch.json");
}

TEST(AgentProtocolTest, WorkstationMessagesMatchTheirGoldenFiles) {
  roundTrip(WorkstationClaim{.user = "ada", .session = "aula_s_abc"}, parseWorkstationClaim,
            "workstation_claim.json");
  roundTrip(
      WorkstationGrantAnswer{
          .user = "ada",
          .domain = "aula-ws-lab-ws1",
          .devices = {{.address = "0000:01:00.0", .vendor = "10de", .device = "2484"},
                      {.address = "0000:01:00.1",
                       .vendor = "10de",
                       .device = "228b",
                       .rom = "/var/lib/aula/roms/gpu.rom"}},
          .vcpus = 8,
          .memoryMb = 16384,
          .hugePages = true,
          .hideKvm = true,
          .hypervVendorId = "aula",
          .disk = {.baseStorage = "templates",
                   .baseDisk = "win11.qcow2",
                   .path = "workstations/lab-ws1/7.qcow2"}},
      parseWorkstationGrantAnswer, "workstation_grant.json");
  roundTrip(WorkstationRelease{.user = "ada"}, parseWorkstationRelease, "workstation_release.json");
  auto empty = parseWorkstationGrantAnswer(json::Json{{"user", "ada"},
                                                      {"domain", "d"},
                                                      {"vcpus", 1},
                                                      {"memory_mb", 1024},
                                                      {"devices", json::Json::array()}});
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.error().message(), HasSubstr("lists no devices"));
}

TEST(AgentProtocolTest, UnknownFieldsWrongTypesAndMissingFieldsAreNamed) {
  auto unknown = parseStartRequest(
      json::Json{{"desktop_id", 1}, {"base_disk", "b"}, {"disk_path", "d"}, {"colour", "red"}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), Errc::kInvalidArgument);
  EXPECT_THAT(unknown.error().message(), HasSubstr("colour"));

  auto wrong =
      parseHeartbeat(json::Json{{"cpus", "four"}, {"memory_mb", 1}, {"free_memory_mb", 1}});
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(wrong.error().message(), HasSubstr("'cpus'"));
  EXPECT_THAT(wrong.error().message(), HasSubstr("whole number"));

  auto missing = parseTicketAnswer(json::Json{{"host", "h"}, {"expires_at", 1}});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message(), HasSubstr("lacks the field 'ticket'"));

  auto idle = parseHeartbeat(
      json::Json{{"cpus", 1}, {"memory_mb", 1}, {"free_memory_mb", 1}, {"cpu_idle", 1.5}});
  ASSERT_FALSE(idle.ok());
  EXPECT_THAT(idle.error().message(), HasSubstr("from 0 to 1"));

  auto guest = parseHeartbeat(json::Json{
      {"cpus", 1}, {"memory_mb", 1}, {"free_memory_mb", 1}, {"guests", {{{"state", "x"}}}}});
  ASSERT_FALSE(guest.ok());
  EXPECT_THAT(guest.error().message(), HasSubstr("lacks the field 'name'"));

  const json::Json load{{"cpus", 1}, {"memory_mb", 1}, {"free_memory_mb", 1}};
  auto noList = load;
  noList["devices"] = json::Json{{"iommu_groups", 0}};
  auto shape = parseHeartbeat(noList);
  ASSERT_FALSE(shape.ok());
  EXPECT_THAT(shape.error().message(), HasSubstr("as `aula-agent devices --json` prints it"));
  auto noAddress = load;
  noAddress["devices"] = json::Json{{"iommu_groups", 0}, {"devices", {{{"kind", "GPU"}}}}};
  auto address = parseHeartbeat(noAddress);
  ASSERT_FALSE(address.ok());
  EXPECT_THAT(address.error().message(), HasSubstr("with its PCI 'address'"));
  auto tooMany = load;
  tooMany["devices"] = json::Json{{"iommu_groups", 0}, {"devices", json::Json::array()}};
  for (std::size_t i = 0; i <= kMaxReportedDevices; ++i)
    tooMany["devices"]["devices"].push_back(json::Json{{"address", "0000:00:00.0"}});
  auto bounded = parseHeartbeat(tooMany);
  ASSERT_FALSE(bounded.ok());
  EXPECT_THAT(bounded.error().message(), HasSubstr("at most 1024 are taken"));

  json::Json many = json::Json::array();
  for (std::size_t i = 0; i <= kMaxEventsPerBatch; ++i)
    many.push_back(json::Json{{"event", "started"}});
  auto batch = parseEventBatch(json::Json{{"events", many}});
  ASSERT_FALSE(batch.ok());
  EXPECT_THAT(batch.error().message(), HasSubstr("at most 1000"));

  auto mode = parseTemplateRequest(json::Json{
      {"domain", "aula-1"}, {"disk_path", "d"}, {"template_disk", "t"}, {"mode", "copy"}});
  ASSERT_FALSE(mode.ok());
  EXPECT_THAT(mode.error().message(), HasSubstr("'flatten' or 'rebase', not 'copy'"));

  EXPECT_FALSE(parseStopRequest(json::Json{{"grace_seconds", -1}}).ok());
  EXPECT_FALSE(parseStopRequest(json::Json{{"persistent", false}}).ok())  // which disk to drop?
      << "a non-persistent stop must name the overlay it drops";
  EXPECT_FALSE(parseDomainStatus(json::Json::array()).ok());
}

TEST(AgentProtocolTest, SequenceNumbersGrowEvenWhenTheClockStandsStillOrStepsBack) {
  ObservationClock clock;
  auto a = clock.nextAt(1000);
  auto b = clock.nextAt(1000);
  auto c = clock.nextAt(500);  // the wall clock stepped back
  auto d = clock.nextAt(5000);
  EXPECT_EQ(a, 1000);
  EXPECT_EQ(b, 1001);
  EXPECT_EQ(c, 1002);
  EXPECT_EQ(d, 5000);
  EXPECT_GT(clock.next(), d);
}

}  // namespace
}  // namespace aula::proto
