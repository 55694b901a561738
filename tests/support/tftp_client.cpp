// The test TFTP client (see tftp_client.hpp).
#include "tftp_client.hpp"

#include <array>
#include <chrono>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace aula::test {

namespace {

void put16(std::string& out, std::uint16_t value) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value & 0xff));
}

std::uint16_t get16(const char* p) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(p[0]) << 8) |
                                    static_cast<unsigned char>(p[1]));
}

void putText(std::string& out, const std::string& text) {
  out += text;
  out.push_back('\0');
}

}  // namespace

TftpResult tftpGet(const std::string& host, int port, const std::string& name,
                   const TftpGetOptions& options) {
  TftpResult result;
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return result;
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &server.sin_addr);

  std::string request;
  put16(request, 1);
  putText(request, name);
  putText(request, options.mode);
  if (options.blockSize) {
    putText(request, "blksize");
    putText(request, std::to_string(*options.blockSize));
  }
  if (options.askSize) {
    putText(request, "tsize");
    putText(request, "0");
  }
  ::sendto(fd, request.data(), request.size(), 0, reinterpret_cast<const sockaddr*>(&server),
           sizeof(server));

  std::size_t blockSize = 512;
  std::uint64_t expected = 1;  // the next block wanted, not wrapped
  sockaddr_in peer{};          // the transfer's own port, once known
  bool havePeer = false;
  std::array<char, 70000> buffer{};
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.timeoutMs);
  auto ack = [&](std::uint16_t block) {
    std::string packet;
    put16(packet, 4);
    put16(packet, block);
    ::sendto(fd, packet.data(), packet.size(), 0, reinterpret_cast<const sockaddr*>(&peer),
             sizeof(peer));
  };
  std::uint64_t lostFor = 0;  // the block whose acknowledgement was lost, once
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    sockaddr_in from{};
    socklen_t fromLength = sizeof(from);
    const ssize_t got = ::recvfrom(fd, buffer.data(), buffer.size(), 0,
                                   reinterpret_cast<sockaddr*>(&from), &fromLength);
    if (got < 4)
      continue;
    if (!havePeer) {
      peer = from;
      havePeer = true;
    }
    const std::uint16_t opcode = get16(buffer.data());
    if (opcode == 5) {
      result.errorCode = get16(buffer.data() + 2);
      result.errorText = std::string(buffer.data() + 4, ::strnlen(buffer.data() + 4, got - 4));
      break;
    }
    if (opcode == 6) {  // OACK: name, value, ...
      std::size_t i = 2;
      std::string key;
      bool isKey = true;
      while (i < static_cast<std::size_t>(got)) {
        const std::size_t len = ::strnlen(buffer.data() + i, got - i);
        std::string field(buffer.data() + i, len);
        if (isKey)
          key = field;
        else
          result.oack[key] = field;
        isKey = !isKey;
        i += len + 1;
      }
      if (result.oack.contains("blksize"))
        blockSize = std::stoul(result.oack["blksize"]);
      ack(0);
      continue;
    }
    if (opcode != 3)
      continue;
    ++result.blocksReceived;
    const std::uint16_t block = get16(buffer.data() + 2);
    if (block != static_cast<std::uint16_t>(expected & 0xffff)) {
      ack(block);  // a repeat of one already taken
      continue;
    }
    if (options.loseAckEvery > 0 && expected % options.loseAckEvery == 0 && lostFor != expected) {
      lostFor = expected;  // take nothing: the server must send it again
      continue;
    }
    const auto payload = static_cast<std::size_t>(got - 4);
    result.data.append(buffer.data() + 4, payload);
    ack(block);
    ++expected;
    if (payload < blockSize) {
      result.ok = true;
      break;
    }
  }
  ::close(fd);
  return result;
}

}  // namespace aula::test
