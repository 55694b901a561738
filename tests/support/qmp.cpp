#include "support/qmp.hpp"

#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace aula::test {

using json::Json;

Qmp::Qmp(const std::filesystem::path& socketPath) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socketPath.native().size() >= sizeof address.sun_path)
    throw std::runtime_error("The QMP socket path is too long: " + socketPath.native());
  socketPath.native().copy(address.sun_path, sizeof address.sun_path - 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0)
    throw std::system_error(errno, std::generic_category(), "socket");
  // sockaddr_un and sockaddr are the C socket API's aliasing, not ours.
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int err = errno;
    ::close(fd_);
    throw std::system_error(err, std::generic_category(),
                            "Cannot connect to QMP at " + socketPath.native());
  }
  (void)readMessage();  // the greeting
  execute("qmp_capabilities");
}

Qmp::~Qmp() {
  ::close(fd_);
}

Json Qmp::execute(const std::string& command, const Json& arguments) {
  Json message = {{"execute", command}};
  if (!arguments.empty())
    message["arguments"] = arguments;
  const std::string line = message.dump() + "\n";
  if (::send(fd_, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
    throw std::system_error(errno, std::generic_category(), "Cannot send to QMP");
  while (true) {
    Json reply = readMessage();
    if (reply.contains("event"))
      continue;
    if (reply.contains("error"))
      throw std::runtime_error(fmt::format("QMP {} failed: {}", command, reply.dump()));
    return reply.value("return", Json::object());
  }
}

void Qmp::press(std::initializer_list<std::string_view> qcodes) {
  Json keys = Json::array();
  for (auto code : qcodes)
    keys.push_back(Json{{"type", "qcode"}, {"data", std::string(code)}});
  execute("send-key", Json{{"keys", keys}, {"hold-time", 50}});
  // send-key returns at once; QEMU's PS/2 queue holds 16 bytes and drops
  // what comes on top while a slow (TCG) guest has not read it yet. One key
  // at a time, as a person types (150 ms lost keys on a busy machine).
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
}

void Qmp::type(std::string_view text) {
  static const std::string_view kShifted = "!@#$%^&*()_+:\"<>?";
  static const std::string_view kUnshifted = "1234567890-=;',./";
  for (char c : text) {
    std::string code;
    bool shift = false;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      code = std::string(1, c);
    } else if (c >= 'A' && c <= 'Z') {
      code = std::string(1, static_cast<char>(c - 'A' + 'a'));
      shift = true;
    } else if (c == ' ') {
      code = "spc";
    } else if (auto at = kShifted.find(c); at != std::string_view::npos) {
      shift = true;
      c = kUnshifted[at];
    }
    if (code.empty()) {
      switch (c) {
        case '-':
          code = "minus";
          break;
        case '=':
          code = "equal";
          break;
        case ';':
          code = "semicolon";
          break;
        case '\'':
          code = "apostrophe";
          break;
        case ',':
          code = "comma";
          break;
        case '.':
          code = "dot";
          break;
        case '/':
          code = "slash";
          break;
        default:
          if (c >= '0' && c <= '9')
            code = std::string(1, c);
          else
            throw std::runtime_error(fmt::format("Qmp::type cannot type '{}'.", c));
      }
    }
    if (shift)
      press({"shift", code});
    else
      press({code});
  }
}

Json Qmp::readMessage() {
  while (true) {
    if (auto end = buffer_.find('\n'); end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 1);
      auto parsed = json::parse(line);
      if (!parsed.ok())
        throw std::runtime_error("QMP sent something that is not JSON: " + line);
      return std::move(*parsed);
    }
    pollfd ready{.fd = fd_, .events = POLLIN};
    if (::poll(&ready, 1, 10000) != 1)
      throw std::runtime_error("QMP did not answer within 10 s.");
    char chunk[4096];
    const ssize_t got = ::recv(fd_, chunk, sizeof chunk, 0);
    if (got <= 0)
      throw std::runtime_error("QEMU closed the QMP socket.");
    buffer_.append(chunk, static_cast<std::size_t>(got));
  }
}

}  // namespace aula::test
