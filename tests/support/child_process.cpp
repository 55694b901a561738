// A program the test starts and stops (see child_process.hpp).
#include "support/child_process.hpp"

#include <cerrno>
#include <csignal>
#include <system_error>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/temp_dir.hpp"

namespace aula::test {

ChildProcess::ChildProcess(std::vector<std::string> args, std::filesystem::path log)
    : log_(std::move(log)) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  const std::string logPath = log_.native();
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0)
    throw std::system_error(errno, std::generic_category(), "Cannot fork for " + args[0]);
  if (pid_ == 0) {
    // Only async-signal-safe calls until exec: the test may have threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(126);
    const int out = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || null < 0 || ::dup2(null, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0)
      ::_exit(126);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
}

ChildProcess::~ChildProcess() {
  stop(SIGKILL);
}

bool ChildProcess::running() {
  if (exited_ || pid_ <= 0)
    return false;
  int status = 0;
  exited_ = ::waitpid(pid_, &status, WNOHANG) == pid_;
  return !exited_;
}

int ChildProcess::stop(int signal) {
  if (!running())
    return -1;
  ::kill(pid_, signal);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  exited_ = true;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string ChildProcess::log() const {
  return fileTail(log_, 40);
}

}  // namespace aula::test
