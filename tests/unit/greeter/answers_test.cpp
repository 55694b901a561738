// How the broker's answers read as the greeter's events: each status and
// each transport failure a student can meet, without a broker.
#include <gtest/gtest.h>

#include "aula/greeter/ports.hpp"

namespace aula::greeter {
namespace {

http::Response response(long status, std::string body,
                        const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  for (const auto& [name, value] : headers)
    r.headers.emplace(name, value);
  return r;
}

std::string error(std::string_view code, std::string_view message) {
  return fmt::format(R"({{"error":{{"code":"{}","message":"{}"}}}})", code, message);
}

constexpr std::int64_t kNow = 1796461200;  // 2026-12-05 09:00 UTC
constexpr std::int64_t kBuilt = 1796000000;

TEST(BrokerAnswersTest, TheGreeterSettingsBecomeTheSchool) {
  auto event = answers::probe(
      response(200, R"({"school_name":"IES Aula","idle_logout_seconds":600,"logo_png":null})",
               {{"date", "Sat, 05 Dec 2026 09:01:00 GMT"}}),
      kNow, kBuilt);
  ASSERT_TRUE(std::holds_alternative<BrokerReady>(event));
  EXPECT_EQ(std::get<BrokerReady>(event).school.name, "IES Aula");
  EXPECT_EQ(std::get<BrokerReady>(event).school.idleLogout, std::chrono::seconds(600));
}

TEST(BrokerAnswersTest, AClockFarFromTheBrokersIsNamedWithBothTimes) {
  auto event = answers::probe(response(200, "{}", {{"date", "Sat, 05 Dec 2026 09:30:00 GMT"}}),
                              kNow, kBuilt);
  ASSERT_TRUE(std::holds_alternative<BrokerFailed>(event));
  const auto& failed = std::get<BrokerFailed>(event);
  EXPECT_EQ(failed.notice, Notice::kClockOff);
  EXPECT_NE(failed.detail.find("2026-12-05 09:00 UTC"), std::string::npos) << failed.detail;
  EXPECT_NE(failed.detail.find("2026-12-05 09:30 UTC"), std::string::npos) << failed.detail;
}

TEST(BrokerAnswersTest, ATlsFailureIsTheCertificateUnlessTheClockIsBeforeTheBuild) {
  const Result<http::Response> tls = Error(Errc::kTls, "The server did not present the CA.");
  auto event = answers::probe(tls, kNow, kBuilt);
  EXPECT_EQ(std::get<BrokerFailed>(event).notice, Notice::kCertificateRejected);
  event = answers::probe(tls, 978307200 /* 2001 */, kBuilt);
  EXPECT_EQ(std::get<BrokerFailed>(event).notice, Notice::kClockOff);
  const Result<http::Response> refused = Error(Errc::kConnectionRefused, "Connection refused.");
  event = answers::probe(refused, kNow, kBuilt);
  EXPECT_EQ(std::get<BrokerFailed>(event).notice, Notice::kBrokerUnreachable);
  EXPECT_EQ(std::get<BrokerFailed>(event).detail, "Connection refused.");
}

TEST(BrokerAnswersTest, LoginAnswersAreWrongPasswordLockedDisabledOrAway) {
  auto ok = answers::login(
      response(201, R"({"token":"aula_s_x","user":{"username":"anna","display_name":"Anna K."}})"));
  EXPECT_EQ(std::get<LoggedIn>(ok).displayName, "Anna K.");
  auto wrong = answers::login(response(401, error("unauthenticated", "wrong")));
  EXPECT_EQ(std::get<LoginRefused>(wrong).notice, Notice::kWrongPassword);
  auto locked =
      answers::login(response(429, error("rate_limited", "Too many"), {{"retry-after", "42"}}));
  EXPECT_EQ(std::get<LoginRefused>(locked).notice, Notice::kLocked);
  EXPECT_EQ(std::get<LoginRefused>(locked).retryAfter, 42);
  auto disabled = answers::login(response(403, error("permission_denied", "disabled")));
  EXPECT_EQ(std::get<LoginRefused>(disabled).notice, Notice::kDisabled);
  auto directory = answers::login(response(503, error("unavailable", "LDAP is away.")));
  EXPECT_EQ(std::get<LoginRefused>(directory).notice, Notice::kBrokerUnreachable);
  EXPECT_EQ(std::get<LoginRefused>(directory).detail, "LDAP is away.");
}

TEST(BrokerAnswersTest, TheConsoleAnswerCarriesTheTicketAndRefusalsTheirReason) {
  auto ready = answers::console(
      response(200, R"({"host":"hv1","tls_port":5912,"port":null,"ticket":"q5Jd","ca":"PEM",
                        "host_subject":"O=Aula,CN=hv1","expires_at":1})"),
      12);
  ASSERT_TRUE(std::holds_alternative<ConsoleReady>(ready));
  const Console& console = std::get<ConsoleReady>(ready).console;
  EXPECT_EQ(console.desktopId, 12);
  EXPECT_EQ(console.host, "hv1");
  EXPECT_EQ(console.tlsPort, 5912);
  EXPECT_EQ(console.port, 0);
  EXPECT_EQ(console.ticket.view(), "q5Jd");
  EXPECT_EQ(console.hostSubject, "O=Aula,CN=hv1");
  EXPECT_EQ(console.usb, "none") << "a broker that names no USB policy gets no devices";
  for (std::string usb : {"storage", "all", "none"}) {
    auto with = answers::console(
        response(200, R"({"host":"hv1","tls_port":5912,"ticket":"t","usb":")" + usb + R"("})"), 12);
    EXPECT_EQ(std::get<ConsoleReady>(with).console.usb, usb);
  }
  auto unknown = answers::console(
      response(200, R"({"host":"hv1","tls_port":5912,"ticket":"t","usb":"everything"})"), 12);
  EXPECT_EQ(std::get<ConsoleReady>(unknown).console.usb, "none");
  auto quota = answers::console(response(403, error("quota_exceeded", "limit of 1")), 12);
  EXPECT_EQ(std::get<ConsoleRefused>(quota).notice, Notice::kQuotaReached);
  EXPECT_EQ(std::get<ConsoleRefused>(quota).detail, "limit of 1");
  auto noHost = answers::console(response(503, error("unavailable", "No host can start")), 12);
  EXPECT_EQ(std::get<ConsoleRefused>(noHost).notice, Notice::kStartFailed);
  auto expired = answers::console(response(401, error("unauthenticated", "expired")), 12);
  EXPECT_EQ(std::get<ConsoleRefused>(expired).notice, Notice::kSessionEnded);
  auto empty = answers::console(response(200, "{}"), 12);
  EXPECT_EQ(std::get<ConsoleRefused>(empty).notice, Notice::kStartFailed);
}

TEST(BrokerAnswersTest, TheListReadsStatesAndAnExpiredSessionEndsIt) {
  auto listed = answers::desktops(response(
      200, R"([{"id":1,"name":"A","template":"Debian","state":"running","persistent":false}])"));
  const auto& desktops = std::get<DesktopsListed>(listed).desktops;
  ASSERT_EQ(desktops.size(), 1u);
  EXPECT_EQ(desktops[0].state, DesktopState::kRunning);
  EXPECT_FALSE(desktops[0].persistent);
  auto ended = answers::desktops(response(401, error("unauthenticated", "expired")));
  EXPECT_EQ(std::get<RequestFailed>(ended).notice, Notice::kSessionEnded);
}

TEST(BrokerAnswersTest, TheEventStreamIsReadAcrossChunksAndKeepAlives) {
  EventStreamParser parser;
  EXPECT_TRUE(parser.feed(": connected\n\nevent: desktop.st").empty());
  auto messages = parser.feed(
      "ate\r\ndata: {\"id\":12,\"state\":\"stopped\"}\r\n\r\n: keep-alive\n\n"
      "event: session.ended\ndata: {\"reason\":\"expired\"}\n\n");
  ASSERT_EQ(messages.size(), 2u);
  auto changed = eventOf(messages[0]);
  ASSERT_TRUE(changed && std::holds_alternative<DesktopChanged>(*changed));
  EXPECT_EQ(std::get<DesktopChanged>(*changed).id, 12);
  EXPECT_EQ(std::get<DesktopChanged>(*changed).state, DesktopState::kStopped);
  auto ended = eventOf(messages[1]);
  ASSERT_TRUE(ended && std::holds_alternative<RequestFailed>(*ended));
  EXPECT_EQ(std::get<RequestFailed>(*ended).notice, Notice::kSessionEnded);
  EXPECT_FALSE(eventOf({"template.created", "{}"}).has_value()) << "other events mean nothing here";
  EXPECT_FALSE(eventOf({"desktop.state", "not json"}).has_value());
}

}  // namespace
}  // namespace aula::greeter
