// Workstation passthrough, binding and giving back: each chosen device goes
// to vfio-pci by driver_override, unbind and drivers_probe (never new_id,
// which would also take a twin the host uses), and comes back the same way.
// Every change is written to a journal before it is made; giving back
// replays the journal backwards, so the host gets its devices back after a
// VM stop, a failure half-way, or an agent that was killed (the next start
// replays what the killed one left).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::agent {

// The journal's name in the agent's state folder.
inline constexpr const char* kPassthroughJournal = "passthrough.journal";

// A process holding a device: one of its /dev nodes open, or its memory
// (a BAR) mapped. An unbind waits for them to let go.
struct DeviceHolder {
  int pid = 0;
  std::string command;  // /proc/PID/comm
  std::string what;     // "/dev/dri/card1", "its memory (BAR) mapped"
};

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
  // Who holds the device now (DRM and sound nodes, /dev/vfio/GROUP, mapped
  // BARs), for the message when an unbind does not finish.
  virtual std::vector<DeviceHolder> holders(std::string_view address) = 0;
  // The first line of a file under /sys ("class/vtconsole/vtcon1/bind");
  // kNotFound when there is none.
  virtual Result<std::string> read(std::string_view path) = 0;
  // The names in a folder under /sys; none when it does not exist.
  virtual std::vector<std::string> list(std::string_view dir) = 0;
};

// One change to the host, as the journal keeps it.
struct BindingStep {
  // "pci": a device moved to vfio-pci; "vtconsole": a text console taken
  // off the boot GPU's framebuffer; "framebuffer": a firmware framebuffer
  // (efifb, simpledrm, vesafb) unbound from its platform driver.
  std::string kind = "pci";
  std::string address;           // PCI address, "vtcon1", or "efi-framebuffer.0"
  std::string originalDriver;    // its driver ("" for none); a console's bind value
  std::string originalOverride;  // driver_override before, usually "" (pci only)
};

class PassthroughBinder {
 public:
  // `journal` is a file in the agent's state folder. `sysfs` outlives the
  // binder: an unbind that timed out still runs in the kernel.
  PassthroughBinder(SysfsPort& sysfs, std::filesystem::path journal);

  // How long an unbind may take. The kernel's unbind waits until every
  // process holding the device lets go; past this the bind fails naming
  // them, and the device is given back once the unbind has finished.
  std::chrono::milliseconds unbindTimeout{10000};

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
  // The boot GPU's text consoles and firmware framebuffer, journal first.
  Status releaseConsole();
  // Writes the device's address to the driver's unbind, within unbindTimeout.
  Status unbind(const std::string& driver, const std::string& address);

  // Unbinds that timed out and still run, by address: true once done.
  std::map<std::string, std::shared_ptr<std::atomic<bool>>> stuck_;

  SysfsPort& sysfs_;
  std::filesystem::path journal_;
};

}  // namespace aula::agent
