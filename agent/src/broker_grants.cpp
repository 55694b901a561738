// WorkstationGrants over the broker (see broker_grants.hpp).
#include "aula/agent/broker_grants.hpp"

#include <charconv>

#include <fmt/format.h>

#include "aula/common/crypto.hpp"

namespace aula::agent {

namespace fs = std::filesystem;

namespace {

std::optional<std::uint16_t> hexId(const std::string& text) {
  std::uint16_t value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value, 16);
  if (text.empty() || ec != std::errc() || ptr != end)
    return std::nullopt;
  return value;
}

// A UUID that stays the same for the same domain: libvirt keeps the VM's
// NVRAM by it, and Windows its activation.
std::string stableUuid(const std::string& name) {
  const auto h = crypto::sha256Hex("aula-workstation:" + name);
  return fmt::format("{}-{}-4{}-8{}-{}", h.substr(0, 8), h.substr(8, 4), h.substr(13, 3),
                     h.substr(17, 3), h.substr(20, 12));
}

}  // namespace

Result<WorkstationGrant> grantFromAnswer(const proto::WorkstationGrantAnswer& answer,
                                         const HostFacts& facts, const BrokerGrantsOptions& options,
                                         const fs::path& diskPath) {
  WorkstationGrant grant;
  grant.user = answer.user;
  bool usb = false;
  for (const auto& d : answer.devices) {
    ChosenDevice chosen{.address = d.address, .vendor = hexId(d.vendor), .device = hexId(d.device)};
    if ((!d.vendor.empty() && !chosen.vendor) || (!d.device.empty() && !chosen.device)) {
      return makeError(Errc::kParse, "The broker's grant gives {} the IDs '{}:{}', not hex.",
                       d.address, d.vendor, d.device);
    }
    grant.devices.push_back(chosen);
    grant.spec.devices.push_back(PassedDevice{.address = d.address, .romFile = d.rom.value_or("")});
    if (const auto* device = facts.find(d.address);
        device && deviceKind(*device) == "USB controller")
      usb = true;
  }
  WorkstationSpec& spec = grant.spec;
  spec.name = answer.domain;
  spec.uuid = stableUuid(answer.domain);
  spec.owner = answer.user;
  spec.desktopId = options.hostId;
  spec.sockets = 1;
  spec.cores = static_cast<int>(answer.vcpus);
  spec.threads = 1;
  spec.memoryMb = answer.memoryMb;
  spec.hugePages = answer.hugePages;
  spec.hideKvm = answer.hideKvm;
  spec.hypervVendorId = answer.hypervVendorId;
  spec.nvramPath = options.stateDir / "nvram" / (answer.domain + "_VARS.fd");
  spec.diskPath = diskPath;
  spec.network = options.network;
  // The keyboard and mouse: the passed USB controller's, or the host's
  // through evdev.
  if (!usb)
    spec.evdevInputs = options.evdevInputs;
  if (!usb && spec.evdevInputs.empty()) {
    return Error(Errc::kConfig,
                 "The workstation's VM would have no keyboard: the admin passed no USB controller, "
                 "and the agent's [workstation] evdev lists no input devices.");
  }
  return grant;
}

BrokerGrants::BrokerGrants(BrokerPost post, Disks& disks, HostFactsReader readFacts,
                           BrokerGrantsOptions options)
    : post_(std::move(post)),
      disks_(disks),
      readFacts_(std::move(readFacts)),
      options_(std::move(options)) {}

Result<WorkstationGrant> BrokerGrants::claim(std::string_view user, std::string_view session) {
  auto answer = post_(proto::kWorkstationClaimRoute,
                      proto::toJson(proto::WorkstationClaim{.user = std::string(user),
                                                            .session = std::string(session)}));
  if (!answer) {
    const auto code = answer.error().code();
    if (code == Errc::kConnectionRefused || code == Errc::kTimeout || code == Errc::kTls ||
        code == Errc::kIo) {
      return Error(Errc::kUnavailable,
                   fmt::format("The broker cannot be reached, so nobody can be let in now: {}",
                               answer.error().message()));
    }
    return answer.error();
  }
  auto grant = AULA_TRY(proto::parseWorkstationGrantAnswer(*answer));
  if (grant.user != user) {
    return makeError(Errc::kPermissionDenied, "The broker granted the workstation to {}, not {}.",
                     grant.user, user);
  }
  // The user's own disk on this workstation: made over the template's image
  // at the first claim, kept after.
  auto disk = AULA_TRY(disks_.resolve(grant.disk.storage, grant.disk.path));
  std::error_code ec;
  if (!fs::exists(disk, ec)) {
    disk = AULA_TRY(disks_.createOverlay(grant.disk.baseStorage, grant.disk.baseDisk,
                                         grant.disk.storage, grant.disk.path));
  }
  auto facts = AULA_TRY(readFacts_());
  return grantFromAnswer(grant, facts, options_, disk);
}

Status BrokerGrants::release(std::string_view user) {
  auto released = post_(proto::kWorkstationReleaseRoute,
                        proto::toJson(proto::WorkstationRelease{.user = std::string(user)}));
  if (!released)
    return released.error();
  return okStatus();
}

}  // namespace aula::agent
