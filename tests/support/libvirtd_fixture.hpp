// The system libvirt daemon (qemu:///system) for integration tests.
//
// If a daemon already answers, tests use it and leave it running. Otherwise
// the fixture starts `virtlogd -d` and `libvirtd -d` itself (these machines
// have no systemd), below a small reaper process because PID 1 here reaps
// no orphans (see provisioning/start-libvirtd.sh), and stops exactly those daemons, by
// the pids in /run/libvirtd.pid and /run/virtlogd.pid, when it goes away. It also gives tests an
// isolated network with no addresses (so no dnsmasq or firewall is needed) and a folder QEMU can
// read: libvirt runs QEMU as libvirt-qemu, which cannot enter a 0700
// temporary directory, so images live under /var/lib/aula-test/<random>
// (0755) and are removed afterwards.
//
// SPICE over TLS needs spice_tls = 1 and a certificate folder in
// /etc/libvirt/qemu.conf, read when libvirtd starts. A fixture that starts
// libvirtd itself adds a marked block setting both (the folder is the
// symbolic link kSpiceCertLink, which useSpiceCertificates() points at an
// enrolled agent's spice/ folder) and puts the file back as it was when it
// stops the daemon. A borrowed daemon keeps its own settings: spiceTls()
// says whether they are ours.
//
// Like the other test helpers it fails by throwing.
#pragma once

#include <filesystem>
#include <string>

namespace aula::test {

class Libvirtd {
 public:
  static constexpr const char* kUri = "qemu:///system";

  // False, with the reason in `why`, when this machine cannot run guests
  // under libvirt: not root, or libvirtd, virtlogd, virsh or
  // qemu-system-x86_64 is missing.
  static bool available(std::string* why);

  // Uses or starts the daemon; waits up to 60 s for it to answer. Throws
  // std::runtime_error.
  Libvirtd();
  // Destroys the network it created, removes its folder, and stops the
  // daemons it started.
  ~Libvirtd();
  Libvirtd(const Libvirtd&) = delete;
  Libvirtd& operator=(const Libvirtd&) = delete;

  static constexpr const char* kSpiceCertLink = "/var/lib/aula-test/spice";

  bool startedDaemon() const { return startedLibvirtd_; }
  // Whether guests can offer SPICE over TLS with certificates from
  // useSpiceCertificates().
  bool spiceTls() const { return spiceTls_; }
  // Points kSpiceCertLink at `dir` (ca-cert.pem, server-cert.pem,
  // server-key.pem); QEMU reads them when a guest starts.
  void useSpiceCertificates(const std::filesystem::path& dir) const;
  // An active isolated network for the test's domains.
  const std::string& network() const { return network_; }
  // An empty folder QEMU (as libvirt-qemu) can read, removed afterwards.
  const std::filesystem::path& imageDir() const { return imageDir_; }

 private:
  bool startedVirtlogd_ = false;
  bool startedLibvirtd_ = false;
  std::string network_;
  bool createdNetwork_ = false;
  bool spiceTls_ = false;
  std::string qemuConfBefore_;  // restored when we started the daemon
  bool wroteQemuConf_ = false;
  std::filesystem::path imageDir_;
};

}  // namespace aula::test
