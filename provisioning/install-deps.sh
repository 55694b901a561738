#!/usr/bin/env bash
# Installs every Debian 12 package that building, running and testing Aula
# needs, from Debian's own archive only. Idempotent: packages already present
# are left alone, and it says what it installs.
#
#   provisioning/install-deps.sh            # everything (build + run + test)
#   provisioning/install-deps.sh --list     # print the package list and exit
set -euo pipefail

# Build toolchain and quality gates.
BUILD=(build-essential cmake ninja-build pkg-config ccache git clang-format clang-tidy
       python3 openssl ca-certificates curl procps iproute2)
# Libraries of common/ and the components.
LIBS=(libfmt-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
      libcurl4-openssl-dev libmbedtls-dev libsystemd-dev
      libargon2-dev libsqlite3-dev libpq-dev libldap-dev
      libvirt-dev
      # The greeter: cairo and pango draw its screens in Inter; msgfmt
      # compiles its translations; libdrm, libinput, xkbcommon (and its
      # layouts) and libseat reach the screen and keyboard.
      libcairo2-dev libpango1.0-dev fonts-inter gettext
      libdrm-dev libinput-dev libudev-dev libxkbcommon-dev xkb-data libseat-dev
      # The desktop's sound, straight to ALSA.
      libasound2-dev)
# Tests and benchmarks: the real daemons the integration tests start
# (PostgreSQL, OpenLDAP), libFuzzer's runtime, and the curl CLI for SSE.
# spice-client-glib (no GTK) is what tests/tools/aula-spice-probe is built on.
# Samba in AD DC mode stands in for a school's Active Directory.
TEST=(libgtest-dev libgmock-dev libbenchmark-dev postgresql slapd ldap-utils
      samba samba-ad-dc samba-ad-provision clang libclang-rt-14-dev
      libvirt-clients libxml2-utils
      libvirt-daemon-system spice-client-gtk libspice-client-glib-2.0-dev
      dnsmasq-base ipxe ovmf
      # bench/session_bench: Debian's remote-viewer under Xvfb, read with Xlib.
      virt-viewer xvfb libx11-dev
      # The workstation agent's D-Bus API: a private dbus-daemon, busctl
      # (systemd's, which does not run as PID 1 here) and setpriv to call
      # as another user.
      dbus-daemon systemd util-linux)
# The test guest (tests/template/): QEMU under TCG, and the tools that build
# its disk without mounting anything; the greeter's test VM
# (tests/greeter_vm/): seatd in its initramfs, packed with cpio and zstd.
GUEST=(qemu-system-x86 qemu-utils syslinux syslinux-common mtools dosfstools fdisk cpio
       seatd zstd)
# The lab image (image/build.sh): mmdebstrap builds its root from Debian's
# packages; ICU's tools make its empty data library; xz packs it.
IMAGE=(mmdebstrap icu-devtools xz-utils kmod binutils)

PACKAGES=("${BUILD[@]}" "${LIBS[@]}" "${TEST[@]}" "${GUEST[@]}" "${IMAGE[@]}")

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${PACKAGES[@]}"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: run this as root (it calls apt-get install)." >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps.sh: all ${#PACKAGES[@]} packages are already installed."
  exit 0
fi

echo "install-deps.sh: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages such as slapd and postgresql start their system service on
# install; Aula's tests start private instances instead, so keep the system
# ones down (policy-rc.d answering 101 tells invoke-rc.d not to start them).
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# Refresh the package lists only when they are missing or older than a day.
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]]; then
  apt-get update -q
fi
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  echo "install-deps.sh: apt-get install failed; refreshing the package lists and trying once more." >&2
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps.sh: done."
