#!/usr/bin/env bash
# Builds the lab PC's image: Debian's kernel and one initramfs that holds the
# whole root, unpacked into RAM at boot, whose one program is aula-greeter.
# See docs/image.md.
#
#   image/build.sh --greeter BUILD/greeter/aula-greeter [--flavour thin] [--out DIR]
#                  [--gpu LIST] [--cache DIR] [--compress xz|zstd]
#
# From Debian 12's packages with mmdebstrap (variant essential, then the
# packages below): systemd as PID 1, udev, logind (through pam_systemd),
# systemd-networkd (DHCP on every wired NIC), systemd-resolved and
# systemd-timesyncd, and the greeter with the libraries it links, found from
# its own ELF dependencies on this build machine (Debian 12 too). The greeter
# is started by aula-greeter.service as the unprivileged user aula on seat0
# (tty1), and gets the DRM and input devices from logind through libseat.
#
# Writes OUT/FLAVOUR/{vmlinuz,initrd.img,manifest.json,version}. The version is
# the date of the Debian package set (its InRelease files) and the first 12
# hex digits of the recipe hash (this folder, the greeter, the options, the
# package set); two builds of one version give the same bytes. A build whose
# version is already in OUT/FLAVOUR does nothing. Downloaded packages are kept
# in CACHE/debs (default ~/.cache/aula-image) for the next build.
set -Eeuo pipefail
trap 'printf "%s: error: line %s: %s failed (status %s)\n" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

prog=image/build.sh
# Files in the image get their packages' modes, whatever the caller's umask
# (a tighter one would also keep apt's unprivileged downloader out).
umask 022
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
flavour=thin
out=
greeter=
locales=
gpus=default
cache=${AULA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aula-image}
compress=xz
mirror=${AULA_IMAGE_MIRROR:-http://deb.debian.org/debian}
security=${AULA_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

usage() {
    cat >&2 <<EOF
usage: $prog --greeter PATH [--flavour thin] [--out DIR] [--gpu LIST]
             [--locale-dir DIR] [--cache DIR] [--compress xz|zstd]

  --greeter PATH     the aula-greeter binary to put in (aula-usb-access is
                     taken from the same folder)
  --locale-dir DIR   its compiled translations (default: PATH's folder/locale)
  --flavour NAME     thin (the lab PC); workstation is not built yet
  --out DIR          where OUT/FLAVOUR/ is written (default: ./image-out)
  --gpu LIST         GPU drivers, comma-separated, from: $(tr '\n' ' ' <"$here/gpu-drivers" | sed 's/ *$//')
                     "default" is i915,radeon,nouveau,bochs,virtio-gpu,qxl
  --cache DIR        downloaded packages (default: $cache)
  --compress KIND    xz (smallest, the default) or zstd (faster to unpack)
EOF
    exit 2
}
while [[ $# -gt 0 ]]; do
    case $1 in
    --greeter) greeter=${2:?}; shift 2 ;;
    --locale-dir) locales=${2:?}; shift 2 ;;
    --flavour) flavour=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --gpu) gpus=${2:?}; shift 2 ;;
    --cache) cache=${2:?}; shift 2 ;;
    --compress) compress=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) log "unknown option '$1'"; usage ;;
    esac
done
[[ -n $greeter ]] || { log "--greeter is required"; usage; }
[[ -x $greeter ]] || die "--greeter $greeter is not an executable (build aula-greeter first: cmake --build --preset dev --target aula-greeter)"
greeter=$(readlink -f "$greeter")
usb_access=$(dirname "$greeter")/aula-usb-access
[[ -x $usb_access ]] || die "$usb_access is missing (it is built with aula-greeter)"
locales=${locales:-$(dirname "$greeter")/locale}
[[ -d $locales ]] || die "--locale-dir $locales is not a folder of translations"
case $flavour in
thin) ;;
workstation) die "--flavour workstation is not built yet (it comes with workstation mode); build thin" ;;
*) die "--flavour '$flavour' is not one of: thin, workstation" ;;
esac
case $compress in xz | zstd) ;; *) die "--compress '$compress' is not one of: xz, zstd" ;; esac
[[ $gpus == default ]] && gpus=i915,radeon,nouveau,bochs,virtio-gpu,qxl
IFS=, read -r -a gpu_list <<<"$gpus"
for g in "${gpu_list[@]}"; do
    grep -qx -- "$g" "$here/gpu-drivers" ||
        die "--gpu: '$g' is not a GPU driver the recipe knows; choose from: $(tr '\n' ' ' <"$here/gpu-drivers")"
done
[[ $(id -u) -eq 0 ]] || die "run this as root (mmdebstrap builds the root as root)"
for tool in mmdebstrap dpkg-deb apt-get cpio xz zstd depmod icupkg genccode gcc ldd curl; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is missing (provisioning/install-deps.sh installs it)"
done
out=${out:-$PWD/image-out}
mkdir -p "$out" "$cache/debs"
out=$(cd "$out" && pwd)
dest=$out/$flavour

# --- the package set: Debian's InRelease files, hashed ------------------------------------------
suites=("$mirror bookworm" "$mirror bookworm-updates" "$security bookworm-security")
releases=
for s in "${suites[@]}"; do
    read -r base suite <<<"$s"
    releases+=$(curl -fsS --retry 3 "$base/dists/$suite/InRelease") ||
        die "cannot read $base/dists/$suite/InRelease (no network to the Debian mirror? set AULA_IMAGE_MIRROR)"
    releases+=$'\n'
done
# The newest Date: of the three is the package set's date: it is also every
# file's time in the image (SOURCE_DATE_EPOCH), so that builds repeat.
epoch=$(grep '^Date:' <<<"$releases" | sed 's/^Date: //' | while read -r d; do date -d "$d" +%s; done | sort -n | tail -1)
export SOURCE_DATE_EPOCH=$epoch
work_hash=$(mktemp -d)
recipe_hash=$( (
    printf 'flavour=%s gpus=%s compress=%s\n' "$flavour" "$gpus" "$compress"
    sha256sum <<<"$releases"
    find "$here" -type f ! -name '*~' -print0 | sort -z | xargs -0 sha256sum | sed "s| $here/| |"
    # Stripped, as they go in: the same code built in another folder is the same image.
    for bin in "$greeter" "$usb_access"; do
        strip -o "$work_hash/bin" "$bin" && sha256sum <"$work_hash/bin"
    done
    find "$locales" -type f -print0 | sort -z | xargs -0 cat | sha256sum
) | sha256sum | cut -c1-12)
rm -rf "$work_hash"
version=$(date -u -d "@$epoch" +%Y%m%d)-$recipe_hash
if [[ -f $dest/version && $(cat "$dest/version") == "$version" && -f $dest/initrd.img && -f $dest/vmlinuz ]]; then
    log "$dest is version $version already: nothing to do"
    echo "$dest"
    exit 0
fi
log "building $flavour $version"
start=$SECONDS

work=$(mktemp -d "${TMPDIR:-/tmp}/aula-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

# --- what goes in --------------------------------------------------------------------------------
# The greeter's libraries: the Debian package of every library it links.
lib_packages() {
    local bin
    for bin in "$greeter" "$usb_access"; do
        ldd "$bin" | awk '/=> \//{print $3}'
    done | sort -u | while read -r lib; do
        dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null ||
            die "no Debian package holds $lib, which the greeter links"
    done | cut -d: -f1 | sort -u
}
mapfile -t greeter_libs < <(lib_packages)
mapfile -t base < <(grep -v '^\s*#' "$here/packages.$flavour" | awk 'NF{print $1}')
include=$(printf '%s,' "${base[@]}" "${greeter_libs[@]}")
include=${include%,}

# --- the root, with mmdebstrap; packages cached -------------------------------------------------
sources=$work/sources.list
for s in "${suites[@]}"; do
    read -r base_url suite <<<"$s"
    echo "deb $base_url $suite main" >>"$sources"
done
log "mmdebstrap: ${#base[@]} packages of the recipe and ${#greeter_libs[@]} of the greeter's libraries"
mmdebstrap --verbose --mode=root --variant=essential --include="$include" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in '$cache/debs' /var/cache/apt/archives" \
    --customize-hook="sync-out /var/cache/apt/archives '$cache/debs'" \
    --skip=cleanup/apt/cache \
    bookworm "$root" "$sources" >"$work/mmdebstrap.log" 2>&1 || {
    tail -n 60 "$work/mmdebstrap.log" >&2
    die "mmdebstrap failed (the end of its log is above)"
}
rm -rf "$root/var/cache/apt/archives"/*.deb

# The manifest's package list, before dpkg's database is pruned.
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}\t${Version}\t${Installed-Size}\n' |
    sort >"$work/packages.tsv"

# --- the kernel and its modules -----------------------------------------------------------------
kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kernel_pkg ]] || die "apt-cache does not know linux-image-amd64 on this machine (run apt-get update)"
kernel_deb=$(find "$cache/debs" -maxdepth 1 -name "${kernel_pkg}_*.deb" | sort | tail -1)
if [[ -z $kernel_deb ]]; then
    (cd "$cache/debs" && apt-get download -q "$kernel_pkg" >/dev/null 2>&1) ||
        (apt-get update -q >/dev/null && cd "$cache/debs" && apt-get download -q "$kernel_pkg" >/dev/null 2>&1) ||
        die "apt-get download $kernel_pkg failed"
    kernel_deb=$(find "$cache/debs" -maxdepth 1 -name "${kernel_pkg}_*.deb" | sort | tail -1)
fi
dpkg-deb -x "$kernel_deb" "$work/kernel"
kver=$(basename "$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -1)")
printf '%s\t%s\t%s\n' "$kernel_pkg" "$(dpkg-deb -f "$kernel_deb" Version)" \
    "$(dpkg-deb -f "$kernel_deb" Installed-Size)" >>"$work/packages.tsv"
depmod -b "$work/kernel" "$kver"
"$here/modules.sh" "$work/kernel/lib/modules/$kver" "$root/usr/lib/modules/$kver" "$here/modules" \
    "${gpu_list[@]}"
depmod -b "$root/usr" "$kver" 2>/dev/null || depmod -b "$root" "$kver"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"

# --- Aula: the greeter, its unit, its user ------------------------------------------------------
"$here/customize.sh" "$root" "$greeter" "$usb_access" "$locales" "$version" "$flavour"

# --- pack: one cpio, every file at the package set's time -----------------------------------------
find "$root" -newermt "@$epoch" -print0 | xargs -0r touch -h -d "@$epoch"
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --reproducible --quiet) >"$work/initrd.cpio"
case $compress in
xz) xz --check=crc32 -9 -T1 -c "$work/initrd.cpio" >"$work/initrd.img" ;;
zstd) zstd -q -19 -T1 -c "$work/initrd.cpio" >"$work/initrd.img" ;;
esac

"$here/manifest.py" --root "$root" --packages "$work/packages.tsv" --version "$version" \
    --flavour "$flavour" --kernel "$kver" --gpus "$gpus" --compress "$compress" \
    --cpio-size "$(stat -c %s "$work/initrd.cpio")" \
    "$work/vmlinuz" "$work/initrd.img" >"$work/manifest.json"

mkdir -p "$dest"
for f in vmlinuz initrd.img manifest.json; do
    mv "$work/$f" "$dest/$f.new" && mv "$dest/$f.new" "$dest/$f"
done
echo "$version" >"$dest/version"
log "built $flavour $version in $((SECONDS - start)) s: kernel $(du -k "$dest/vmlinuz" | cut -f1) KiB, initramfs $(du -k "$dest/initrd.img" | cut -f1) KiB"
echo "$dest"
