#!/usr/bin/env bash
# Builds a small VM that runs aula-greeter on real KMS and libinput: Debian's
# kernel and an initramfs with the greeter, the libraries it links, seatd
# (standing in for logind, through libseat), udev, busybox, the Inter font,
# the xkb layouts and the kernel modules for QEMU's std VGA (bochs), its e1000
# NIC, evdev and xhci-pci (USB devices for the greeter's USB redirection,
# through a udev rule giving them to the group plugdev), and HD Audio with
# ALSA's configuration (the desktop's sound, played through ALSA's default
# device by the greeter in the group audio). It is a test system, not the lab image (issue 10 builds that
# with mmdebstrap): the greeter and its libraries are copied from this
# machine, where the greeter was built.
#
#   tests/greeter_vm/build-greeter-vm.sh OUT_DIR GREETER_BIN LOCALE_DIR
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initrd.img. The Debian packages (kernel,
# busybox-static, udev) are fetched with apt-get download once into
# OUT_DIR/debs and never installed. The initramfs is made again only when the
# greeter, its translations or this script changed (OUT_DIR/initrd.stamp).
#
# Boot it with:
#   qemu-system-x86_64 -accel tcg -m 1536 -vga std -nic user,model=e1000 \
#     -kernel OUT_DIR/vmlinuz -initrd OUT_DIR/initrd.img -serial stdio -display none \
#     -append "console=ttyS0 aula.broker=https://10.0.2.2:PORT aula.ca_fp=SHA256"
# /init brings up 10.0.2.15/24 (QEMU's user network; the host's loopback is
# 10.0.2.2), udev and seatd, then runs the greeter as the unprivileged user
# aula with --output auto (KMS, else the firmware framebuffer; the kernel parameter
# aulavm.nokms leaves the GPU driver out); everything it prints goes to the serial console, with
# "AULA-VM: " lines for the steps of /init.
set -euo pipefail

prog=build-greeter-vm
log() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

if [[ $# -ne 3 ]]; then
    echo "usage: $0 OUT_DIR GREETER_BIN LOCALE_DIR" >&2
    exit 2
fi
out=$1
greeter=$2
locales=$3
[[ -x $greeter ]] || die "$greeter is not an executable (build aula-greeter first)"
[[ -d $locales ]] || die "$locales is not a folder of translations"
for tool in apt-get apt-cache dpkg-deb cpio zstd ldd /usr/sbin/seatd; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x $tool ]] ||
        die "$tool is missing (provisioning/install-deps.sh installs it)"
done
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)

# --- Debian packages, fetched once ----------------------------------------------------------
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kernel_pkg ]] || die "apt-cache does not know linux-image-amd64 (run apt-get update)"
fetch() {  # package -> path of its .deb in debs/
    local pkg=$1 deb
    deb=$(find "$out/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -1)
    if [[ -z $deb ]]; then
        (cd "$out/debs" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
            (apt-get update -q >/dev/null && cd "$out/debs" && apt-get download -q "$pkg" >/dev/null) ||
            die "apt-get download $pkg failed"
        deb=$(find "$out/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -1)
    fi
    echo "$deb"
}
kernel_deb=$(fetch "$kernel_pkg")
busybox_deb=$(fetch busybox-static)
udev_deb=$(fetch udev)

hash=$( (sha256sum "$0" "$greeter" "$(dirname "$greeter")/aula-usb-access" "$kernel_deb" "$busybox_deb" "$udev_deb"; find "$locales" -type f -exec sha256sum {} +) |
    awk '{print $1}' | sha256sum | cut -d' ' -f1)
if [[ -f $out/initrd.img && -f $out/vmlinuz && $(cat "$out/initrd.stamp" 2>/dev/null) == "$hash" ]]; then
    log "$out/initrd.img is up to date"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"
dpkg-deb -x "$udev_deb" "$work/udev"
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,run,tmp,lib/modules,usr/bin,usr/lib,usr/share/fonts,var/empty}
ln -s usr/lib "$root/usr/lib64" 2>/dev/null || true

# --- busybox for /init's plumbing ------------------------------------------------------------
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for applet in sh mount mkdir ln cat echo sleep insmod ip start-stop-daemon chown chmod ls ps grep \
    poweroff sync dmesg test true; do
    ln -sf busybox "$root/bin/$applet"
done

# --- binaries and every library they link, from this machine ----------------------------------
copy_with_libs() {  # binary destination
    install -D -m 0755 "$1" "$root$2"
    ldd "$1" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | while read -r lib; do
        [[ -e $root$lib ]] && continue
        install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
}
copy_with_libs "$greeter" /usr/bin/aula-greeter
copy_with_libs "$(dirname "$greeter")/aula-usb-access" /usr/bin/aula-usb-access
copy_with_libs /usr/sbin/seatd /usr/sbin/seatd
copy_with_libs "$work/udev/bin/udevadm" /bin/udevadm
mkdir -p "$root/lib/systemd"
ln -sf /bin/udevadm "$root/lib/systemd/systemd-udevd"
# The dynamic loader under the name the binaries ask for.
install -D -m 0755 "$(readlink -f /lib64/ld-linux-x86-64.so.2)" "$root/lib64/ld-linux-x86-64.so.2"
cp -a "$work/udev/lib/udev" "$root/lib/udev"

# --- data the greeter reads ------------------------------------------------------------------
mkdir -p "$root/usr/share/aula/locale" "$root/usr/share/X11" "$root/etc/fonts" "$root/usr/share/fonts/inter"
cp -a "$locales/." "$root/usr/share/aula/locale/"
cp -a /usr/share/X11/xkb "$root/usr/share/X11/xkb"
[[ -d /usr/share/libinput ]] && cp -a /usr/share/libinput "$root/usr/share/libinput"
cp /usr/share/fonts/opentype/inter/Inter-{Regular,Medium,SemiBold,Bold}.otf "$root/usr/share/fonts/inter/" 2>/dev/null ||
    cp /usr/share/fonts/opentype/inter/*.otf "$root/usr/share/fonts/inter/"
cat >"$root/etc/fonts/fonts.conf" <<'EOF'
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <dir>/usr/share/fonts</dir>
  <cachedir>/tmp/fontconfig</cachedir>
</fontconfig>
EOF
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
aula:x:900:900:Aula greeter:/var/empty:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
video:x:44:aula
input:x:105:aula
plugdev:x:46:aula
audio:x:29:aula
aula:x:900:
EOF
# USB devices for the greeter's USB redirection (libusb opens /dev/bus/usb),
# as the lab image does it.
mkdir -p "$root/etc/udev/rules.d"
cat >"$root/etc/udev/rules.d/70-aula-usb.rules" <<'EOF'
SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", GROUP="plugdev", MODE="0660"
EOF

# --- kernel and the modules /init loads, dependencies first ------------------------------------
kver=$(basename "$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -1)")
moddir=$work/kernel/lib/modules/$kver
if command -v depmod >/dev/null 2>&1; then
    depmod -b "$work/kernel" "$kver"
else
    "$work/busybox/bin/busybox" depmod -b "$work/kernel" "$kver"
fi
[[ -s $moddir/modules.dep ]] || die "depmod wrote no modules.dep for $kver"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
: >"$root/lib/modules/order"
declare -A loaded=()
add_module() {  # name, as in modules.dep (kernel/drivers/.../x.ko)
    local rel=$1 dep
    [[ -n ${loaded[$rel]:-} ]] && return
    loaded[$rel]=1
    for dep in $(awk -v m="$rel:" '$1 == m {for (i = 2; i <= NF; i++) print $i}' "$moddir/modules.dep"); do
        add_module "$dep"
    done
    install -D -m 0644 "$moddir/$rel" "$root/lib/modules/$rel"
    echo "$rel" >>"$root/lib/modules/order"
}
# ALSA's configuration: "default" is the first card, through dmix.
cp -a /usr/share/alsa "$root/usr/share/alsa"
# xhci-pci for USB sticks plugged in during a session (redirected, not
# mounted: there is no usb-storage here); HD Audio (QEMU's ich9-intel-hda
# with its hda-output codec) for the desktop's sound.
for name in bochs e1000 evdev psmouse xhci-pci snd-hda-codec-generic snd-hda-intel; do
    rel=$(awk -F: -v n="/$name.ko" 'index($1, n) && substr($1, length($1) - length(n) + 1) == n {print $1; exit}' "$moddir/modules.dep")
    [[ -n $rel ]] || die "the kernel $kver has no module $name"
    add_module "$rel"
done

cat >"$root/init" <<'EOF'
#!/bin/sh
# The greeter test VM's /init (tests/greeter_vm/build-greeter-vm.sh).
say() { echo "AULA-VM: $*"; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs -o mode=1777 tmp /tmp
# aulavm.nokms: a PC whose GPU has no driver in the image; the firmware's
# framebuffer (vesafb here, efifb on UEFI PCs) is all there is.
for m in $(cat /lib/modules/order); do
    case "$m" in */gpu/*) grep -q aulavm.nokms /proc/cmdline && continue ;; esac
    insmod "/lib/modules/$m" || say "insmod $m failed"
done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
    say "no network"
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=30
say "devices: $(ls /dev/dri /dev/input 2>&1 | tr '\n' ' ')"
seatd -g aula >/run/seatd.log 2>&1 &
n=0
while [ ! -S /run/seatd.sock ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
say "seatd is up"
export LIBSEAT_BACKEND=seatd HOME=/var/empty XDG_RUNTIME_DIR=/tmp
while true; do
    start-stop-daemon -S -c aula:aula -x /usr/bin/aula-greeter -- --output auto \
        --locale-dir /usr/share/aula/locale
    say "the greeter exited with status $?"
    sleep 2
done
EOF
chmod 0755 "$root/init"

(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | zstd -q -3 -T0 >"$work/initrd.img"
mv "$work/vmlinuz" "$out/vmlinuz"
mv "$work/initrd.img" "$out/initrd.img"
echo "$hash" >"$out/initrd.stamp"
log "built $out/initrd.img ($(du -m "$out/initrd.img" | cut -f1) MiB, kernel $kver) in $((SECONDS - start)) s"
