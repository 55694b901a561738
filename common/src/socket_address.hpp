// Socket addresses of the listeners in common (HTTP, TFTP); not a public
// header.
#pragma once

#include <string>
#include <string_view>

#include <sys/socket.h>

#include "aula/common/file.hpp"
#include "aula/common/result.hpp"

namespace aula::net {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
};

// "ADDR:PORT" or "[IPv6]:PORT" with a numeric address; port 0 is any free one.
Result<SocketAddress> parseListen(std::string_view text);

// The host part of an address; an IPv4 peer on a dual-stack socket is shown
// as IPv4 ("127.0.0.1", not "::ffff:127.0.0.1").
std::string hostText(const sockaddr_storage& storage);

int portOf(const sockaddr_storage& storage);

// "host:port", or "[host]:port" for IPv6.
std::string addressText(const sockaddr_storage& storage);

// A socket bound to a listen address: a listening TCP one (SOCK_STREAM) or
// a UDP one (SOCK_DGRAM), with the address and port it got.
struct Listener {
  file::UniqueFd fd;
  SocketAddress bound;
  std::string address;  // "host:port" as bound
  int port = 0;
};
Result<Listener> bindListener(std::string_view listen, int type);

// An eventfd that wakes a listener's poll when it is to stop.
Result<file::UniqueFd> wakeFd();

}  // namespace aula::net
