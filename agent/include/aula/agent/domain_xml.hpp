// The libvirt domain XML of an Aula desktop, and the <graphics> element that
// sets its one-time SPICE ticket; plus the choice between KVM and plain QEMU.
//
// Everything here is pure text: no libvirt call, no XML library. The spec is
// validated first (each error names the field), every string is XML-escaped,
// and the output is byte-for-byte stable so that golden files can pin it
// (tests/golden/agent, regenerated with AULA_REGENERATE_GOLDEN=1). The format
// follows https://libvirt.org/formatdomain.html; the integration tests check
// it against libvirt's own RelaxNG schema with virt-xml-validate.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "aula/common/process.hpp"
#include "aula/common/result.hpp"

namespace aula::agent {

// The SPICE server of a desktop. Outside tests it offers its TLS port only
// (libvirt's defaultMode='secure'), and nobody gets in without a ticket.
struct SpiceSpec {
  std::string listenAddress = "0.0.0.0";
  bool tlsPort = true;     // an automatically allocated TLS port
  bool plainPort = false;  // an unencrypted port: tests only, needs DomainSpec::allowPlainSpice
  // The ticket (SPICE password), at most 60 bytes (SPICE_MAX_PASSWORD_LENGTH).
  // A desktop is defined with a ticket that has already expired (any random
  // one, valid until 1970) and gets a real one just before a viewer connects.
  std::string passwd;
  // When the ticket stops working, in UTC, exactly as libvirt parses it:
  // "YYYY-MM-DDTHH:MM:SS", with no zone suffix (libvirt rejects "...Z").
  // The caller keeps it at most 60 s ahead; it is written as given.
  std::string passwdValidTo;
  bool clipboard = true;  // copy and paste through the SPICE agent
};

// Per-desktop resource limits; 0 leaves a limit unset (the host's default).
struct DomainLimits {
  std::uint64_t cpuShares = 0;  // relative CPU weight, 2..262144 (1024 is a "normal" share)
  // CFS bandwidth per vCPU: within each period a vCPU runs at most quota.
  // 50000 of 100000 is half a host CPU per vCPU.
  std::int64_t cpuPeriodUs = 0;       // 1000..1000000
  std::int64_t cpuQuotaUs = 0;        // 1000..17592186044415
  std::uint64_t diskBytesPerSec = 0;  // the overlay disk's read+write throughput
  std::uint64_t diskIopsPerSec = 0;   // the overlay disk's read+write operations
};

struct DomainSpec {
  std::string name;  // the libvirt domain name: [a-z0-9-], at most 64 characters ("aula-42")
  std::string uuid;  // RFC 4122 text form, 8-4-4-4-12 hex digits
  std::int64_t desktopId = 0;       // the broker's desktop id, kept in <metadata>
  std::string owner;                // the owning user's login name, kept in <metadata>
  std::string domainType = "kvm";   // "kvm" or "qemu" (TCG); see chooseDomainType()
  std::string machine = "q35";      // "q35" or a versioned "pc-q35-X.Y"
  std::int64_t vcpus = 1;           // 1..128
  std::int64_t memoryMb = 1024;     // at least 128 MiB
  std::string video = "qxl";        // "qxl" or "virtio"
  std::filesystem::path diskPath;   // the desktop's qcow2 overlay: absolute, no ".."
  std::string diskBus = "virtio";   // "virtio", or "sata" for guests without virtio drivers
  std::string network = "default";  // a libvirt network's name
  std::string nicModel = "virtio";  // "virtio" or "e1000e"
  std::string macAddress;           // "52:54:00:xx:xx:xx"; empty: libvirt picks one
  SpiceSpec spice;
  bool allowPlainSpice = false;  // only tests set this
  DomainLimits limits;
  int usbRedirChannels = 4;  // SPICE USB redirection slots, 0..8
};

// The namespace of Aula's element in <metadata>, for virDomainGetMetadata.
inline constexpr std::string_view kMetadataNamespace = "urn:aula:libvirt:domain:1";

// The whole <domain> document, ending in a newline. Errors: kInvalidArgument,
// naming the field that is wrong.
Result<std::string> renderDomainXml(const DomainSpec& spec);

// The <graphics> element alone, with a new ticket and connected='disconnect',
// for virDomainUpdateDeviceFlags. libvirt refuses an update that changes the
// listen address or the port settings (qemuDomainChangeGraphics), so `spice`
// must be the same as when the domain was defined except for the ticket.
Result<std::string> renderGraphicsUpdateXml(const SpiceSpec& spice, bool allowPlainSpice);

// Escapes &, <, >, " and ' so that the text is safe in element content and in
// attribute values with either quote.
std::string xmlEscape(std::string_view text);

// --- KVM or plain QEMU -------------------------------------------------------
//
// /dev/kvm existing is not enough: on some hosts (nested virtualization,
// among them the machines Aula's CI runs on) QEMU opens it and then guests
// hang. So the agent's configuration decides ("auto" | "kvm" | "qemu"), and
// only "auto" probes. The tests always configure "qemu".

// "kvm" when KVM is usable, else "qemu".
std::string chooseDomainType(bool kvmUsable);

// The probe: QEMU with KVM boots its BIOS on an empty machine, finds nothing
// to boot and, with reboot-timeout=0 and -no-reboot, exits 0 at once. A host
// whose vCPUs never run hits the timeout instead.
process::Command kvmProbeCommand();

// Whether devKvm exists and the probe succeeds. The probe proves that QEMU can
// run firmware under KVM, not that a whole guest OS will: where it passes but
// guests still hang, configure "qemu".
bool kvmUsable(const std::filesystem::path& devKvm, process::Runner& runner);

// The domain type for the agent's setting: "kvm" and "qemu" are used as
// given, "auto" asks kvmUsable(). Errors: kConfig for any other setting.
Result<std::string> resolveDomainType(std::string_view setting, const std::filesystem::path& devKvm,
                                      process::Runner& runner);

}  // namespace aula::agent
