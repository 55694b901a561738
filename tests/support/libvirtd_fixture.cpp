// Starts or borrows the system libvirt daemon for tests (see libvirtd_fixture.hpp).
#include "support/libvirtd_fixture.hpp"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
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

constexpr const char* kQemuConf = "/etc/libvirt/qemu.conf";
constexpr const char* kBlockBegin = "# BEGIN aula-test (libvirtd_fixture; removed when it stops)";
constexpr const char* kBlockEnd = "# END aula-test";

std::string readAll(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Whether an uncommented line of qemu.conf sets `key`.
bool setsKey(const std::string& conf, const std::string& key) {
  std::istringstream lines(conf);
  std::string line;
  while (std::getline(lines, line)) {
    auto start = line.find_first_not_of(" \t");
    if (start != std::string::npos && line.compare(start, key.size(), key) == 0)
      return true;
  }
  return false;
}

// Points `link` at `target`, replacing what it pointed at in one rename.
void pointLink(const fs::path& link, const fs::path& target) {
  fs::path temp = link.string() + ".new";
  std::error_code ec;
  fs::remove(temp, ec);
  fs::create_directory_symlink(target, temp);
  fs::rename(temp, link);
}

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

namespace {

// libvirt re-probes QEMU's capabilities on every define (about 8 s here)
// while /dev/kvm is root:root 0600, because it cannot tell whether the
// QEMU user may use KVM. Debian's udev rule makes it root:kvm 0660, and so
// does provisioning/hypervisor-setup.sh; machines without udev (these test
// machines) need it done by hand. Guests still run under TCG (type 'qemu').
void fixKvmPermissions() {
  struct stat st {};
  struct group* kvm = ::getgrnam("kvm");
  if (::stat("/dev/kvm", &st) != 0 || kvm == nullptr)
    return;
  if (st.st_gid != kvm->gr_gid || (st.st_mode & 0777) != 0660) {
    (void)::chown("/dev/kvm", 0, kvm->gr_gid);
    (void)::chmod("/dev/kvm", 0660);
  }
}

}  // namespace

Libvirtd::Libvirtd() {
  fs::create_directories("/var/lib/aula-test");
  fixKvmPermissions();
  if (!daemonAnswers()) {
    // Our daemon: SPICE over TLS from certificates behind kSpiceCertLink,
    // unless the machine's own qemu.conf says otherwise.
    qemuConfBefore_ = readAll(kQemuConf);
    if (!setsKey(qemuConfBefore_, "spice_tls")) {
      // libvirtd refuses to start when the folder is missing, so the link
      // points at an empty one until a test enrols an agent.
      fs::path empty = "/var/lib/aula-test/spice-none";
      fs::create_directories(empty);
      pointLink(kSpiceCertLink, empty);
      std::ofstream out(kQemuConf, std::ios::app);
      out << "\n"
          << kBlockBegin << "\nspice_tls = 1\nspice_tls_x509_cert_dir = \"" << kSpiceCertLink
          << "\"\n"
          << kBlockEnd << "\n";
      wroteQemuConf_ = true;
    }
    // PID 1 here reaps no orphans: the script runs the daemons below a
    // subreaper (see its header).
    startedVirtlogd_ = !processRunning("virtlogd");
    startedLibvirtd_ = !processRunning("libvirtd");
    std::vector<std::string> argv = {AULA_START_LIBVIRTD_SCRIPT};
    auto restoreQemuConf = [&] {
      if (wroteQemuConf_) {
        std::ofstream out(kQemuConf, std::ios::trunc);
        out << qemuConfBefore_;
      }
    };
    if (!runQuietly(argv)) {
      restoreQemuConf();
      throw std::runtime_error(
          "Cannot start virtlogd and libvirtd with provisioning/start-libvirtd.sh.");
    }
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!daemonAnswers()) {
      if (std::chrono::steady_clock::now() > deadline) {
        restoreQemuConf();
        throw std::runtime_error("libvirtd did not answer on qemu:///system within 60 s.");
      }
      std::this_thread::sleep_for(500ms);
    }
  }

  // TLS works when the running daemon read our block (now or, left over,
  // from an earlier run).
  spiceTls_ = readAll(kQemuConf).find(kBlockBegin) != std::string::npos;

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
  if (wroteQemuConf_) {
    std::ofstream out(kQemuConf, std::ios::trunc);
    out << qemuConfBefore_;
  }
  if (fs::is_symlink(kSpiceCertLink, ec)) {
    try {
      pointLink(kSpiceCertLink, "/var/lib/aula-test/spice-none");
    } catch (const std::exception&) {
      // Left dangling: the next fixture re-points it before libvirtd starts.
    }
  }
  if (startedVirtlogd_) {
    stopByPidfile({"/run/virtlogd.pid", "/var/run/virtlogd.pid"});
  }
}

void Libvirtd::useSpiceCertificates(const fs::path& dir) const {
  pointLink(kSpiceCertLink, dir);
}

}  // namespace aula::test
