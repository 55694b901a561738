// iPXE scripts (see ipxe_script.hpp).
#include "boot/ipxe_script.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "boot/script_text.hpp"

namespace aula::broker::ipxe {

namespace {

// The reason as the menu's --gap items.
std::string gapLines(std::string_view text) {
  std::string out;
  for (auto& line : script::wrap(text)) {
    if (line.front() == '-')
      line.front() = '*';  // not an option of 'item'
    out += fmt::format("item --gap {}\n", line);
  }
  return out;
}

// The menu as a labelled part of a script; `:aula_menu` is where a failed
// step in the same script goes.
std::string menuPart(std::string_view origin, std::string_view reason) {
  const std::string why = safeText(reason);
  return fmt::format(
      ":aula_menu\n"
      // A firmware's iPXE built without menus still shows the reason and
      // tries again after a pause.
      "menu Aula could not start this PC || goto aula_plain\n"
      "{}"
      "item --gap\n"
      "item --gap This PC: MAC ${{netX/mac}}  IP ${{netX/ip}}  (${{platform}} ${{buildarch}})\n"
      "item --gap\n"
      "item --default aula_retry Try again\n"
      "item aula_local Start from the local disk\n"
      "choose --timeout 60000 --default aula_retry aula_choice || goto aula_retry\n"
      "goto ${{aula_choice}}\n"
      ":aula_plain\n"
      "echo Aula could not start this PC: {}\n"
      "echo This PC: MAC ${{netX/mac}}  IP ${{netX/ip}}\n"
      "echo Trying again in 60 seconds...\n"
      "sleep 60\n"
      ":aula_retry\n"
      "chain --replace --autofree {}{} || goto aula_menu\n"
      ":aula_local\n"
      "echo Starting from the local disk...\n"
      "exit 1\n",
      gapLines(why), why, origin, kSelfQuery);
}

}  // namespace

std::string safeText(std::string_view text, std::size_t max) {
  return script::printable(text, max, "$", "S");
}

std::string originOf(std::string_view hostHeader) {
  // A host name, an IPv4 or [IPv6] address, and a port: nothing iPXE would
  // read as a setting or an operator.
  const bool plain = !hostHeader.empty() && hostHeader.size() <= 255 &&
                     std::all_of(hostHeader.begin(), hostHeader.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' ||
                              c == '-' || c == ':' || c == '[' || c == ']';
                     });
  return plain ? "http://" + std::string(hostHeader) : std::string();
}

std::string chainScript(std::string_view origin) {
  return fmt::format("#!ipxe\nchain --replace --autofree {}{} || goto aula_menu\n{}", origin,
                     kSelfQuery,
                     menuPart(origin, "The Aula server did not answer this PC's boot request."));
}

std::string imageScript(std::string_view origin, std::string_view base, std::string_view cmdline,
                        std::string_view title) {
  return fmt::format(
      "#!ipxe\n"
      "echo {}\n"
      "kernel {}/vmlinuz initrd=initrd.img {} || goto aula_failed\n"
      "initrd --name initrd.img {}/initrd.img || goto aula_failed\n"
      "boot || goto aula_failed\n"
      ":aula_failed\n"
      "imgfree\n"
      "{}",
      safeText(title), base, cmdline, base,
      menuPart(origin,
               "Loading this PC's image from the Aula server failed (see the message above). "
               "The server may be busy: try again."));
}

std::string menuScript(std::string_view origin, std::string_view reason) {
  return "#!ipxe\n" + menuPart(origin, reason);
}

std::string localScript() {
  return "#!ipxe\necho This PC is not registered with Aula, which is set to start such PCs from "
         "their own disk.\n"
         "exit 1\n";
}

}  // namespace aula::broker::ipxe
