// PCI addresses (see pci_address.hpp).
#include "aula/common/pci_address.hpp"

#include <algorithm>
#include <cctype>

namespace aula {

std::optional<std::string> canonicalPciAddress(std::string_view text) {
  std::string full(text);
  if (full.size() == 7)
    full = "0000:" + full;
  if (full.size() != 12 || full[4] != ':' || full[7] != ':' || full[10] != '.')
    return std::nullopt;
  for (std::size_t i = 0; i < full.size(); ++i) {
    if (i == 4 || i == 7 || i == 10)
      continue;
    if (std::isxdigit(static_cast<unsigned char>(full[i])) == 0)
      return std::nullopt;
    full[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(full[i])));
  }
  if (full[11] < '0' || full[11] > '7')  // eight functions per slot
    return std::nullopt;
  return full;
}

}  // namespace aula
