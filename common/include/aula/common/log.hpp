// Logging for every Aula daemon and tool.
//
// Lines go to stderr ("2026-11-22T10:00:00.123Z warn  broker: message"), or,
// when the process runs under systemd with its stderr connected to the journal
// (JOURNAL_STREAM names stderr's device and inode), to sd-journal with the
// level as PRIORITY and the component as a field. Nothing secret is logged:
// callers pass no passwords, tokens or keys, and messages are sentences.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace aula::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn"/"warning", "error" (any case).
std::optional<Level> parseLevel(std::string_view text);
std::string_view levelName(Level level);

// Process-wide settings, normally set once in main().
void setLevel(Level level);
Level level();
void setComponent(std::string_view component);  // "broker", "agent", ...
// Overrides where lines go (tests capture them). nullptr restores the default.
using Sink = std::function<void(Level, std::string_view component, std::string_view message)>;
void setSink(Sink sink);
// True when lines go to the journal rather than stderr.
bool usingJournal();
// True when `journalStream` (JOURNAL_STREAM's "<dev>:<inode>") names the file
// open at `fd`. The variable alone is not enough: a child may inherit it with
// another stderr.
bool streamIsJournal(std::string_view journalStream, int fd);

void write(Level level, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) {
  if (level() <= Level::kDebug)
    write(Level::kDebug, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  if (level() <= Level::kInfo)
    write(Level::kInfo, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  if (level() <= Level::kWarn)
    write(Level::kWarn, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kError, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace aula::log
