// A workstation's passthrough domain XML, for each fixture machine: golden
// files (which domain_xml_validate_tests also has libvirt define with
// validation), the guest slot layout (a GPU at function 0, multifunction,
// with its HDMI audio at function 1 of the same slot), and a clear error
// for each spec that cannot work.
#include "aula/agent/workstation_xml.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "aula/agent/broker_grants.hpp"

#include "fake_host.hpp"
#include "support/golden.hpp"
#include "support/temp_dir.hpp"

namespace aula::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class WorkstationXmlTest : public ::testing::Test {
 protected:
  // The machine's host facts and a spec that takes its chosen devices.
  HostFacts build(const test::FixtureMachine& m, WorkstationSpec& spec) {
    test::FakeHost host(dir_.path() / m.name);
    m.build(host);
    spec.name = "aula-ws-" + std::string(m.name.substr(0, m.name.find('_')));
    spec.uuid = "0b5e7c2d-1f4a-4e6b-8c9d-3a2f1e0d9c8b";
    spec.desktopId = 7;
    spec.owner = "rhea";
    spec.memoryMb = 16384;
    spec.nvramPath = "/var/lib/aula-agent/nvram/" + spec.name + "_VARS.fd";
    spec.diskPath = "/var/lib/aula-agent/desktops/" + spec.name + ".qcow2";
    for (const auto& address : m.passed)
      spec.devices.push_back({address, {}});
    return host.facts();
  }

  static std::vector<std::filesystem::path> keyboardAndMouse() {
    return {"/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd",
            "/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse"};
  }

  test::TempDir dir_;
};

TEST_F(WorkstationXmlTest, EachFixtureMachineRendersItsGoldenDomain) {
  for (const auto& m : test::fixtureMachines()) {
    SCOPED_TRACE(m.name);
    WorkstationSpec spec;
    HostFacts facts = build(m, spec);
    if (m.name == "gpu_shared_group") {
      // A big machine tuned by hand: 8 threads pinned, huge pages.
      spec.cores = 4;
      spec.threads = 2;
      spec.vcpuPins = {2, 3, 4, 5, 10, 11, 12, 13};
      spec.emulatorCpus = "0-1,8-9";
      spec.hugePages = true;
    } else if (m.name == "boot_gpu_efifb") {
      spec.devices[0].romFile = "/var/lib/aula-agent/roms/10de-2484.rom";
    } else if (m.name == "usb_no_reset") {
      // A driver that refuses to run in a VM.
      spec.hideKvm = true;
      spec.hypervVendorId = "AulaWorkst8n";
    } else if (m.name == "twin_gpus") {
      spec.diskBus = "sata";
      spec.nicModel = "e1000e";
      spec.macAddress = "52:54:00:7a:01:02";
      spec.network = "lab-bridge";
    }
    if (m.name != "usb_no_reset")
      spec.evdevInputs = keyboardAndMouse();
    auto xml = renderWorkstationXml(spec, facts);
    ASSERT_TRUE(xml) << xml.error().message();
    test::expectMatchesGolden(*xml, AULA_GOLDEN_DIR, "workstation_" + m.name + ".xml");
  }
}

TEST_F(WorkstationXmlTest, TheGpuAndItsAudioShareAGuestSlotAndOnboardAudioGetsItsOwn) {
  WorkstationSpec spec;
  HostFacts facts = build(test::fixtureMachine("onboard_audio_lpc"), spec);
  spec.evdevInputs = keyboardAndMouse();
  auto xml = renderWorkstationXml(spec, facts);
  ASSERT_TRUE(xml) << xml.error().message();
  // Two root ports: one per host slot.
  EXPECT_THAT(*xml, HasSubstr("<controller type='pci' index='1' model='pcie-root-port'/>"));
  EXPECT_THAT(*xml, HasSubstr("<controller type='pci' index='2' model='pcie-root-port'/>"));
  EXPECT_THAT(*xml, Not(HasSubstr("index='3'")));
  EXPECT_THAT(*xml, HasSubstr("<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>\n"
                              "      </source>\n"
                              "      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' "
                              "function='0x0' multifunction='on'/>"));
  EXPECT_THAT(*xml, HasSubstr("<address domain='0x0000' bus='0x01' slot='0x00' function='0x1'/>\n"
                              "      </source>\n"
                              "      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' "
                              "function='0x1'/>"));
  // The onboard audio, 00:1f.3 on the host, is function 0 of its own slot.
  EXPECT_THAT(*xml, HasSubstr("<address domain='0x0000' bus='0x00' slot='0x1f' function='0x3'/>\n"
                              "      </source>\n"
                              "      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' "
                              "function='0x0'/>"));
  // Bound by the agent, journal first: libvirt keeps its hands off.
  EXPECT_THAT(*xml, Not(HasSubstr("managed='yes'")));
  EXPECT_THAT(*xml, HasSubstr("<model type='none'/>"));
  EXPECT_THAT(*xml, Not(HasSubstr("<graphics")));
  EXPECT_THAT(*xml, HasSubstr("grab='all' grabToggle='ctrl-ctrl'"));
}

TEST_F(WorkstationXmlTest, ASpecThatCannotWorkIsRefusedNamingTheField) {
  WorkstationSpec base;
  HostFacts facts = build(test::fixtureMachine("usb_no_reset"), base);
  auto refused = [&](const WorkstationSpec& spec) {
    auto xml = renderWorkstationXml(spec, facts);
    EXPECT_FALSE(xml);
    return xml ? std::string() : xml.error().message();
  };

  auto noGpu = base;
  noGpu.devices = {{"0000:03:00.0", {}}};
  EXPECT_THAT(refused(noGpu), HasSubstr("'devices' holds no GPU, so nothing would show the VM"));

  auto absent = base;
  absent.devices.push_back({"0000:09:00.0", {}});
  EXPECT_THAT(refused(absent), HasSubstr("names 0000:09:00.0, which this host does not have; "
                                         "run 'aula-agent devices'"));

  auto shortForm = base;
  shortForm.devices[0].address = "01:00.0";
  EXPECT_THAT(refused(shortForm), HasSubstr("holds '01:00.0', which is not a PCI address"));

  auto twice = base;
  twice.devices.push_back({"0000:01:00.0", {}});
  EXPECT_THAT(refused(twice), HasSubstr("names 0000:01:00.0 twice"));

  auto both = base;
  both.evdevInputs = keyboardAndMouse();
  EXPECT_THAT(refused(both), HasSubstr("'evdevInputs' names input devices, but the USB "
                                       "controller 0000:03:00.0 is passed"));

  auto noKeyboard = base;
  noKeyboard.devices.pop_back();
  EXPECT_THAT(refused(noKeyboard), HasSubstr("the VM would have no keyboard or mouse"));

  auto notInput = base;
  notInput.devices.pop_back();
  notInput.evdevInputs = {"/etc/shadow"};
  EXPECT_THAT(refused(notInput), HasSubstr("holds '/etc/shadow', which is not under /dev/input/"));

  auto pins = base;
  pins.vcpuPins = {1, 2};
  EXPECT_THAT(refused(pins), HasSubstr("'vcpuPins' names 2 host CPUs for 4 vCPUs"));

  auto tooMany = base;
  tooMany.sockets = 2;
  tooMany.cores = 64;
  tooMany.threads = 2;
  EXPECT_THAT(refused(tooMany), HasSubstr("makes 256 vCPUs"));

  auto vendor = base;
  vendor.hypervVendorId = "Aula Vendor 13";
  EXPECT_THAT(refused(vendor), HasSubstr("'hypervVendorId' must be empty or 1 to 12 letters"));

  auto nvram = base;
  nvram.nvramPath.clear();
  EXPECT_THAT(refused(nvram), HasSubstr("'nvramPath' must be an absolute path"));

  auto cpuset = base;
  cpuset.emulatorCpus = "0-1;reboot";
  EXPECT_THAT(refused(cpuset), HasSubstr("'emulatorCpus' must be empty or a cpuset"));
}

TEST_F(WorkstationXmlTest, PathsAreEscaped) {
  WorkstationSpec spec;
  HostFacts facts = build(test::fixtureMachine("clean_desktop"), spec);
  spec.evdevInputs = keyboardAndMouse();
  spec.devices[0].romFile = "/var/lib/aula-agent/roms/it's <odd> & \"new\".rom";
  auto xml = renderWorkstationXml(spec, facts);
  ASSERT_TRUE(xml) << xml.error().message();
  EXPECT_THAT(*xml, HasSubstr("<rom file='/var/lib/aula-agent/roms/it&apos;s &lt;odd&gt; &amp; "
                              "&quot;new&quot;.rom'/>"));
}

// The broker's grant becomes the VM: the IDs the admin chose are checked by
// preflight, the UUID stays with the domain, and the keyboard is the passed
// USB controller's or the host's through evdev, never neither.
TEST_F(WorkstationXmlTest, ABrokerGrantBecomesAVmWithAKeyboard) {
  proto::WorkstationGrantAnswer answer{
      .user = "rhea",
      .domain = "aula-ws-lab1",
      .devices = {{.address = "0000:01:00.0", .vendor = "10de", .device = "2484"},
                  {.address = "0000:01:00.1", .rom = "/var/lib/aula/roms/a.rom"}},
      .vcpus = 6,
      .memoryMb = 8192,
      .disk = {.baseStorage = "templates", .baseDisk = "w.qcow2", .path = "x.qcow2"}};
  WorkstationSpec unused;
  const HostFacts clean = build(test::fixtureMachine("clean_desktop"), unused);
  BrokerGrantsOptions options{.stateDir = "/var/lib/aula-agent", .hostId = 4};
  auto none = grantFromAnswer(answer, clean, options, "/d/x.qcow2");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), Errc::kConfig);
  EXPECT_THAT(none.error().message(), HasSubstr("would have no keyboard"));

  options.evdevInputs = keyboardAndMouse();
  auto grant = grantFromAnswer(answer, clean, options, "/d/x.qcow2");
  ASSERT_TRUE(grant.ok()) << grant.error().message();
  EXPECT_EQ(grant->devices[0].vendor, 0x10de);
  EXPECT_EQ(grant->devices[0].device, 0x2484);
  EXPECT_FALSE(grant->devices[1].vendor.has_value());
  EXPECT_EQ(grant->spec.devices[1].romFile, "/var/lib/aula/roms/a.rom");
  EXPECT_EQ(grant->spec.cores, 6);
  EXPECT_EQ(grant->spec.desktopId, 4);
  EXPECT_EQ(grant->spec.nvramPath, "/var/lib/aula-agent/nvram/aula-ws-lab1_VARS.fd");
  EXPECT_EQ(grant->spec.evdevInputs.size(), 2u);
  EXPECT_EQ(grant->spec.uuid, grantFromAnswer(answer, clean, options, "/d")->spec.uuid);
  auto rendered = renderWorkstationXml(grant->spec, clean);
  EXPECT_TRUE(rendered.ok()) << rendered.error().message();

  // With the USB controller passed, the host's keyboard stays the host's.
  const HostFacts usb = build(test::fixtureMachine("usb_no_reset"), unused);
  answer.devices.push_back({.address = "0000:03:00.0"});
  auto withUsb = grantFromAnswer(answer, usb, options, "/d/x.qcow2");
  ASSERT_TRUE(withUsb.ok()) << withUsb.error().message();
  EXPECT_TRUE(withUsb->spec.evdevInputs.empty());

  answer.devices[0].vendor = "nvidia";
  auto bad = grantFromAnswer(answer, usb, options, "/d/x.qcow2");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("'nvidia:2484', not hex"));
}

}  // namespace
}  // namespace aula::agent
