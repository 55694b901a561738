// Text for boot scripts (see script_text.hpp).
#include "boot/script_text.hpp"

namespace aula::broker::script {

std::string printable(std::string_view text, std::size_t max, std::string_view from,
                      std::string_view to) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max)
      break;
    const auto u = static_cast<unsigned char>(c);
    if (const auto at = from.find(c); at != std::string_view::npos && at < to.size())
      out.push_back(to[at]);
    else if (u >= 0x20 && u < 0x7f)
      out.push_back(c);
    else if (c == '\n' || c == '\t')
      out.push_back(' ');
    else if (u >= 0xc0)
      out.push_back('?');  // the first byte of a UTF-8 letter; its other bytes are dropped
  }
  return out;
}

std::vector<std::string> wrap(std::string_view text, std::size_t width) {
  std::vector<std::string> lines;
  while (!text.empty()) {
    std::size_t cut = text.size();
    if (cut > width) {
      cut = text.rfind(' ', width);
      if (cut == std::string_view::npos || cut == 0)
        cut = width;
    }
    lines.emplace_back(text.substr(0, cut));
    text.remove_prefix(cut);
    while (!text.empty() && text.front() == ' ')
      text.remove_prefix(1);
  }
  return lines;
}

}  // namespace aula::broker::script
