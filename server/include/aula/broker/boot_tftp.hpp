// What the broker's TFTP listener (boot.tftp_listen) serves: the Secure
// Boot path. A UEFI PC with Secure Boot on gets Debian's signed shim from
// DHCP's TFTP server, this one; shim loads Debian's signed network GRUB
// from here, and that GRUB, which reads only TFTP, asks here what the PC
// boots (BootHostService::grub) and loads the image's kernel, which shim
// checks, and initramfs from the same image store HTTP serves.
#pragma once

#include "aula/common/tftp_server.hpp"

namespace aula::broker {

struct Broker;

// The loaders served from boot.loaders_dir, as named on the TFTP server
// (provisioning/fetch-loaders.sh puts them there). A Secure Boot PC gets
// shim (DHCP's boot file), then the GRUB shim looks for beside itself, and
// the MOK manager shim starts when it cannot check GRUB; when PXE's TFTP is
// the broker's (pxe-setup.sh --secure-boot), BIOS PCs get iPXE from here too.
inline constexpr std::string_view kLoaders[] = {"shimx64.efi",   "grubx64.efi", "mmx64.efi",
                                                "undionly.kpxe", "snponly.efi", "ipxe.efi"};

// Answers TFTP read requests: the loaders, GRUB's
// bootstrap and each PC's GRUB script, and the images' files.
tftp::Handler bootTftpHandler(Broker& broker);

}  // namespace aula::broker
