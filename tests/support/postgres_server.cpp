// A throw-away PostgreSQL server for tests (see postgres_server.hpp).
#include "support/postgres_server.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aula/common/process.hpp"

namespace aula::test {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kServerUser = "postgres";
constexpr std::string_view kSuperuser = "aula";

// The newest installed PostgreSQL's bin folder with initdb and pg_ctl.
std::optional<fs::path> findBinDir() {
  auto usable = [](const fs::path& bin) {
    std::error_code ec;
    return fs::exists(bin / "initdb", ec) && fs::exists(bin / "pg_ctl", ec);
  };
  if (const char* configured = std::getenv("AULA_TEST_PG_BINDIR");
      configured != nullptr && *configured != '\0') {
    if (usable(configured))
      return fs::path(configured);
    return std::nullopt;
  }
  std::optional<fs::path> best;
  long bestVersion = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = entry.path().filename().string();
    char* end = nullptr;
    const long version = std::strtol(name.c_str(), &end, 10);
    if (end == name.c_str() || !usable(entry.path() / "bin"))
      continue;
    if (version > bestVersion) {
      bestVersion = version;
      best = entry.path() / "bin";
    }
  }
  return best;
}

std::optional<fs::path> findRunuser() {
  for (const char* candidate : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
    std::error_code ec;
    if (fs::exists(candidate, ec))
      return fs::path(candidate);
  }
  return std::nullopt;
}

bool isRoot() {
  return ::geteuid() == 0;
}

void giveToServerUser(const fs::path& path, mode_t mode) {
  if (isRoot()) {
    const passwd* user = ::getpwnam(std::string(kServerUser).c_str());
    if (user == nullptr)
      throw std::runtime_error("There is no 'postgres' user to run PostgreSQL.");
    if (::chown(path.c_str(), user->pw_uid, user->pw_gid) != 0) {
      throw std::system_error(errno, std::generic_category(), "Cannot chown " + path.string());
    }
  }
  if (::chmod(path.c_str(), mode) != 0) {
    throw std::system_error(errno, std::generic_category(), "Cannot chmod " + path.string());
  }
}

}  // namespace

bool PostgresServer::available(std::string* why) {
  auto fail = [&](std::string reason) {
    if (why != nullptr)
      *why = std::move(reason);
    return false;
  };
  if (!findBinDir()) {
    return fail(
        "PostgreSQL is not installed: no initdb and pg_ctl under /usr/lib/postgresql/*/bin "
        "(apt-get install postgresql, or set AULA_TEST_PG_BINDIR).");
  }
  if (isRoot()) {
    if (::getpwnam(std::string(kServerUser).c_str()) == nullptr) {
      return fail(
          "PostgreSQL refuses to run as root, and there is no 'postgres' user to run it as.");
    }
    if (!findRunuser()) {
      return fail(
          "PostgreSQL refuses to run as root, and runuser is not installed to switch users.");
    }
  }
  return true;
}

PostgresServer::PostgresServer() {
  std::string why;
  if (!available(&why))
    throw std::runtime_error(why);
  bin_ = *findBinDir();
  data_ = dir_ / "data";
  run_ = dir_ / "run";
  fs::create_directory(data_);
  fs::create_directory(run_);
  // The server user must reach its folders through ours.
  if (::chmod(dir_.path().c_str(), 0755) != 0) {
    throw std::system_error(errno, std::generic_category(), "Cannot chmod " + dir_.path().string());
  }
  giveToServerUser(data_, 0700);
  giveToServerUser(run_, 0755);

  runTool("initdb",
          {"-D", data_.string(), "-A", "trust", "-U", std::string(kSuperuser), "--no-sync",
           "--no-instructions", "-E", "UTF8", "--locale=C"},
          true);
  // A port taken between freeLoopbackPort() and the server's bind is the one failure
  // that another try cures.
  for (int attempt = 1;; ++attempt) {
    port_ = freeLoopbackPort();
    try {
      start();
      break;
    } catch (const std::exception&) {
      if (attempt == 3)
        throw;
    }
  }
  createDatabase("aula");
}

PostgresServer::~PostgresServer() {
  if (!running_)
    return;
  try {
    runTool("pg_ctl", {"-D", data_.string(), "-m", "immediate", "-w", "-t", "60", "stop"}, true);
  } catch (...) {
    // The directory goes anyway; a server left running shows in the next
    // test's log as a port in use, not as a wrong result.
  }
}

std::string PostgresServer::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

std::string PostgresServer::conninfo(std::string_view dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=" + std::string(dbname) +
         " user=" + std::string(kSuperuser);
}

void PostgresServer::createDatabase(std::string_view name) {
  runTool("createdb",
          {"-h", "127.0.0.1", "-p", std::to_string(port_), "-U", std::string(kSuperuser),
           std::string(name)},
          false);
}

namespace {

// More server options for a profiling run, such as
// AULA_TEST_PG_OPTIONS="-c log_min_duration_statement=0 -c logging_collector=on
// -c log_directory=/tmp/pglog".
std::string extraServerOptions() {
  const char* extra = std::getenv("AULA_TEST_PG_OPTIONS");
  return extra != nullptr && *extra != '\0' ? std::string(" ") + extra : std::string();
}

}  // namespace

void PostgresServer::start() {
  if (running_)
    return;
  // fsync and full-page writes off: a test cluster that a crash loses is
  // thrown away anyway, and initdb and every commit get much faster.
  const std::string serverOptions = "-k " + run_.string() + " -p " + std::to_string(port_) +
                                    " -c listen_addresses=127.0.0.1 -c fsync=off"
                                    " -c full_page_writes=off -c synchronous_commit=off" +
                                    extraServerOptions();
  try {
    runTool("pg_ctl",
            {"-D", data_.string(), "-l", (run_ / "postgres.log").string(), "-w", "-t", "60", "-o",
             serverOptions, "start"},
            true);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(e.what()) + "\nServer log:\n" + logTail());
  }
  running_ = true;
}

void PostgresServer::stop() {
  if (!running_)
    return;
  runTool("pg_ctl", {"-D", data_.string(), "-m", "fast", "-w", "-t", "60", "stop"}, true);
  running_ = false;
}

void PostgresServer::runTool(std::string_view tool, std::vector<std::string> args,
                             bool asServerUser) {
  process::Command command;
  if (asServerUser && isRoot()) {
    command.argv = {findRunuser()->string(), "-u", std::string(kServerUser), "--"};
  }
  command.argv.push_back((bin_ / tool).string());
  command.argv.insert(command.argv.end(), args.begin(), args.end());
  command.timeout = std::chrono::seconds(120);
  // Our own working directory may be one the server user cannot enter.
  command.workingDir = dir_.path();
  process::SystemRunner runner;
  auto outcome = process::runChecked(runner, command);
  if (!outcome)
    throw std::runtime_error(outcome.error().message());
}

std::string PostgresServer::logTail() const {
  return fileTail(run_ / "postgres.log");
}

}  // namespace aula::test
