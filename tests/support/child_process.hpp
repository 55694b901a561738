// A program the test starts and stops: argv, output to a log file, killed
// with the test (PR_SET_PDEATHSIG) and by the destructor.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <sys/types.h>

namespace aula::test {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with its output appended to `log`. Throws
  // std::system_error when it cannot fork.
  ChildProcess(std::vector<std::string> argv, std::filesystem::path log);
  ~ChildProcess();  // SIGKILL, if it still runs
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool running();
  pid_t pid() const { return pid_; }
  // Sends `signal` and waits; the exit status, or 128 + the signal that
  // ended it; -1 when it had ended before.
  int stop(int signal);
  std::string log() const;

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::filesystem::path log_;
};

}  // namespace aula::test
