// Starts or borrows the system libvirt daemon for tests (see libvirtd_fixture.hpp).
#include "support/libvirtd_fixture.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include "aula/common/process.hpp"

namespace aula::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool onPath(const std::string& program) {
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    if (::access((fs::path(dir) / program).c_str(), X_OK) == 0) {
      return true;
    }
  }
  return false;
}

bool runQuietly(std::vector<std::string> argv, std::chrono::milliseconds timeout = 30s) {
  process::SystemRunner runner;
  auto outcome = runner.run(process::Command{.argv = std::move(argv), .timeout = timeout});
  return outcome.ok() && outcome->succeeded();
}

bool daemonAnswers() {
  return runQuietly({"virsh", "-c", Libvirtd::kUri, "version"}, 20s);
}

bool processRunning(const std::string& name) {
  return runQuietly({"pgrep", "-x", name}, 5s);
}

void stopByPidfile(const std::vector<fs::path>& pidfiles) {
  for (const auto& pidfile : pidfiles) {
    std::ifstream in(pidfile);
    pid_t pid = 0;
    if (!(in >> pid) || pid <= 1) {
      continue;
    }
    if (::kill(pid, SIGTERM) != 0) {
      return;
    }
    for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) {
      std::this_thread::sleep_for(100ms);
    }
    return;
  }
}

// PID 1 on these machines reaps no orphans. libvirt starts QEMU with
// -daemonize, so QEMU's processes end up as PID 1's children, and when one
// exits it stays a zombie: libvirt's virProcessKillPainfully then sees it
// "alive" and waits its whole timeout, which made every define (each one
// re-probes QEMU's capabilities) take about 100 s. So the daemons run below
// this small reaper: a detached Python process, made a child subreaper
// (prctl PR_SET_CHILD_SUBREAPER = 36), that starts each daemon with -d and
// then reaps every orphan until the daemons are gone.
constexpr const char* kReaper = R"(
import ctypes, os, sys
if os.fork() > 0:
    os._exit(0)
os.setsid()
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        os.execvp(name, [name, '-d'])
    os.waitpid(pid, 0)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
)";

std::string randomSuffix() {
  std::random_device device;
  return fmt::format("{:08x}", device());
}

}  // namespace

bool Libvirtd::available(std::string* why) {
  if (::geteuid() != 0) {
    *why = "qemu:///system needs root, and the tests do not run as root.";
    return false;
  }
  for (const char* program :
       {"libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img", "python3"}) {
    if (!onPath(program)) {
      *why = fmt::format(
          "{} is not installed (packages libvirt-daemon-system, libvirt-clients, "
          "qemu-system-x86, qemu-utils).",
          program);
      return false;
    }
  }
  return true;
}

Libvirtd::Libvirtd() {
  if (!daemonAnswers()) {
    std::vector<std::string> argv = {"python3", "-c", kReaper};
    if (!processRunning("virtlogd")) {
      argv.emplace_back("virtlogd");
      startedVirtlogd_ = true;
    }
    if (!processRunning("libvirtd")) {
      argv.emplace_back("libvirtd");
      startedLibvirtd_ = true;
    }
    if (!runQuietly(argv)) {
      throw std::runtime_error("Cannot start virtlogd and libvirtd under the reaper.");
    }
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!daemonAnswers()) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("libvirtd did not answer on qemu:///system within 60 s.");
      }
      std::this_thread::sleep_for(500ms);
    }
  }

  std::string suffix = randomSuffix();
  imageDir_ = fs::path("/var/lib/aula-test") / suffix;
  fs::create_directories(imageDir_);
  fs::permissions(imageDir_.parent_path(), fs::perms::owner_all | fs::perms::group_read |
                                               fs::perms::group_exec | fs::perms::others_read |
                                               fs::perms::others_exec);
  fs::permissions(imageDir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                 fs::perms::others_read | fs::perms::others_exec);

  // An isolated bridge without addresses: no dnsmasq (not installed here),
  // no firewall rules. Bridge names are at most 15 characters.
  network_ = "aula-test-" + suffix;
  fs::path xml = imageDir_ / "network.xml";
  {
    std::ofstream out(xml);
    out << fmt::format("<network><name>{}</name><bridge name='aula{}' stp='off'/></network>\n",
                       network_, suffix);
  }
  if (!runQuietly({"virsh", "-c", kUri, "net-create", xml.native()})) {
    throw std::runtime_error(fmt::format("Cannot create the test network {}.", network_));
  }
  createdNetwork_ = true;
  fs::remove(xml);
}

Libvirtd::~Libvirtd() {
  if (createdNetwork_) {
    runQuietly({"virsh", "-c", kUri, "net-destroy", network_});
  }
  std::error_code ec;
  if (!imageDir_.empty()) {
    fs::remove_all(imageDir_, ec);
  }
  if (startedLibvirtd_) {
    stopByPidfile({"/run/libvirtd.pid", "/var/run/libvirtd.pid"});
  }
  if (startedVirtlogd_) {
    stopByPidfile({"/run/virtlogd.pid", "/var/run/virtlogd.pid"});
  }
}

}  // namespace aula::test
