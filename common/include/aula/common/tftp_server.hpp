// A read-only TFTP server (RFC 1350, with the blksize, tsize and timeout
// options of RFCs 2347-2349), for firmware and boot loaders that can fetch
// nothing else: Debian's signed GRUB reads files only over TFTP. Each
// transfer runs on its own socket and thread, like the RFC asks; a handler
// says what each requested name is.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "aula/common/result.hpp"

namespace aula::tftp {

// A read request as the server received it.
struct Request {
  std::string name;       // the file name, as sent
  std::string peerHost;   // the client's address
  std::string localHost;  // this server's address as the client reached it
};

// What a name is: a file on disk (`path` set), or bytes made for it.
struct File {
  std::filesystem::path path;
  std::string bytes;
};

// kNotFound and kPermissionDenied go back as TFTP's "file not found" and
// "access violation", any other error as "not defined"; each with the
// error's message.
using Handler = std::function<Result<File>(const Request&)>;

struct ServerOptions {
  std::string listen;  // "ADDR:PORT": UDP; port 0 takes a free one
  int maxTransfers = 256;
  // How long a packet waits for its acknowledgement before it is sent again
  // (a client's timeout option overrides it), and how often.
  std::chrono::milliseconds retransmit{1000};
  int maxRetries = 5;
  // The largest block a client may ask for: a whole block then fits one
  // 1500-byte Ethernet frame.
  std::size_t maxBlockSize = 1468;
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Ends the listener and every transfer; idempotent.
  void stop();
  std::string address() const;  // "ADDR:PORT" as bound
  int port() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aula::tftp
