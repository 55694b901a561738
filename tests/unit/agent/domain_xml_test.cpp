// The domain XML generator: golden files, validation naming the field,
// escaping, and the choice between KVM and plain QEMU.
//
// Golden files live in tests/golden/agent; AULA_REGENERATE_GOLDEN=1 rewrites
// them from the current output (review the diff before committing it).
#include "aula/agent/domain_xml.hpp"

#include <cctype>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/golden.hpp"
#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A TLS-only desktop as production defines it: KVM, qxl, an expired ticket.
DomainSpec tlsDesktop() {
  DomainSpec spec;
  spec.name = "aula-42";
  spec.uuid = "3e3fce45-4f53-4fa7-bb32-11f34168b82b";
  spec.desktopId = 42;
  spec.owner = "alice";
  spec.domainType = "kvm";
  spec.vcpus = 2;
  spec.memoryMb = 4096;
  spec.video = "qxl";
  spec.diskPath = "/var/lib/aula/desktops/aula-42.qcow2";
  spec.macAddress = "52:54:00:00:00:2a";
  spec.spice.listenAddress = "0.0.0.0";
  spec.spice.passwd = "expired-0f1e2d3c";
  spec.spice.passwdValidTo = "1970-01-01T00:00:01";
  spec.limits.cpuShares = 1024;
  return spec;
}

// A test desktop: TCG, virtio video, plain SPICE on loopback, I/O and CPU limits.
DomainSpec plainTestDesktop() {
  DomainSpec spec;
  spec.name = "aula-test-7";
  spec.uuid = "00000000-0000-4000-8000-000000000007";
  spec.desktopId = 7;
  spec.owner = "student7";
  spec.domainType = "qemu";
  spec.vcpus = 1;
  spec.memoryMb = 512;
  spec.video = "virtio";
  spec.diskPath = "/tmp/aula-test/desktops/aula-test-7.qcow2";
  spec.spice.listenAddress = "127.0.0.1";
  spec.spice.tlsPort = false;
  spec.spice.plainPort = true;
  spec.allowPlainSpice = true;
  spec.spice.passwd = "ticket-7";
  spec.spice.passwdValidTo = "2026-11-22T10:00:30";
  spec.spice.clipboard = false;
  spec.limits.cpuPeriodUs = 100000;
  spec.limits.cpuQuotaUs = 50000;
  spec.limits.diskBytesPerSec = 52428800;
  spec.limits.diskIopsPerSec = 500;
  spec.usbRedirChannels = 2;
  return spec;
}

// A fresh ticket for the TLS desktop, valid for 60 s.
SpiceSpec ticketUpdate() {
  SpiceSpec spice = tlsDesktop().spice;
  spice.passwd = "Zq7-one-time";
  spice.passwdValidTo = "2026-11-22T10:01:00";
  return spice;
}

void expectMatchesGolden(const std::string& actual, const std::string& fileName) {
  test::expectMatchesGolden(actual, AULA_GOLDEN_DIR, fileName);
}

TEST(DomainXmlTest, TlsQxlDesktopMatchesGolden) {
  auto xml = renderDomainXml(tlsDesktop());
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  expectMatchesGolden(*xml, "tls_qxl_desktop.xml");
}

TEST(DomainXmlTest, PlainVirtioDesktopWithLimitsMatchesGolden) {
  auto xml = renderDomainXml(plainTestDesktop());
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  expectMatchesGolden(*xml, "plain_virtio_limits_desktop.xml");
}

TEST(DomainXmlTest, GraphicsUpdateMatchesGolden) {
  auto xml = renderGraphicsUpdateXml(ticketUpdate(), false);
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  expectMatchesGolden(*xml, "graphics_update.xml");
}

TEST(DomainXmlTest, TlsOnlyAllocatesOnlyTheTlsPort) {
  auto xml = renderDomainXml(tlsDesktop());
  ASSERT_TRUE(xml.ok());
  EXPECT_THAT(*xml, HasSubstr("autoport='yes' defaultMode='secure'"));
  EXPECT_THAT(*xml, HasSubstr("connected='disconnect'"));
  EXPECT_THAT(*xml, Not(HasSubstr(" port=")));
}

TEST(DomainXmlTest, BothPortsUseDefaultModeAny) {
  auto spec = plainTestDesktop();
  spec.spice.tlsPort = true;
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  EXPECT_THAT(*xml, HasSubstr("defaultMode='any'"));
}

TEST(DomainXmlTest, UpdateKeepsListenAndPortsOfTheDefinition) {
  // libvirt refuses a graphics update that changes them.
  auto defined = renderDomainXml(tlsDesktop());
  auto update = renderGraphicsUpdateXml(ticketUpdate(), false);
  ASSERT_TRUE(defined.ok());
  ASSERT_TRUE(update.ok());
  EXPECT_THAT(*defined, HasSubstr("<listen type='address' address='0.0.0.0'/>"));
  EXPECT_THAT(*update, HasSubstr("<listen type='address' address='0.0.0.0'/>"));
  EXPECT_THAT(*update, HasSubstr("autoport='yes' defaultMode='secure'"));
  EXPECT_THAT(*update, HasSubstr("passwdValidTo='2026-11-22T10:01:00'"));
}

TEST(DomainXmlTest, ChannelCountsAndLimitsAreOptional) {
  auto spec = tlsDesktop();
  spec.usbRedirChannels = 0;
  spec.limits = {};
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  EXPECT_THAT(*xml, Not(HasSubstr("<redirdev")));
  EXPECT_THAT(*xml, Not(HasSubstr("<cputune>")));
  EXPECT_THAT(*xml, Not(HasSubstr("<iotune>")));
}

TEST(DomainXmlTest, SataDiskAndE1000eNicForGuestsWithoutVirtio) {
  auto spec = tlsDesktop();
  spec.diskBus = "sata";
  spec.nicModel = "e1000e";
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  EXPECT_THAT(*xml, HasSubstr("<target dev='sda' bus='sata'/>"));
  EXPECT_THAT(*xml, HasSubstr("<model type='e1000e'/>"));
}

TEST(DomainXmlTest, BoundariesAreAccepted) {
  auto spec = tlsDesktop();
  spec.vcpus = 128;
  spec.memoryMb = 128;
  spec.machine = "pc-q35-7.2";
  spec.usbRedirChannels = 8;
  spec.spice.passwd = std::string(60, 'x');
  spec.limits = {.cpuShares = 2,
                 .cpuPeriodUs = 1000000,
                 .cpuQuotaUs = 17592186044415,
                 .diskBytesPerSec = 1,
                 .diskIopsPerSec = 1};
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  spec.vcpus = 1;
  EXPECT_TRUE(renderDomainXml(spec).ok());
}

struct InvalidCase {
  std::string what;
  std::string field;
  std::function<void(DomainSpec&)> mutate;
};

// Names the case in GoogleTest's output instead of dumping its bytes (GoogleTest
// looks the function up by this name).
void PrintTo(const InvalidCase& c, std::ostream* os) {  // NOLINT(readability-identifier-naming)
  *os << c.what;
}

class DomainXmlValidationTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(DomainXmlValidationTest, RejectsAndNamesTheField) {
  auto spec = tlsDesktop();
  GetParam().mutate(spec);
  auto xml = renderDomainXml(spec);
  ASSERT_FALSE(xml.ok()) << GetParam().what << " was accepted";
  EXPECT_EQ(xml.error().code(), Errc::kInvalidArgument);
  EXPECT_THAT(xml.error().message(), HasSubstr("'" + GetParam().field + "'"));
  // One sentence, which never carries the ticket.
  EXPECT_EQ(xml.error().message().back(), '.');
  if (!spec.spice.passwd.empty()) {
    EXPECT_THAT(xml.error().message(), Not(HasSubstr(spec.spice.passwd)));
  }
}

std::vector<InvalidCase> invalidCases() {
  return {
      {"empty name", "name", [](DomainSpec& s) { s.name = ""; }},
      {"upper-case name", "name", [](DomainSpec& s) { s.name = "Aula-42"; }},
      {"name with markup", "name", [](DomainSpec& s) { s.name = "a<&'\">"; }},
      {"65-character name", "name", [](DomainSpec& s) { s.name = std::string(65, 'a'); }},
      {"short uuid", "uuid", [](DomainSpec& s) { s.uuid = "3e3fce45-4f53-4fa7-bb32"; }},
      {"uuid without dashes", "uuid",
       [](DomainSpec& s) { s.uuid = "3e3fce454f534fa7bb3211f34168b82b0000"; }},
      {"zero desktop id", "desktopId", [](DomainSpec& s) { s.desktopId = 0; }},
      {"empty owner", "owner", [](DomainSpec& s) { s.owner = ""; }},
      {"owner with a newline", "owner", [](DomainSpec& s) { s.owner = "a\nb"; }},
      {"domain type xen", "domainType", [](DomainSpec& s) { s.domainType = "xen"; }},
      {"machine pc", "machine", [](DomainSpec& s) { s.machine = "pc"; }},
      {"machine pc-q35-", "machine", [](DomainSpec& s) { s.machine = "pc-q35-"; }},
      {"zero vcpus", "vcpus", [](DomainSpec& s) { s.vcpus = 0; }},
      {"129 vcpus", "vcpus", [](DomainSpec& s) { s.vcpus = 129; }},
      {"127 MiB", "memoryMb", [](DomainSpec& s) { s.memoryMb = 127; }},
      {"cirrus video", "video", [](DomainSpec& s) { s.video = "cirrus"; }},
      {"empty disk path", "diskPath", [](DomainSpec& s) { s.diskPath = ""; }},
      {"relative disk path", "diskPath", [](DomainSpec& s) { s.diskPath = "desktops/a.qcow2"; }},
      {"disk path with ..", "diskPath",
       [](DomainSpec& s) { s.diskPath = "/var/lib/aula/../../etc/shadow"; }},
      {"disk path with a tab", "diskPath", [](DomainSpec& s) { s.diskPath = "/var/a\tb.qcow2"; }},
      {"ide disk", "diskBus", [](DomainSpec& s) { s.diskBus = "ide"; }},
      {"empty network", "network", [](DomainSpec& s) { s.network = ""; }},
      {"network with a slash", "network", [](DomainSpec& s) { s.network = "a/b"; }},
      {"rtl8139 nic", "nicModel", [](DomainSpec& s) { s.nicModel = "rtl8139"; }},
      {"mac without colons", "macAddress", [](DomainSpec& s) { s.macAddress = "525400000001"; }},
      {"multicast mac", "macAddress", [](DomainSpec& s) { s.macAddress = "01:00:5e:00:00:01"; }},
      {"empty listen address", "spice.listenAddress",
       [](DomainSpec& s) { s.spice.listenAddress = ""; }},
      {"listen address with a space", "spice.listenAddress",
       [](DomainSpec& s) { s.spice.listenAddress = "0.0.0.0 x"; }},
      {"no SPICE port", "spice.tlsPort", [](DomainSpec& s) { s.spice.tlsPort = false; }},
      {"plain SPICE outside tests", "spice.plainPort",
       [](DomainSpec& s) { s.spice.plainPort = true; }},
      {"empty ticket", "spice.passwd", [](DomainSpec& s) { s.spice.passwd = ""; }},
      {"61-byte ticket", "spice.passwd",
       [](DomainSpec& s) { s.spice.passwd = std::string(61, 's'); }},
      {"ticket with a newline", "spice.passwd", [](DomainSpec& s) { s.spice.passwd = "a\nb"; }},
      {"validity with a Z", "spice.passwdValidTo",
       [](DomainSpec& s) { s.spice.passwdValidTo = "2026-11-22T10:01:00Z"; }},
      {"validity without seconds", "spice.passwdValidTo",
       [](DomainSpec& s) { s.spice.passwdValidTo = "2026-11-22T10:01"; }},
      {"validity in month 13", "spice.passwdValidTo",
       [](DomainSpec& s) { s.spice.passwdValidTo = "2026-13-22T10:01:00"; }},
      {"empty validity", "spice.passwdValidTo", [](DomainSpec& s) { s.spice.passwdValidTo = ""; }},
      {"one CPU share", "limits.cpuShares", [](DomainSpec& s) { s.limits.cpuShares = 1; }},
      {"too many CPU shares", "limits.cpuShares",
       [](DomainSpec& s) { s.limits.cpuShares = 262145; }},
      {"999 us period", "limits.cpuPeriodUs", [](DomainSpec& s) { s.limits.cpuPeriodUs = 999; }},
      {"negative period", "limits.cpuPeriodUs", [](DomainSpec& s) { s.limits.cpuPeriodUs = -1; }},
      {"999 us quota", "limits.cpuQuotaUs", [](DomainSpec& s) { s.limits.cpuQuotaUs = 999; }},
      {"9 USB channels", "usbRedirChannels", [](DomainSpec& s) { s.usbRedirChannels = 9; }},
      {"negative USB channels", "usbRedirChannels", [](DomainSpec& s) { s.usbRedirChannels = -1; }},
  };
}

INSTANTIATE_TEST_SUITE_P(EachField, DomainXmlValidationTest, ::testing::ValuesIn(invalidCases()),
                         [](const ::testing::TestParamInfo<InvalidCase>& param) {
                           std::string name;
                           for (char c : param.param.what) {
                             name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           }
                           return name;
                         });

TEST(DomainXmlTest, TicketIsNeverEchoedInErrors) {
  auto spec = tlsDesktop();
  spec.spice.passwd = std::string(59, 'q') + "\x01";
  auto xml = renderDomainXml(spec);
  ASSERT_FALSE(xml.ok());
  EXPECT_THAT(xml.error().message(), Not(HasSubstr("qqqq")));
}

TEST(DomainXmlTest, GraphicsUpdateValidatesItsTicket) {
  auto spice = ticketUpdate();
  spice.passwdValidTo = "2026-11-22T10:01:00+00:00";
  auto xml = renderGraphicsUpdateXml(spice, false);
  ASSERT_FALSE(xml.ok());
  EXPECT_THAT(xml.error().message(), HasSubstr("'spice.passwdValidTo'"));

  spice = ticketUpdate();
  spice.plainPort = true;
  xml = renderGraphicsUpdateXml(spice, false);
  ASSERT_FALSE(xml.ok());
  EXPECT_THAT(xml.error().message(), HasSubstr("'spice.plainPort'"));
  EXPECT_TRUE(renderGraphicsUpdateXml(spice, true).ok());
}

TEST(DomainXmlTest, PasswdValidToIsWrittenExactlyAsGiven) {
  auto spec = tlsDesktop();
  spec.spice.passwdValidTo = "2030-02-28T23:59:59";
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok());
  EXPECT_THAT(*xml, HasSubstr("passwdValidTo='2030-02-28T23:59:59'"));
}

TEST(DomainXmlTest, EscapesOwnerTicketAndPath) {
  auto spec = tlsDesktop();
  spec.owner = "o'brien <&'\"> & co";
  spec.spice.passwd = "p<&'\">";
  spec.diskPath = "/var/lib/aula/it's & <odd>.qcow2";
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.error().message();
  EXPECT_THAT(*xml, HasSubstr("<aula:owner>o&apos;brien &lt;&amp;&apos;&quot;&gt; &amp; "
                              "co</aula:owner>"));
  EXPECT_THAT(*xml, HasSubstr("passwd='p&lt;&amp;&apos;&quot;&gt;'"));
  EXPECT_THAT(*xml, HasSubstr("<source file='/var/lib/aula/it&apos;s &amp; &lt;odd&gt;.qcow2'/>"));
  EXPECT_THAT(*xml, Not(HasSubstr("<&")));
  EXPECT_THAT(*xml, Not(HasSubstr("o'brien")));

  auto update = renderGraphicsUpdateXml(spec.spice, false);
  ASSERT_TRUE(update.ok());
  EXPECT_THAT(*update, HasSubstr("passwd='p&lt;&amp;&apos;&quot;&gt;'"));
}

TEST(DomainXmlTest, XmlEscapeHandlesEveryMarkupCharacter) {
  EXPECT_EQ(xmlEscape("<&'\">"), "&lt;&amp;&apos;&quot;&gt;");
  EXPECT_EQ(xmlEscape("plain text, é"), "plain text, é");
  EXPECT_EQ(xmlEscape("&amp;"), "&amp;amp;");
  EXPECT_EQ(xmlEscape(""), "");
}

TEST(DomainXmlTest, MetadataCarriesDesktopAndOwnerInTheAulaNamespace) {
  auto xml = renderDomainXml(tlsDesktop());
  ASSERT_TRUE(xml.ok());
  EXPECT_THAT(*xml, HasSubstr("<aula:desktop xmlns:aula='urn:aula:libvirt:domain:1'>"));
  EXPECT_THAT(*xml, HasSubstr("<aula:id>42</aula:id>"));
  EXPECT_THAT(*xml, HasSubstr("<aula:owner>alice</aula:owner>"));
}

// --- KVM or plain QEMU -------------------------------------------------------

process::RecordingRunner runnerExiting(int exitCode) {
  return process::RecordingRunner([exitCode](const process::Command&) -> Result<process::Outcome> {
    return process::Outcome{.exitCode = exitCode};
  });
}

TEST(DomainTypeTest, ChooseDomainType) {
  EXPECT_EQ(chooseDomainType(true), "kvm");
  EXPECT_EQ(chooseDomainType(false), "qemu");
}

TEST(DomainTypeTest, NoDeviceNodeMeansNoProbe) {
  test::TempDir dir;
  auto runner = runnerExiting(0);
  EXPECT_FALSE(kvmUsable(dir / "kvm", runner));
  EXPECT_TRUE(runner.commands().empty());
}

TEST(DomainTypeTest, TheProbeDecidesWhenTheNodeExists) {
  test::TempDir dir;
  test::writeFile(dir / "kvm", "");
  auto good = runnerExiting(0);
  EXPECT_TRUE(kvmUsable(dir / "kvm", good));
  ASSERT_EQ(good.commands().size(), 1u);
  EXPECT_EQ(good.commands()[0].argv, kvmProbeCommand().argv);
  EXPECT_THAT(good.commands()[0].display(), HasSubstr("-accel kvm"));
  EXPECT_THAT(good.commands()[0].display(), HasSubstr("-no-reboot -boot reboot-timeout=0"));

  auto bad = runnerExiting(1);
  EXPECT_FALSE(kvmUsable(dir / "kvm", bad));
}

TEST(DomainTypeTest, AHangingProbeMeansNoKvm) {
  test::TempDir dir;
  test::writeFile(dir / "kvm", "");
  process::RecordingRunner hangs([](const process::Command& c) -> Result<process::Outcome> {
    return makeError(Errc::kTimeout, "'{}' was killed after 30 s.", c.display());
  });
  EXPECT_FALSE(kvmUsable(dir / "kvm", hangs));
  EXPECT_LE(kvmProbeCommand().timeout, std::chrono::seconds(60));
}

TEST(DomainTypeTest, ConfiguredTypesAreUsedWithoutProbing) {
  test::TempDir dir;
  test::writeFile(dir / "kvm", "");
  auto runner = runnerExiting(0);
  auto qemu = resolveDomainType("qemu", dir / "kvm", runner);
  ASSERT_TRUE(qemu.ok());
  EXPECT_EQ(*qemu, "qemu");
  auto kvm = resolveDomainType("kvm", dir / "missing", runner);
  ASSERT_TRUE(kvm.ok());
  EXPECT_EQ(*kvm, "kvm");
  EXPECT_TRUE(runner.commands().empty());

  auto probed = resolveDomainType("auto", dir / "kvm", runner);
  ASSERT_TRUE(probed.ok());
  EXPECT_EQ(*probed, "kvm");
  EXPECT_EQ(runner.commands().size(), 1u);
  auto failing = runnerExiting(1);
  auto fallback = resolveDomainType("auto", dir / "kvm", failing);
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(*fallback, "qemu");
}

TEST(DomainTypeTest, UnknownSettingIsAConfigError) {
  test::TempDir dir;
  auto runner = runnerExiting(0);
  auto r = resolveDomainType("fast", dir / "kvm", runner);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kConfig);
  EXPECT_THAT(r.error().message(), HasSubstr("'fast'"));
}

}  // namespace
}  // namespace aula::agent
