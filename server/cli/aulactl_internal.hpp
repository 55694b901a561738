// What aulactl's command files share (not a public header): the saved
// session, the API call that prints the broker's error sentence, and the
// table or JSON output.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "aula/common/http_client.hpp"
#include "aula/common/json.hpp"

namespace CLI {
class App;
}

namespace aula::ctl::detail {

struct Session {
  std::string url;
  std::optional<std::string> caPem;
  std::optional<std::string> caFingerprint;
  std::string token;
};

std::filesystem::path credentialsPath();
Result<Session> loadSession();
http::Client clientFor(const Session& s);

// Sends a request; prints the API's error sentence and returns nullopt on failure.
std::optional<http::Response> call(const Session& s, const std::string& method,
                                   const std::string& path, const std::optional<json::Json>& body,
                                   const std::string& accept = "application/json",
                                   std::optional<std::chrono::milliseconds> timeout = std::nullopt);

// A table of `columns` for an array, "key: value" lines for an object, or
// the JSON itself with --json.
void output(const json::Json& j, bool asJson, const std::vector<std::string>& columns);

// A command's callback: runs `f` with the saved session and keeps its exit
// code; without a session, says how to log in and exits 1.
std::function<void()> withSavedSession(int& exitCode, std::function<int(const Session&)> f);

// An array of objects as a table of `columns`, times as dates.
void printTable(const json::Json& rows, const std::vector<std::string>& columns);

// aulactl images ... (aulactl_images.cpp).
void addImageCommands(CLI::App& app, const bool& asJson, int& exitCode);
// aulactl workstations ... (aulactl_workstations.cpp).
void addWorkstationCommands(CLI::App& app, const bool& asJson, int& exitCode);

}  // namespace aula::ctl::detail
