// Workstation mode's state machine (see workstation.hpp).
#include "aula/agent/workstation.hpp"

#include <fstream>

#include <fmt/format.h>

#include "aula/common/file.hpp"
#include "aula/common/log.hpp"

namespace aula::agent {
namespace {

// Preflight's failures alone, each with its fix, as one message.
std::string failuresOf(const std::vector<Finding>& findings) {
  std::vector<Finding> failed;
  for (const auto& f : findings) {
    if (f.verdict == Verdict::kFail)
      failed.push_back(f);
  }
  return formatFindings(failed);
}

}  // namespace

std::string_view stateName(WorkstationState state) {
  switch (state) {
    case WorkstationState::kIdle:
      return "idle";
    case WorkstationState::kStarting:
      return "starting";
    case WorkstationState::kRunning:
      return "running";
    case WorkstationState::kStopping:
      return "stopping";
    case WorkstationState::kFailed:
      return "failed";
  }
  return "failed";
}

WorkstationService::WorkstationService(Hypervisor& hypervisor, SysfsPort& sysfs,
                                       const std::filesystem::path& journal,
                                       HostFactsReader readFacts, WorkstationGrants& grants)
    : hypervisor_(hypervisor),
      binder_(sysfs, journal),
      readFacts_(std::move(readFacts)),
      grants_(grants) {
  status_.message = "The workstation is free.";
  marker_ = journal.parent_path() / kWorkstationMarker;
}

void WorkstationService::adoptRunning() {
  std::ifstream in(marker_);
  std::string name;
  std::string user;
  if (!std::getline(in, name) || name.empty())
    return;
  std::getline(in, user);
  auto info = hypervisor_.info(name);
  {
    std::lock_guard lock(mutex_);
    domain_ = name;
  }
  if (info && info->state == "running") {
    setState(WorkstationState::kRunning, user,
             "The workstation runs (it kept running while the agent restarted).");
    return;
  }
  // It stopped while nobody listened: its devices come back now.
  setState(WorkstationState::kStopping, user, "The workstation stopped while the agent restarted.");
  giveBackDevices("The workstation stopped while the agent restarted.");
}

void WorkstationService::forgetDomain() {
  std::error_code ec;
  std::filesystem::remove(marker_, ec);
}

WorkstationService::~WorkstationService() {
  waitIdleWorker();
}

void WorkstationService::setListener(StateListener listener) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

void WorkstationService::waitIdleWorker() {
  if (worker_.joinable())
    worker_.join();
}

Result<std::vector<Finding>> WorkstationService::preflight(
    const std::vector<ChosenDevice>& chosen) const {
  auto facts = AULA_TRY(readFacts_());
  return agent::preflight(facts, chosen);
}

WorkstationStatus WorkstationService::status() const {
  std::lock_guard lock(mutex_);
  return status_;
}

void WorkstationService::setState(WorkstationState state, std::string user, std::string message) {
  StateListener listener;
  WorkstationStatus now;
  {
    std::lock_guard lock(mutex_);
    status_ = {state, std::move(user), std::move(message)};
    now = status_;
    listener = listener_;
  }
  log::info("Workstation: {}{}. {}", stateName(now.state),
            now.user.empty() ? "" : fmt::format(" for {}", now.user), now.message);
  if (listener)
    listener(now);
}

Status WorkstationService::start(std::string_view user, std::string_view session) {
  std::lock_guard starting(startMutex_);
  {
    std::lock_guard lock(mutex_);
    if (status_.state != WorkstationState::kIdle && status_.state != WorkstationState::kFailed) {
      return makeError(Errc::kConflict,
                       "The workstation is {} for {}; it takes one user at a time.",
                       stateName(status_.state), status_.user);
    }
  }
  waitIdleWorker();
  auto grant = AULA_TRY(grants_.claim(user, session));
  auto facts = AULA_TRY(readFacts_());
  const auto findings = agent::preflight(facts, grant.devices);
  if (anyFailed(findings)) {
    log::warn("Workstation: {} may use it, but preflight failed:\n{}", user, failuresOf(findings));
    releaseClaim(grant.user);
    return makeError(Errc::kConfig,
                     "Passthrough cannot work on this workstation as it is set up now; tell the "
                     "admin what preflight says:\n{}",
                     failuresOf(findings));
  }
  {
    std::lock_guard lock(mutex_);
    domain_ = grant.spec.name;
  }
  // Before any device moves: a restarted agent must know the VM is ours.
  AULA_TRY_STATUS(
      file::writeFileAtomic(marker_, grant.spec.name + "\n" + grant.user + "\n", {.mode = 0600}));
  setState(WorkstationState::kStarting, grant.user,
           "Handing the GPU and devices to the workstation.");
  worker_ = std::thread([this, grant = std::move(grant), facts = std::move(facts)]() mutable {
    bringUp(std::move(grant), facts);
  });
  return okStatus();
}

void WorkstationService::bringUp(WorkstationGrant grant, const HostFacts& facts) {
  std::vector<std::string> addresses;
  std::vector<PassedDevice> passed;
  for (const auto& chosen : grant.devices) {
    addresses.push_back(chosen.address);
    PassedDevice device{chosen.address, {}};
    for (const auto& given : grant.spec.devices) {
      if (given.address == chosen.address)
        device.romFile = given.romFile;
    }
    passed.push_back(std::move(device));
  }
  grant.spec.devices = std::move(passed);
  grant.spec.owner = grant.user;
  auto xml = renderWorkstationXml(grant.spec, facts);
  if (!xml) {
    forgetDomain();
    setState(WorkstationState::kFailed, grant.user, xml.error().message());
    releaseClaim(grant.user);
    return;
  }
  if (auto bound = binder_.bind(addresses); !bound) {
    forgetDomain();
    setState(WorkstationState::kFailed, grant.user,
             fmt::format("{} The host kept its devices.", bound.error().message()));
    releaseClaim(grant.user);
    return;
  }
  if (auto started = hypervisor_.defineAndStart(*xml); !started) {
    auto back = binder_.giveBack();
    if (back)
      forgetDomain();
    setState(WorkstationState::kFailed, grant.user,
             fmt::format("The VM did not start: {} {}", started.error().message(),
                         back ? "The devices are back with the host."
                              : fmt::format("Giving the devices back failed too: {}",
                                            back.error().message())));
    if (back)
      releaseClaim(grant.user);
    return;
  }
  setState(WorkstationState::kRunning, grant.user, "The workstation runs.");
}

Status WorkstationService::stop(bool force) {
  std::string name;
  std::string user;
  {
    std::lock_guard lock(mutex_);
    if (status_.state != WorkstationState::kRunning &&
        status_.state != WorkstationState::kStopping) {
      return makeError(Errc::kConflict, "Nothing runs on this workstation (it is {}).",
                       stateName(status_.state));
    }
    name = domain_;
    user = status_.user;
  }
  setState(WorkstationState::kStopping, user,
           force ? "Turning the workstation off." : "Asking the workstation to shut down.");
  auto asked = force ? hypervisor_.destroy(name) : hypervisor_.shutdown(name);
  if (!asked) {
    setState(WorkstationState::kRunning, user,
             fmt::format("The workstation still runs: {}", asked.error().message()));
    return asked;
  }
  return okStatus();
}

void WorkstationService::onDomainEvent(const DomainEvent& event) {
  if (event.kind != "shutdown" && event.kind != "stopped" && event.kind != "crashed")
    return;
  {
    std::lock_guard lock(mutex_);
    const bool ours = !domain_.empty() && event.name == domain_;
    const bool up =
        status_.state == WorkstationState::kRunning || status_.state == WorkstationState::kStopping;
    if (!ours || !up)
      return;
  }
  giveBackDevices(event.kind == "crashed" ? "The workstation crashed."
                                          : "The workstation has stopped.");
}

void WorkstationService::releaseClaim(const std::string& user) {
  if (auto released = grants_.release(user); !released) {
    log::warn("Workstation: could not tell the broker that {} no longer has it: {}", user,
              released.error().message());
  }
}

void WorkstationService::giveBackDevices(const std::string& why) {
  const std::string user = status().user;
  if (auto back = binder_.giveBack(); !back) {
    setState(WorkstationState::kFailed, "",
             fmt::format("{} {} The agent tries again at its next start; a host reboot gives "
                         "everything back.",
                         why, back.error().message()));
    return;
  }
  forgetDomain();
  setState(WorkstationState::kIdle, "", fmt::format("{} Its devices are back with the host.", why));
  if (!user.empty())
    releaseClaim(user);
}

}  // namespace aula::agent
