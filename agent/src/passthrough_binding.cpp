// Binding devices to vfio-pci and giving them back (see passthrough_binding.hpp).
#include "aula/agent/passthrough_binding.hpp"

#include <algorithm>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "aula/common/file.hpp"
#include "aula/common/json.hpp"

namespace aula::agent {

namespace {

constexpr std::string_view kVfio = "vfio-pci";

std::string devicePath(std::string_view address, std::string_view file) {
  return fmt::format("bus/pci/devices/{}/{}", address, file);
}

// Stands for an agent killed between two writes (tests only).
constexpr std::string_view kKilled = "Stopped half-way, as a killed agent would.";

}  // namespace

PassthroughBinder::PassthroughBinder(SysfsPort& sysfs, std::filesystem::path journal)
    : sysfs_(sysfs), journal_(std::move(journal)) {}

Result<std::vector<BindingStep>> PassthroughBinder::pending() const {
  std::vector<BindingStep> steps;
  std::ifstream in(journal_);
  std::string line;
  while (std::getline(in, line)) {
    auto parsed = json::parse(line);
    if (!parsed || !parsed->is_object())
      continue;  // a line cut short by a crash: that change was not made
    steps.push_back({parsed->value("kind", "pci"), parsed->value("address", ""),
                     parsed->value("driver", ""), parsed->value("override", "")});
  }
  return steps;
}

Status PassthroughBinder::record(const BindingStep& step) {
  auto steps = AULA_TRY(pending());
  steps.push_back(step);
  std::string text;
  for (const auto& s : steps) {
    text += json::Json{{"kind", s.kind},
                       {"address", s.address},
                       {"driver", s.originalDriver},
                       {"override", s.originalOverride}}
                .dump() +
            "\n";
  }
  return file::writeFileAtomic(journal_, text, {.mode = 0600});
}

Status PassthroughBinder::bindOne(const std::string& address) {
  auto step = [this](std::string_view path, std::string_view value) -> Status {
    AULA_TRY_STATUS(sysfs_.write(path, value));
    if (afterEachWrite && !afterEachWrite())
      return Error(Errc::kInternal, std::string(kKilled));
    return okStatus();
  };
  const std::string driver = AULA_TRY(sysfs_.driverOf(address));
  if (driver == kVfio)
    return okStatus();  // already there (bound by hand, or twice in the list)
  const std::string override = AULA_TRY(sysfs_.overrideOf(address));
  // The firmware's console GPU: its text consoles and framebuffer let go
  // first, or the framebuffer keeps a BAR that vfio-pci cannot reserve.
  if (sysfs_.read(devicePath(address, "boot_vga")).valueOr("0") == "1")
    AULA_TRY_STATUS(releaseConsole());
  // The journal first: whatever happens next, the host can be put back.
  AULA_TRY_STATUS(record({"pci", address, driver, override}));
  AULA_TRY_STATUS(step(devicePath(address, "driver_override"), kVfio));
  if (!driver.empty()) {
    AULA_TRY_STATUS(unbind(driver, address));
    if (afterEachWrite && !afterEachWrite())
      return Error(Errc::kInternal, std::string(kKilled));
  }
  AULA_TRY_STATUS(step("bus/pci/drivers_probe", address));
  const std::string now = AULA_TRY(sysfs_.driverOf(address));
  if (now != kVfio) {
    return makeError(Errc::kUnavailable,
                     "{} did not go to vfio-pci (its driver is now '{}'); is the vfio-pci "
                     "module loaded?",
                     address, now.empty() ? "none" : now);
  }
  return okStatus();
}

Status PassthroughBinder::releaseConsole() {
  auto made = [this](std::string_view path, std::string_view value) -> Status {
    AULA_TRY_STATUS(sysfs_.write(path, value));
    if (afterEachWrite && !afterEachWrite())
      return Error(Errc::kInternal, std::string(kKilled));
    return okStatus();
  };
  for (const auto& console : sysfs_.list("class/vtconsole")) {
    const std::string dir = "class/vtconsole/" + console;
    const std::string name = sysfs_.read(dir + "/name").valueOr("");
    if (name.find("frame buffer") == std::string::npos ||
        sysfs_.read(dir + "/bind").valueOr("") != "1")
      continue;
    AULA_TRY_STATUS(record({"vtconsole", console, "1", ""}));
    AULA_TRY_STATUS(made(dir + "/bind", "0"));
  }
  for (const std::string driver : {"efi-framebuffer", "simple-framebuffer", "vesa-framebuffer"}) {
    for (const auto& device : sysfs_.list("bus/platform/drivers/" + driver)) {
      if (!device.starts_with(driver + "."))
        continue;  // bind, unbind, uevent, module
      AULA_TRY_STATUS(record({"framebuffer", device, driver, ""}));
      AULA_TRY_STATUS(made(fmt::format("bus/platform/drivers/{}/unbind", driver), device));
    }
  }
  return okStatus();
}

Status PassthroughBinder::bind(const std::vector<std::string>& addresses) {
  for (const auto& address : addresses) {
    auto bound = bindOne(address);
    if (!bound) {
      if (bound.error().message() == kKilled)
        return bound;  // "killed": nothing more runs, the journal stays
      auto back = giveBack();
      if (!back) {
        return makeError(bound.error().code(), "{} Giving the devices back failed too: {}",
                         bound.error().message(), back.error().message());
      }
      return bound;
    }
  }
  return okStatus();
}

Status PassthroughBinder::unbind(const std::string& driver, const std::string& address) {
  auto result = std::make_shared<std::promise<Status>>();
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto finished = result->get_future();
  // On a thread of its own: the write blocks in the kernel for as long as
  // the device is held, and cannot be interrupted.
  std::thread([port = &sysfs_, path = fmt::format("bus/pci/drivers/{}/unbind", driver), address,
               result, done] {
    result->set_value(port->write(path, address));
    done->store(true);
  }).detach();
  if (finished.wait_for(unbindTimeout) == std::future_status::ready)
    return finished.get();
  stuck_[address] = done;
  std::string held;
  for (const auto& h : sysfs_.holders(address))
    held += fmt::format("{}{} (pid {}) on {}", held.empty() ? "" : ", ", h.command, h.pid, h.what);
  return makeError(Errc::kTimeout,
                   "Unbinding {} from {} did not finish within {} s; {}. Close {} (a display "
                   "server or sound server usually), and the device goes back to the host "
                   "once the unbind has finished.",
                   address, driver, std::chrono::duration<double>(unbindTimeout).count(),
                   held.empty() ? "no process has its nodes open, so the driver itself is waiting"
                                : "it is held by " + held,
                   held.empty() ? "what uses it" : "them");
}

Status PassthroughBinder::restore(const BindingStep& s) {
  if (s.kind == "vtconsole") {
    const std::string bind = fmt::format("class/vtconsole/{}/bind", s.address);
    if (sysfs_.read(bind).valueOr("") == s.originalDriver)
      return okStatus();
    return sysfs_.write(bind, s.originalDriver);
  }
  if (s.kind == "framebuffer") {
    const auto bound = sysfs_.list("bus/platform/drivers/" + s.originalDriver);
    if (std::find(bound.begin(), bound.end(), s.address) != bound.end())
      return okStatus();
    return sysfs_.write(fmt::format("bus/platform/drivers/{}/bind", s.originalDriver), s.address);
  }
  if (auto it = stuck_.find(s.address); it != stuck_.end()) {
    if (!it->second->load()) {
      return makeError(Errc::kUnavailable,
                       "{} is still being unbound; the journal keeps it until then", s.address);
    }
    stuck_.erase(it);
  }
  const std::string driver = AULA_TRY(sysfs_.driverOf(s.address));
  const std::string override = AULA_TRY(sysfs_.overrideOf(s.address));
  // A step recorded but never made (the agent stopped right after the
  // journal, or the first write failed) needs nothing.
  if (driver == s.originalDriver && override == s.originalOverride)
    return okStatus();
  // driver_override back first, so the probe below picks the old driver.
  AULA_TRY_STATUS(sysfs_.write(devicePath(s.address, "driver_override"),
                               s.originalOverride.empty() ? "\n" : s.originalOverride));
  if (!driver.empty() && driver != s.originalDriver)
    AULA_TRY_STATUS(unbind(driver, s.address));
  if (!s.originalDriver.empty() && driver != s.originalDriver)
    AULA_TRY_STATUS(sysfs_.write("bus/pci/drivers_probe", s.address));
  const std::string now = AULA_TRY(sysfs_.driverOf(s.address));
  if (now != s.originalDriver) {
    return makeError(Errc::kUnavailable, "{} did not go back to {} (its driver is now '{}')",
                     s.address, s.originalDriver.empty() ? "no driver" : s.originalDriver,
                     now.empty() ? "none" : now);
  }
  return okStatus();
}

Status PassthroughBinder::giveBack() {
  auto steps = AULA_TRY(pending());
  std::vector<std::string> failures;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (auto restored = restore(*it); !restored)
      failures.push_back(restored.error().message());
  }
  if (!failures.empty()) {
    std::string text;
    for (const auto& f : failures)
      text += (text.empty() ? "" : "; ") + f;
    // The journal stays, so the next start tries again.
    return makeError(Errc::kUnavailable, "Not every device came back to the host: {}.", text);
  }
  std::error_code ec;
  std::filesystem::remove(journal_, ec);
  return okStatus();
}

}  // namespace aula::agent
