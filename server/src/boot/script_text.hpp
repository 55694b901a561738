// Text that goes into boot loaders' scripts (iPXE's and GRUB's); not a
// public header.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace aula::broker::script {

// Printable ASCII of `text`, at most `max` characters: each character of
// `from` becomes the one at the same place in `to`, line breaks and tabs
// spaces, a UTF-8 letter '?', other control bytes nothing.
std::string printable(std::string_view text, std::size_t max, std::string_view from,
                      std::string_view to);

// A sentence cut at spaces into lines that fit an 80-column console.
std::vector<std::string> wrap(std::string_view text, std::size_t width = 70);

}  // namespace aula::broker::script
