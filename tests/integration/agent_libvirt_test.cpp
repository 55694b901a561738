// The libvirt adapter against the real qemu:///system, with TCG: the test
// guest boots from an overlay made by Disks, its screen is read through
// SPICE with the one-time ticket, wrong and expired tickets are refused,
// and the domain and its overlay are gone afterwards.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "aula/agent/disks.hpp"
#include "aula/agent/domain_xml.hpp"
#include "aula/common/process.hpp"

#include "libvirt_hypervisor.hpp"
#include "support/libvirtd_fixture.hpp"
#include "support/screen.hpp"

namespace aula::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kDesktopId = 4242;

// libvirt's passwdValidTo: UTC, "YYYY-MM-DDTHH:MM:SS", no zone suffix.
std::string utcIn(std::chrono::seconds offset) {
  std::time_t t = std::time(nullptr) + offset.count();
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  (void)std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  return text;
}

std::string randomUuid() {
  std::random_device device;
  std::uniform_int_distribution<int> hex(0, 15);
  std::string uuid = "xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx";
  for (char& c : uuid) {
    if (c == 'x') {
      c = "0123456789abcdef"[hex(device)];
    }
  }
  return uuid;
}

// Runs spicy-screenshot; true when it connected and wrote `out`.
bool spiceScreenshot(int port, const std::string& ticket, const fs::path& out) {
  std::error_code ec;
  fs::remove(out, ec);
  process::SystemRunner runner;
  auto outcome =
      runner.run(process::Command{.argv = {"spicy-screenshot", "-h", "127.0.0.1", "-p",
                                           std::to_string(port), "-w", ticket, "-o", out.native()},
                                  .timeout = 20s});
  return outcome.ok() && outcome->succeeded() && fs::exists(out);
}

bool onPath(const char* program) {
  return ::access((fs::path("/usr/bin") / program).c_str(), X_OK) == 0;
}

TEST(AgentLibvirtParse, ReadsSpicePortsFromTheLiveXml) {
  auto ports = parseSpicePorts(
      "<domain><devices><graphics type='spice' port='5901' tlsPort='5902' autoport='yes' "
      "listen='127.0.0.1'>\n<listen type='address' address='127.0.0.1'/></graphics>");
  EXPECT_EQ(ports.port, 5901);
  EXPECT_EQ(ports.tlsPort, 5902);
  // Not yet allocated (-1), absent, and no SPICE at all.
  ports = parseSpicePorts("<graphics type='spice' port='-1' autoport='yes'>");
  EXPECT_EQ(ports.port, -1);
  EXPECT_EQ(ports.tlsPort, -1);
  ports = parseSpicePorts("<graphics type='vnc' port='5900'>");
  EXPECT_EQ(ports.port, -1);
}

TEST(AgentLibvirtParse, ReadsTheDesktopIdWhateverThePrefix) {
  EXPECT_EQ(parseDesktopId("<aula:desktop xmlns:aula=\"urn:aula:libvirt:domain:1\">\n"
                           "  <aula:id>42</aula:id>\n  <aula:owner>s</aula:owner>\n"
                           "</aula:desktop>"),
            42);
  EXPECT_EQ(parseDesktopId("<desktop xmlns=\"urn:aula:libvirt:domain:1\"><id>7</id></desktop>"), 7);
  EXPECT_EQ(parseDesktopId("<desktop><owner>kid</owner></desktop>"), std::nullopt);
  EXPECT_EQ(parseDesktopId("<desktop><id>x7</id></desktop>"), std::nullopt);
}

// libvirt's test driver needs no daemon: errors come back as values that
// name the domain, and nothing is printed to stderr.
TEST(AgentLibvirtParse, NamesAMissingDomainOnTheTestDriver) {
  auto opened = LibvirtHypervisor::open("test:///default");
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  auto missing = (*opened)->info("aula-none");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_EQ(missing.error().message().find("Cannot find the domain 'aula-none': "), 0U)
      << missing.error().message();
  auto listed = (*opened)->list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  ASSERT_FALSE(listed->empty());  // the driver's built-in domain "test"
  EXPECT_EQ(listed->front().desktopId, std::nullopt);
  auto bad = (*opened)->defineAndStart("<domain type='test'><name>x</name>");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument) << bad.error().message();
}

TEST(AgentLibvirt, BootsADesktopAndGuardsItsTicket) {
  std::string why;
  if (!test::Libvirtd::available(&why)) {
    GTEST_SKIP() << why;
  }
  if (!onPath("spicy-screenshot")) {
    GTEST_SKIP() << "spicy-screenshot is not installed (package spice-client-gtk).";
  }

  // The test guest, built once and cached in the build directory.
  const fs::path templateDir = AULA_TEST_TEMPLATE_DIR;
  fs::create_directories(templateDir);
  process::SystemRunner runner;
  auto built = process::runChecked(
      runner, process::Command{.argv = {AULA_TEST_TEMPLATE_SCRIPT,
                                        (templateDir / "test-template.qcow2").native()},
                               .timeout = 600s});
  ASSERT_TRUE(built.ok()) << built.error().message();

  test::Libvirtd libvirtd;
  auto opened = LibvirtHypervisor::open(test::Libvirtd::kUri);
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  Hypervisor& hypervisor = **opened;

  // QEMU runs as libvirt-qemu and must read the base through every folder
  // above it; a build dir inside a 0700 folder (mktemp -d) would hide it. So
  // the base is copied next to the overlays, where the fixture made the
  // folders world-traversable.
  const fs::path baseDir = libvirtd.imageDir() / "templates";
  fs::create_directories(baseDir);
  fs::copy_file(templateDir / "test-template.qcow2", baseDir / "test-template.qcow2",
                fs::copy_options::overwrite_existing);
  for (const auto& p : {baseDir, baseDir / "test-template.qcow2"}) {
    fs::permissions(p, fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read |
                           (fs::is_directory(p) ? fs::perms::group_exec | fs::perms::others_exec
                                                : fs::perms::none));
  }
  Disks disks({{"templates", baseDir}, {"desktops", libvirtd.imageDir()}}, runner);
  const std::string name = fmt::format("aula-it-{}", ::getpid());
  const std::string overlayRel = fmt::format("room1/{}.qcow2", name);
  auto overlay = disks.createOverlay("templates", "test-template.qcow2", "desktops", overlayRel);
  ASSERT_TRUE(overlay.ok()) << overlay.error().message();
  fs::permissions(overlay->parent_path(), fs::perms::owner_all | fs::perms::group_read |
                                              fs::perms::group_exec | fs::perms::others_read |
                                              fs::perms::others_exec);

  DomainSpec spec;
  spec.name = name;
  spec.uuid = randomUuid();
  spec.desktopId = kDesktopId;
  spec.owner = "student1";
  spec.domainType = "qemu";  // never KVM on these machines
  spec.memoryMb = 256;
  spec.video = "virtio";
  spec.diskPath = *overlay;
  spec.network = libvirtd.network();
  spec.usbRedirChannels = 0;
  spec.allowPlainSpice = true;
  spec.spice.listenAddress = "127.0.0.1";
  spec.spice.tlsPort = false;
  spec.spice.plainPort = true;
  spec.spice.passwd = "first-ticket";
  spec.spice.passwdValidTo = utcIn(60s);
  auto ticketExpires = Clock::now() + 60s;
  auto xml = renderDomainXml(spec);
  ASSERT_TRUE(xml.ok()) << xml.error().message();

  // Whatever happens below, the domain goes away.
  struct Cleanup {
    Hypervisor& hypervisor;
    std::string name;
    ~Cleanup() {
      (void)hypervisor.destroy(name);
      (void)hypervisor.undefine(name);
    }
  } cleanup{hypervisor, name};

  auto started = Clock::now();
  auto defined = hypervisor.defineAndStart(*xml);
  ASSERT_TRUE(defined.ok()) << defined.error().message();
  double startSeconds = std::chrono::duration<double>(Clock::now() - started).count();

  auto info = hypervisor.info(name);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->state, "running");
  EXPECT_EQ(info->desktopId, kDesktopId);
  EXPECT_EQ(info->spiceTlsPort, -1);
  ASSERT_GT(info->spicePort, 0);
  const int port = info->spicePort;

  auto listed = hypervisor.list();
  ASSERT_TRUE(listed.ok()) << listed.error().message();
  auto mine = std::find_if(listed->begin(), listed->end(),
                           [&](const DomainInfo& d) { return d.name == name; });
  ASSERT_NE(mine, listed->end());
  EXPECT_EQ(mine->desktopId, kDesktopId);
  EXPECT_EQ(mine->state, "running");

  // The guest's text screen, read through SPICE with the ticket.
  const fs::path shot = fs::path(AULA_TEST_TEMPLATE_DIR) / "agent-libvirt-screen.ppm";
  test::ScreenShares shares;
  auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline) {
    // On a loaded machine the boot can outlast the first ticket: renew it
    // as the broker would just before a viewer connects.
    if (Clock::now() > ticketExpires - 10s) {
      spec.spice.passwdValidTo = utcIn(60s);
      ticketExpires = Clock::now() + 60s;
      auto renewXml = renderGraphicsUpdateXml(spec.spice, true);
      ASSERT_TRUE(renewXml.ok()) << renewXml.error().message();
      auto renewed = hypervisor.updateGraphics(name, *renewXml);
      ASSERT_TRUE(renewed.ok()) << renewed.error().message();
      std::cout << "Renewed the first ticket before the guest's screen was ready.\n";
    }
    if (spiceScreenshot(port, spec.spice.passwd, shot)) {
      shares = test::analysePpm(shot);
      if (shares.white > 1.0 && shares.blue > 20.0) {
        break;
      }
    }
    std::this_thread::sleep_for(1s);
  }
  double bootSeconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::cout << fmt::format(
      "defineAndStart took {:.1f} s; the text screen showed after {:.1f} s: {}x{}, "
      "{:.1f}% blue, {:.1f}% white (screenshot {})\n",
      startSeconds, bootSeconds, shares.width, shares.height, shares.blue, shares.white,
      shot.native());
  ASSERT_GT(shares.white, 1.0) << "The guest's text never showed through SPICE within 60 s.";
  ASSERT_GT(shares.blue, 20.0);

  const fs::path other = libvirtd.imageDir() / "other.ppm";
  EXPECT_FALSE(spiceScreenshot(port, "wrong-ticket", other)) << "A wrong ticket got in.";

  // A ticket that has already expired is refused.
  SpiceSpec expired = spec.spice;
  expired.passwd = "expired-ticket";
  expired.passwdValidTo = utcIn(-60s);
  auto expiredXml = renderGraphicsUpdateXml(expired, true);
  ASSERT_TRUE(expiredXml.ok()) << expiredXml.error().message();
  auto updated = hypervisor.updateGraphics(name, *expiredXml);
  ASSERT_TRUE(updated.ok()) << updated.error().message();
  EXPECT_FALSE(spiceScreenshot(port, expired.passwd, other)) << "An expired ticket got in.";
  EXPECT_FALSE(spiceScreenshot(port, spec.spice.passwd, other)) << "A replaced ticket got in.";

  // A new ticket with connected='disconnect' (kicking out any viewer) works.
  SpiceSpec fresh = spec.spice;
  fresh.passwd = "second-ticket";
  fresh.passwdValidTo = utcIn(60s);
  auto freshXml = renderGraphicsUpdateXml(fresh, true);
  ASSERT_TRUE(freshXml.ok()) << freshXml.error().message();
  updated = hypervisor.updateGraphics(name, *freshXml);
  ASSERT_TRUE(updated.ok()) << updated.error().message();
  EXPECT_TRUE(spiceScreenshot(port, fresh.passwd, other)) << "The new ticket did not get in.";

  // Errors carry libvirt's reason and the domain's name.
  auto missing = hypervisor.info("aula-no-such-domain");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_NE(missing.error().message().find("'aula-no-such-domain'"), std::string::npos)
      << missing.error().message();

  auto destroyed = hypervisor.destroy(name);
  ASSERT_TRUE(destroyed.ok()) << destroyed.error().message();
  auto stopped = hypervisor.info(name);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message();
  EXPECT_EQ(stopped->state, "shut off");
  EXPECT_EQ(stopped->spicePort, -1);
  auto undefined = hypervisor.undefine(name);
  ASSERT_TRUE(undefined.ok()) << undefined.error().message();
  auto gone = hypervisor.info(name);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), Errc::kNotFound);

  auto deleted = disks.deleteOverlay("desktops", overlayRel);
  ASSERT_TRUE(deleted.ok()) << deleted.error().message();
  EXPECT_FALSE(fs::exists(*overlay));
}

}  // namespace
}  // namespace aula::agent
