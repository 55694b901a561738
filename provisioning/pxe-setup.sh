#!/usr/bin/env bash
# Serves network boot for a lab: writes a dnsmasq configuration and starts
# dnsmasq on one interface, either as the network's only DHCP server (--mode
# dhcp) or as proxy-DHCP beside the school's own DHCP server (--mode proxy).
# PCs whose firmware is plain PXE get iPXE by TFTP (undionly.kpxe for BIOS,
# snponly.efi or ipxe.efi for UEFI x86-64); iPXE then gets the broker's
# http://BROKER/boot/ipxe and chains to it. With --secure-boot every PC
# loads its boot loader from the broker's own TFTP instead (UEFI: Debian's
# signed shim and GRUB, which boot with Secure Boot on). Running it again
# replaces the dnsmasq it started (pid file); there is never a second one.
#
#   provisioning/pxe-setup.sh --interface eno1 --broker http://10.20.0.5:8080 \
#       --mode proxy
#   provisioning/pxe-setup.sh --interface eno1 --broker http://10.20.0.5:8080 \
#       --mode dhcp --range 10.20.0.100,10.20.0.199 --router 10.20.0.1 --dns 10.20.0.1
#   provisioning/pxe-setup.sh --interface eno1 --broker http://10.20.0.5:8080 \
#       --mode proxy --secure-boot 10.20.0.5
#   provisioning/pxe-setup.sh --stop
#   provisioning/pxe-setup.sh --help     # every option
set -euo pipefail
# shellcheck source=provisioning/lib/setup.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/setup.sh"
umask 022

PROG=pxe-setup.sh

usage() {
  cat <<'EOF'
Usage: pxe-setup.sh --interface IF --broker http://HOST:PORT --mode dhcp|proxy [OPTION]...
       pxe-setup.sh --stop [--state-dir DIR]
Serves network boot on one interface with dnsmasq and sends the PCs to the
Aula broker's boot listener; run it as root on the machine that serves PXE.
Running it again replaces the dnsmasq it started.

Options:
  --interface IF         the interface the lab's PCs are on (required)
  --broker URL           the broker's boot listener, http://HOST:PORT (its [boot] listen
                         in broker.toml); plain HTTP, because a PC's firmware cannot
                         check the broker's own CA (required)
  --mode dhcp|proxy      dhcp: dnsmasq is the only DHCP server on IF and hands out
                         addresses from --range; proxy: the school's DHCP server hands
                         out addresses and dnsmasq adds only the boot information
                         (required)
  --range START,END      addresses to hand out (mode dhcp; inside IF's subnet)
  --router IP            default gateway told to clients (mode dhcp; default: none)
  --dns IP[,IP]          DNS servers told to clients (mode dhcp; default: none)
  --lease-time TIME      lease time such as 30m, 12h, 1d or infinite (mode dhcp;
                         default 1h)
  --subnet NET/BITS      the subnet to serve proxy-DHCP on (mode proxy; default: the
                         subnet of IF's first IPv4 address)
  --state-dir DIR        where the configuration, TFTP root, leases, pid and log go
                         (default /var/lib/aula/pxe)
  --efi-binary NAME      snponly (default: iPXE over the firmware's own network driver)
                         or ipxe (iPXE with its own drivers) for UEFI x86-64 PCs
  --secure-boot IP       PCs load their boot loader by TFTP from the broker's TFTP
                         listener at IP ([boot] tftp_listen in broker.toml): UEFI
                         x86-64 PCs Debian's signed shim and GRUB, which boot with
                         Secure Boot on (and off), BIOS PCs iPXE; dnsmasq serves no
                         TFTP itself. provisioning/fetch-loaders.sh puts the loaders
                         into the broker's [boot] loaders_dir.
  --skip-install         do not check or install Debian packages
  --foreground           run dnsmasq in the foreground, logging to stderr
  --print-config         print the dnsmasq configuration and exit; nothing is changed
  --stop                 stop the dnsmasq this script started and exit
  -h, --help             show this help

Exit status: 0 when done, 1 when a step failed, 2 for a bad option or value.
EOF
}

ok() { echo "ok: $*"; }
changed() { echo "changed: $*"; }
warn() { echo "warning: $*"; }
note() { echo "note: $*"; }

INTERFACE=""
BROKER=""
MODE=""
RANGE=""
ROUTER=""
DNS=""
LEASE_TIME=""
SUBNET=""
STATE_DIR=/var/lib/aula/pxe
EFI_BINARY=snponly
EFI_BINARY_GIVEN=0
SECURE_BOOT=""
SKIP_INSTALL=0
ACTION=start

# ---------------------------------------------------------------- options

valid_ipv4() {
  local re='^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$' i
  [[ "$1" =~ $re ]] || return 1
  for i in 1 2 3 4; do
    ((10#${BASH_REMATCH[i]} <= 255)) || return 1
  done
}
ip2int() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((10#$a << 24) | (10#$b << 16) | (10#$c << 8) | 10#$d))
}
int2ip() {
  echo "$((($1 >> 24) & 255)).$((($1 >> 16) & 255)).$((($1 >> 8) & 255)).$(($1 & 255))"
}
prefix2mask() { echo $(((0xffffffff << (32 - $1)) & 0xffffffff)); }

set_action() {
  [[ "$ACTION" == start || "$ACTION" == "$1" ]] \
    || bad_usage "--$ACTION and --$1 exclude each other; give one of them."
  ACTION=$1
}

while [[ $# -gt 0 ]]; do
  opt=$1
  shift
  value=""
  has_value=0
  if [[ "$opt" == --*=* ]]; then
    value=${opt#*=}
    opt=${opt%%=*}
    has_value=1
  fi
  case "$opt" in
    --interface|--broker|--mode|--range|--router|--dns|--lease-time|--subnet|--state-dir|\
    --efi-binary|--secure-boot)
      if [[ $has_value -eq 0 ]]; then
        [[ $# -gt 0 ]] || bad_usage "the option $opt needs a value; see --help."
        value=$1
        shift
      fi
      ;;
    --skip-install|--foreground|--print-config|--stop|-h|--help)
      [[ $has_value -eq 0 ]] || bad_usage "the option $opt takes no value; see --help."
      ;;
    *)
      bad_usage "unknown option '$opt'; see --help."
      ;;
  esac
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --foreground) set_action foreground ;;
    --print-config) set_action print-config ;;
    --stop) set_action stop ;;
    --interface)
      [[ "$value" =~ ^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,14}$ ]] \
        || bad_usage "--interface takes the name of a network interface such as eno1, not '$value'."
      INTERFACE=$value
      ;;
    --broker)
      if [[ "$value" == [Hh][Tt][Tt][Pp][Ss]://* ]]; then
        bad_usage "--broker must be the broker's plain http:// boot listener such as http://10.20.0.5:8080, not '$value': a PC's firmware and iPXE cannot check the broker's own CA, so booting PCs reach it over HTTP (the boot listener serves nothing secret)."
      fi
      url_re='^http://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:([0-9]{1,5}))?/?$'
      port_ok=0
      if [[ "$value" =~ $url_re ]]; then
        port=${BASH_REMATCH[4]:-80}
        ((10#$port >= 1 && 10#$port <= 65535)) && port_ok=1
      fi
      if [[ $port_ok -eq 0 ]]; then
        bad_usage "--broker takes the broker's boot listener as http://HOST:PORT such as http://10.20.0.5:8080 (no path, user or query), not '$value'."
      fi
      BROKER=${value%/}
      ;;
    --mode)
      [[ "$value" == dhcp || "$value" == proxy ]] \
        || bad_usage "--mode must be dhcp (dnsmasq hands out the addresses) or proxy (the school's DHCP server does), not '$value'."
      MODE=$value
      ;;
    --range)
      start=${value%%,*}
      end=${value#*,}
      if ! { [[ "$value" == *,* ]] && valid_ipv4 "$start" && valid_ipv4 "$end"; }; then
        bad_usage "--range takes START,END such as 10.20.0.100,10.20.0.199, not '$value'."
      fi
      (($(ip2int "$start") <= $(ip2int "$end"))) \
        || bad_usage "--range $value starts after it ends; give the lower address first."
      RANGE=$value
      ;;
    --router)
      valid_ipv4 "$value" || bad_usage "--router takes one IPv4 address such as 10.20.0.1, not '$value'."
      ROUTER=$value
      ;;
    --dns)
      IFS=, read -r -a dns_list <<<"$value"
      [[ ${#dns_list[@]} -gt 0 && "$value" != *, ]] \
        || bad_usage "--dns takes IPv4 addresses separated by commas such as 10.20.0.1,10.20.0.2, not '$value'."
      for d in "${dns_list[@]}"; do
        valid_ipv4 "$d" \
          || bad_usage "--dns takes IPv4 addresses separated by commas such as 10.20.0.1,10.20.0.2, not '$value'."
      done
      DNS=$value
      ;;
    --lease-time)
      [[ "$value" =~ ^(infinite|[0-9]{1,7}[mhdw]?)$ ]] \
        || bad_usage "--lease-time takes a time such as 30m, 12h, 1d or infinite, not '$value'."
      LEASE_TIME=$value
      ;;
    --subnet)
      net=${value%/*}
      bits=${value##*/}
      if ! { [[ "$value" == */* ]] && valid_ipv4 "$net" && [[ "$bits" =~ ^[0-9]{1,2}$ ]] \
          && ((10#$bits >= 8 && 10#$bits <= 30)); }; then
        bad_usage "--subnet takes NETWORK/BITS such as 10.20.0.0/24 (8 to 30 bits), not '$value'."
      fi
      bits=$((10#$bits))
      (($(ip2int "$net") & ~$(prefix2mask "$bits") & 0xffffffff)) \
        && bad_usage "--subnet $value has host bits set; give the network address, $(int2ip $(($(ip2int "$net") & $(prefix2mask "$bits"))))/$bits."
      SUBNET=$net/$bits
      ;;
    --state-dir)
      [[ "$value" == /* && "$value" != *[[:space:]\"\\\$\`\'#]* && "$value" != / ]] \
        || bad_usage "--state-dir takes an absolute folder without spaces, quotes or backslashes, not '$value'."
      STATE_DIR=${value%/}
      ;;
    --efi-binary)
      [[ "$value" == snponly || "$value" == ipxe ]] \
        || bad_usage "--efi-binary must be snponly or ipxe, not '$value'."
      EFI_BINARY=$value
      EFI_BINARY_GIVEN=1
      ;;
    --secure-boot)
      valid_ipv4 "$value" \
        || bad_usage "--secure-boot takes the IPv4 address of the broker's TFTP listener ([boot] tftp_listen) such as 10.20.0.5, not '$value'."
      SECURE_BOOT=$value
      ;;
  esac
done

DNSMASQ_USER=nobody
id -u dnsmasq >/dev/null 2>&1 && DNSMASQ_USER=dnsmasq
CONF=$STATE_DIR/dnsmasq.conf
PID_FILE=$STATE_DIR/dnsmasq.pid
LOG_FILE=$STATE_DIR/dnsmasq.log
LEASE_FILE=$STATE_DIR/dnsmasq.leases
TFTP_ROOT=$STATE_DIR/tftp
IPXE_DIR=/usr/lib/ipxe
EFI_FILE=$EFI_BINARY.efi
BIOS_FILE=undionly.kpxe
# Where firmware gets its boot loader: dnsmasq's own TFTP, or with
# --secure-boot the broker's (dhcp-boot's and pxe-service's server field).
TFTP_AT=""
if [[ -n "$SECURE_BOOT" ]]; then
  EFI_FILE=shimx64.efi
  TFTP_AT=,$SECURE_BOOT
fi

# ---------------------------------------------------------------- our dnsmasq

# Pids of every dnsmasq started with our configuration file (the pid file's
# one, and any whose pid file was lost).
our_pids() {
  local f pid args
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    # Builtins only: this runs for every process, many times while stopping.
    # A process may end between the glob and the read.
    args=()
    { mapfile -d '' -t args < "$f"; } 2>/dev/null || continue
    [[ ${#args[@]} -gt 1 && "${args[0]}" == *dnsmasq ]] || continue
    [[ " ${args[*]:1} " == *" --conf-file=$CONF "* ]] && echo "$pid"
  done
  return 0
}

stop_ours() {
  local pids pid i
  pids=$(our_pids)
  if [[ -z "$pids" ]]; then
    rm -f "$PID_FILE"
    return 1
  fi
  for pid in $pids; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 50; i++)); do
    [[ -z "$(our_pids)" ]] && break
    sleep 0.1
  done
  for pid in $(our_pids); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$PID_FILE"
  changed "stopped the dnsmasq this script had started (pid $(echo "$pids" | tr '\n' ' ' | sed 's/ $//'))"
  return 0
}

if [[ "$ACTION" == stop ]]; then
  [[ $(id -u) -eq 0 ]] || die "run this as root: it stops a dnsmasq that root started."
  stop_ours || ok "no dnsmasq of this script runs for $STATE_DIR"
  exit 0
fi

# ---------------------------------------------------------------- checks

[[ -n "$SECURE_BOOT" && $EFI_BINARY_GIVEN -eq 1 ]] \
  && bad_usage "--efi-binary does not apply with --secure-boot, where UEFI PCs load Debian's signed shim from the broker; drop one of them."
[[ -n "$INTERFACE" ]] || bad_usage "--interface is missing: name the interface the lab's PCs are on, such as --interface eno1."
[[ -n "$BROKER" ]] || bad_usage "--broker is missing: give the broker's boot listener, such as --broker http://10.20.0.5:8080."
[[ -n "$MODE" ]] || bad_usage "--mode is missing: give --mode dhcp when this machine is to hand out the addresses, or --mode proxy beside the school's DHCP server."

if [[ "$MODE" == proxy ]]; then
  [[ -z "$RANGE" ]] \
    || bad_usage "--range is for --mode dhcp: in proxy mode the school's DHCP server hands out the addresses; drop --range (or use --mode dhcp)."
  for pair in "--router:$ROUTER" "--dns:$DNS" "--lease-time:$LEASE_TIME"; do
    [[ -z "${pair#*:}" ]] \
      || bad_usage "${pair%%:*} is for --mode dhcp: in proxy mode the school's DHCP server tells clients that; drop ${pair%%:*}."
  done
else
  [[ -n "$RANGE" ]] \
    || bad_usage "--mode dhcp needs --range START,END: the addresses dnsmasq may hand out on $INTERFACE."
  [[ -z "$SUBNET" ]] \
    || bad_usage "--subnet is for --mode proxy: in dhcp mode the subnet is the one of $INTERFACE and --range; drop --subnet."
fi

[[ -e "/sys/class/net/$INTERFACE" ]] \
  || bad_usage "the interface '$INTERFACE' does not exist here; 'ip -brief link' lists the ones that do."
if_cidr=$(ip -o -4 addr show dev "$INTERFACE" scope global 2>/dev/null | awk '{print $4; exit}')
[[ -n "$if_cidr" ]] \
  || bad_usage "the interface '$INTERFACE' has no IPv4 address; give it the address this machine has on the lab's network (ip addr add ADDR/BITS dev $INTERFACE) and run this again."
IF_ADDR=${if_cidr%/*}
IF_BITS=${if_cidr#*/}
IF_MASK=$(prefix2mask "$IF_BITS")
IF_NET=$(($(ip2int "$IF_ADDR") & IF_MASK))
NETMASK=$(int2ip "$IF_MASK")

if [[ "$MODE" == dhcp ]]; then
  start=${RANGE%%,*}
  end=${RANGE#*,}
  for a in "$start" "$end"; do
    ((($(ip2int "$a") & IF_MASK) == IF_NET)) \
      || bad_usage "--range $RANGE is not inside $INTERFACE's subnet $(int2ip "$IF_NET")/$IF_BITS; give addresses of that subnet."
  done
  if (($(ip2int "$start") <= $(ip2int "$IF_ADDR") && $(ip2int "$IF_ADDR") <= $(ip2int "$end"))); then
    bad_usage "--range $RANGE holds this machine's own address $IF_ADDR on $INTERFACE; leave it out of the range."
  fi
  if [[ -n "$ROUTER" ]] && ((($(ip2int "$ROUTER") & IF_MASK) != IF_NET)); then
    bad_usage "--router $ROUTER is not inside $INTERFACE's subnet $(int2ip "$IF_NET")/$IF_BITS; clients can only reach a gateway on their own subnet."
  fi
  DHCP_RANGE="$start,$end,$NETMASK,${LEASE_TIME:-1h}"
else
  if [[ -z "$SUBNET" ]]; then
    SUBNET=$(int2ip "$IF_NET")/$IF_BITS
  fi
  sub_net=$(ip2int "${SUBNET%/*}")
  sub_mask=$(prefix2mask "${SUBNET#*/}")
  ((($(ip2int "$IF_ADDR") & sub_mask) == sub_net)) \
    || bad_usage "--subnet $SUBNET does not hold $INTERFACE's address $IF_ADDR; give the subnet the PCs on $INTERFACE are in."
  DHCP_RANGE="${SUBNET%/*},proxy,$(int2ip "$sub_mask")"
fi

# iPXE expands settings in the boot file name it gets by DHCP, so the URL
# carries the query the broker's bare /boot/ipxe would chain to: one request
# fewer, and it works with iPXE builds whose 'chain' lacks --autofree (Debian
# 12's ipxe and QEMU's option ROMs, 2019).
# shellcheck disable=SC2016  # ${...} are iPXE's, for iPXE to expand
BOOT_URL=$BROKER'/boot/ipxe?mac=${netX/mac}&ip=${netX/ip}&platform=${platform}&buildarch=${buildarch}'

# ---------------------------------------------------------------- configuration

print_config() {
  local log=$LOG_FILE
  [[ "$ACTION" == foreground ]] && log=-
  cat <<EOF
# dnsmasq for Aula's network boot on $INTERFACE (mode $MODE), written by
# provisioning/pxe-setup.sh: run it again rather than editing this file.

# DHCP and TFTP only: no DNS server (port 0), so nothing clashes with the
# machine's resolver, and only on $INTERFACE (bind-interfaces), so other
# dnsmasq instances (libvirt's) keep their own interfaces.
port=0
user=$DNSMASQ_USER
interface=$INTERFACE
bind-interfaces
pid-file=$PID_FILE
log-facility=$log
log-dhcp
dhcp-leasefile=$LEASE_FILE

EOF
  if [[ -n "$SECURE_BOOT" ]]; then
    cat <<EOF
# No TFTP here: firmware loads its boot loader from the broker's TFTP at
# $SECURE_BOOT (UEFI: Debian's signed shim, then GRUB; BIOS: iPXE).
EOF
  else
    cat <<EOF
enable-tftp
tftp-root=$TFTP_ROOT
EOF
  fi
  cat <<EOF

# Who asks: iPXE sends option 175 (and the user class "iPXE"); plain PXE
# firmware says its architecture in option 93: 0 BIOS, 7 and 9 UEFI x86-64.
dhcp-match=set:ipxe,175
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:bios,option:client-arch,0
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
EOF
  if [[ "$MODE" == dhcp ]]; then
    cat <<EOF

# The only DHCP server on $INTERFACE.
dhcp-range=$DHCP_RANGE
dhcp-authoritative
# Without these lines dnsmasq names itself as router (and, with port=0,
# tells no DNS server): say exactly what was asked for.
dhcp-option=option:router${ROUTER:+,$ROUTER}
dhcp-option=option:dns-server${DNS:+,$DNS}

# Firmware gets iPXE by TFTP; iPXE (tag ipxe) gets the broker's URL, never
# iPXE again, so it does not load itself in a loop.
dhcp-boot=tag:ipxe,$BOOT_URL
dhcp-boot=tag:!ipxe,tag:bios,$BIOS_FILE${TFTP_AT:+,$TFTP_AT}
dhcp-boot=tag:!ipxe,tag:efi64,$EFI_FILE${TFTP_AT:+,$TFTP_AT}
EOF
  else
    cat <<EOF

# Proxy-DHCP: the school's DHCP server hands out the addresses; dnsmasq
# answers only PXE clients, with boot information.
dhcp-range=$DHCP_RANGE
# In proxy mode the boot file comes from pxe-service, not dhcp-boot. A name
# with a dot is sent as it is (dnsmasq adds ".0" only to a bare basename);
# one entry per client type, so the menu is skipped. iPXE (tag ipxe) gets the
# broker's URL, never iPXE again.
pxe-service=tag:!ipxe,x86PC,"Aula network boot",$BIOS_FILE$TFTP_AT
pxe-service=tag:!ipxe,X86-64_EFI,"Aula network boot",$EFI_FILE$TFTP_AT
pxe-service=tag:!ipxe,BC_EFI,"Aula network boot",$EFI_FILE$TFTP_AT
pxe-service=tag:ipxe,x86PC,"Aula network boot",$BOOT_URL
pxe-service=tag:ipxe,X86-64_EFI,"Aula network boot",$BOOT_URL
pxe-service=tag:ipxe,BC_EFI,"Aula network boot",$BOOT_URL
# Also as the plain boot file, which iPXE reads from a proxy offer.
dhcp-boot=tag:ipxe,$BOOT_URL
EOF
  fi
}

if [[ "$ACTION" == print-config ]]; then
  print_config
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "run this as root: it installs packages, binds the DHCP and TFTP ports and writes to $STATE_DIR."

# ---------------------------------------------------------------- packages
# dnsmasq-base is the dnsmasq program without Debian's system-wide service,
# which would otherwise start with the package and take port 67 on every
# interface.

PACKAGES=(dnsmasq-base ipxe)
if [[ $SKIP_INSTALL -eq 1 ]]; then
  note "--skip-install: Debian packages were not checked."
else
  ensure_packages "${PACKAGES[@]}"
fi
command -v dnsmasq >/dev/null 2>&1 \
  || die "dnsmasq is not installed; install the package dnsmasq-base (or run this without --skip-install)."
if [[ -z "$SECURE_BOOT" ]]; then
  for f in "$BIOS_FILE" "$EFI_FILE"; do
    [[ -f "$IPXE_DIR/$f" ]] \
      || die "$IPXE_DIR/$f is missing; install the package ipxe (or run this without --skip-install)."
  done
fi

# ---------------------------------------------------------------- state dir

mkdir -p "$TFTP_ROOT"
chmod 0755 "$STATE_DIR" "$TFTP_ROOT"
# One run at a time per state dir. The lock's descriptor is closed for
# dnsmasq, which would otherwise hold it for as long as it runs.
exec 9>"$STATE_DIR/.lock"
flock -n 9 || die "another pxe-setup.sh is working on $STATE_DIR; wait for it and run this again."

# Copies, not links: the TFTP root holds only what it serves, and dnsmasq
# (no longer root when it serves) reads them as world-readable files.
TFTP_FILES=("$BIOS_FILE" "$EFI_FILE")
[[ -n "$SECURE_BOOT" ]] && TFTP_FILES=()
for f in "${TFTP_FILES[@]}"; do
  install_if_changed "$IPXE_DIR/$f" "$TFTP_ROOT/$f" "copied $IPXE_DIR/$f to $TFTP_ROOT"
done

# dnsmasq serves TFTP as an unprivileged user (dnsmasq when Debian's package
# made it, else nobody), who must be able to reach the TFTP root: dnsmasq's
# --test does not check that, so a folder of 0700 above it (mktemp -d) would
# only show when dnsmasq refuses to start.
if [[ -z "$SECURE_BOOT" ]] && command -v runuser >/dev/null 2>&1 \
    && ! runuser -u "$DNSMASQ_USER" -- test -r "$TFTP_ROOT/$BIOS_FILE" 2>/dev/null; then
  bad_usage "the user $DNSMASQ_USER, as whom dnsmasq serves TFTP, cannot read $TFTP_ROOT/$BIOS_FILE: a folder above it is not open to others (chmod o+x it) or use another --state-dir."
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aula-pxe.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
print_config > "$WORK/dnsmasq.conf"
if ! out=$(dnsmasq --test --conf-file="$WORK/dnsmasq.conf" 2>&1); then
  printf '%s\n' "$out" | sed 's/^/  /' >&2
  die "dnsmasq refused the configuration this script wrote (its message above); this is a bug in $PROG."
fi

# ---------------------------------------------------------------- start

stop_ours || true

# Anything else on UDP port 67 of this interface (or of all interfaces) is
# another DHCP server: two answer each PC, and dnsmasq could not bind anyway.
while read -r _ _ _ local _ process; do
  [[ -n "$local" ]] || continue
  addr=${local%:67}
  dev=""
  if [[ "$addr" == *%* ]]; then
    dev=${addr#*%}
    addr=${addr%%%*}
  fi
  if [[ -n "$dev" && "$dev" != "$INTERFACE" ]]; then
    continue
  fi
  if [[ "$addr" != 0.0.0.0 && "$addr" != "*" && "$addr" != "$IF_ADDR" ]]; then
    continue
  fi
  who=$(sed -n 's/^users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' <<<"$process")
  bad_usage "UDP port 67 on $INTERFACE is taken by ${who:-another program} ($local): another DHCP server runs here; stop it (or serve PXE from another interface) and run this again."
done < <(ss -H -u -a -n -p 'sport = :67' 2>/dev/null)

install -m 0644 "$WORK/dnsmasq.conf" "$CONF.aula-new"
mv -f "$CONF.aula-new" "$CONF"
touch "$LEASE_FILE" "$LOG_FILE"
changed "wrote $CONF (mode $MODE on $INTERFACE, iPXE is sent to $BROKER/boot/ipxe)"

if command -v curl >/dev/null 2>&1; then
  if ! curl -s -f -m 5 "$BROKER/boot/ipxe" 2>/dev/null | head -1 | grep -q '^#!ipxe'; then
    warn "$BROKER/boot/ipxe does not answer with an iPXE script from here: check that the broker runs with a [boot] section (listen = \"HOST:PORT\") in broker.toml and that PCs on $INTERFACE can reach it."
  fi
  if [[ -n "$SECURE_BOOT" ]]; then
    for f in "$BIOS_FILE" "$EFI_FILE" grubx64.efi; do
      curl -s -f -m 5 -o /dev/null "tftp://$SECURE_BOOT/$f" 2>/dev/null \
        || warn "the broker's TFTP at $SECURE_BOOT does not serve $f from here: check [boot] tftp_listen in broker.toml, and run provisioning/fetch-loaders.sh with the broker's [boot] loaders_dir."
    done
  fi
fi

if [[ "$ACTION" == foreground ]]; then
  echo "$PROG: running dnsmasq in the foreground (Ctrl-C stops it)."
  exec 9>&-
  exec dnsmasq --keep-in-foreground --conf-file="$CONF"
fi

if ! out=$(dnsmasq --conf-file="$CONF" 2>&1 9>&-); then
  printf '%s\n' "$out" | sed 's/^/  /' >&2
  die "dnsmasq did not start (its message above); the log is $LOG_FILE."
fi
pid=""
for ((i = 0; i < 50; i++)); do
  pid=$(cat "$PID_FILE" 2>/dev/null || true)
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && break
  sleep 0.1
done
if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
  die "dnsmasq exited right after starting; see $LOG_FILE."
fi
changed "dnsmasq runs (pid $pid), log $LOG_FILE"
echo "$PROG: serving network boot on $INTERFACE ($MODE mode); stop it with: $PROG --stop --state-dir $STATE_DIR"
