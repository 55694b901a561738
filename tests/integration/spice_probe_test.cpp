// aula-spice-probe against a real SPICE server: QEMU started directly (TCG,
// no libvirt) on the test guest, with a plain and a TLS port whose
// certificates come from Aula's own PKI. The probe must see the guest's text
// over both, be refused with a wrong, a replaced or an expired ticket, be
// kicked out when a new ticket is set with connected=disconnect, and refuse a
// server whose certificate does not chain to its CA or does not carry the
// expected subject. One guest serves every check: it boots in 6-11 s.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "aula/common/crypto.hpp"
#include "aula/common/json.hpp"
#include "aula/common/process.hpp"

#include "support/child_process.hpp"
#include "support/qmp.hpp"
#include "support/screen.hpp"
#include "support/temp_dir.hpp"

#ifndef AULA_SPICE_PROBE_BIN
#error "AULA_SPICE_PROBE_BIN must name the aula-spice-probe binary"
#endif

namespace aula::test {
namespace {

namespace fs = std::filesystem;
using json::Json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The test guest's screen: blue with 15.6 % white text (tests/template/README.md).
constexpr double kMinWhite = 10.0;
constexpr double kMinBlue = 70.0;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::optional<fs::path> findOnPath(std::string_view program) {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (!dirs.empty()) {
    auto colon = dirs.find(':');
    fs::path candidate = fs::path(dirs.substr(0, colon)) / program;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    dirs = colon == std::string_view::npos ? std::string_view() : dirs.substr(colon + 1);
  }
  return std::nullopt;
}

struct ProbeRun {
  int exitCode = -1;
  std::string out;  // the outcome lines
  std::string err;  // spice-client-glib's warnings
  double seconds = 0;

  // What a failed check shows.
  std::string all() const { return fmt::format("exit {}\n{}{}", exitCode, out, err); }
};

// Runs aula-spice-probe with `args`; the ticket goes through the environment
// as a real caller would pass it.
ProbeRun runProbe(std::vector<std::string> args, std::optional<std::string> ticket) {
  args.insert(args.begin(), AULA_SPICE_PROBE_BIN);
  process::Command command{.argv = std::move(args), .timeout = 60s};
  if (ticket) {
    command.env.emplace_back("AULA_SPICE_TICKET", *ticket);
  }
  process::SystemRunner runner;
  const auto started = Clock::now();
  auto outcome = runner.run(command);
  ProbeRun run;
  run.seconds = secondsSince(started);
  if (!outcome.ok()) {
    run.err = outcome.error().message();
    return run;
  }
  run.exitCode = outcome->termSignal != 0 ? 128 + outcome->termSignal : outcome->exitCode;
  run.out = outcome->out;
  run.err = outcome->err;
  return run;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// QEMU as our child, its output in a log file; killed when this goes away
// (and by the kernel if the test binary dies first).
using QemuProcess = ChildProcess;

// The test guest under QEMU with SPICE on a plain and a TLS port of
// 127.0.0.1, the first ticket from a secret file (not on QEMU's command line).
class SpiceGuest {
 public:
  SpiceGuest(const fs::path& qemu, const fs::path& image, const TempDir& dir,
             const std::string& ticket) {
    writeFile(dir / "ticket", ticket);
    // A port taken between freeLoopbackPort() and QEMU's bind is the one
    // failure that another try cures.
    for (int attempt = 1;; ++attempt) {
      port_ = freeLoopbackPort();
      tlsPort_ = freeLoopbackPort();
      serialLog_ = dir / "serial.log";
      qemuLog_ = dir / "qemu.log";
      const fs::path qmpSocket = dir / "qmp.sock";
      std::error_code ignored;
      fs::remove(qmpSocket, ignored);
      qemu_.emplace(
          std::vector<std::string>{
              qemu.native(),
              "-accel",
              "tcg",
              "-machine",
              "q35",
              "-m",
              "256",
              "-drive",
              fmt::format("file={},if=virtio,snapshot=on", image.native()),
              "-display",
              "none",
              "-vga",
              "qxl",
              "-nic",
              "none",
              "-no-reboot",
              "-serial",
              "file:" + serialLog_.native(),
              "-qmp",
              fmt::format("unix:{},server=on,wait=off", qmpSocket.native()),
              "-object",
              fmt::format("secret,id=spice-ticket,file={}", (dir / "ticket").native()),
              "-spice",
              fmt::format("addr=127.0.0.1,port={},tls-port={},x509-dir={},"
                          "password-secret=spice-ticket",
                          port_, tlsPort_, (dir / "tls").native())},
          qemuLog_);
      const auto deadline = Clock::now() + 20s;
      while (qemu_->running() && !fs::exists(qmpSocket) && Clock::now() < deadline) {
        std::this_thread::sleep_for(50ms);
      }
      if (qemu_->running() && fs::exists(qmpSocket)) {
        qmp_.emplace(qmpSocket);
        return;
      }
      if (attempt == 3) {
        throw std::runtime_error("QEMU did not start:\n" + fileTail(qemuLog_));
      }
      qemu_.reset();
    }
  }

  int port() const { return port_; }
  int tlsPort() const { return tlsPort_; }
  Qmp& qmp() { return *qmp_; }

  // True once the guest has drawn its screen and said so on the serial line.
  bool waitReady(std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline && qemu_->running()) {
      std::error_code ec;
      if (fs::exists(serialLog_, ec) && contains(readFile(serialLog_), "AULA-TEST-READY")) {
        return true;
      }
      std::this_thread::sleep_for(200ms);
    }
    return false;
  }

  std::string logs() const {
    return "QEMU:\n" + fileTail(qemuLog_) + "\nserial:\n" + fileTail(serialLog_);
  }

  // The number of SPICE channels connected now (query-spice).
  std::size_t connectedChannels() {
    Json spice = qmp_->execute("query-spice");
    return spice.value("channels", Json::array()).size();
  }

 private:
  int port_ = 0;
  int tlsPort_ = 0;
  fs::path serialLog_;
  fs::path qemuLog_;
  std::optional<QemuProcess> qemu_;
  std::optional<Qmp> qmp_;
};

// The server's certificates in QEMU's x509-dir layout, signed by a new CA
// from Aula's PKI; returns the server certificate's subject in SPICE's form.
std::string makeSpiceCertificates(const fs::path& dir, const fs::path& otherCaFile) {
  auto ca = crypto::createCa("Aula SPICE test CA");
  if (!ca.ok()) {
    throw std::runtime_error(ca.error().message());
  }
  auto server = crypto::issueCertificate(
      *ca, crypto::CertRequest{.commonName = "spice-probe-host", .ipAddresses = {"127.0.0.1"}});
  if (!server.ok()) {
    throw std::runtime_error(server.error().message());
  }
  fs::create_directories(dir);
  writeFile(dir / "ca-cert.pem", ca->certPem);
  writeFile(dir / "server-cert.pem", server->certPem);
  writeFile(dir / "server-key.pem", server->keyPem);
  fs::permissions(dir / "server-key.pem", fs::perms::owner_read | fs::perms::owner_write);

  auto other = crypto::createCa("Aula SPICE test CA");  // same name, other key
  if (!other.ok()) {
    throw std::runtime_error(other.error().message());
  }
  writeFile(otherCaFile, other->certPem);

  auto subject = crypto::certificateSubject(server->certPem);
  if (!subject.ok()) {
    throw std::runtime_error(subject.error().message());
  }
  return *subject;
}

void expectTheGuestsScreen(const ProbeRun& run, const fs::path& shot) {
  EXPECT_EQ(run.exitCode, 0) << run.all();
  EXPECT_TRUE(contains(run.out, "connected\n")) << run.all();
  EXPECT_TRUE(contains(run.out, fmt::format("screenshot 720x400 {}\n", shot.native())))
      << run.all();
  const ScreenShares shares = analysePpm(shot);
  EXPECT_GT(shares.white, kMinWhite) << shot.native();
  EXPECT_GT(shares.blue, kMinBlue) << shot.native();
}

TEST(SpiceProbe, RejectsBadUsage) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {},
           {"--port", "0"},
           {"--port", "5900", "--ca-file", "ca.pem"},
           {"--port", "5900", "--hold", "soon"},
           {"--port", "5900", "--ticket-file", "/nonexistent/ticket"},
           {"--port", "5900", "--bogus"}}) {
    const ProbeRun run = runProbe(args, std::nullopt);
    EXPECT_EQ(run.exitCode, 2) << fmt::format("{}", fmt::join(args, " ")) << "\n" << run.all();
    EXPECT_TRUE(contains(run.err, "usage: aula-spice-probe")) << run.all();
  }
}

TEST(SpiceProbe, ReportsThatNothingListens) {
  const int port = freeLoopbackPort();
  const ProbeRun run = runProbe({"--port", std::to_string(port), "--timeout", "5"}, "t");
  EXPECT_EQ(run.exitCode, 5) << run.all();
  EXPECT_TRUE(contains(run.out, "error: ")) << run.all();
  EXPECT_FALSE(contains(run.out, "connected")) << run.all();
}

TEST(SpiceProbe, SeesTheGuestAndFollowsItsTicketsOverPlainAndTls) {
  const auto qemu = findOnPath("qemu-system-x86_64");
  if (!qemu) {
    GTEST_SKIP() << "qemu-system-x86_64 is not installed (package qemu-system-x86).";
  }
  const auto testStarted = Clock::now();

  // The test guest, built once and cached in the build directory.
  const fs::path templateDir = AULA_TEST_TEMPLATE_DIR;
  fs::create_directories(templateDir);
  const fs::path image = templateDir / "test-template.qcow2";
  process::SystemRunner runner;
  auto built = process::runChecked(
      runner,
      process::Command{.argv = {AULA_TEST_TEMPLATE_SCRIPT, image.native()}, .timeout = 600s});
  ASSERT_TRUE(built.ok()) << built.error().message();

  TempDir dir;
  const fs::path otherCa = dir / "other-ca.pem";
  const std::string hostSubject = makeSpiceCertificates(dir / "tls", otherCa);
  const std::string firstTicket = "first-ticket";
  const std::string secondTicket = "second-ticket";

  const auto bootStarted = Clock::now();
  SpiceGuest guest(*qemu, image, dir, firstTicket);
  ASSERT_TRUE(guest.waitReady(90s)) << "The guest never said AULA-TEST-READY.\n" << guest.logs();
  const double bootSeconds = secondsSince(bootStarted);
  const std::string port = std::to_string(guest.port());
  const std::string tlsPort = std::to_string(guest.tlsPort());

  {
    SCOPED_TRACE("the guest's text over the plain port");
    const fs::path shot = templateDir / "spice-probe-plain.ppm";
    // The guest says it is ready just after drawing; give QEMU a few tries.
    ProbeRun run;
    for (int attempt = 0; attempt < 5; ++attempt) {
      run = runProbe({"--port", port, "--screenshot", shot.native()}, firstTicket);
      if (run.exitCode == 0 && analysePpm(shot).white > kMinWhite) {
        break;
      }
      std::this_thread::sleep_for(1s);
    }
    expectTheGuestsScreen(run, shot);
    std::cout << fmt::format("Plain screenshot in {:.1f} s after a boot of {:.1f} s.\n",
                             run.seconds, bootSeconds);
  }

  {
    SCOPED_TRACE("the guest's text over TLS, the CA file and the host subject checked");
    const fs::path shot = templateDir / "spice-probe-tls.ppm";
    writeFile(dir / "ticket-file", firstTicket + "\n");
    const ProbeRun run =
        runProbe({"--tls-port", tlsPort, "--ca-file", (dir / "tls" / "ca-cert.pem").native(),
                  "--host-subject", hostSubject, "--ticket-file", (dir / "ticket-file").native(),
                  "--screenshot", shot.native()},
                 std::nullopt);
    expectTheGuestsScreen(run, shot);
    std::cout << fmt::format("TLS screenshot (host subject '{}') in {:.1f} s.\n", hostSubject,
                             run.seconds);
  }

  {
    SCOPED_TRACE("TLS with the host name checked against the certificate's IP address");
    const ProbeRun run = runProbe({"--host", "127.0.0.1", "--tls-port", tlsPort, "--ca-file",
                                   (dir / "tls" / "ca-cert.pem").native()},
                                  firstTicket);
    EXPECT_EQ(run.exitCode, 0) << run.all();
    EXPECT_EQ(run.out, "connected\n") << run.all();
  }

  {
    SCOPED_TRACE("TLS with another CA");
    const ProbeRun run = runProbe({"--tls-port", tlsPort, "--ca-file", otherCa.native(),
                                   "--host-subject", hostSubject, "--timeout", "10"},
                                  firstTicket);
    EXPECT_EQ(run.exitCode, 5) << run.all();
    EXPECT_TRUE(contains(run.out, "error: TLS")) << run.all();
    EXPECT_FALSE(contains(run.out, "connected")) << run.all();
    std::cout << "Another CA: " << run.out;
  }

  {
    SCOPED_TRACE("TLS with the right CA but another host subject");
    const ProbeRun run =
        runProbe({"--tls-port", tlsPort, "--ca-file", (dir / "tls" / "ca-cert.pem").native(),
                  "--host-subject", "O=Aula,CN=some-other-host", "--timeout", "10"},
                 firstTicket);
    EXPECT_EQ(run.exitCode, 5) << run.all();
    EXPECT_TRUE(contains(run.out, "error: TLS")) << run.all();
    std::cout << "Another host subject: " << run.out;
  }

  {
    SCOPED_TRACE("a wrong ticket");
    const ProbeRun run = runProbe({"--port", port}, "wrong-ticket");
    EXPECT_EQ(run.exitCode, 3) << run.all();
    EXPECT_TRUE(contains(run.out, "refused: ")) << run.all();
    EXPECT_FALSE(contains(run.out, "connected")) << run.all();
    std::cout << "A wrong ticket: " << run.out;
  }

  {
    SCOPED_TRACE("a viewer holding on is kicked out by a new ticket");
    auto holding = std::async(std::launch::async, [&] {
      return runProbe({"--port", port, "--hold", "30"}, firstTicket);
    });
    // The server's own word that the viewer is in.
    const auto deadline = Clock::now() + 20s;
    while (guest.connectedChannels() == 0 && Clock::now() < deadline &&
           holding.wait_for(0s) != std::future_status::ready) {
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_GT(guest.connectedChannels(), 0U) << "The holding probe never connected.";
    std::this_thread::sleep_for(1s);  // a viewer that has been watching for a while
    const auto kicked = Clock::now();
    guest.qmp().execute(
        "set_password",
        {{"protocol", "spice"}, {"password", secondTicket}, {"connected", "disconnect"}});
    ASSERT_EQ(holding.wait_for(10s), std::future_status::ready)
        << "The probe was still connected 10 s after the new ticket.";
    const double kickSeconds = secondsSince(kicked);
    const ProbeRun run = holding.get();
    EXPECT_EQ(run.exitCode, 4) << run.all();
    EXPECT_TRUE(contains(run.out, "connected\ndisconnected by server after ")) << run.all();
    EXPECT_LT(kickSeconds, 5.0);
    std::cout << fmt::format("The holding viewer was out {:.1f} s after the new ticket.\n",
                             kickSeconds);

    const fs::path shot = templateDir / "spice-probe-second.ppm";
    expectTheGuestsScreen(runProbe({"--port", port, "--screenshot", shot.native()}, secondTicket),
                          shot);
    const ProbeRun replaced = runProbe({"--port", port}, firstTicket);
    EXPECT_EQ(replaced.exitCode, 3) << "The replaced ticket got in:\n" << replaced.all();
    std::cout << "The holding viewer: " << run.out;
  }

  {
    SCOPED_TRACE("a viewer left alone stays connected");
    const ProbeRun run = runProbe({"--port", port, "--hold", "1"}, secondTicket);
    EXPECT_EQ(run.exitCode, 0) << run.all();
    EXPECT_EQ(run.out, "connected\nheld 1 s\n") << run.all();
  }

  {
    SCOPED_TRACE("an expired ticket");
    guest.qmp().execute("expire_password", {{"protocol", "spice"}, {"time", "now"}});
    const ProbeRun run = runProbe({"--port", port}, secondTicket);
    EXPECT_EQ(run.exitCode, 3) << run.all();
    EXPECT_TRUE(contains(run.out, "refused: ")) << run.all();
    std::cout << "An expired ticket: " << run.out;
  }

  std::cout << fmt::format("The whole check took {:.1f} s.\n", secondsSince(testStarted));
}

}  // namespace
}  // namespace aula::test
