// A TFTP client for tests: fetches one file the way a PC's firmware or GRUB
// does (RFC 1350 with the blksize and tsize options), and can misbehave on
// purpose (lose acknowledgements) to test the server's retransmission.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace aula::test {

struct TftpGetOptions {
  std::optional<std::size_t> blockSize;  // asks for blksize
  bool askSize = false;                  // asks for tsize (0)
  std::string mode = "octet";
  // Leaves the first acknowledgement of every n-th data block unsent, so the
  // server must send that block again; 0: none.
  int loseAckEvery = 0;
  int timeoutMs = 3000;  // the whole transfer's
};

struct TftpResult {
  bool ok = false;
  std::string data;
  int errorCode = -1;                       // the server's ERROR code when !ok, -1 for a timeout
  std::string errorText;                    // its message
  std::map<std::string, std::string> oack;  // options the server acknowledged
  std::uint64_t blocksReceived = 0;         // data packets, repeats included
};

// Reads `name` from the server at `host`:`port` (IPv4).
TftpResult tftpGet(const std::string& host, int port, const std::string& name,
                   const TftpGetOptions& options = {});

}  // namespace aula::test
