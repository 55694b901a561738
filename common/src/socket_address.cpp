// Socket addresses (see socket_address.hpp).
#include "socket_address.hpp"

#include <array>
#include <cerrno>
#include <system_error>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/eventfd.h>

#include "aula/common/host_port.hpp"

namespace aula::net {

Result<SocketAddress> parseListen(std::string_view text) {
  const auto bad = [&] {
    return makeError(Errc::kInvalidArgument,
                     "The listen address '{}' is not valid; write ADDR:PORT with a numeric IPv4 "
                     "address, or [IPv6]:PORT.",
                     text);
  };
  auto parsed = parseHostPort(text, PortRule::kRequired, "The listen address");
  if (!parsed)
    return bad();
  const std::string& host = parsed->host;
  const int port = *parsed->port;
  const bool v6 = parsed->ipv6;
  SocketAddress address;
  if (v6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address.storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) {
      return bad();
    }
    address.length = sizeof(sockaddr_in6);
  } else {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&address.storage);
    in4->sin_family = AF_INET;
    in4->sin_port = htons(static_cast<std::uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) {
      return bad();
    }
    address.length = sizeof(sockaddr_in);
  }
  return address;
}

std::string hostText(const sockaddr_storage& storage) {
  std::array<char, INET6_ADDRSTRLEN> text{};
  if (storage.ss_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(&storage);
    ::inet_ntop(AF_INET, &in4->sin_addr, text.data(), text.size());
  } else if (storage.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      ::inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], text.data(), text.size());
    } else {
      ::inet_ntop(AF_INET6, &in6->sin6_addr, text.data(), text.size());
    }
  }
  return text.data();
}

int portOf(const sockaddr_storage& storage) {
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
}

std::string addressText(const sockaddr_storage& storage) {
  const std::string host = hostText(storage);
  return storage.ss_family == AF_INET6 ? fmt::format("[{}]:{}", host, portOf(storage))
                                       : fmt::format("{}:{}", host, portOf(storage));
}

namespace {

std::string errnoText(int error) {
  return std::error_code(error, std::generic_category()).message();
}

}  // namespace

Result<Listener> bindListener(std::string_view listen, int type) {
  const SocketAddress wanted = AULA_TRY(parseListen(listen));
  Listener l;
  l.fd = file::UniqueFd(::socket(wanted.storage.ss_family, type | SOCK_CLOEXEC, 0));
  if (l.fd.get() < 0) {
    const int error = errno;
    return Error(Errc::kIo,
                 fmt::format("Cannot create a socket for {}: {}.", listen, errnoText(error)),
                 error);
  }
  if (type == SOCK_STREAM) {
    const int one = 1;
    ::setsockopt(l.fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  }
  if (::bind(l.fd.get(), reinterpret_cast<const sockaddr*>(&wanted.storage), wanted.length) != 0 ||
      (type == SOCK_STREAM && ::listen(l.fd.get(), SOMAXCONN) != 0)) {
    const int error = errno;
    return Error(Errc::kIo, fmt::format("Cannot listen on {}: {}.", listen, errnoText(error)),
                 error);
  }
  l.bound.length = sizeof(l.bound.storage);
  if (::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&l.bound.storage), &l.bound.length) !=
      0) {
    const int error = errno;
    return Error(Errc::kIo,
                 fmt::format("Cannot learn the port bound for {}: {}.", listen, errnoText(error)),
                 error);
  }
  l.port = portOf(l.bound.storage);
  l.address = addressText(l.bound.storage);
  return l;
}

Result<file::UniqueFd> wakeFd() {
  file::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (fd.get() < 0) {
    const int error = errno;
    return Error(Errc::kIo, fmt::format("Cannot create an eventfd: {}.", errnoText(error)), error);
  }
  return fd;
}

}  // namespace aula::net
