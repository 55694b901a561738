// SimulatedHostLink: hosts in memory, for tests and benchmarks.
#include "aula/broker/host_link.hpp"

#include <thread>

#include "aula/common/crypto.hpp"

namespace aula::broker {

Status SimulatedHostLink::check(const HostAddress& host) const {
  std::lock_guard lock(mutex_);
  if (unreachable_.contains(host.id)) {
    return makeError(Errc::kUnavailable, "The agent on host '{}' is not reachable.", host.name);
  }
  return {};
}

Result<Observed> SimulatedHostLink::startDesktop(const HostAddress& host,
                                                 const DesktopSpec& desktop) {
  AULA_TRY_STATUS(check(host));
  if (startDelay_.count() > 0)
    std::this_thread::sleep_for(startDelay_);
  std::lock_guard lock(mutex_);
  running_.insert(desktop.id);
  return Observed{.seq = seq_.next()};
}

Result<Observed> SimulatedHostLink::stopDesktop(const HostAddress& host, const DesktopSpec& desktop,
                                                bool) {
  AULA_TRY_STATUS(check(host));
  std::lock_guard lock(mutex_);
  running_.erase(desktop.id);
  return Observed{.seq = seq_.next()};
}

Status SimulatedHostLink::deleteDesktop(const HostAddress& host, const DesktopSpec& desktop) {
  AULA_TRY_STATUS(check(host));
  std::lock_guard lock(mutex_);
  running_.erase(desktop.id);
  return {};
}

Result<ConsoleTicket> SimulatedHostLink::setTicket(const HostAddress& host,
                                                   const DesktopSpec& desktop,
                                                   std::chrono::seconds validFor) {
  AULA_TRY_STATUS(check(host));
  if (!running(desktop.id)) {
    return makeError(Errc::kConflict, "The desktop '{}' is not running on host '{}'.", desktop.name,
                     host.name);
  }
  ConsoleTicket t;
  t.host = host.address.empty() ? host.name : host.address.substr(0, host.address.rfind(':'));
  t.tlsPort = 5900 + static_cast<int>(desktop.id % 1000);
  t.ticket = AULA_TRY(crypto::randomToken(18));
  t.expires = std::chrono::system_clock::now() + validFor;
  t.hostSubject = fmt::format("O=Aula,CN={}", host.name);
  return t;
}

Result<TemplateImage> SimulatedHostLink::makeTemplate(const HostAddress& host,
                                                      const DesktopSpec& desktop,
                                                      const std::string& templateDisk,
                                                      TemplateMode mode) {
  AULA_TRY_STATUS(check(host));
  std::lock_guard lock(mutex_);
  if (running_.contains(desktop.id)) {
    return makeError(Errc::kConflict, "The desktop {} is running; shut it down first.",
                     desktop.name);
  }
  made_.push_back({host.id, desktop.id, templateDisk, mode});
  TemplateImage image;
  image.sizeBytes = 64 << 20;
  if (mode == TemplateMode::kRebase)
    image.backing = fmt::format("/simulated/{}/{}", desktop.templateStorage, desktop.baseDisk);
  return image;
}

Status SimulatedHostLink::deleteBase(const HostAddress& host, const std::string& storage,
                                     const std::string& disk) {
  AULA_TRY_STATUS(check(host));
  std::lock_guard lock(mutex_);
  if (basesInUse_.contains(disk)) {
    return makeError(Errc::kConflict,
                     "The base image {} in storage '{}' cannot be deleted while 1 image uses it "
                     "(simulated); delete those first.",
                     disk, storage);
  }
  deleted_.push_back({host.id, storage, disk});
  return {};
}

std::vector<SimulatedHostLink::MadeTemplate> SimulatedHostLink::madeTemplates() const {
  std::lock_guard lock(mutex_);
  return made_;
}

std::vector<SimulatedHostLink::DeletedBase> SimulatedHostLink::deletedBases() const {
  std::lock_guard lock(mutex_);
  return deleted_;
}

void SimulatedHostLink::setBaseInUse(const std::string& disk, bool inUse) {
  std::lock_guard lock(mutex_);
  if (inUse) {
    basesInUse_.insert(disk);
  } else {
    basesInUse_.erase(disk);
  }
}

bool SimulatedHostLink::running(std::int64_t desktopId) const {
  std::lock_guard lock(mutex_);
  return running_.contains(desktopId);
}

std::size_t SimulatedHostLink::runningCount() const {
  std::lock_guard lock(mutex_);
  return running_.size();
}

void SimulatedHostLink::setReachable(std::int64_t hostId, bool reachable) {
  std::lock_guard lock(mutex_);
  if (reachable) {
    unreachable_.erase(hostId);
  } else {
    unreachable_.insert(hostId);
  }
}

}  // namespace aula::broker
