// The console as a virt-viewer connection file (.vv), which remote-viewer
// opens: the same host, ports, ticket, CA and host subject as the JSON
// console descriptor, in the GKeyFile format virt-viewer reads.
#pragma once

#include <string>

namespace aula::broker {

struct ConsoleFile {
  std::string host;
  int tlsPort = 0;    // 0: none
  int plainPort = 0;  // 0: none (always, outside of tests)
  std::string password;
  std::string caPem;  // the CA the host's SPICE certificate chains to
  std::string hostSubject;
  std::string title;  // the window title: the desktop's name
  std::string usb;    // the template's USB policy: none, storage, all ("": none)
};

// The file's text: a [virt-viewer] group with type=spice, the connection
// keys, delete-this-file=1, and secure-channels=all when there is no plain
// port, and the USB policy as usb-filter (plus usb-autoshare=1 when it lets
// any device through). Values are escaped as GKeyFile reads them back (newlines as the two
// characters \n); the title is also made one harmless line.
std::string renderVirtViewerFile(const ConsoleFile& console);

}  // namespace aula::broker
