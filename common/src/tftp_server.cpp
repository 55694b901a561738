// The read-only TFTP server (see tftp_server.hpp).
#include "aula/common/tftp_server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aula/common/file.hpp"
#include "aula/common/log.hpp"

#include "socket_address.hpp"

namespace aula::tftp {

namespace {

using file::UniqueFd;
using Clock = std::chrono::steady_clock;

enum Opcode : std::uint16_t { kRrq = 1, kWrq = 2, kData = 3, kAck = 4, kError = 5, kOack = 6 };
enum ErrorCode : std::uint16_t {
  kNotDefined = 0,
  kFileNotFound = 1,
  kAccessViolation = 2,
  kIllegalOperation = 4,
};

// RFC 1350's largest packet is 516 bytes; options and error texts stay far
// below this.
constexpr std::size_t kPacketMax = 2048;

void put16(std::string& out, std::uint16_t value) {
  out.push_back(static_cast<char>(value >> 8));
  out.push_back(static_cast<char>(value & 0xff));
}

std::uint16_t get16(const char* p) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(p[0]) << 8) |
                                    static_cast<unsigned char>(p[1]));
}

std::string errorPacket(ErrorCode code, std::string_view message) {
  std::string out;
  put16(out, kError);
  put16(out, code);
  out += message.substr(0, 400);
  out.push_back('\0');
  return out;
}

std::string lower(std::string text) {
  std::ranges::transform(text, text.begin(),
                         [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::optional<std::uint64_t> number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    return std::nullopt;
  return value;
}

struct ReadRequest {
  std::string name;
  std::string mode;
  std::vector<std::pair<std::string, std::string>> options;  // names in lower case
};

// An RRQ after its opcode: name, mode, then option/value pairs, each ended
// by a NUL.
std::optional<ReadRequest> parseRequest(const char* data, std::size_t size) {
  std::vector<std::string> fields;
  std::size_t i = 2;
  while (i < size) {
    const void* nul = std::memchr(data + i, 0, size - i);
    if (nul == nullptr)
      return std::nullopt;
    const auto end = static_cast<std::size_t>(static_cast<const char*>(nul) - data);
    fields.emplace_back(data + i, end - i);
    i = end + 1;
  }
  if (fields.size() < 2 || fields.size() % 2 != 0 || fields[0].empty())
    return std::nullopt;
  ReadRequest request{.name = fields[0], .mode = lower(fields[1]), .options = {}};
  for (std::size_t k = 2; k + 1 < fields.size(); k += 2)
    request.options.emplace_back(lower(fields[k]), fields[k + 1]);
  return request;
}

std::string errnoText(int error) {
  return std::error_code(error, std::generic_category()).message();
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  Handler handler;
  UniqueFd listener;
  UniqueFd wake;  // an eventfd that ends the listener's poll
  net::SocketAddress bound;
  std::string address;
  int port = 0;
  std::thread loop;
  std::atomic<bool> stopping{false};
  std::once_flag stopOnce;

  struct Transfer {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::mutex mutex;  // guards transfers
  std::list<Transfer> transfers;

  Status listen();
  void listenLoop();
  void reap();
  void run(const sockaddr_storage& peer, socklen_t peerLength, const ReadRequest& request);
  void stop();
};

Status Server::Impl::listen() {
  auto l = AULA_TRY(net::bindListener(options.listen, SOCK_DGRAM));
  listener = std::move(l.fd);
  bound = l.bound;
  port = l.port;
  address = std::move(l.address);
  wake = AULA_TRY(net::wakeFd());
  return okStatus();
}

void Server::Impl::reap() {
  std::lock_guard lock(mutex);
  for (auto it = transfers.begin(); it != transfers.end();) {
    if (it->done) {
      it->thread.join();
      it = transfers.erase(it);
    } else {
      ++it;
    }
  }
}

void Server::Impl::listenLoop() {
  std::array<char, kPacketMax> buffer{};
  while (!stopping) {
    std::array<pollfd, 2> fds{pollfd{listener.get(), POLLIN, 0}, pollfd{wake.get(), POLLIN, 0}};
    const int ready = ::poll(fds.data(), fds.size(), 1000);
    if (stopping)
      break;
    reap();
    if (ready <= 0 || (fds[0].revents & POLLIN) == 0)
      continue;
    sockaddr_storage peer{};
    socklen_t peerLength = sizeof(peer);
    const ssize_t got = ::recvfrom(listener.get(), buffer.data(), buffer.size(), 0,
                                   reinterpret_cast<sockaddr*>(&peer), &peerLength);
    if (got < 4)
      continue;
    auto answer = [&](ErrorCode code, std::string_view message) {
      const std::string packet = errorPacket(code, message);
      (void)::sendto(listener.get(), packet.data(), packet.size(), MSG_NOSIGNAL,
                     reinterpret_cast<const sockaddr*>(&peer), peerLength);
    };
    const std::uint16_t opcode = get16(buffer.data());
    if (opcode == kWrq) {
      answer(kAccessViolation, "This server only sends files; it takes none.");
      continue;
    }
    if (opcode != kRrq) {
      answer(kIllegalOperation, "Start with a read request (RRQ).");
      continue;
    }
    auto request = parseRequest(buffer.data(), static_cast<std::size_t>(got));
    if (!request) {
      answer(kIllegalOperation, "The read request is malformed.");
      continue;
    }
    std::lock_guard lock(mutex);
    if (std::cmp_greater_equal(transfers.size(), options.maxTransfers)) {
      answer(kNotDefined, "The server is busy; try again in a moment.");
      continue;
    }
    Transfer& transfer = transfers.emplace_back();
    transfer.thread = std::thread([this, &transfer, peer, peerLength, r = std::move(*request)] {
      run(peer, peerLength, r);
      transfer.done = true;
    });
  }
}

void Server::Impl::run(const sockaddr_storage& peer, socklen_t peerLength,
                       const ReadRequest& request) {
  const std::string peerText = net::addressText(peer);
  // Its own socket on the listener's address (RFC 1350's transfer ID), so
  // the answer comes from the address the client asked.
  net::SocketAddress local = bound;
  if (local.storage.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&local.storage)->sin_port = 0;
  else
    reinterpret_cast<sockaddr_in6*>(&local.storage)->sin6_port = 0;
  UniqueFd fd(::socket(local.storage.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0 ||
      ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&local.storage), local.length) != 0 ||
      ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&peer), peerLength) != 0) {
    log::warn("TFTP: no socket for {}'s request for '{}': {}.", peerText, request.name,
              errnoText(errno));
    return;
  }
  sockaddr_storage ours{};
  socklen_t oursLength = sizeof(ours);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ours), &oursLength);
  auto send = [&fd](const std::string& packet) {
    (void)::send(fd.get(), packet.data(), packet.size(), MSG_NOSIGNAL);
  };

  if (request.mode != "octet" && request.mode != "netascii") {
    send(errorPacket(kIllegalOperation, fmt::format("The mode '{}' is not served; ask for octet.",
                                                    request.mode.substr(0, 20))));
    return;
  }
  auto file = handler(Request{
      .name = request.name, .peerHost = net::hostText(peer), .localHost = net::hostText(ours)});
  if (!file) {
    const auto code = file.error().code() == Errc::kNotFound           ? kFileNotFound
                      : file.error().code() == Errc::kPermissionDenied ? kAccessViolation
                                                                       : kNotDefined;
    send(errorPacket(code, file.error().message()));
    return;
  }
  UniqueFd in;
  std::uint64_t size = file->bytes.size();
  if (!file->path.empty()) {
    in = UniqueFd(::open(file->path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (in.get() < 0 || ::fstat(in.get(), &st) != 0) {
      log::warn("TFTP: cannot read {} for {}: {}.", file->path.string(), peerText,
                errnoText(errno));
      send(errorPacket(kFileNotFound, "The file cannot be read on the server."));
      return;
    }
    size = static_cast<std::uint64_t>(st.st_size);
  }

  // Options (RFC 2347): those not known are left out of the answer.
  std::size_t blockSize = 512;
  auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options.retransmit);
  std::string oack;
  put16(oack, kOack);
  auto acknowledge = [&oack](std::string_view name, std::string_view value) {
    oack += name;
    oack.push_back('\0');
    oack += value;
    oack.push_back('\0');
  };
  for (const auto& [name, value] : request.options) {
    const auto n = number(value);
    if (name == "blksize" && n && *n >= 8 && *n <= 65464) {
      blockSize = std::min<std::size_t>(*n, options.maxBlockSize);
      acknowledge(name, std::to_string(blockSize));
    } else if (name == "tsize") {
      acknowledge(name, std::to_string(size));
    } else if (name == "timeout" && n && *n >= 1 && *n <= 255) {
      timeout = std::chrono::seconds(*n);
      acknowledge(name, value);
    }
  }

  // Sends `packet` until the peer acknowledges block `expect`. An older
  // acknowledgement is a duplicate and sends nothing (the Sorcerer's
  // Apprentice bug of RFC 1350).
  std::array<char, kPacketMax> reply{};
  auto exchange = [&](const std::string& packet, std::uint16_t expect) {
    for (int attempt = 0; attempt <= options.maxRetries; ++attempt) {
      send(packet);
      const auto deadline = Clock::now() + timeout;
      while (!stopping) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
          break;
        pollfd p{fd.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 200))) <= 0)
          continue;
        const ssize_t got = ::recv(fd.get(), reply.data(), reply.size(), 0);
        if (got < 0 && errno == ECONNREFUSED)
          return false;  // the client's port is closed: it gave up
        if (got < 4)
          continue;
        const std::uint16_t opcode = get16(reply.data());
        if (opcode == kError)
          return false;
        if (opcode == kAck && get16(reply.data() + 2) == expect)
          return true;
      }
      if (stopping)
        return false;
    }
    log::info("TFTP: {} stopped answering while it was sent '{}'.", peerText, request.name);
    return false;
  };

  if (oack.size() > 2 && !exchange(oack, 0))
    return;
  std::string packet;
  std::uint64_t offset = 0;
  for (std::uint64_t block = 1;; ++block) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(blockSize, size - offset));
    packet.clear();
    put16(packet, kData);
    put16(packet, static_cast<std::uint16_t>(block & 0xffff));  // wraps to 0, as clients expect
    if (in.get() >= 0) {
      const std::size_t header = packet.size();
      packet.resize(header + n);
      std::size_t have = 0;
      while (have < n) {
        const ssize_t got = ::pread(in.get(), packet.data() + header + have, n - have,
                                    static_cast<off_t>(offset + have));
        if (got <= 0) {
          log::warn("TFTP: reading {} for {} failed.", file->path.string(), peerText);
          send(errorPacket(kNotDefined, "The file could not be read on the server."));
          return;
        }
        have += static_cast<std::size_t>(got);
      }
    } else {
      packet.append(file->bytes, static_cast<std::size_t>(offset), n);
    }
    if (!exchange(packet, static_cast<std::uint16_t>(block & 0xffff)))
      return;
    offset += n;
    if (n < blockSize)
      return;  // a short block, even an empty one, ends the file
  }
}

void Server::Impl::stop() {
  std::call_once(stopOnce, [this] {
    stopping = true;
    if (wake.get() >= 0) {
      const std::uint64_t one = 1;
      (void)::write(wake.get(), &one, sizeof(one));
    }
    if (loop.joinable())
      loop.join();
    std::lock_guard lock(mutex);
    for (auto& transfer : transfers)
      transfer.thread.join();
    transfers.clear();
  });
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Handler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  AULA_TRY_STATUS(impl->listen());
  impl->loop = std::thread([raw = impl.get()] { raw->listenLoop(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  stop();
}

void Server::stop() {
  impl_->stop();
}

std::string Server::address() const {
  return impl_->address;
}

int Server::port() const {
  return impl_->port;
}

}  // namespace aula::tftp
