// What the broker asks of a host's agent: the broker's side of the link.
//
// The broker's policy code calls this interface; the agent issue provides
// the adapter that speaks mutual TLS to aula-agent. SimulatedHostLink stands
// in for hosts that are not there (tests, benchmarks) and is the same code
// path above this one thin seam.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/agent_protocol.hpp"
#include "aula/common/result.hpp"

namespace aula::broker {

// The CN of the broker's client certificate (the agent link presents it);
// no host may take this name, so it lives with the interface the policy uses.
inline constexpr const char* kBrokerClientName = "aula-broker";

struct HostAddress {
  std::int64_t id = 0;
  std::string name;
  std::string address;         // the agent's host: an IP address or DNS name
  std::int64_t agentPort = 0;  // the agent's port
  std::string spiceSubject;    // the subject of the host's SPICE certificate
};

struct DesktopSpec {
  std::int64_t id = 0;
  std::string name;   // libvirt domain name: "aula-<id>"
  std::string owner;  // the owner's login name (kept in the domain's metadata)
  std::int64_t vcpus = 1;
  std::int64_t memoryMb = 1024;
  std::string video = "qxl";
  std::string templateStorage;  // named storage of the base disk
  std::string baseDisk;         // path of the template's base, relative to that storage
  std::string diskPath;         // the desktop's overlay, relative to the "desktops" storage
  bool persistent = true;
};

// How a template's image is made from a desktop's disk: the protocol's.
using proto::TemplateMode;
using proto::templateModeName;

// What an agent answers to a start or a stop: the number it gave what it saw
// when the command was done (0 when it gives none), so that the broker can
// tell older observations from newer ones (see desktop_state.hpp).
struct Observed {
  std::int64_t seq = 0;
  bool forced = false;  // a shutdown that ran out of time and was powered off
};

// The named storage where hosts keep the images of templates made from desktops.
inline constexpr const char* kTemplateStorage = "templates";

// A template's image made on a host.
struct TemplateImage {
  std::int64_t sizeBytes = 0;
  // Rebase: the image's base, an absolute path on the host; none for flatten.
  std::optional<std::string> backing;
};

struct ConsoleTicket {
  std::string host;  // where the greeter connects
  int tlsPort = 0;
  int plainPort = 0;  // tests only
  std::string ticket;
  std::chrono::system_clock::time_point expires;
  std::string hostSubject;
};

class HostLink {
 public:
  virtual ~HostLink() = default;
  // Creates the desktop's disk if needed and starts it; returns once running.
  virtual Result<Observed> startDesktop(const HostAddress& host, const DesktopSpec& desktop) = 0;
  // force: power off instead of a clean shutdown.
  virtual Result<Observed> stopDesktop(const HostAddress& host, const DesktopSpec& desktop,
                                       bool force) = 0;
  // Removes the desktop's disk (and domain) from the host.
  virtual Status deleteDesktop(const HostAddress& host, const DesktopSpec& desktop) = 0;
  virtual Result<ConsoleTicket> setTicket(const HostAddress& host, const DesktopSpec& desktop,
                                          std::chrono::seconds validFor) = 0;
  // Makes the image `templateDisk` (relative to kTemplateStorage) from the
  // shut-off desktop's disk; returns once it is whole. kConflict while the
  // desktop runs, kAlreadyExists when the file exists.
  virtual Result<TemplateImage> makeTemplate(const HostAddress& host, const DesktopSpec& desktop,
                                             const std::string& templateDisk,
                                             TemplateMode mode) = 0;
  // Deletes a template's base image; kConflict (naming them) while images on
  // the host use it, kNotFound when there is none.
  virtual Status deleteBase(const HostAddress& host, const std::string& storage,
                            const std::string& disk) = 0;
};

// Hosts that exist only in memory: starts succeed after `startDelay`.
class SimulatedHostLink final : public HostLink {
 public:
  explicit SimulatedHostLink(std::chrono::milliseconds startDelay = std::chrono::milliseconds(0))
      : startDelay_(startDelay) {}

  Result<Observed> startDesktop(const HostAddress& host, const DesktopSpec& desktop) override;
  Result<Observed> stopDesktop(const HostAddress& host, const DesktopSpec& desktop,
                               bool force) override;
  Status deleteDesktop(const HostAddress& host, const DesktopSpec& desktop) override;
  Result<ConsoleTicket> setTicket(const HostAddress& host, const DesktopSpec& desktop,
                                  std::chrono::seconds validFor) override;
  Result<TemplateImage> makeTemplate(const HostAddress& host, const DesktopSpec& desktop,
                                     const std::string& templateDisk, TemplateMode mode) override;
  Status deleteBase(const HostAddress& host, const std::string& storage,
                    const std::string& disk) override;

  // What makeTemplate() and deleteBase() were asked to do, in order.
  struct MadeTemplate {
    std::int64_t hostId = 0;
    std::int64_t desktopId = 0;
    std::string disk;
    TemplateMode mode = TemplateMode::kFlatten;
  };
  struct DeletedBase {
    std::int64_t hostId = 0;
    std::string storage;
    std::string disk;
  };
  std::vector<MadeTemplate> madeTemplates() const;
  std::vector<DeletedBase> deletedBases() const;
  // Makes deleteBase() of `disk` refuse, as an agent does while images use it.
  void setBaseInUse(const std::string& disk, bool inUse);

  bool running(std::int64_t desktopId) const;
  std::size_t runningCount() const;
  // Makes every call to this host fail as if its agent were unreachable.
  void setReachable(std::int64_t hostId, bool reachable);

 private:
  Status check(const HostAddress& host) const;
  std::chrono::milliseconds startDelay_;
  mutable std::mutex mutex_;
  std::set<std::int64_t> running_;
  std::set<std::int64_t> unreachable_;
  std::vector<MadeTemplate> made_;
  std::vector<DeletedBase> deleted_;
  std::set<std::string> basesInUse_;
  proto::ObservationClock seq_;  // numbers answers as an agent does
};

}  // namespace aula::broker
