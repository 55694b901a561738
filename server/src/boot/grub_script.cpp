// GRUB scripts (see grub_script.hpp).
#include "boot/grub_script.hpp"

#include <fmt/format.h>

#include "boot/script_text.hpp"

namespace aula::broker::grub {

namespace {

// Sets $aula_self, the PC's own script, so any menu can ask again, and
// tells the bootstrap that the server answered.
std::string selfPart() {
  return fmt::format("set aula_self=\"{}\"\nset aula_answered=1\n", kSelfPath);
}

// The reason as menu lines; each tries again when chosen, like the default
// entry.
std::string reasonEntries(std::string_view text) {
  std::string out;
  for (const auto& line : script::wrap(text))
    out += fmt::format("menuentry \"  {}\" {{\n  configfile \"$aula_self\"\n}}\n", line);
  return out;
}

std::string menuPart(std::string_view reason) {
  return fmt::format(
      "echo \"Aula could not start this PC: {0}\"\n"
      "set timeout=60\n"
      "set default=aula_retry\n"
      "menuentry 'Aula could not start this PC:' {{\n  configfile \"$aula_self\"\n}}\n"
      "{1}"
      "menuentry \"  This PC: MAC $net_default_mac  IP $net_default_ip  (UEFI, Secure Boot "
      "path)\" {{\n  configfile \"$aula_self\"\n}}\n"
      "menuentry 'Try again' --id aula_retry {{\n  configfile \"$aula_self\"\n}}\n"
      "menuentry 'Start from the local disk' --id aula_local {{\n"
      "  echo 'Starting from the local disk...'\n  exit\n}}\n",
      reason, reasonEntries(reason));
}

// The command line as double-quoted words, so nothing in it is GRUB syntax.
std::string quotedWords(std::string_view cmdline) {
  std::string out;
  std::size_t i = 0;
  while (i < cmdline.size()) {
    while (i < cmdline.size() && cmdline[i] == ' ')
      ++i;
    const auto end = std::min(cmdline.find(' ', i), cmdline.size());
    if (end > i)
      out += fmt::format(" \"{}\"", safeText(cmdline.substr(i, end - i), 4096));
    i = end;
  }
  return out;
}

}  // namespace

std::string safeText(std::string_view text, std::size_t max) {
  return script::printable(text, max, "$\"\\", "S'/");
}

std::string bootstrapScript() {
  // `source` runs the PC's script here, so its menu is this menu; when the
  // server does not answer, the menu below is all there is.
  return "# Aula: asks the Aula server what this PC boots.\n" + selfPart() +
         "set aula_answered=0\n"
         "source \"$aula_self\"\n"
         "if [ \"$aula_answered\" != 1 ]; then\n" +
         menuPart("The Aula server did not answer this PC's boot request.") + "fi\n";
}

std::string imageScript(std::string_view base, std::string_view cmdline, std::string_view title) {
  return fmt::format(
      "{}"
      "echo \"{}\"\n"
      "if linux {}/vmlinuz{}; then\n"
      "  if initrd {}/initrd.img; then\n"
      "    boot\n"
      "  fi\n"
      "fi\n"
      "{}",
      selfPart(), safeText(title), base, quotedWords(cmdline), base,
      menuPart("Loading this PC's image from the Aula server failed (see the message above). "
               "The server may be busy: try again."));
}

std::string menuScript(std::string_view reason) {
  return selfPart() + menuPart(safeText(reason));
}

std::string localScript() {
  return "echo 'This PC is not registered with Aula, which is set to start such PCs from their "
         "own disk.'\n"
         "exit\n";
}

}  // namespace aula::broker::grub
