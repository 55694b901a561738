#!/usr/bin/env bash
# Removes from the image's root what the lab PC never reads. Each line says
# why it can go; docs/image.md lists what this saves.
#
#   image/prune.sh ROOT
set -Eeuo pipefail
trap 'printf "%s: error: line %s: %s failed (status %s)\n" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR
root=${1:?usage: image/prune.sh ROOT}
arch=x86_64-linux-gnu
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
# Package management: the image is rebuilt, never upgraded in place. dpkg's
# status stays, for scanners that read what is installed.
rm -rf var/cache/apt var/lib/apt var/cache/debconf var/lib/dpkg/info var/log/* \
    usr/share/doc-base usr/share/bug usr/share/menu
rm -f usr/bin/dpkg* usr/sbin/dpkg-* usr/bin/update-alternatives
# perl and debconf: only package scripts use them, and those have run.
rm -rf usr/bin/perl* usr/lib/$arch/perl-base usr/share/perl5 usr/share/debconf
# Documentation, man pages, translations of programs nobody reads here.
find usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
rm -rf usr/share/man usr/share/info usr/share/locale usr/share/lintian usr/share/zsh \
    usr/share/bash-completion usr/share/fish
# Fonts: the greeter draws in Inter only (four weights).
find usr/share/fonts -type f ! -name 'Inter-Regular.otf' ! -name 'Inter-Medium.otf' \
    ! -name 'Inter-SemiBold.otf' ! -name 'Inter-Bold.otf' -delete
find usr/share/fonts -mindepth 1 -type d -empty -delete
# glibc's character sets: glib and libxml2 need UTF-16/32 beside the built-in ones.
find usr/lib/$arch/gconv -name '*.so' ! -name 'UTF-16.so' ! -name 'UTF-32.so' ! -name 'UTF-7.so' \
    ! -name 'UNICODE.so' -delete 2>/dev/null || true
# udev's vendor and model name databases (only names for tools like lsusb);
# the keyboard, mouse and touchpad entries libinput uses stay.
rm -f usr/lib/udev/hwdb.d/20-*.hwdb usr/lib/udev/hwdb.d/*-vendor-*.hwdb
rm -f etc/udev/hwdb.bin usr/lib/udev/hwdb.bin
chroot "$root" systemd-hwdb update --usr
# Names of USB and PCI vendors, for lsusb and lspci, which are not here.
rm -f usr/share/misc/usb.ids usr/share/misc/pci.ids
# ISO language and country names (GStreamer's tag library can name a
# language with them; the greeter never asks).
rm -rf usr/share/iso-codes usr/share/xml/iso-codes
# GSettings: the compiled schemas stay, their XML sources go.
find usr/share/glib-2.0/schemas -name '*.xml' -delete 2>/dev/null || true
# Sample and compatibility files.
rm -rf usr/share/common-licenses usr/share/pixmaps usr/share/icons usr/share/applications
# Programs: the image runs systemd, udev, dbus and the greeter, and no
# shell anyone logs in to. Only what those run stays: the systemd and dbus
# tools, /bin/sh (dash) and the programs that a unit or a udev rule names.
# The units of the gettys and shells (masked in customize.sh) go first, so
# that agetty, sulogin and bash are not kept for them.
rm -f usr/lib/systemd/system/{debug-shell,getty@,serial-getty@,console-getty,container-getty@}.service \
    usr/lib/systemd/system/{emergency,rescue,fstrim}.service usr/lib/systemd/system/fstrim.timer
keep=$(find usr/lib/systemd/system etc/systemd/system usr/lib/udev/rules.d etc/udev/rules.d \
    -type f \( -name '*.service' -o -name '*.socket' -o -name '*.conf' -o -name '*.rules' \) \
    -exec cat {} + |
    grep -oE '/(usr/)?s?bin/[A-Za-z0-9_.+-]+' | sed -E 's|^/(usr/)?||' | sort -u)
for f in usr/bin/* usr/sbin/*; do
    [[ -e $f || -L $f ]] || continue
    name=${f#usr/}
    case ${f##*/} in
    systemd* | journalctl | systemctl | udevadm | loginctl | networkctl | resolvectl | busctl | \
        timedatectl | hostnamectl | dbus-* | aula-* | seatd | sh | dash | mount | umount | nologin)
        continue ;;
    esac
    grep -qxF -- "$name" <<<"$keep" && continue
    rm -f "$f"
done
# PAM modules: only those that a PAM service here names.
used=$(cat etc/pam.d/* | grep -oE 'pam_[a-z_0-9]+\.so' | sort -u)
for m in usr/lib/$arch/security/*.so; do
    grep -qxF -- "${m##*/}" <<<"$used" || rm -f "$m"
done
# Libraries nothing here links or opens: Berkeley DB (only pam_userdb, gone
# above), brotli's encoder (curl only decodes), glibc's vector maths and
# debugging helpers, ICU's and GStreamer's and ORC's test and I/O libraries.
for lib in libdb-5.3.so libbrotlienc.so.1* libmvec.so.1 libmemusage.so libpcprofile.so \
    libc_malloc_debug.so.0 libicuio.so.* libicutest.so.* libgstcheck-1.0.so.* liborc-test-0.4.so.*; do
    rm -f usr/lib/$arch/$lib
done
# ...and SASL's sasldb plugin, the other user of Berkeley DB (libldap brings
# SASL along; the greeter speaks no LDAP).
rm -f usr/lib/$arch/sasl2/libsasldb.so*
# Every program and library left must still load: each DT_NEEDED is found.
python3 "$here/elf_check.py" "$root"
