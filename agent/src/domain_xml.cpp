// Renders a desktop's libvirt domain XML and its ticket update (see domain_xml.hpp).
#include "aula/agent/domain_xml.hpp"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <iterator>
#include <system_error>

#include <fmt/format.h>

#include "aula/common/log.hpp"

#include "xml_checks.hpp"

namespace aula::agent {
namespace {

using namespace xml;  // NOLINT(google-build-using-namespace): the shared checks

constexpr std::int64_t kMaxVcpus = 128;
constexpr std::int64_t kMinMemoryMb = 128;
constexpr std::size_t kMaxListenLength = 255;
constexpr std::size_t kMaxTicketLength = 60;  // SPICE_MAX_PASSWORD_LENGTH in spice-protocol
constexpr int kMaxUsbRedirChannels = 8;
// The xHCI controller's ports: the tablet plus every redirection slot fit.
constexpr int kUsbControllerPorts = 15;
// Ranges from formatdomain.html, "CPU Tuning".
constexpr std::uint64_t kMinCpuShares = 2;
constexpr std::uint64_t kMaxCpuShares = 262144;
constexpr std::int64_t kMinCpuPeriodUs = 1000;
constexpr std::int64_t kMaxCpuPeriodUs = 1000000;
constexpr std::int64_t kMinCpuQuotaUs = 1000;
constexpr std::int64_t kMaxCpuQuotaUs = 17592186044415;

// libvirt's parser takes exactly YYYY-MM-DDTHH:MM:SS (virDomainGraphicsAuthDefParseXML:
// "cannot parse password validity time '%s', expect YYYY-MM-DDTHH:MM:SS").
bool isLibvirtTimestamp(std::string_view text) {
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd";
  if (text.size() != kShape.size()) {
    return false;
  }
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    if (kShape[i] == 'd' ? !isDigit(text[i]) : text[i] != kShape[i]) {
      return false;
    }
  }
  auto number = [&](std::size_t at) { return (text[at] - '0') * 10 + (text[at + 1] - '0'); };
  int month = number(5);
  int day = number(8);
  return month >= 1 && month <= 12 && day >= 1 && day <= 31 && number(11) <= 23 &&
         number(14) <= 59 && number(17) <= 59;
}

Status checkSpice(const SpiceSpec& spice, bool allowPlainSpice) {
  const std::string& listen = spice.listenAddress;
  if (listen.empty() || listen.size() > kMaxListenLength ||
      !allOf(listen, [](char c) { return isAlnum(c) || c == '.' || c == ':' || c == '-'; })) {
    return fieldError("spice.listenAddress",
                      fmt::format("must be an IP address or host name, not '{}'.", listen));
  }
  if (!spice.tlsPort && !spice.plainPort) {
    return fieldError("spice.tlsPort",
                      "is off and so is spice.plainPort; a desktop needs one SPICE port.");
  }
  if (spice.plainPort && !allowPlainSpice) {
    return fieldError("spice.plainPort",
                      "is on but unencrypted SPICE is allowed only in tests (allowPlainSpice).");
  }
  // The ticket itself is never echoed.
  if (spice.passwd.empty()) {
    return fieldError("spice.passwd",
                      "is empty; without a ticket QEMU would let anyone connect, so define the "
                      "desktop with an expired random one.");
  }
  if (spice.passwd.size() > kMaxTicketLength) {
    return fieldError("spice.passwd", fmt::format("is {} bytes long; SPICE takes at most {}.",
                                                  spice.passwd.size(), kMaxTicketLength));
  }
  if (hasControlCharacter(spice.passwd)) {
    return fieldError("spice.passwd", "contains a control character.");
  }
  if (!isLibvirtTimestamp(spice.passwdValidTo)) {
    return fieldError("spice.passwdValidTo",
                      fmt::format("must be a UTC time written 'YYYY-MM-DDTHH:MM:SS' with no zone "
                                  "suffix, as libvirt parses it, not '{}'.",
                                  spice.passwdValidTo));
  }
  return okStatus();
}

Status checkLimits(const DomainLimits& limits) {
  if (limits.cpuShares != 0 &&
      (limits.cpuShares < kMinCpuShares || limits.cpuShares > kMaxCpuShares)) {
    return fieldError("limits.cpuShares",
                      fmt::format("is {}; it must be 0 (unset) or {} to {}.", limits.cpuShares,
                                  kMinCpuShares, kMaxCpuShares));
  }
  if (limits.cpuPeriodUs != 0 &&
      (limits.cpuPeriodUs < kMinCpuPeriodUs || limits.cpuPeriodUs > kMaxCpuPeriodUs)) {
    return fieldError("limits.cpuPeriodUs",
                      fmt::format("is {}; it must be 0 (unset) or {} to {} microseconds.",
                                  limits.cpuPeriodUs, kMinCpuPeriodUs, kMaxCpuPeriodUs));
  }
  if (limits.cpuQuotaUs != 0 &&
      (limits.cpuQuotaUs < kMinCpuQuotaUs || limits.cpuQuotaUs > kMaxCpuQuotaUs)) {
    return fieldError("limits.cpuQuotaUs",
                      fmt::format("is {}; it must be 0 (unset) or {} to {} microseconds.",
                                  limits.cpuQuotaUs, kMinCpuQuotaUs, kMaxCpuQuotaUs));
  }
  return okStatus();
}

Status checkSpec(const DomainSpec& spec) {
  AULA_TRY_STATUS(checkName(spec.name));
  AULA_TRY_STATUS(checkUuid(spec.uuid));
  AULA_TRY_STATUS(checkOwnership(spec.desktopId, spec.owner));
  AULA_TRY_STATUS(checkOneOf("domainType", spec.domainType, {"kvm", "qemu"}));
  AULA_TRY_STATUS(checkMachine(spec.machine));
  if (spec.vcpus < 1 || spec.vcpus > kMaxVcpus) {
    return fieldError("vcpus",
                      fmt::format("is {}; it must be between 1 and {}.", spec.vcpus, kMaxVcpus));
  }
  if (spec.memoryMb < kMinMemoryMb) {
    return fieldError(
        "memoryMb", fmt::format("is {}; it must be at least {} MiB.", spec.memoryMb, kMinMemoryMb));
  }
  AULA_TRY_STATUS(checkOneOf("video", spec.video, {"qxl", "virtio"}));
  AULA_TRY_STATUS(checkAbsolutePath("diskPath", spec.diskPath));
  AULA_TRY_STATUS(checkOneOf("diskBus", spec.diskBus, {"virtio", "sata"}));
  AULA_TRY_STATUS(checkNetwork(spec.network));
  AULA_TRY_STATUS(checkOneOf("nicModel", spec.nicModel, {"virtio", "e1000e"}));
  AULA_TRY_STATUS(checkMacAddress(spec.macAddress));
  AULA_TRY_STATUS(checkSpice(spec.spice, spec.allowPlainSpice));
  AULA_TRY_STATUS(checkLimits(spec.limits));
  if (spec.usbRedirChannels < 0 || spec.usbRedirChannels > kMaxUsbRedirChannels) {
    return fieldError("usbRedirChannels", fmt::format("is {}; it must be between 0 and {}.",
                                                      spec.usbRedirChannels, kMaxUsbRedirChannels));
  }
  return okStatus();
}

void writeGraphics(Writer& w, int depth, const SpiceSpec& spice) {
  // defaultMode decides which ports autoport allocates: 'secure' allocates
  // the TLS port only, 'insecure' the plain one only, 'any' both.
  std::string_view mode = spice.plainPort ? (spice.tlsPort ? "any" : "insecure") : "secure";
  w.line(depth,
         "<graphics type='spice' autoport='yes' defaultMode='{}' passwd='{}' passwdValidTo='{}' "
         "connected='disconnect'>",
         mode, xmlEscape(spice.passwd), xmlEscape(spice.passwdValidTo));
  w.line(depth + 1, "<listen type='address' address='{}'/>", xmlEscape(spice.listenAddress));
  // The compression the reference deployment tuned for school LANs and WANs.
  w.line(depth + 1, "<image compression='auto_glz'/>");
  w.line(depth + 1, "<jpeg compression='auto'/>");
  w.line(depth + 1, "<zlib compression='auto'/>");
  w.line(depth + 1, "<playback compression='on'/>");
  w.line(depth + 1, "<streaming mode='filter'/>");
  w.line(depth + 1, "<clipboard copypaste='{}'/>", spice.clipboard ? "yes" : "no");
  w.line(depth + 1, "<mouse mode='client'/>");
  w.line(depth, "</graphics>");
}

}  // namespace

std::string xmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Result<std::string> renderDomainXml(const DomainSpec& spec) {
  AULA_TRY_STATUS(checkSpec(spec));
  // Every string is escaped even where validation already allows only safe
  // characters, so that a later, looser check cannot open an injection.
  const DomainLimits& limits = spec.limits;
  Writer w;
  writeIdentity(w, {spec.domainType, spec.name, spec.uuid, spec.desktopId, spec.owner, false});
  w.line(1, "<memory unit='MiB'>{}</memory>", spec.memoryMb);
  w.line(1, "<vcpu placement='static'>{}</vcpu>", spec.vcpus);
  if (limits.cpuShares != 0 || limits.cpuPeriodUs != 0 || limits.cpuQuotaUs != 0) {
    w.line(1, "<cputune>");
    if (limits.cpuShares != 0) {
      w.line(2, "<shares>{}</shares>", limits.cpuShares);
    }
    if (limits.cpuPeriodUs != 0) {
      w.line(2, "<period>{}</period>", limits.cpuPeriodUs);
    }
    if (limits.cpuQuotaUs != 0) {
      w.line(2, "<quota>{}</quota>", limits.cpuQuotaUs);
    }
    w.line(1, "</cputune>");
  }
  w.line(1, "<os>");
  w.line(2, "<type arch='x86_64' machine='{}'>hvm</type>", xmlEscape(spec.machine));
  w.line(2, "<boot dev='hd'/>");
  w.line(1, "</os>");
  w.line(1, "<features>");
  w.line(2, "<acpi/>");
  w.line(2, "<apic/>");
  w.line(1, "</features>");
  // Under KVM the guest sees the host's CPU; under TCG QEMU's default model
  // is cheaper to emulate than the host's.
  if (spec.domainType == "kvm") {
    w.line(1, "<cpu mode='host-passthrough'/>");
  }
  w.line(1, "<clock offset='utc'/>");
  w.line(1, "<on_poweroff>destroy</on_poweroff>");
  w.line(1, "<on_reboot>restart</on_reboot>");
  w.line(1, "<on_crash>destroy</on_crash>");
  // A guest that sleeps looks like a frozen desktop to its viewer.
  w.line(1, "<pm>");
  w.line(2, "<suspend-to-mem enabled='no'/>");
  w.line(2, "<suspend-to-disk enabled='no'/>");
  w.line(1, "</pm>");
  w.line(1, "<devices>");
  writeDiskStart(w, spec.diskPath, spec.diskBus);
  if (limits.diskBytesPerSec != 0 || limits.diskIopsPerSec != 0) {
    w.line(3, "<iotune>");
    if (limits.diskBytesPerSec != 0) {
      w.line(4, "<total_bytes_sec>{}</total_bytes_sec>", limits.diskBytesPerSec);
    }
    if (limits.diskIopsPerSec != 0) {
      w.line(4, "<total_iops_sec>{}</total_iops_sec>", limits.diskIopsPerSec);
    }
    w.line(3, "</iotune>");
  }
  writeDiskEnd(w);
  w.line(2, "<controller type='usb' index='0' model='qemu-xhci' ports='{}'/>", kUsbControllerPorts);
  writeInterface(w, spec.network, spec.macAddress, spec.nicModel);
  // The SPICE agent's port: clipboard, and the guest following the viewer's
  // window size.
  w.line(2, "<channel type='spicevmc'>");
  w.line(3, "<target type='virtio' name='com.redhat.spice.0'/>");
  w.line(2, "</channel>");
  // Absolute pointer until the agent runs (a login screen).
  w.line(2, "<input type='tablet' bus='usb'/>");
  writeGraphics(w, 2, spec.spice);
  w.line(2, "<sound model='ich9'/>");
  w.line(2, "<video>");
  w.line(3, "<model type='{}' heads='1' primary='yes'/>", xmlEscape(spec.video));
  w.line(2, "</video>");
  for (int i = 0; i < spec.usbRedirChannels; ++i) {
    w.line(2, "<redirdev bus='usb' type='spicevmc'/>");
  }
  w.line(2, "<memballoon model='virtio'/>");
  w.line(1, "</devices>");
  w.line(0, "</domain>");
  return w.take();
}

Result<std::string> renderGraphicsUpdateXml(const SpiceSpec& spice, bool allowPlainSpice) {
  AULA_TRY_STATUS(checkSpice(spice, allowPlainSpice));
  Writer w;
  writeGraphics(w, 0, spice);
  return w.take();
}

std::string chooseDomainType(bool kvmUsable) {
  return kvmUsable ? "kvm" : "qemu";
}

process::Command kvmProbeCommand() {
  return process::Command{
      .argv = {"qemu-system-x86_64", "-accel", "kvm", "-machine", "pc", "-m", "32",
               "-no-user-config", "-nodefaults", "-display", "none", "-monitor", "none", "-serial",
               "none", "-no-reboot", "-boot", "reboot-timeout=0"},
      .timeout = std::chrono::seconds(30)};
}

bool kvmUsable(const std::filesystem::path& devKvm, process::Runner& runner) {
  std::error_code ec;
  if (!std::filesystem::exists(devKvm, ec)) {
    log::info("KVM is not usable: {} does not exist.", devKvm.native());
    return false;
  }
  auto command = kvmProbeCommand();
  auto outcome = runner.run(command);
  if (!outcome.ok()) {
    log::warn("KVM is not usable: the probe '{}' did not run to the end. {}", command.display(),
              outcome.error().message());
    return false;
  }
  if (!outcome->succeeded()) {
    log::warn("KVM is not usable: the probe '{}' failed with exit code {}, signal {}.",
              command.display(), outcome->exitCode, outcome->termSignal);
    return false;
  }
  return true;
}

Result<std::string> resolveDomainType(std::string_view setting, const std::filesystem::path& devKvm,
                                      process::Runner& runner) {
  if (setting == "kvm" || setting == "qemu") {
    return std::string(setting);
  }
  if (setting == "auto") {
    return chooseDomainType(kvmUsable(devKvm, runner));
  }
  return makeError(Errc::kConfig,
                   "The domain type setting '{}' is not one of 'auto', 'kvm' and 'qemu'.", setting);
}

}  // namespace aula::agent
