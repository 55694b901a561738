// Boot hosts: which machine (by MAC address) network-boots what, and the
// iPXE or GRUB script each one gets when it does.
#pragma once

#include <atomic>
#include <map>
#include <string>
#include <string_view>

#include "aula/broker/context.hpp"
#include "aula/broker/image_service.hpp"

namespace aula::broker {

// A PC's boot request (GET /boot/ipxe): iPXE's own settings in the query.
struct BootRequest {
  bool hasMac = false;    // false: the first request, a plain URL from DHCP
  std::string mac;        // ${netX/mac}
  std::string ip;         // ${netX/ip}
  std::string platform;   // ${platform}: pcbios or efi
  std::string buildarch;  // ${buildarch}: i386 (BIOS iPXE), x86_64, arm64
  std::string host;       // the Host header: the name the PC reached us by
};

// A request from its query (mac, ip, platform, buildarch), as iPXE and
// GRUB send it, and the host the PC reached us at.
BootRequest bootRequestFrom(const std::map<std::string, std::string>& query, std::string host);

struct BootAnswer {
  std::string script;   // always a script iPXE can run
  std::string outcome;  // for the log: "thin 20261203-... (stable)", "menu: ..."
};

// The log line of an answer to a booting PC ("Boot: MAC (IP, efi x86_64)
// from PEER: thin VERSION (channel stable)."), with the loader that asked
// when it is not iPXE.
void logBootAnswer(const BootRequest& request, const BootAnswer& answer, std::string_view peer,
                   std::string_view loader = {});

class BootHostService {
 public:
  explicit BootHostService(BrokerContext& ctx) : ctx_(ctx) {}

  Result<Json> list(const Actor& actor);
  Result<Json> put(const Actor& actor, std::string_view mac, const Json& body);
  Status remove(const Actor& actor, std::string_view mac);

  // The script for a booting PC. Records the MAC (first and last seen; a
  // new one as kind "unknown" for an admin to adopt) and answers with its
  // image, or the menu with the reason when there is none, when the
  // request is malformed, or when the database is away. Never fails.
  BootAnswer ipxe(const BootRequest& request);
  // The same choice as a GRUB script, for UEFI PCs with Secure Boot on that
  // boot Debian's signed shim and GRUB (fetched over TFTP: the signed GRUB
  // has no HTTP). `request.host` is the broker's address as the PC reached it.
  BootAnswer grub(const BootRequest& request);

  // The port HTTPS is served on, for the broker URL PCs are given when
  // boot.broker_url is not set (known only once the server listens).
  void setHttpsPort(int port) { httpsPort_ = port; }

 private:
  // What a request boots, whatever the loader that asked.
  struct Plan {
    enum Kind { kAskAgain, kMenu, kLocal, kImage } kind = kMenu;
    std::string reason;  // kMenu: the sentence the menu shows
    BootImage image;     // kImage, with the kernel's command line and the title
    std::string cmdline;
    std::string title;
    std::string outcome;  // for the log
  };
  Plan plan(const BootRequest& request);
  std::string brokerUrl(const BootRequest& request) const;

  BrokerContext& ctx_;
  std::atomic<int> httpsPort_{0};
};

}  // namespace aula::broker
