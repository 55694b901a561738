// The console as a virt-viewer connection file (see console_file.hpp).
#include "aula/broker/console_file.hpp"

#include <fmt/format.h>

#include "aula/common/usb_policy.hpp"

namespace aula::broker {

namespace {

bool isControl(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

// A value as GKeyFile's string parser reads it back: it knows only the
// escapes \n \r \t \\ and \s, and drops leading blanks unless escaped.
// Other control characters have no escape and no business in these values.
std::string escapeValue(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case ' ':
        out += out.empty() ? "\\s" : " ";
        break;
      default:
        if (!isControl(c))
          out.push_back(c);
    }
  }
  return out;
}

// A desktop name as a window title: one line, no group-header brackets,
// blanks collapsed. Names pass the API's name rule, but the file must stay
// well-formed whatever a name holds.
std::string sanitizeTitle(std::string_view name) {
  std::string out;
  bool blank = false;
  for (char c : name) {
    if (isControl(c) || c == ' ') {
      blank = !out.empty();
      continue;
    }
    if (blank) {
      out.push_back(' ');
      blank = false;
    }
    out.push_back(c == '[' ? '(' : c == ']' ? ')' : c);
  }
  return out;
}

}  // namespace

std::string renderVirtViewerFile(const ConsoleFile& console) {
  std::string out = "[virt-viewer]\ntype=spice\n";
  out += fmt::format("host={}\n", escapeValue(console.host));
  if (console.plainPort > 0)
    out += fmt::format("port={}\n", console.plainPort);
  if (console.tlsPort > 0)
    out += fmt::format("tls-port={}\n", console.tlsPort);
  out += fmt::format("password={}\n", escapeValue(console.password));
  if (!console.caPem.empty())
    out += fmt::format("ca={}\n", escapeValue(console.caPem));
  if (!console.hostSubject.empty())
    out += fmt::format("host-subject={}\n", escapeValue(console.hostSubject));
  if (auto title = sanitizeTitle(console.title); !title.empty())
    out += fmt::format("title={}\n", escapeValue(title));
  out += "delete-this-file=1\n";
  // Devices plugged in while the viewer runs go to the desktop as the
  // template allows; none unless it says so.
  const auto filter = usbRedirFilter(console.usb).value_or(*usbRedirFilter("none"));
  out += fmt::format("usb-filter={}\n", filter);
  if (console.usb == "storage" || console.usb == "all")
    out += "usb-autoshare=1\n";
  // Without a plain port every channel must use TLS; say so, so that a
  // viewer never falls back to an unencrypted connection.
  if (console.plainPort <= 0 && console.tlsPort > 0)
    out += "secure-channels=all\n";
  return out;
}

}  // namespace aula::broker
