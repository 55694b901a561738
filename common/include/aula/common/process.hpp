// Running other programs (qemu-img, virsh, mmdebstrap...) safely: an argv,
// never a shell string; output captured; a timeout that kills the whole
// process group. Code that runs programs takes a Runner&, so tests can pass a
// RecordingRunner that records the commands and answers from a script.
#pragma once

#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "aula/common/result.hpp"

namespace aula::process {

struct Command {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::chrono::milliseconds timeout{60000};
  std::optional<std::string> stdinData;
  std::vector<std::pair<std::string, std::string>>
      env;  // added to (or replacing in) the environment
  std::optional<std::filesystem::path> workingDir;

  std::string display() const;  // argv joined with spaces, for messages and logs
};

struct Outcome {
  int exitCode = -1;   // when the program exited
  int termSignal = 0;  // when a signal ended it
  std::string out;
  std::string err;

  bool succeeded() const { return termSignal == 0 && exitCode == 0; }
};

class Runner {
 public:
  virtual ~Runner() = default;
  // Errors: kNotFound (no such program), kTimeout (killed after the timeout),
  // kIo (pipes, fork). A program that runs and fails is an Outcome, not an Error.
  virtual Result<Outcome> run(const Command& command) = 0;
};

// Runs for real, with fork and exec.
class SystemRunner final : public Runner {
 public:
  Result<Outcome> run(const Command& command) override;
};

// Records each command and answers from a handler (default: exit 0, no output).
class RecordingRunner final : public Runner {
 public:
  using Handler = std::function<Result<Outcome>(const Command&)>;
  explicit RecordingRunner(Handler handler = {}) : handler_(std::move(handler)) {}

  Result<Outcome> run(const Command& command) override;

  std::vector<Command> commands() const;
  void clear();

 private:
  Handler handler_;
  mutable std::mutex mutex_;
  std::vector<Command> commands_;
};

// Runs and requires exit code 0; otherwise kIo with the program, its exit code
// and the last line of its stderr.
Result<Outcome> runChecked(Runner& runner, const Command& command);

}  // namespace aula::process
