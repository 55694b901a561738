#!/usr/bin/env bash
# Puts the boot loaders the broker serves over TFTP ([boot] tftp_listen)
# into its [boot] loaders_dir: Debian's signed shim, MOK manager and network
# GRUB for UEFI PCs with Secure Boot on, and iPXE for BIOS and UEFI PCs
# without it. The signed files come from Debian's packages, fetched with
# apt-get download (which checks them against the archive's signed package
# lists) and unpacked, not installed: this machine's own boot loader stays
# as it is. Run it again after a Debian point release to take new loaders.
#
#   provisioning/fetch-loaders.sh /var/lib/aula/broker/loaders
set -euo pipefail
# shellcheck source=provisioning/lib/setup.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/setup.sh"
umask 022

PROG=fetch-loaders.sh
ok() { echo "  ok       $*"; }
changed() { echo "  changed  $*"; }

usage() {
  cat <<'USAGE'
Usage: fetch-loaders.sh [--skip-install] DIR
Puts Debian's signed shim (shimx64.efi), MOK manager (mmx64.efi) and network
GRUB (grubx64.efi), and iPXE (undionly.kpxe, snponly.efi, ipxe.efi), into
DIR, the broker's [boot] loaders_dir; DIR/VERSIONS says which packages they
came from. Needs apt's package lists (it runs apt-get update when they are
older than a day).

  --skip-install   do not install the ipxe package (its files must be there)
  -h, --help       show this help

Exit status: 0 when done, 1 when a step failed, 2 for a bad option or value.
USAGE
}

SKIP_INSTALL=0
DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    -*) bad_usage "unknown option '$1'; see --help." ;;
    *)
      [[ -z "$DIR" ]] || bad_usage "give one folder, not '$DIR' and '$1'."
      DIR=$1
      ;;
  esac
  shift
done
[[ -n "$DIR" ]] || bad_usage "name the folder to put the loaders in (the broker's [boot] loaders_dir), such as /var/lib/aula/broker/loaders."
[[ "$DIR" != *[[:space:]]* ]] || bad_usage "the folder '$DIR' has a space in it; give one without."
[[ $(id -u) -eq 0 ]] || die "run this as root: it may install the ipxe package and runs apt-get."

[[ $SKIP_INSTALL -eq 1 ]] || ensure_packages ipxe
# shim-signed's file, the MOK manager shim starts when it cannot check the
# next loader, and GRUB's network image (Debian builds it with TFTP and
# efinet but no HTTP).
declare -A FROM=(
  [shimx64.efi]="shim-signed:usr/lib/shim/shimx64.efi.signed"
  [mmx64.efi]="shim-helpers-amd64-signed:usr/lib/shim/mmx64.efi.signed"
  [grubx64.efi]="grub-efi-amd64-signed:usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
)
PACKAGES=(shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aula-loaders.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]]; then
  apt-get update -q >/dev/null || die "apt-get update failed; check this machine's apt sources."
fi
# apt-get download runs as _apt where it can, which must be able to write here.
chmod 0777 "$WORK"
(cd "$WORK" && apt-get download -q "${PACKAGES[@]}" >"$WORK/download.log" 2>&1) \
  || die "apt-get download ${PACKAGES[*]} failed: $(tail -1 "$WORK/download.log")"
for pkg in "${PACKAGES[@]}"; do
  deb=$(find "$WORK" -maxdepth 1 -name "${pkg}_*.deb" | head -1)
  [[ -n "$deb" ]] || die "apt-get download left no package file for $pkg."
  dpkg-deb -x "$deb" "$WORK/$pkg" || die "cannot unpack $deb."
  echo "$pkg $(dpkg-deb -f "$deb" Version)" >>"$WORK/VERSIONS"
done
for f in undionly.kpxe snponly.efi ipxe.efi; do
  [[ -f "/usr/lib/ipxe/$f" ]] || die "/usr/lib/ipxe/$f is missing; install the package ipxe."
  FROM[$f]="ipxe:/usr/lib/ipxe/$f"
done
echo "ipxe $(dpkg-query -W -f='${Version}' ipxe 2>/dev/null || echo unknown)" >>"$WORK/VERSIONS"

mkdir -p "$DIR"
for name in "${!FROM[@]}"; do
  pkg=${FROM[$name]%%:*}
  path=${FROM[$name]#*:}
  [[ "$path" == /* ]] || path=$WORK/$pkg/$path
  [[ -f "$path" ]] || die "$pkg has no ${path#"$WORK/$pkg/"}; Debian may have moved it."
  install_if_changed "$path" "$DIR/$name" "$DIR/$name from $pkg"
done
install -m 0644 "$WORK/VERSIONS" "$DIR/VERSIONS"
echo "$PROG: the broker's loaders are in $DIR:"
sed 's/^/  /' "$DIR/VERSIONS"
