#!/usr/bin/env bash
# Builds the Aula test template: a tiny BIOS-bootable qcow2 disk whose screen shows a fixed,
# large "AULA TEST DESKTOP" text, so integration tests can tell a real guest's frame from a black
# one without downloading any OS image.
#
#   tests/template/build-test-template.sh OUTPUT.qcow2
#
# Everything comes from Debian packages: the kernel (the package that linux-image-amd64 depends
# on) and busybox-static are fetched with `apt-get download` into a temporary directory and
# unpacked there with dpkg-deb; nothing of them is installed on the host. The disk is a 32 MiB
# raw image with an MBR partition table, SYSLINUX's mbr.bin, one FAT16 partition built without
# mounting (mkfs.fat -C + mcopy) and made bootable with the mtools-based `syslinux --install`; it
# is converted to qcow2 at the end. The kernel and initramfs are loaded by SYSLINUX through the
# BIOS, so the guest needs no disk driver, and it draws on the VGA text console (vgacon, built
# into Debian's kernel), so it needs no module at all: it works with -vga qxl, std, cirrus or
# virtio, on the pc and q35 machine types.
#
# The guest's /init paints the whole 80x25 text screen blue with 20 rows of white
# "AULA TEST DESKTOP", prints `AULA-TEST-READY` on the serial console (ttyS0) and then keeps a
# root shell on ttyS0 for debugging. Kernel messages go to ttyS0 only.
#
# The mouse: the initramfs carries the xHCI and USB HID modules too, so the guest drives the USB
# tablet the agent gives every desktop. QEMU then takes the tablet as its pointer and SPICE runs in
# client mouse mode: the client sends where the pointer is, not how far it moved.
#
# Sound, so that tests can hear the desktop: the initramfs carries the kernel's HD Audio and OSS
# PCM modules (with what they depend on, from the package's modules.dep). /init loads them; when a
# sound card comes up (the `<sound model='ich9'/>` the agent gives every desktop) it plays a
# 440 Hz tone through OSS's /dev/dsp (8-bit, mono, 8 kHz; the kernel converts) at a quarter of
# full scale for 1 s out of every 10, with its mixer at half volume (`oss-volume 50`, a static
# helper built here with gcc), and says `AULA-TEST-SOUND` on ttyS0. The SPICE client scales the
# tone by that volume: a client that ignores it plays it at a quarter of full scale, one that
# honours it at an eighth. A guest without a sound card shows the text all the same.
#
# Idempotent: if OUTPUT exists and OUTPUT.stamp holds this script's SHA-256, it does nothing.
# Tools it needs on the host are checked and, when missing, installed with apt-get (as root).
set -euo pipefail

prog=build-test-template
log() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: $0 OUTPUT.qcow2" >&2
    exit 2
fi

output=$1
script=$(readlink -f "${BASH_SOURCE[0]}")
hash=$(sha256sum "$script" | cut -d' ' -f1)
stamp="$output.stamp"

if [[ -f $output && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    log "$output is up to date (stamp matches this script); nothing to do"
    exit 0
fi

start=$SECONDS
out_dir=$(dirname -- "$output")
[[ -d $out_dir ]] || die "output directory $out_dir does not exist"

# --- host tools -------------------------------------------------------------------------------
# "what must exist:the Debian package that provides it"
tools=(
    "qemu-img:qemu-utils"
    "python3:python3"
    "modinfo:kmod"
    "syslinux:syslinux"
    "/usr/lib/syslinux/mbr/mbr.bin:syslinux-common"
    "/usr/lib/syslinux/modules/bios/ldlinux.c32:syslinux-common"
    "mkfs.fat:dosfstools"
    "mcopy:mtools"
    "mdir:mtools"
    "sfdisk:fdisk"
    "cpio:cpio"
    "gzip:gzip"
    "dpkg-deb:dpkg"
    "apt-get:apt"
    "apt-cache:apt"
    "gcc:gcc"
    "/usr/lib/x86_64-linux-gnu/libc.a:libc6-dev"
)
have() {
    if [[ $1 == /* ]]; then [[ -e $1 ]]; else command -v "$1" >/dev/null 2>&1; fi
}
missing=()
for entry in "${tools[@]}"; do
    have "${entry%%:*}" || missing+=("${entry##*:}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    [[ $(id -u) -eq 0 ]] || die "missing host packages: ${missing[*]} (run as root, or install them with apt-get)"
    log "installing missing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q || die "apt-get update failed"
        apt-get install -y -q --no-install-recommends "${missing[@]}" \
            || die "could not install host packages: ${missing[*]}"
    fi
    for entry in "${tools[@]}"; do
        have "${entry%%:*}" || die "${entry%%:*} still missing after installing ${entry##*:}"
    done
fi
# mkfs.fat and sfdisk live in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

# --- work directory ---------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aula-template.XXXXXX")
part_tmp=""
cleanup() {
    rm -rf -- "$tmp"
    [[ -z $part_tmp ]] || rm -f -- "$part_tmp"
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM
log "working in $tmp"

# --- fetch and unpack the Debian packages -----------------------------------------------------
kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }'
}
kpkg=$(kernel_pkg || true)
if [[ -z $kpkg ]]; then
    [[ $(id -u) -eq 0 ]] || die "apt-cache knows no linux-image-amd64; run apt-get update as root"
    log "apt-cache knows no linux-image-amd64 yet; running apt-get update"
    apt-get update -q || die "apt-get update failed"
    kpkg=$(kernel_pkg || true)
    [[ -n $kpkg ]] || die "cannot resolve the kernel package from linux-image-amd64's dependencies"
fi
log "kernel package: $kpkg"

mkdir -p "$tmp/debs"
# Let apt's unprivileged download user write here (avoids apt's "unsandboxed" warning).
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chmod 755 "$tmp"
    chown _apt "$tmp/debs"
fi
log "downloading $kpkg and busybox-static with apt-get download"
(cd "$tmp/debs" && apt-get download -q "$kpkg" busybox-static) \
    || die "apt-get download $kpkg busybox-static failed"
shopt -s nullglob
first() { [[ $# -gt 0 ]] && printf '%s' "$1"; return 0; }
kdeb=$(first "$tmp/debs/${kpkg}"_*.deb)
bdeb=$(first "$tmp/debs/"busybox-static_*.deb)
[[ -f $kdeb ]] || die "no .deb for $kpkg after download"
[[ -f $bdeb ]] || die "no .deb for busybox-static after download"

log "unpacking $(basename "$kdeb") (/boot, and the sound, USB and HID modules below)"
mkdir -p "$tmp/kernel"
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp/kernel" --wildcards './boot/*' \
    './lib/modules/*/kernel/sound/*' './lib/modules/*/kernel/drivers/leds/*' \
    './lib/modules/*/kernel/drivers/usb/*' './lib/modules/*/kernel/drivers/hid/*' \
    || die "cannot unpack $kdeb"
log "unpacking $(basename "$bdeb")"
dpkg-deb -x "$bdeb" "$tmp/busybox" || die "cannot unpack $bdeb"

vmlinuz=$(first "$tmp"/kernel/boot/vmlinuz-*)
kconfig=$(first "$tmp"/kernel/boot/config-*)
[[ -f $vmlinuz ]] || die "$kpkg has no /boot/vmlinuz-*"
[[ -f $kconfig ]] || die "$kpkg has no /boot/config-*"
busybox=$tmp/busybox/bin/busybox
[[ -x $busybox ]] || die "busybox-static has no /bin/busybox"

# Everything the guest relies on must be built in, since the image carries no module.
for opt in BLK_DEV_INITRD RD_GZIP BINFMT_SCRIPT BINFMT_ELF DEVTMPFS PROC_FS SYSFS VT VT_CONSOLE \
    VGA_CONSOLE SERIAL_8250 SERIAL_8250_CONSOLE UNIX98_PTYS; do
    grep -qx "CONFIG_$opt=y" "$kconfig" \
        || die "$(basename "$kconfig") lacks CONFIG_$opt=y, which the template needs built in"
done
log "kernel config has vgacon, 8250 serial console, initramfs (gzip) and devtmpfs built in"

# --- initramfs --------------------------------------------------------------------------------
root=$tmp/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc}
cp "$busybox" "$root/bin/busybox"
# Symlink every applet at build time so /init can use plain command names.
for applet in $("$busybox" --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
done
echo aula-test >"$root/etc/hostname"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"

# --- sound: HD Audio and OSS PCM modules, in load order -----------------------------------------
moddir=$(first "$tmp"/kernel/lib/modules/*)
[[ -d $moddir/kernel/sound ]] || die "$kpkg has no sound modules"
# Each wanted module after the ones it depends on, as each module's own "depends" field (modinfo)
# names them; the package has no modules.dep (depmod makes it at install).
mods=()
want() {
    local name=${1//_/-} path dep
    path=$(find "$moddir/kernel" -name "$name.ko" -print -quit)
    [[ -n $path ]] || die "$kpkg has no module $name among its sound, LED, USB and HID modules"
    [[ " ${mods[*]} " == *" $path "* ]] && return 0
    for dep in $(modinfo -F depends "$path" | tr ',' ' '); do
        want "$dep"
    done
    mods+=("$path")
}
for m in snd-hda-codec-generic snd-hda-intel snd-pcm-oss xhci-pci usbhid hid-generic; do
    want "$m"
done
mkdir -p "$root/lib/sound"
: >"$root/lib/sound/order"
for path in "${mods[@]}"; do
    cp "$path" "$root/lib/sound/"
    basename "$path" >>"$root/lib/sound/order"
done
log "modules (sound, USB, HID): $(tr '\n' ' ' <"$root/lib/sound/order")"
# One second of a 440 Hz square wave at a quarter of full scale, as OSS plays it by default:
# unsigned 8-bit, mono, 8000 Hz.
python3 - "$root/lib/sound/tone.u8" <<'PY'
import sys
rate, freq, seconds = 8000, 440, 1
with open(sys.argv[1], "wb") as f:
    f.write(bytes(0xa0 if (i * freq * 2 // rate) % 2 == 0 else 0x60 for i in range(rate * seconds)))
PY

# The guest's mixer: Linux starts an HD Audio card's output muted at 0, and QEMU hands that
# volume to the SPICE client instead of scaling the samples, as a desktop's own mixer would. A
# small static program sets it through OSS's /dev/mixer (the guest has no ALSA tools).
cat >"$tmp/oss-volume.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/soundcard.h>

int main(int argc, char **argv) {
    int percent = argc > 1 ? atoi(argv[1]) : 100;
    int both = percent | (percent << 8);
    int fd = open("/dev/mixer", O_RDWR);
    if (fd < 0) {
        perror("oss-volume: /dev/mixer");
        return 1;
    }
    if (ioctl(fd, SOUND_MIXER_WRITE_VOLUME, &both) < 0) {
        perror("oss-volume: master volume");
        return 1;
    }
    both = 100 | (100 << 8);
    ioctl(fd, SOUND_MIXER_WRITE_PCM, &both); /* not every card has one */
    return 0;
}
C
gcc -static -Os -s -o "$root/bin/oss-volume" "$tmp/oss-volume.c" || die "gcc could not build oss-volume"

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
# Aula test template: paint a fixed text on the VGA console, report readiness on ttyS0.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
hostname aula-test
# vgacon and the 8250 serial console are built into Debian's kernel; sound is modules.
while read -r mod; do
    insmod "/lib/sound/$mod" 2>/dev/null
done </lib/sound/order
# USB finds the tablet in the background: wait for it (up to 10 s), so that the screen comes up
# with the tablet already QEMU's pointer.
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    grep -q Tablet /proc/bus/input/devices 2>/dev/null && break
    sleep 0.5
done

# The banner: the whole 80x25 text screen blue, rows 3 to 22 white "AULA TEST DESKTOP" x4.
# ESC[?25l hides the cursor, ESC[9;0] turns console blanking off, ESC[44m ESC[2J clears to blue.
paint() {
    printf '\033[?25l\033[9;0]\033[0;1;37;44m\033[2J\033[H'
    row=3
    while [ "$row" -le 22 ]; do
        printf '\033[%d;1H AULA TEST DESKTOP   AULA TEST DESKTOP   AULA TEST DESKTOP   AULA TEST DESKTOP  ' "$row"
        row=$((row + 1))
    done
    printf '\033[25;80H'
}
paint >/dev/tty1

echo "AULA-TEST-READY"
echo "aula test template: root shell on ttyS0; the banner is on tty1"

# The tone, 1 s out of every 10, while there is a sound card.
(
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -e /dev/dsp ] && break
        sleep 1
    done
    if [ -e /dev/dsp ]; then
        oss-volume 50
        echo "AULA-TEST-SOUND"
        while :; do
            cat /lib/sound/tone.u8 >/dev/dsp 2>/dev/null
            sleep 9
        done
    fi
) &

# A root shell on the serial console, respawned when it exits.
(
    while :; do
        setsid cttyhack sh -l </dev/ttyS0 >/dev/ttyS0 2>&1
        sleep 1
    done
) &

while :; do
    sleep 3600
done
INIT
chmod 755 "$root/init"

log "packing the initramfs ($("$busybox" --help 2>&1 | head -n1 || true))"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) \
    | gzip -9n >"$tmp/initrd.img"

# --- FAT partition with SYSLINUX --------------------------------------------------------------
disk_mib=32                       # whole disk
part_start=2048                   # first sector of the partition (1 MiB)
part_sectors=$(((disk_mib - 1) * 2048))

cat >"$tmp/syslinux.cfg" <<'CFG'
SERIAL 0 115200
DEFAULT aula
PROMPT 0
TIMEOUT 0
LABEL aula
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200 quiet consoleblank=0 panic=10 rdinit=/init
CFG

part=$tmp/part.img
log "making a $((part_sectors / 2048)) MiB FAT16 file system (no mount)"
mkfs.fat -F 16 -n AULATEST -h "$part_start" -C "$part" $((part_sectors / 2)) >/dev/null \
    || die "mkfs.fat failed"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$part" "$vmlinuz" ::/vmlinuz || die "mcopy vmlinuz failed"
mcopy -i "$part" "$tmp/initrd.img" ::/initrd.img || die "mcopy initrd.img failed"
mcopy -i "$part" "$tmp/syslinux.cfg" ::/syslinux.cfg || die "mcopy syslinux.cfg failed"
log "installing SYSLINUX on the file system"
syslinux --install "$part" || die "syslinux --install failed"
# syslinux 6 needs ldlinux.c32 beside ldlinux.sys; copy it if the installer did not.
if ! mdir -i "$part" -a -b ::/ | grep -qi 'ldlinux\.c32'; then
    mcopy -i "$part" /usr/lib/syslinux/modules/bios/ldlinux.c32 ::/ldlinux.c32 \
        || die "mcopy ldlinux.c32 failed"
fi
mdir -i "$part" -a ::/ | sed "s/^/$prog:   /"

# --- whole disk: MBR + partition table + partition --------------------------------------------
disk=$tmp/disk.img
log "assembling a ${disk_mib} MiB raw disk: syslinux mbr.bin, one active FAT16 partition"
truncate -s "${disk_mib}M" "$disk"
printf 'label: dos\nstart=%d, size=%d, type=e, bootable\n' "$part_start" "$part_sectors" \
    | sfdisk --quiet --no-reread --no-tell-kernel "$disk" >/dev/null || die "sfdisk failed"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none \
    || die "writing mbr.bin failed"
dd if="$part" of="$disk" bs=512 seek="$part_start" conv=notrunc,sparse status=none \
    || die "writing the partition failed"

# --- qcow2 ------------------------------------------------------------------------------------
part_tmp=$(mktemp "$output.tmp.XXXXXX")
log "converting to qcow2"
qemu-img convert -f raw -O qcow2 "$disk" "$part_tmp" || die "qemu-img convert failed"
chmod 644 "$part_tmp"
mv -f -- "$part_tmp" "$output"
part_tmp=""
echo "$hash" >"$stamp"
size_kib=$(du -k "$output" | cut -f1)
initrd_kib=$(du -k "$tmp/initrd.img" | cut -f1)
log "wrote $output ($size_kib KiB; $(basename "$vmlinuz"), initramfs $initrd_kib KiB) in $((SECONDS - start)) s"
