// What the two domain renderers share (domain_xml.cpp for desktops,
// workstation_xml.cpp for workstations): the field checks whose errors name
// the field, and the indenting line writer. Internal to agent_lib.
#pragma once

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "aula/common/result.hpp"

namespace aula::agent::xml {

Error fieldError(std::string_view field, std::string_view sentenceRest);

bool isDigit(char c);
bool isHex(char c);
bool isLowerAlnum(char c);
bool isAlnum(char c);
// XML 1.0 cannot carry most control characters even escaped, and no field
// has a reason to hold one.
bool hasControlCharacter(std::string_view text);

template <typename Pred>
bool allOf(std::string_view text, Pred pred) {
  return std::all_of(text.begin(), text.end(), pred);
}

// The libvirt domain name: 1 to 64 characters of a-z, 0-9 and '-'.
Status checkName(const std::string& name);
Status checkUuid(const std::string& uuid);
// The broker's desktop id (positive) and its owner's login name.
Status checkOwnership(std::int64_t desktopId, const std::string& owner);
Status checkMachine(const std::string& machine);
// An absolute path without '..' or control characters, named `field`.
Status checkAbsolutePath(std::string_view field, const std::filesystem::path& path);
Status checkNetwork(const std::string& network);
Status checkMacAddress(const std::string& mac);
Status checkOneOf(std::string_view field, const std::string& value,
                  std::initializer_list<std::string_view> allowed);

// A line of XML at `depth` levels of two spaces.
class Writer {
 public:
  template <typename... Args>
  void line(int depth, fmt::format_string<Args...> format, Args&&... args) {
    out_.append(static_cast<std::size_t>(depth) * 2, ' ');
    fmt::format_to(std::back_inserter(out_), format, std::forward<Args>(args)...);
    out_ += '\n';
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// The opening <domain> line, <name>, <uuid> and Aula's <metadata>; a
// workstation's metadata also holds <aula:workstation/>.
struct Identity {
  const std::string& domainType;
  const std::string& name;
  const std::string& uuid;
  std::int64_t desktopId;
  const std::string& owner;
  bool workstation;
};
void writeIdentity(Writer& w, const Identity& identity);
// The overlay disk's element up to its target; the caller adds what it
// needs (iotune) and closes it with writeDiskEnd.
void writeDiskStart(Writer& w, const std::filesystem::path& diskPath, const std::string& bus);
void writeDiskEnd(Writer& w);
void writeInterface(Writer& w, const std::string& network, const std::string& macAddress,
                    const std::string& model);

}  // namespace aula::agent::xml
