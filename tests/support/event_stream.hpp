// Reading the broker's live event stream (text/event-stream) the way a
// client does: a file curl writes into, parsed into events.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aula/common/json.hpp"

namespace aula::test {

// The file's text, or "" while it does not exist yet.
std::string readIfThere(const std::filesystem::path& path);

// json's noexcept moves and destructor call code clang-tidy cannot prove
// non-throwing, as for Event.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct StreamEvent {
  std::uint64_t id = 0;  // 0 when the block had no id line
  std::string type;
  json::Json data;  // discarded (is_discarded()) when the data line is not JSON
};

// Blocks separated by blank lines; comments (": keep-alive") and blocks
// without an event line are skipped; a block cut off at the end counts.
std::vector<StreamEvent> parseEvents(const std::string& text);

}  // namespace aula::test
