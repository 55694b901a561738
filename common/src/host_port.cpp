// HOST:PORT parsing (see host_port.hpp).
#include "aula/common/host_port.hpp"

#include <algorithm>
#include <cctype>

#include <arpa/inet.h>

namespace aula {

bool isIpAddress(std::string_view text) {
  std::string s(text);
  unsigned char buffer[16];
  return ::inet_pton(AF_INET, s.c_str(), buffer) == 1 ||
         ::inet_pton(AF_INET6, s.c_str(), buffer) == 1;
}

std::string HostPort::str() const {
  std::string h = ipv6 ? fmt::format("[{}]", host) : host;
  return port ? fmt::format("{}:{}", h, *port) : h;
}

Result<HostPort> parseHostPort(std::string_view text, PortRule rule, std::string_view what) {
  auto invalid = [&] {
    return makeError(Errc::kInvalidArgument,
                     "{} '{}' is not valid: give HOST:PORT, such as '10.0.0.5:9443' or "
                     "'hv1.school.lan:9443', or [IPv6]:PORT{}.",
                     what, text.substr(0, 80),
                     rule == PortRule::kOptional ? ", or the host alone" : "");
  };
  HostPort out;
  std::string_view host = text;
  std::string_view port;
  bool hasPort = false;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos)
      return invalid();
    host = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':')
        return invalid();
      port = rest.substr(1);
      hasPort = true;
    }
    out.ipv6 = true;
    std::string h(host);
    unsigned char buffer[16];
    if (::inet_pton(AF_INET6, h.c_str(), buffer) != 1)
      return invalid();
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') != colon)
      return invalid();  // a bare IPv6 address: the last group would pass for a port
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    hasPort = true;
  }
  if (host.empty() || host.size() > 253)
    return invalid();
  if (!out.ipv6) {
    // A DNS name or an IPv4 address: letters, digits, dots and dashes.
    bool ok = std::all_of(host.begin(), host.end(), [](unsigned char c) {
      return std::isalnum(c) || c == '.' || c == '-' || c == '_';
    });
    if (!ok)
      return invalid();
  }
  out.host = std::string(host);
  for (auto& c : out.host)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (hasPort) {
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return invalid();
    }
    int value = std::stoi(std::string(port));
    if (value > 65535)
      return invalid();
    out.port = value;
  } else if (rule == PortRule::kRequired) {
    return invalid();
  }
  return out;
}

}  // namespace aula
