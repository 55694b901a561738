// Samba in AD DC mode for the directory tests.
#include "support/samba_dc.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aula/common/process.hpp"

namespace aula::test {

namespace fs = std::filesystem;

namespace {

// Samba listens only on addresses of the machine's interfaces: loopback's.
// available() checks that nothing else holds port 389 there.
constexpr const char* kAddress = "127.0.0.1";

process::Outcome runTool(std::vector<std::string> argv, std::chrono::seconds timeout) {
  process::SystemRunner runner;
  auto ran = runner.run({.argv = std::move(argv), .timeout = timeout});
  if (!ran)
    throw std::runtime_error(ran.error().message());
  return *ran;
}

}  // namespace

bool SambaDc::available(std::string* why) {
  auto fail = [&](std::string reason) {
    if (why != nullptr)
      *why = std::move(reason);
    return false;
  };
  std::error_code ec;
  if (!fs::exists("/usr/sbin/samba", ec) || !fs::exists("/usr/bin/samba-tool", ec))
    return fail(
        "Samba's AD DC is not installed (apt-get install samba samba-ad-dc samba-ad-provision)");
  if (::geteuid() != 0)
    return fail("a Samba AD DC needs root (it listens on port 389)");
  // Active Directory's LDAP port cannot be moved: it must be free.
  const int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(389);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool taken = ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(probe);
  if (taken)
    return fail("port 389 on 127.0.0.1 is taken (a system LDAP server?), and an AD DC needs it");
  return true;
}

SambaDc::SambaDc() {
  std::string why;
  if (!available(&why))
    throw std::runtime_error(why);
  const fs::path dir = dir_.path();
  auto provisioned =
      runTool({"samba-tool", "domain", "provision", "--realm=AULA.TEST", "--domain=AULA",
               "--server-role=dc", "--dns-backend=NONE",
               std::string("--adminpass=") + kAdminPassword, "--targetdir=" + dir.string(),
               std::string("--host-ip=") + kAddress, "--host-name=dc1", "--use-rfc2307",
               std::string("--option=interfaces=") + kAddress, "--option=bind interfaces only=yes",
               "--option=server services=ldap", "--option=ldap server require strong auth=no",
               "--option=pid directory=" + (dir / "run").string(),
               "--option=log file=" + (dir / "log.%m").string()},
              std::chrono::seconds(180));
  if (!provisioned.succeeded())
    throw std::runtime_error("samba-tool domain provision failed:\n" + provisioned.err +
                             provisioned.out);
  // provision keeps only some --option values; these go into [global]
  // here, after the ones it wrote, which they override.
  {
    const fs::path confPath = dir / "etc" / "smb.conf";
    std::ifstream in(confPath);
    std::string conf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string extra = fmt::format(
        "\tserver services = ldap\n\tldap server require strong auth = no\n"
        "\tpid directory = {}\n\tlog file = {}\n",
        (dir / "run").string(), (dir / "log.%m").string());
    const auto global = conf.find("[global]");
    const auto next = conf.find("\n[", global == std::string::npos ? 0 : global);
    conf.insert(next == std::string::npos ? conf.size() : next + 1, extra);
    std::ofstream(confPath) << conf;
  }
  fs::create_directories(dir / "run");
  pid_ = ::fork();
  if (pid_ == 0) {
    const fs::path log = dir / "samba.out";
    std::FILE* out = std::freopen(log.c_str(), "w", stdout);
    (void)out;
    ::dup2(STDOUT_FILENO, STDERR_FILENO);
    const std::string conf = (dir / "etc" / "smb.conf").string();
    ::execl("/usr/sbin/samba", "samba", "-i", "-M", "single", "-s", conf.c_str(), nullptr);
    ::_exit(127);
  }
  // Ready when an anonymous read of the root DSE answers.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    auto probe = runTool(
        {"ldapsearch", "-x", "-H", uri(), "-s", "base", "-b", "", "-LLL", "defaultNamingContext"},
        std::chrono::seconds(5));
    if (probe.succeeded() && probe.out.find(kBaseDn) != std::string::npos)
      return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::ifstream in(dir / "samba.out");
      std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      throw std::runtime_error("samba stopped at start:\n" + log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  throw std::runtime_error("samba did not answer on " + uri() + " within 60 s.");
}

SambaDc::~SambaDc() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 40; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_)
        return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
}

std::string SambaDc::uri() const {
  return fmt::format("ldap://{}", kAddress);
}

std::string SambaDc::dnOf(const std::string& name) {
  return fmt::format("CN={},CN=Users,{}", name, kBaseDn);
}

void SambaDc::tool(std::vector<std::string> args) {
  std::vector<std::string> argv = {"samba-tool"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("-s");
  argv.push_back((dir_.path() / "etc" / "smb.conf").string());
  auto ran = runTool(argv, std::chrono::seconds(60));
  if (!ran.succeeded())
    throw std::runtime_error(
        fmt::format("samba-tool {} failed: {}{}", args.front(), ran.err, ran.out));
}

void SambaDc::addUser(const std::string& name, const std::string& password,
                      const std::string& displayName) {
  const auto space = displayName.find(' ');
  tool({"user", "add", name, password, "--given-name=" + displayName.substr(0, space),
        "--surname=" +
            (space == std::string::npos ? std::string() : displayName.substr(space + 1))});
}

void SambaDc::deleteUser(const std::string& name) {
  tool({"user", "delete", name});
}

void SambaDc::addGroup(const std::string& name) {
  tool({"group", "add", name});
}

void SambaDc::addMembers(const std::string& group, const std::vector<std::string>& members) {
  tool({"group", "addmembers", group, fmt::format("{}", fmt::join(members, ","))});
}

void SambaDc::removeMembers(const std::string& group, const std::vector<std::string>& members) {
  tool({"group", "removemembers", group, fmt::format("{}", fmt::join(members, ","))});
}

std::string SambaDc::brokerToml(const std::filesystem::path& passwordFile) const {
  writeFile(passwordFile, kAdminPassword);
  return fmt::format(R"toml(
[ldap]
enabled = true
uri = "{}"
base_dn = "{}"
bind_dn = "{}"
bind_password_file = "{}"
user_filter = "(sAMAccountName={{username}})"
uid_attribute = "sAMAccountName"
group_filter = "(member={{dn}})"
nested_groups = "in_chain"
)toml",
                     uri(), kBaseDn, kAdminDn, passwordFile.string());
}

}  // namespace aula::test
