// fork/exec with pipes, a poll loop and a deadline.
#include "aula/common/process.hpp"

#include <cerrno>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aula/common/file.hpp"

namespace aula::process {
namespace {

using Fd = file::UniqueFd;

struct Pipe {
  Fd read;
  Fd write;
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      return false;
    read.reset(fds[0]);
    write.reset(fds[1]);
    return true;
  }
};

Error ioError(std::string_view what, const Command& command) {
  int err = errno;
  return Error(
      Errc::kIo,
      fmt::format("Cannot run '{}': {} failed: {}.", command.display(), what, std::strerror(err)),
      err);
}

std::string lastLine(const std::string& text) {
  auto end = text.find_last_not_of("\r\n ");
  if (end == std::string::npos)
    return {};
  auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     end - (start == std::string::npos ? 0 : start + 1) + 1);
}

}  // namespace

std::string Command::display() const {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty())
      out += ' ';
    out += a;
  }
  return out;
}

Result<Outcome> SystemRunner::run(const Command& command) {
  assert(!command.argv.empty() && "Command without argv");
  Pipe in;
  Pipe out;
  Pipe err;
  Pipe execStatus;  // carries errno from a failed exec
  if (!in.open() || !out.open() || !err.open() || !execStatus.open())
    return ioError("pipe", command);

  std::vector<char*> argv;
  for (const auto& a : command.argv)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // The environment is built before fork: setenv in the child may allocate,
  // which is not safe after fork in a threaded program.
  std::vector<std::string> envStrings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    std::string_view name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& kv : command.env)
      replaced = replaced || kv.first == name;
    if (!replaced)
      envStrings.emplace_back(entry);
  }
  for (const auto& [k, v] : command.env) {
    std::string entry = k;
    entry += '=';
    entry += v;
    envStrings.push_back(std::move(entry));
  }
  std::vector<char*> envp;
  envp.reserve(envStrings.size() + 1);
  for (auto& e : envStrings)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0)
    return ioError("fork", command);
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::setpgid(0, 0);
    ::dup2(in.read.get(), STDIN_FILENO);
    ::dup2(out.write.get(), STDOUT_FILENO);
    ::dup2(err.write.get(), STDERR_FILENO);
    if (command.workingDir && ::chdir(command.workingDir->c_str()) != 0) {
      int e = errno;
      [[maybe_unused]] auto n = ::write(execStatus.write.get(), &e, sizeof e);
      ::_exit(127);
    }
    // Nothing of this process but the three standard streams reaches the
    // program: a descriptor another thread opened without O_CLOEXEC would
    // otherwise leak into it (and push its own descriptors past 9, which
    // dash's `>&N` cannot name: mmdebstrap fails that way).
    ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(argv[0], argv.data(), envp.data());
    int e = errno;
    [[maybe_unused]] auto n = ::write(execStatus.write.get(), &e, sizeof e);
    ::_exit(127);
  }

  in.read.reset();
  out.write.reset();
  err.write.reset();
  execStatus.write.reset();

  int execErrno = 0;
  if (::read(execStatus.read.get(), &execErrno, sizeof execErrno) == sizeof execErrno) {
    ::waitpid(pid, nullptr, 0);
    if (execErrno == ENOENT) {
      return Error(Errc::kNotFound,
                   fmt::format("Cannot run '{}': the program is not installed or not in PATH.",
                               command.argv[0]),
                   execErrno);
    }
    return Error(Errc::kIo,
                 fmt::format("Cannot run '{}': {}.", command.argv[0], std::strerror(execErrno)),
                 execErrno);
  }

  Outcome outcome;
  std::string_view pending =
      command.stdinData ? std::string_view(*command.stdinData) : std::string_view();
  if (pending.empty())
    in.write.reset();
  else
    ::fcntl(in.write.get(), F_SETFL, O_NONBLOCK);

  auto deadline = std::chrono::steady_clock::now() + command.timeout;
  bool timedOut = false;
  while (out.read.get() >= 0 || err.read.get() >= 0 || in.write.get() >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    pollfd fds[3];
    int n = 0;
    if (out.read.get() >= 0)
      fds[n++] = {out.read.get(), POLLIN, 0};
    if (err.read.get() >= 0)
      fds[n++] = {err.read.get(), POLLIN, 0};
    if (in.write.get() >= 0)
      fds[n++] = {in.write.get(), POLLOUT, 0};
    int r = ::poll(fds, static_cast<nfds_t>(n),
                   static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (r < 0 && errno != EINTR)
      return ioError("poll", command);
    for (int i = 0; i < n && r > 0; ++i) {
      if (fds[i].revents == 0)
        continue;
      if (fds[i].fd == in.write.get()) {
        ssize_t w = ::write(in.write.get(), pending.data(), pending.size());
        if (w > 0)
          pending.remove_prefix(static_cast<std::size_t>(w));
        if (w < 0 && errno != EAGAIN)
          pending = {};
        if (pending.empty())
          in.write.reset();
        continue;
      }
      char buf[65536];
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      bool isOut = fds[i].fd == out.read.get();
      if (got > 0) {
        (isOut ? outcome.out : outcome.err).append(buf, static_cast<std::size_t>(got));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        (isOut ? out.read : err.read).reset();
      }
    }
  }

  int status = 0;
  while (!timedOut) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid)
      break;
    if (w < 0 && errno != EINTR)
      return ioError("waitpid", command);
    if (std::chrono::steady_clock::now() >= deadline) {
      timedOut = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (timedOut) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return Error(Errc::kTimeout, fmt::format("'{}' did not finish within {} ms and was stopped.",
                                             command.display(), command.timeout.count()));
  }
  if (WIFEXITED(status))
    outcome.exitCode = WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    outcome.termSignal = WTERMSIG(status);
  return outcome;
}

Result<Outcome> RecordingRunner::run(const Command& command) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(command);
  }
  if (handler_)
    return handler_(command);
  Outcome ok;
  ok.exitCode = 0;
  return ok;
}

std::vector<Command> RecordingRunner::commands() const {
  std::lock_guard lock(mutex_);
  return commands_;
}

void RecordingRunner::clear() {
  std::lock_guard lock(mutex_);
  commands_.clear();
}

Result<Outcome> runChecked(Runner& runner, const Command& command) {
  auto outcome = AULA_TRY(runner.run(command));
  if (outcome.succeeded())
    return outcome;
  std::string why = lastLine(outcome.err);
  if (why.empty())
    why = lastLine(outcome.out);
  if (outcome.termSignal != 0) {
    return Error(Errc::kIo, fmt::format("'{}' was killed by signal {}.", command.display(),
                                        outcome.termSignal));
  }
  return Error(Errc::kIo,
               fmt::format("'{}' failed with exit code {}: {}", command.display(), outcome.exitCode,
                           why.empty() ? std::string("(no output).") : why),
               outcome.exitCode);
}

}  // namespace aula::process
