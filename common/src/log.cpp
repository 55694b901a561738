// Where log lines go: stderr, the journal, or a sink set by a test.
#include "aula/common/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "aula/common/callback_guard.hpp"

namespace aula::log {
namespace {

struct State {
  std::mutex mutex;
  std::string component = "aula";
  Sink sink;
  int journal = -1;  // -1: not decided yet, 0: stderr, 1: journal
};

State& state() {
  static State instance;
  return instance;
}

std::atomic<int> gLevel{static_cast<int>(Level::kInfo)};

bool stderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  return stream != nullptr && streamIsJournal(stream, STDERR_FILENO);
}

int syslogPriority(Level level) {
  switch (level) {
    case Level::kDebug:
      return LOG_DEBUG;
    case Level::kInfo:
      return LOG_INFO;
    case Level::kWarn:
      return LOG_WARNING;
    case Level::kError:
      return LOG_ERR;
  }
  return LOG_INFO;
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  (void)std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, ms.count());
}

}  // namespace

bool streamIsJournal(std::string_view journalStream, int fd) {
  unsigned long long dev = 0;
  unsigned long long ino = 0;
  std::string text(journalStream);
  if (std::sscanf(text.c_str(), "%llu:%llu", &dev, &ino) != 2)
    return false;
  struct stat st {};
  if (fstat(fd, &st) != 0)
    return false;
  return st.st_dev == dev && st.st_ino == ino;
}

std::optional<Level> parseLevel(std::string_view text) {
  std::string lower;
  for (char c : text)
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower == "debug")
    return Level::kDebug;
  if (lower == "info")
    return Level::kInfo;
  if (lower == "warn" || lower == "warning")
    return Level::kWarn;
  if (lower == "error")
    return Level::kError;
  return std::nullopt;
}

std::string_view levelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

void setLevel(Level level) {
  gLevel.store(static_cast<int>(level));
}
Level level() {
  return static_cast<Level>(gLevel.load());
}

void setComponent(std::string_view component) {
  std::lock_guard lock(state().mutex);
  state().component = std::string(component);
}

void setSink(Sink sink) {
  std::lock_guard lock(state().mutex);
  state().sink = std::move(sink);
}

bool usingJournal() {
  std::lock_guard lock(state().mutex);
  if (state().journal < 0)
    state().journal = stderrIsJournal() ? 1 : 0;
  return state().journal == 1;
}

void write(Level lvl, std::string_view message) {
  if (lvl < level())
    return;
  bool journal = usingJournal();
  std::lock_guard lock(state().mutex);
  auto& s = state();
  if (s.sink) {
    s.sink(lvl, s.component, message);
    return;
  }
  if (journal) {
    sd_journal_send("MESSAGE=%.*s", static_cast<int>(message.size()), message.data(), "PRIORITY=%d",
                    syslogPriority(lvl), "AULA_COMPONENT=%s", s.component.c_str(),
                    "SYSLOG_IDENTIFIER=aula-%s", s.component.c_str(), nullptr);
    return;
  }
  std::string line =
      fmt::format("{} {:<5} {}: {}\n", timestamp(), levelName(lvl), s.component, message);
  (void)std::fwrite(line.data(), 1, line.size(), stderr);  // nowhere to report it
}

}  // namespace aula::log

namespace aula::detail {

void logEscapedException(std::string_view where, const std::exception* e) noexcept {
  try {
    log::error("An exception escaped the callback '{}' and was stopped there: {}.", where,
               e != nullptr ? e->what() : "an unknown exception");
  } catch (...) {  // NOLINT(bugprone-empty-catch): nothing may leave a callback
  }
}

}  // namespace aula::detail
