// The GRUB scripts of the Secure Boot path (not a public header). A UEFI PC
// with Secure Boot on boots Debian's signed shim, which loads Debian's
// signed network GRUB; that GRUB reads only TFTP, from the server DHCP named
// (the broker's TFTP listener), and first runs `$prefix/grub.cfg`, the
// bootstrap, which asks for the PC's own script with its settings. Like the
// iPXE scripts, every answer ends in something the PC can act on: the
// image boots, or a menu says why not and offers to try again or to start
// from the local disk.
#pragma once

#include <string>
#include <string_view>

namespace aula::broker::grub {

// Where GRUB looks for its configuration on the TFTP server: its prefix is
// "/grub", and it tries the platform's directory first.
inline constexpr std::string_view kBootstrapPaths[] = {"grub/grub.cfg", "grub/x86_64-efi/grub.cfg"};

// The path of a PC's own script; GRUB fills in the PC's settings.
inline constexpr std::string_view kSelfPath =
    "/boot/grub?mac=${net_default_mac}&ip=${net_default_ip}&platform=${grub_platform}&"
    "buildarch=${grub_cpu}";

// The bootstrap: asks for the PC's own script, and offers the menu when
// the server does not answer.
std::string bootstrapScript();

// Boots `base` + "/vmlinuz" and "/initrd.img" (paths on the TFTP server the
// PC booted from), the kernel given `cmdline`; `title` is shown while it loads.
std::string imageScript(std::string_view base, std::string_view cmdline, std::string_view title);

// The menu: `reason` (any text; made safe for GRUB), retry, local boot.
std::string menuScript(std::string_view reason);

// Leaves network boot: the firmware goes on to its next boot option.
std::string localScript();

// Text safe inside double quotes in a GRUB script: printable ASCII only,
// with no '$' (GRUB would expand it), '"' or '\\', at most `max` characters.
std::string safeText(std::string_view text, std::size_t max = 400);

}  // namespace aula::broker::grub
