// The iPXE scripts the boot endpoint answers with (not a public header).
// Every script a PC gets ends in something it can act on: the image boots,
// or a menu says why not, with the PC's MAC and IP, and offers to try
// again or to start from the local disk. A failed download or boot inside
// the image script falls back to the same menu, so no answer leaves a PC
// at a prompt.
#pragma once

#include <string>
#include <string_view>

namespace aula::broker::ipxe {

// The query every script sends back: iPXE fills in the PC's own settings.
inline constexpr std::string_view kSelfQuery =
    "/boot/ipxe?mac=${netX/mac}&ip=${netX/ip}&platform=${platform}&buildarch=${buildarch}";

// Every URL in a script is absolute, `origin` + path, with `origin` the
// boot listener as the PC reached it ("http://10.0.2.2:8080"): the iPXE of
// Debian 12's QEMU ROMs (2019) cannot fetch a path relative to the script.
// Empty when the request named no usable host; the paths stay relative.
std::string originOf(std::string_view hostHeader);

// For a request without the PC's settings (DHCP's boot file name is a
// plain URL): asks again with them.
std::string chainScript(std::string_view origin);

// Boots kernel and initramfs from `base` ("http://.../boot/images/thin/VERSION"),
// the kernel given `cmdline`; `title` is shown while it loads.
std::string imageScript(std::string_view origin, std::string_view base, std::string_view cmdline,
                        std::string_view title);

// The menu: `reason` (any text; made safe for iPXE), retry, local boot.
std::string menuScript(std::string_view origin, std::string_view reason);

// Leaves network boot: the firmware goes on to its next boot device.
std::string localScript();

// Text safe to put in an iPXE script: printable ASCII only, no '$' (which
// iPXE would expand), at most `max` characters.
std::string safeText(std::string_view text, std::size_t max = 400);

}  // namespace aula::broker::ipxe
