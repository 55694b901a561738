// HOST:PORT as admins write it, in every form the broker and agent accept,
// and the sentence for each form they do not.
#include "aula/common/host_port.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aula {
namespace {

using ::testing::HasSubstr;

TEST(HostPortTest, ReadsNamesIpv4AndBracketedIpv6WithPorts) {
  auto name = parseHostPort("HV1.School.lan:9443", PortRule::kRequired);
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(name->host, "hv1.school.lan");
  EXPECT_EQ(name->port, 9443);
  EXPECT_FALSE(name->ipv6);

  auto v4 = parseHostPort("10.0.0.5:0", PortRule::kRequired);
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->port, 0);  // a listener may ask for any free port

  auto v6 = parseHostPort("[::1]:8443", PortRule::kRequired);
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_TRUE(v6->ipv6);
  EXPECT_EQ(v6->str(), "[::1]:8443");
}

TEST(HostPortTest, APortMayBeLeftOutOnlyWhereItIsOptional) {
  auto alone = parseHostPort("hv2", PortRule::kOptional);
  ASSERT_TRUE(alone.ok());
  EXPECT_FALSE(alone->port.has_value());
  EXPECT_EQ(alone->str(), "hv2");
  EXPECT_FALSE(parseHostPort("hv2", PortRule::kRequired).ok());
}

TEST(HostPortTest, RefusesWhatIsAmbiguousOrBrokenWithTheFormsThatWork) {
  for (const char* bad : {"fe80::1:443", "[::1", "[::1]8443", "host:", "host:65536", "host:12a",
                          ":443", "bad host:1", "[nothost]:1", "a/b:3"}) {
    auto parsed = parseHostPort(bad, PortRule::kRequired, "The agent address");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().code(), Errc::kInvalidArgument);
    EXPECT_THAT(parsed.error().message(), HasSubstr("The agent address '"));
    EXPECT_THAT(parsed.error().message(), HasSubstr("[IPv6]:PORT"));
  }
}

TEST(HostPortTest, KnowsIpAddressesFromNames) {
  EXPECT_TRUE(isIpAddress("192.168.1.2"));
  EXPECT_TRUE(isIpAddress("2001:db8::1"));
  EXPECT_FALSE(isIpAddress("hv1.school.lan"));
  EXPECT_FALSE(isIpAddress("300.1.1.1"));
}

}  // namespace
}  // namespace aula
