// "HOST:PORT" as admins write it: a DNS name or IPv4 address with a port,
// or [IPv6]:PORT. One parser for listen addresses, agent addresses and URLs.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "aula/common/result.hpp"

namespace aula {

struct HostPort {
  std::string host;         // without brackets; lower case
  std::optional<int> port;  // 0 to 65535; 0 lets a listener take any free port
  bool ipv6 = false;
  // "host:port", "[v6]:port", or the host alone when there is no port.
  std::string str() const;
};

enum class PortRule { kRequired, kOptional };

// Parses `text`. A bare IPv6 address (two or more colons, no brackets) is
// refused: its last group would be read as a port. Errors (kInvalidArgument)
// name `what` ("The listen address") and show the forms that work.
Result<HostPort> parseHostPort(std::string_view text, PortRule rule,
                               std::string_view what = "The address");

// Whether `text` is a numeric IPv4 or IPv6 address.
bool isIpAddress(std::string_view text);

}  // namespace aula
