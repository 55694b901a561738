// A throw-away OpenLDAP server for tests (see slapd_server.hpp).
#include "support/slapd_server.hpp"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aula/common/process.hpp"

namespace aula::test {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kRootPassword = "root-secret";
constexpr std::string_view kSchemaDir = "/etc/ldap/schema";
constexpr std::string_view kModuleDir = "/usr/lib/ldap";

// The first of `dirs` that holds an executable `name`.
std::optional<fs::path> findProgram(std::string_view name, std::vector<std::string> dirs) {
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const std::size_t colon = rest.find(':');
      dirs.emplace_back(rest.substr(0, colon));
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
  }
  for (const std::string& dir : dirs) {
    if (dir.empty())
      continue;
    const fs::path candidate = fs::path(dir) / name;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return std::nullopt;
}

std::optional<fs::path> findSlapd() {
  return findProgram("slapd", {"/usr/sbin", "/sbin"});
}

}  // namespace

bool SlapdServer::available(std::string* why) {
  auto fail = [&](std::string reason) {
    if (why != nullptr)
      *why = std::move(reason);
    return false;
  };
  constexpr std::string_view kInstall = " (apt-get install slapd ldap-utils)";
  if (!findSlapd())
    return fail(std::string("slapd is not installed") + std::string(kInstall));
  for (const char* tool : {"ldapsearch", "ldapadd"}) {
    if (!findProgram(tool, {"/usr/bin"})) {
      return fail(std::string(tool) + " is not installed" + std::string(kInstall));
    }
  }
  std::error_code ec;
  for (const char* module : {"back_mdb.la", "memberof.la"}) {
    if (!fs::exists(fs::path(kModuleDir) / module, ec)) {
      return fail("slapd's module " + std::string(module) + " is not in " +
                  std::string(kModuleDir) + std::string(kInstall));
    }
  }
  for (const char* schema : {"core", "cosine", "inetorgperson", "nis"}) {
    if (!fs::exists(fs::path(kSchemaDir) / (std::string(schema) + ".schema"), ec)) {
      return fail("The LDAP schema " + std::string(schema) + ".schema is not in " +
                  std::string(kSchemaDir) + std::string(kInstall));
    }
  }
  return true;
}

SlapdServer::SlapdServer(SlapdOptions options) : options_(std::move(options)) {
  std::string why;
  if (!available(&why))
    throw std::runtime_error(why);
  if (options_.tlsCertPem.has_value() != options_.tlsKeyPem.has_value()) {
    throw std::invalid_argument("SlapdServer needs both a TLS certificate and its key.");
  }
  fs::create_directory(dir_ / "data");
  // A file rather than -w, so that the password is not in the command line
  // that error messages quote; ldapadd takes all of it, so no newline.
  writeFile(dir_ / "root.password", kRootPassword);
  if (options_.tlsCertPem) {
    writeFile(dir_ / "server.crt", *options_.tlsCertPem);
    writeFile(dir_ / "server.key", *options_.tlsKeyPem);
  }
  // A port taken between freeLoopbackPort() and slapd's bind is the one failure that
  // another try cures.
  for (int attempt = 1;; ++attempt) {
    port_ = freeLoopbackPort();
    if (options_.tlsCertPem)
      tlsPort_ = freeLoopbackPort();
    writeConfig();
    try {
      start();
      break;
    } catch (const std::exception&) {
      if (attempt == 3)
        throw;
    }
  }
  addLdif(fmt::format(
      "dn: {}\nobjectClass: dcObject\nobjectClass: organization\ndc: school\no: School\n",
      kSuffix));
}

SlapdServer::~SlapdServer() {
  try {
    stop();
  } catch (...) {
    // The directory goes anyway; a slapd left running shows in the next
    // test's log as a port in use, not as a wrong result.
  }
}

std::string SlapdServer::uri() const {
  return fmt::format("ldap://127.0.0.1:{}", port_);
}

std::string SlapdServer::ldapsUri() const {
  if (tlsPort_ == 0)
    throw std::logic_error("SlapdServer was started without TLS.");
  return fmt::format("ldaps://127.0.0.1:{}", tlsPort_);
}

std::string SlapdServer::rootDn() const {
  return fmt::format("cn=admin,{}", kSuffix);
}

std::string SlapdServer::rootPassword() const {
  return std::string(kRootPassword);
}

void SlapdServer::writeConfig() {
  std::string tls;
  if (options_.tlsCertPem) {
    tls = fmt::format("TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                      (dir_ / "server.crt").string(), (dir_ / "server.key").string());
  }
  // userPassword is readable by nobody and usable by anonymous for a bind:
  // the rules of a real school directory, so that a test cannot pass by
  // reading a hash it should not see. "allow bind_anon_dn" accepts a DN with
  // an empty password, the trap that clients must avoid.
  writeFile(dir_ / "slapd.conf",
            fmt::format(R"(include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath {modules}
moduleload back_mdb
moduleload memberof
allow bind_anon_dn
{tls}
database mdb
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {rootpw}
directory {dir}/data
maxsize 104857600
dbnosync
overlay memberof
{access}
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by * read
)",
                        fmt::arg("schema", kSchemaDir), fmt::arg("dir", dir_.path().string()),
                        fmt::arg("modules", kModuleDir), fmt::arg("tls", tls),
                        fmt::arg("suffix", kSuffix), fmt::arg("rootpw", kRootPassword),
                        fmt::arg("access", options_.accessRules)));
}

void SlapdServer::start() {
  std::string listeners = uri() + "/";
  if (tlsPort_ != 0)
    listeners += " " + ldapsUri() + "/";
  const std::string slapd = findSlapd()->string();
  const std::string config = (dir_ / "slapd.conf").string();
  const std::string logPath = (dir_ / "slapd.log").string();
  // "-d 0" keeps slapd in the foreground as our child, so that we can wait
  // for it; "-s 0" keeps it out of syslog.
  std::vector<std::string> args = {slapd, "-f", config, "-h", listeners, "-d", "0", "-s", "0"};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0)
    throw std::system_error(errno, std::generic_category(), "Cannot fork for slapd");
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the test may have threads.
    // A test binary that crashes must not leave slapd behind.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent)
      ::_exit(126);
    const int log = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log < 0 || null < 0 || ::dup2(null, 0) < 0 || ::dup2(log, 1) < 0 || ::dup2(log, 2) < 0) {
      ::_exit(126);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;

  // slapd listens before it serves, so a connection alone proves nothing: an
  // anonymous read of the root DSE does.
  process::SystemRunner runner;
  const process::Command probe{.argv = {"ldapsearch", "-x", "-LLL", "-H", uri(), "-b", "", "-s",
                                        "base", "-o", "nettimeout=1", "namingContexts"},
                               .timeout = std::chrono::seconds(5)};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("slapd exited during start-up:\n" + logTail());
    }
    auto outcome = runner.run(probe);
    if (outcome && outcome->succeeded())
      return;
    if (std::chrono::steady_clock::now() > deadline) {
      stop();
      throw std::runtime_error("slapd did not answer on " + uri() + " within 10 s:\n" + logTail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void SlapdServer::stop() {
  if (pid_ <= 0)
    return;
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_ || (done < 0 && errno != EINTR))
      break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
}

void SlapdServer::addLdif(std::string_view ldif) {
  process::SystemRunner runner;
  auto outcome =
      process::runChecked(runner, {.argv = {"ldapadd", "-x", "-D", rootDn(), "-y",
                                            (dir_ / "root.password").string(), "-H", uri()},
                                   .timeout = std::chrono::seconds(30),
                                   .stdinData = std::string(ldif)});
  if (!outcome)
    throw std::runtime_error(outcome.error().message() + "\n" + logTail());
}

std::string SlapdServer::logTail() const {
  return fileTail(dir_ / "slapd.log");
}

}  // namespace aula::test
