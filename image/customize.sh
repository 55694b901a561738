#!/usr/bin/env bash
# Makes a root that mmdebstrap built into the lab PC's image: the greeter and
# its unit, user and PAM service; DHCP on every wired NIC; no getty and no
# shell on any console; and everything the greeter does not use pruned.
#
#   image/customize.sh ROOT GREETER USB_ACCESS LOCALE_DIR VERSION FLAVOUR
set -Eeuo pipefail
trap 'printf "%s: error: line %s: %s failed (status %s)\n" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
die() { printf 'image/customize.sh: error: %s\n' "$*" >&2; exit 1; }
[[ $# -eq 6 ]] || die "usage: $0 ROOT GREETER USB_ACCESS LOCALE_DIR VERSION FLAVOUR"
root=$1 greeter=$2 usb_access=$3 locales=$4 version=$5 flavour=$6
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -x $root/usr/lib/systemd/systemd ]] || die "$root has no systemd"
arch=x86_64-linux-gnu

# --- the greeter ------------------------------------------------------------------------------
install -D -m 0755 -s "$greeter" "$root/usr/bin/aula-greeter"
install -D -m 0755 -s "$usb_access" "$root/usr/bin/aula-usb-access"
mkdir -p "$root/usr/share/aula/locale"
cp -a "$locales/." "$root/usr/share/aula/locale/"
install -D -m 0644 "$here/files/aula-greeter.service" "$root/etc/systemd/system/aula-greeter.service"
install -D -m 0644 "$here/files/aula-greeter.pam" "$root/etc/pam.d/aula-greeter"
install -D -m 0644 "$here/files/seatd.conf" "$root/etc/systemd/system/seatd.service.d/aula.conf"
install -D -m 0644 "$here/files/70-aula-usb.rules" "$root/etc/udev/rules.d/70-aula-usb.rules"
install -D -m 0644 "$here/files/20-wired.network" "$root/etc/systemd/network/20-wired.network"
install -D -m 0644 "$here/files/journald.conf" "$root/etc/systemd/journald.conf.d/aula.conf"
# The greeter shows it under "This PC" on its error screens.
echo "$flavour $version" >"$root/etc/aula-image-version"
echo "aula-$flavour" >"$root/etc/hostname"

# The greeter's user: no password, no shell, no home. logind hands it the
# screen and the keyboard; the groups cover the framebuffer fallback, sound
# and USB redirection (the udev rule above).
grep -q '^aula:' "$root/etc/group" || echo 'aula:x:900:' >>"$root/etc/group"
grep -q '^aula:' "$root/etc/passwd" ||
    echo 'aula:x:900:900:Aula greeter:/nonexistent:/usr/sbin/nologin' >>"$root/etc/passwd"
touch "$root/etc/shadow"
grep -q '^aula:' "$root/etc/shadow" || echo 'aula:!:1::::::' >>"$root/etc/shadow"
for g in video input audio plugdev render; do
    grep -q "^$g:" "$root/etc/group" || die "the root has no group $g"
    sed -i -E "/^$g:/{s/:$/:aula/;t;/[:,]aula(,|$)/!s/$/,aula/}" "$root/etc/group"
done
# root: locked, and no shell to log in to.
sed -i -E 's|^root:[^:]*:|root:*:|' "$root/etc/shadow"
grep -q '^root:' "$root/etc/shadow" || echo 'root:*:1:0:99999:7:::' >>"$root/etc/shadow"
sed -i -E 's|^(root:[^:]*:0:0:[^:]*:[^:]*:).*|\1/usr/sbin/nologin|' "$root/etc/passwd"
chmod 0640 "$root/etc/shadow"

# --- boot: systemd is /init; the greeter on tty1; no console to log in on ------------------------
ln -sfn usr/lib/systemd/systemd "$root/init"
: >"$root/etc/machine-id"
systemctl --root="$root" --quiet set-default graphical.target
systemctl --root="$root" --quiet enable aula-greeter.service seatd.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service
systemctl --root="$root" --quiet disable systemd-networkd-wait-online.service 2>/dev/null || true
# No getty anywhere (console=ttyS0 would make one), no rescue or debug
# shell, and no first-boot prompts on the console.
systemctl --root="$root" --quiet mask getty@.service serial-getty@.service autovt@.service \
    console-getty.service container-getty@.service debug-shell.service emergency.service \
    rescue.service systemd-firstboot.service kmod-static-nodes.service
# No per-user service manager for the greeter's session: nothing runs in it.
systemctl --root="$root" --quiet mask user@.service
# DNS through systemd-resolved: resolv.conf points at the stub file resolved
# writes under /run when it starts (so the link dangles in the built root).
# Not tested yet: the tests give the broker as an IP address.
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# --- ICU's 30 MB data, which nothing here reads ---------------------------------------------------
# spice-client-glib -> phodav -> libxml2 -> ICU: libxml2 converts with ICU
# only text in encodings glibc's iconv does not know, and the greeter parses
# no XML. ICU's own tools make an empty data package in its place, so every
# library still loads and an ICU call that wants data gets an error.
icudata=$(find "$root/usr/lib/$arch" -maxdepth 1 -name 'libicudata.so.*.*' | head -1)
if [[ -n $icudata ]]; then
    icuver=$(basename "$icudata" | sed -E 's/libicudata\.so\.([0-9]+)\..*/\1/')
    tmp=$(mktemp -d)
    # genccode names the symbol after the file: icudtNN_dat, as libicuuc wants.
    icupkg -tl new "$tmp/icudt${icuver}.dat"
    genccode -d "$tmp" "$tmp/icudt${icuver}.dat" >/dev/null
    gcc -shared -nostdlib -O2 -Wl,-soname,"libicudata.so.$icuver" -Wl,--build-id=none \
        -o "$tmp/libicudata.so" "$tmp/icudt${icuver}_dat.c"
    nm -D "$tmp/libicudata.so" | grep -q " R icudt${icuver}_dat\$" ||
        die "the empty ICU data library does not define icudt${icuver}_dat"
    install -m 0644 "$tmp/libicudata.so" "$icudata"
    rm -rf "$tmp"
fi

# --- pruning ------------------------------------------------------------------------------------
"$here/prune.sh" "$root"
