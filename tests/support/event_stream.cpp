// Reading the broker's live event stream (see event_stream.hpp).
#include "support/event_stream.hpp"

#include <fstream>
#include <sstream>

namespace aula::test {

std::string readIfThere(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<StreamEvent> parseEvents(const std::string& text) {
  std::vector<StreamEvent> out;
  std::istringstream lines(text);
  StreamEvent event;
  auto finish = [&] {
    if (!event.type.empty())
      out.push_back(std::move(event));
    event = StreamEvent{};
  };
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("id: "))
      event.id = std::strtoull(line.c_str() + 4, nullptr, 10);
    else if (line.starts_with("event: "))
      event.type = line.substr(7);
    else if (line.starts_with("data: "))
      event.data = json::Json::parse(line.substr(6), nullptr, false);
    else if (line.empty())
      finish();
  }
  finish();
  return out;
}

}  // namespace aula::test
