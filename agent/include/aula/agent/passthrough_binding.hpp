// Workstation passthrough, binding and giving back: each chosen device goes
// to vfio-pci by driver_override, unbind and drivers_probe (never new_id,
// which would also take a twin the host uses), and comes back the same way.
// Every change is written to a journal before it is made; giving back
// replays the journal backwards, so the host gets its devices back after a
// VM stop, a failure half-way, or an agent that was killed (the next start
// replays what the killed one left).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::agent {

// The journal's name in the agent's state folder.
inline constexpr const char* kPassthroughJournal = "passthrough.journal";

// The sysfs files binding uses. The real adapter (agent/sysfs/) writes
// under a root; a test's acts like the kernel on a fixture tree.
class SysfsPort {
 public:
  virtual ~SysfsPort() = default;
  // The device's bound driver, "" when none.
  virtual Result<std::string> driverOf(std::string_view address) = 0;
  virtual Result<std::string> overrideOf(std::string_view address) = 0;
  // Writes `value` to a file under /sys, like "bus/pci/drivers_probe".
  virtual Status write(std::string_view path, std::string_view value) = 0;
};

// One change to the host, as the journal keeps it.
struct BindingStep {
  std::string address;
  std::string originalDriver;    // "" when the device had none
  std::string originalOverride;  // driver_override before, usually ""
};

class PassthroughBinder {
 public:
  // `journal` is a file in the agent's state folder.
  PassthroughBinder(SysfsPort& sysfs, std::filesystem::path journal);

  // Binds each device to vfio-pci in order. On a failure the devices bound
  // so far are given back before the error returns.
  Status bind(const std::vector<std::string>& addresses);
  // Gives back everything the journal holds, newest first, and empties it.
  // Each device goes back to its driver; one that will not is named in the
  // error, and the rest still go back.
  Status giveBack();
  // What the journal holds (after a crash: what the last agent left bound).
  Result<std::vector<BindingStep>> pending() const;

  // Tests: called after each sysfs write of bind(); returning false stops
  // there as if the agent were killed (the journal stays as it is).
  std::function<bool()> afterEachWrite;

 private:
  Status bindOne(const std::string& address);
  Status record(const BindingStep& step);
  Status restore(const BindingStep& step);

  SysfsPort& sysfs_;
  std::filesystem::path journal_;
};

}  // namespace aula::agent
