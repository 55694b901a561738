// The field checks both domain renderers share (see xml_checks.hpp).
#include "xml_checks.hpp"

#include <array>

#include "aula/agent/domain_xml.hpp"

namespace aula::agent::xml {
namespace {

constexpr std::size_t kMaxNameLength = 64;
constexpr std::size_t kMaxOwnerLength = 256;

}  // namespace

Error fieldError(std::string_view field, std::string_view sentenceRest) {
  return Error(Errc::kInvalidArgument,
               fmt::format("The domain field '{}' {}", field, sentenceRest));
}

bool isLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
bool isHex(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool isAlnum(char c) {
  return isLowerAlnum(c) || (c >= 'A' && c <= 'Z');
}

bool hasControlCharacter(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
  });
}

Status checkName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLength ||
      !allOf(name, [](char c) { return isLowerAlnum(c) || c == '-'; })) {
    return fieldError("name",
                      fmt::format("must be 1 to {} characters of a-z, 0-9 and '-', not '{}'.",
                                  kMaxNameLength, name));
  }
  return okStatus();
}

Status checkUuid(const std::string& uuid) {
  constexpr std::array<std::size_t, 4> kDashes = {8, 13, 18, 23};
  bool ok = uuid.size() == 36;
  for (std::size_t i = 0; ok && i < uuid.size(); ++i) {
    bool dash = std::find(kDashes.begin(), kDashes.end(), i) != kDashes.end();
    ok = dash ? uuid[i] == '-' : isHex(uuid[i]);
  }
  if (!ok) {
    return fieldError("uuid", fmt::format("must be a UUID like "
                                          "'3e3fce45-4f53-4fa7-bb32-11f34168b82b', not '{}'.",
                                          uuid));
  }
  return okStatus();
}

Status checkOwnership(std::int64_t desktopId, const std::string& owner) {
  if (desktopId <= 0) {
    return fieldError("desktopId", fmt::format("is {}; it must be positive.", desktopId));
  }
  if (owner.empty() || owner.size() > kMaxOwnerLength || hasControlCharacter(owner)) {
    return fieldError(
        "owner", fmt::format("must be 1 to {} bytes without control characters.", kMaxOwnerLength));
  }
  return okStatus();
}

Status checkMachine(const std::string& machine) {
  constexpr std::string_view kVersioned = "pc-q35-";
  bool ok = machine == "q35";
  if (!ok && machine.size() > kVersioned.size() && machine.starts_with(kVersioned)) {
    ok = allOf(std::string_view(machine).substr(kVersioned.size()),
               [](char c) { return isDigit(c) || c == '.'; });
  }
  if (!ok) {
    return fieldError("machine",
                      fmt::format("must be 'q35' or a versioned 'pc-q35-X.Y', not '{}'.", machine));
  }
  return okStatus();
}

Status checkAbsolutePath(std::string_view field, const std::filesystem::path& path) {
  const std::string& text = path.native();
  if (text.empty() || !path.is_absolute()) {
    return fieldError(field, fmt::format("must be an absolute path, not '{}'.", text));
  }
  if (hasControlCharacter(text)) {
    return fieldError(field, "contains a control character.");
  }
  for (const auto& part : path) {
    if (part == "..") {
      return fieldError(field, fmt::format("must not contain '..', as '{}' does.", text));
    }
  }
  return okStatus();
}

Status checkNetwork(const std::string& network) {
  if (network.empty() || network.size() > kMaxNameLength ||
      !allOf(network, [](char c) { return isAlnum(c) || c == '-' || c == '_' || c == '.'; })) {
    return fieldError("network",
                      fmt::format("must be a libvirt network's name (1 to {} characters of "
                                  "letters, digits, '-', '_' and '.'), not '{}'.",
                                  kMaxNameLength, network));
  }
  return okStatus();
}

Status checkMacAddress(const std::string& mac) {
  if (mac.empty()) {
    return okStatus();
  }
  bool ok = mac.size() == 17;
  for (std::size_t i = 0; ok && i < mac.size(); ++i) {
    ok = (i % 3 == 2) ? mac[i] == ':' : isHex(mac[i]);
  }
  if (ok) {
    // libvirt refuses a multicast address for a NIC: the first octet must be even.
    char low = mac[1];
    int lowNibble = isDigit(low) ? low - '0' : (low | 0x20) - 'a' + 10;
    ok = (lowNibble & 1) == 0;
  }
  if (!ok) {
    return fieldError("macAddress", fmt::format("must be empty or a unicast address like "
                                                "'52:54:00:12:34:56', not '{}'.",
                                                mac));
  }
  return okStatus();
}

Status checkOneOf(std::string_view field, const std::string& value,
                  std::initializer_list<std::string_view> allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) {
    return okStatus();
  }
  std::string list;
  for (auto choice : allowed) {
    list += fmt::format("{}'{}'", list.empty() ? "" : " or ", choice);
  }
  return fieldError(field, fmt::format("must be {}, not '{}'.", list, value));
}

void writeIdentity(Writer& w, const Identity& identity) {
  w.line(0, "<domain type='{}'>", xmlEscape(identity.domainType));
  w.line(1, "<name>{}</name>", xmlEscape(identity.name));
  w.line(1, "<uuid>{}</uuid>", xmlEscape(identity.uuid));
  w.line(1, "<metadata>");
  w.line(2, "<aula:desktop xmlns:aula='{}'>", kMetadataNamespace);
  w.line(3, "<aula:id>{}</aula:id>", identity.desktopId);
  w.line(3, "<aula:owner>{}</aula:owner>", xmlEscape(identity.owner));
  if (identity.workstation) {
    w.line(3, "<aula:workstation/>");
  }
  w.line(2, "</aula:desktop>");
  w.line(1, "</metadata>");
}

void writeDiskStart(Writer& w, const std::filesystem::path& diskPath, const std::string& bus) {
  w.line(2, "<disk type='file' device='disk'>");
  w.line(3, "<driver name='qemu' type='qcow2' discard='unmap'/>");
  w.line(3, "<source file='{}'/>", xmlEscape(diskPath.native()));
  w.line(3, "<target dev='{}' bus='{}'/>", bus == "virtio" ? "vda" : "sda", xmlEscape(bus));
}

void writeDiskEnd(Writer& w) {
  w.line(2, "</disk>");
}

void writeInterface(Writer& w, const std::string& network, const std::string& macAddress,
                    const std::string& model) {
  w.line(2, "<interface type='network'>");
  w.line(3, "<source network='{}'/>", xmlEscape(network));
  if (!macAddress.empty()) {
    w.line(3, "<mac address='{}'/>", xmlEscape(macAddress));
  }
  w.line(3, "<model type='{}'/>", xmlEscape(model));
  w.line(2, "</interface>");
}

}  // namespace aula::agent::xml
