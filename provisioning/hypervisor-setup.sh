#!/usr/bin/env bash
# Turns a Debian 12 machine into an Aula hypervisor: installs libvirt and
# QEMU, checks virtualisation, installs aula-agent with its configuration and
# systemd unit, sets up SPICE over TLS in libvirt's qemu.conf, and enrols the
# host with the broker. Idempotent: each step says "ok: ..." when it was
# already right or "changed: ..." when it changed something, and a second run
# makes 0 changes. It never silently overwrites an admin's edits.
#
#   provisioning/hypervisor-setup.sh --agent-binary build/release/agent/aula-agent \
#       --broker https://broker.school.example:8443 --ca-fingerprint AB:CD:... \
#       --token-file /root/hv2.token --address hv2.school.example:9443
#   provisioning/hypervisor-setup.sh --help     # every option
set -euo pipefail
# shellcheck source=provisioning/lib/setup.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/setup.sh"
umask 022

PROG=hypervisor-setup.sh

usage() {
  cat <<'EOF'
Usage: hypervisor-setup.sh [OPTION]...
Turns this Debian 12 machine into an Aula hypervisor; run it as root. Running it
again changes nothing that is already right.

Options:
  --agent-binary PATH    install this aula-agent as /usr/local/bin/aula-agent (when it
                         differs); without it, aula-agent must already be at
                         /usr/local/bin or on PATH
  --broker URL           the broker to enrol with, https://HOST:PORT
  --ca-fingerprint FP    SHA-256 fingerprint of the broker's CA, as 'aula-broker init'
                         printed it (needed with --broker)
  --token-file FILE      file whose first line is the one-time join token from
                         'aulactl enrolment-tokens create'; $AULA_JOIN_TOKEN works too.
                         The token is never taken on the command line.
  --address HOST:PORT    where the broker and viewers reach this host (goes into its
                         SPICE certificate); default: this machine's FQDN and the
                         --listen port
  --listen ADDR:PORT     the agent's mutual-TLS endpoint (default 0.0.0.0:9443)
  --network NAME         the libvirt network desktops join (default: default)
  --domain-type TYPE     auto, kvm or qemu (default: auto when /dev/kvm exists, the
                         agent then probes whether KVM works; qemu otherwise)
  --storage NAME=DIR     folder of the storage NAME (repeatable); defaults:
                         templates=/var/lib/aula/templates, desktops=/var/lib/aula/desktops,
                         media=/var/lib/aula/media
  --force-config         replace /etc/aula/agent.toml when it differs from what this
                         script writes (the old one is kept as agent.toml.bak)
  --skip-install         do not check or install Debian packages
  --root DIR             work inside DIR instead of / (for tests): every file read or
                         written is under DIR; /dev/kvm's owner and mode, libvirtd and
                         systemd are left alone
  -h, --help             show this help

Exit status: 0 when done (warnings included), 1 when a step failed, 2 for a bad
option or value.
EOF
}


ROOT=""
SKIP_INSTALL=0
DOMAIN_TYPE=""
AGENT_BINARY=""
LISTEN="0.0.0.0:9443"
NETWORK="default"
FORCE_CONFIG=0
BROKER=""
CA_FINGERPRINT=""
TOKEN_FILE=""
ADDRESS=""
STORAGE_NAMES=(templates desktops media)
declare -A STORAGE=([templates]=/var/lib/aula/templates [desktops]=/var/lib/aula/desktops
                    [media]=/var/lib/aula/media)

# ---------------------------------------------------------------- options

valid_hostport() {  # HOST:PORT, HOST may be [v6]; port 1-65535
  local host=${1%:*} port=${1##*:}
  [[ "$1" == *:* && -n "$host" && "$port" =~ ^[0-9]{1,5}$ ]] || return 1
  ((10#$port >= 1 && 10#$port <= 65535)) || return 1
  [[ "$host" =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)$ ]]
}

URL_RE='^https://[][A-Za-z0-9.:-]+(/[^[:space:]"\\]*)?$'

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
    --root|--domain-type|--agent-binary|--storage|--listen|--network|--broker|\
    --ca-fingerprint|--token-file|--address)
      if [[ $has_value -eq 0 ]]; then
        [[ $# -gt 0 ]] || bad_usage "the option $opt needs a value; see --help."
        value=$1
        shift
      fi
      ;;
    --skip-install|--force-config|-h|--help)
      [[ $has_value -eq 0 ]] || bad_usage "the option $opt takes no value; see --help."
      ;;
    *)
      bad_usage "unknown option '$opt'; see --help."
      ;;
  esac
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --force-config) FORCE_CONFIG=1 ;;
    --root)
      [[ -d "$value" ]] || bad_usage "--root '$value' is not an existing folder."
      ROOT=$(cd "$value" && pwd)
      [[ "$ROOT" == / ]] && ROOT=""
      ;;
    --domain-type)
      [[ "$value" =~ ^(auto|kvm|qemu)$ ]] \
        || bad_usage "--domain-type must be auto, kvm or qemu, not '$value'."
      DOMAIN_TYPE=$value
      ;;
    --agent-binary)
      [[ -f "$value" && -x "$value" ]] \
        || bad_usage "--agent-binary '$value' is not an executable file."
      AGENT_BINARY=$(cd "$(dirname "$value")" && pwd)/$(basename "$value")
      ;;
    --storage)
      name=${value%%=*}
      dir=${value#*=}
      [[ "$value" == *=* && "$name" =~ ^[a-z][a-z0-9_-]*$ ]] \
        || bad_usage "--storage takes NAME=DIR with a lower-case NAME such as templates=/srv/aula/templates, not '$value'."
      [[ "$dir" == /* && "$dir" != *[\"\\\$\`]* && "$dir" != *[[:cntrl:]]* ]] \
        || bad_usage "--storage $name needs an absolute folder without quotes or backslashes, not '$dir'."
      [[ "$dir" != / ]] && dir=${dir%/}
      [[ -v "STORAGE[$name]" ]] || STORAGE_NAMES+=("$name")
      STORAGE[$name]=$dir
      ;;
    --listen)
      valid_hostport "$value" || bad_usage "--listen takes ADDR:PORT such as 0.0.0.0:9443, not '$value'."
      LISTEN=$value
      ;;
    --network)
      [[ "$value" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] \
        || bad_usage "--network takes the name of a libvirt network such as default, not '$value'."
      NETWORK=$value
      ;;
    --broker)
      [[ "$value" =~ $URL_RE ]] \
        || bad_usage "--broker takes the broker's URL such as https://broker.school.example:8443, not '$value'."
      BROKER=${value%/}
      ;;
    --ca-fingerprint)
      hex=${value//:/}
      [[ "$hex" =~ ^[0-9A-Fa-f]{64}$ ]] \
        || bad_usage "--ca-fingerprint takes the CA's SHA-256 fingerprint (64 hex digits, colons allowed), not '$value'."
      CA_FINGERPRINT=$value
      ;;
    --token-file)
      [[ -f "$value" && -r "$value" ]] || bad_usage "the token file '$value' cannot be read."
      TOKEN_FILE=$value
      ;;
    --address)
      valid_hostport "$value" \
        || bad_usage "--address takes HOST:PORT such as hv2.school.example:9443, not '$value'."
      ADDRESS=$value
      ;;
  esac
done

if [[ -n "$BROKER" && -z "$CA_FINGERPRINT" ]]; then
  bad_usage "--broker needs --ca-fingerprint (the fingerprint 'aula-broker init' printed)."
fi
if [[ -z "$BROKER" && ( -n "$CA_FINGERPRINT" || -n "$TOKEN_FILE" ) ]]; then
  bad_usage "--ca-fingerprint and --token-file are for enrolment and need --broker."
fi
# The token travels only in the environment of 'aula-agent enroll'.
TOKEN=""
if [[ -n "$TOKEN_FILE" ]]; then
  IFS= read -r TOKEN < "$TOKEN_FILE" || true
  TOKEN=${TOKEN//[[:space:]]/}
  [[ -n "$TOKEN" ]] || bad_usage "the token file '$TOKEN_FILE' has no token on its first line."
elif [[ -n "${AULA_JOIN_TOKEN:-}" ]]; then
  TOKEN=${AULA_JOIN_TOKEN//[[:space:]]/}
fi
unset AULA_JOIN_TOKEN

# ---------------------------------------------------------------- helpers

STATE_DIR=/var/lib/aula-agent
SPICE_DIR=$STATE_DIR/spice
CONFIG=/etc/aula/agent.toml
UNIT=/etc/systemd/system/aula-agent.service
AGENT_DEST=/usr/local/bin/aula-agent
QEMU_CONF=/etc/libvirt/qemu.conf
UDEV_RULE=/etc/udev/rules.d/65-aula-kvm.rules
APPARMOR_LOCAL=/etc/apparmor.d/local/abstractions/libvirt-qemu
LIBVIRT_URI=qemu:///system
BLOCK_BEGIN="# BEGIN aula (managed by hypervisor-setup.sh)"
BLOCK_END="# END aula"
PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf dnsmasq-base
          # What aula-agent links to at run time (ldd build/release/agent/aula-agent).
          libfmt9 libtomlplusplus3 libcurl4 libmbedtls14 libmbedx509-1 libmbedcrypto7
          libsystemd0 libvirt0)

CHANGES=0
WARNINGS=0
ok() { echo "ok: $*"; }
changed() {
  echo "changed: $*"
  CHANGES=$((CHANGES + 1))
}
warn() {
  echo "warning: $*"
  WARNINGS=$((WARNINGS + 1))
}
note() { echo "note: $*"; }

# The path a logical path has on disk (under --root).
p() { printf '%s%s' "$ROOT" "$1"; }

SYSTEMD=0
[[ -z "$ROOT" && -d /run/systemd/system ]] && SYSTEMD=1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aula-hvsetup.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# "owner:group mode" of a path, e.g. "root:root 755".
perms() { stat -c '%U:%G %a' "$1"; }

# Makes the folder $1 (logical) exist with owner $2, group $3 and mode $4.
# Missing parents are made 0755; existing parents are left alone.
ensure_dir() {
  local dir=$1 owner=$2 group=$3 mode=$4 real
  real=$(p "$dir")
  if [[ -e "$real" && ! -d "$real" ]]; then
    die "'$dir' exists but is not a folder; move it away and run this again."
  fi
  if [[ ! -d "$real" ]]; then
    mkdir -p "$real"
    chown "$owner:$group" "$real"
    chmod "$mode" "$real"
    changed "created $dir ($owner:$group, mode $mode)"
    return
  fi
  local now
  now=$(perms "$real")
  if [[ "$now" != "$owner:$group $mode" ]]; then
    chown "$owner:$group" "$real"
    chmod "$mode" "$real"
    changed "$dir is now $owner:$group, mode $mode (was $now)"
  else
    ok "$dir exists ($owner:$group, mode $mode)"
  fi
}

# Puts the file $2 (a temporary file) at $1 (logical) with mode $3, owned by
# root, unless it is there already with that content. Returns 0 when it
# changed something, 1 when all was in place; says which.
install_file() {
  local dest=$1 src=$2 mode=$3 what=$4 real
  real=$(p "$dest")
  if [[ -f "$real" ]] && cmp -s "$src" "$real"; then
    local now
    now=$(perms "$real")
    if [[ "$now" != "root:root $mode" ]]; then
      chown root:root "$real"
      chmod "$mode" "$real"
      changed "$what $dest is now root:root, mode $mode (was $now)"
      return 0
    fi
    ok "$what $dest is up to date"
    return 1
  fi
  local verb=wrote
  [[ -e "$real" ]] && verb=updated
  mkdir -p "$(dirname "$real")"
  # A new name, then a rename: a running aula-agent or a reader never sees
  # half a file.
  install -m "$mode" -o root -g root "$src" "$real.aula-new"
  mv -f "$real.aula-new" "$real"
  changed "$verb $what $dest"
  return 0
}

# Rewrites a file's text from stdin with Aula's block $1 in place (replacing
# the old block, or appended). $2 names the file in messages; a line outside
# the block matching the regular expression $3 (when not empty) is refused.
# Exits 3 with one sentence on stderr when refused or the block's markers are
# broken.
with_block() {
  AULA_BEGIN=$BLOCK_BEGIN AULA_END=$BLOCK_END AULA_BLOCK=$1 AULA_FILE=$2 AULA_FOREIGN=${3:-} awk '
    BEGIN { begin = ENVIRON["AULA_BEGIN"]; end = ENVIRON["AULA_END"]; file = ENVIRON["AULA_FILE"]
            foreign = ENVIRON["AULA_FOREIGN"]; inside = 0; seen = 0; bad = "" }
    bad != "" { next }
    $0 == begin {
      if (seen) { bad = sprintf("%s line %d starts a second aula block; keep only one between \"%s\" and \"%s\".", file, NR, begin, end); next }
      inside = 1; seen = 1; print ENVIRON["AULA_BLOCK"]; next
    }
    $0 == end {
      if (!inside) { bad = sprintf("%s line %d ends an aula block that never began; remove that line.", file, NR); next }
      inside = 0; next
    }
    inside { next }
    foreign != "" && $0 ~ foreign {
      bad = sprintf("%s line %d sets \"%s\" outside the block this script manages; remove that line (or comment it out) and run this again: the block sets it for Aula.", file, NR, $0)
      next
    }
    { print }
    END {
      if (bad == "" && inside) bad = sprintf("%s has \"%s\" without \"%s\" after it; fix the file by hand.", file, begin, end)
      if (bad != "") { print bad > "/dev/stderr"; exit 3 }
      if (!seen) { if (NR > 0) print ""; print ENVIRON["AULA_BLOCK"] }
    }'
}
QEMU_CONF_FOREIGN='^[ \t]*spice_tls(_x509_cert_dir)?[ \t]*='

# Puts Aula's block $2 into the file $1 (logical), leaving the rest of the
# file, its owner and mode alone; a new file gets mode $3. $4 names the
# block in messages. Returns 0 when it changed the file.
ensure_block() {
  local file=$1 block=$2 mode=$3 what=$4 real foreign=${5:-} problem verb=added
  real=$(p "$file")
  if [[ -f "$real" ]]; then
    grep -qxF "$BLOCK_BEGIN" "$real" && verb=updated
    problem=$(with_block "$block" "$file" "$foreign" < "$real" 2>&1 > "$WORK/block") \
      || die "$problem"
    if cmp -s "$WORK/block" "$real"; then
      ok "$file has $what"
      return 1
    fi
    cp -p "$real" "$real.aula-new"
    cat "$WORK/block" > "$real.aula-new"
  else
    with_block "$block" "$file" < /dev/null > "$WORK/block"
    mkdir -p "$(dirname "$real")"
    install -m "$mode" "$WORK/block" "$real.aula-new"
  fi
  mv -f "$real.aula-new" "$real"
  changed "$file: $verb $what"
  return 0
}

QEMU_BLOCK="$BLOCK_BEGIN
# SPICE only over TLS, with the certificate the broker issued this host at
# enrolment (aula-agent writes it to $SPICE_DIR).
spice_tls = 1
spice_tls_x509_cert_dir = \"$SPICE_DIR\"
$BLOCK_END"

APPARMOR_BLOCK="$BLOCK_BEGIN
# QEMU reads the SPICE certificate from the agent's state dir.
$SPICE_DIR/ r,
$SPICE_DIR/** r,
$BLOCK_END"

# The aula-agent this machine runs: the installed one, else one on PATH.
find_agent() {
  if [[ -x "$(p "$AGENT_DEST")" ]]; then
    printf '%s' "$AGENT_DEST"
  elif [[ -z "$ROOT" ]] && command -v aula-agent >/dev/null 2>&1; then
    command -v aula-agent
  else
    return 1
  fi
}

# ---------------------------------------------------------------- checks
# Everything that would stop the run is checked before anything changes.

[[ $(id -u) -eq 0 ]] || die "run this as root: it installs packages and writes to /etc and /var/lib."
os_id=$(sed -n 's/^ID=//p' /etc/os-release 2>/dev/null | tr -d '"')
os_version=$(sed -n 's/^VERSION_ID=//p' /etc/os-release 2>/dev/null | tr -d '"')
if [[ "$os_id" != debian || "$os_version" != 12 ]]; then
  die "this machine runs '${os_id:-unknown} ${os_version:-?}' (from /etc/os-release); Aula hypervisors run Debian 12."
fi
if [[ -z "$AGENT_BINARY" ]] && ! find_agent >/dev/null; then
  die "aula-agent is not installed: build it in an Aula checkout ('cmake --preset release && cmake --build --preset release --target aula-agent', see docs/development.md) and run this again with --agent-binary build/release/agent/aula-agent."
fi
for f in "$QEMU_CONF" "$APPARMOR_LOCAL"; do
  [[ -f "$(p "$f")" ]] || continue
  foreign=""
  [[ "$f" == "$QEMU_CONF" ]] && foreign=$QEMU_CONF_FOREIGN
  if ! problem=$(with_block "" "$f" "$foreign" < "$(p "$f")" 2>&1 >/dev/null); then
    die "$problem Nothing was changed."
  fi
done

[[ -n "$ROOT" ]] && note "working inside $ROOT (--root): the paths below are under it; /dev/kvm, libvirtd and systemd are left alone."

# ---------------------------------------------------------------- 1. packages

if [[ $SKIP_INSTALL -eq 1 ]]; then
  note "packages not checked (--skip-install)."
else
  ensure_packages "${PACKAGES[@]}"
fi

# ---------------------------------------------------------------- 2. virtualisation

cpu_flags=$(grep -owE 'vmx|svm' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' || true)
if [[ -n "$cpu_flags" ]]; then
  ok "the CPU offers hardware virtualisation (${cpu_flags% })"
else
  warn "the CPU shows neither the vmx nor the svm flag: it offers no hardware virtualisation (off in the firmware, or this machine is itself a VM without nested virtualisation)."
fi

kvm_present=0
if [[ -e "$(p /dev/kvm)" ]]; then
  kvm_present=1
  if [[ -n "$ROOT" ]]; then
    note "/dev/kvm exists; its owner and mode are left alone under --root."
  else
    if ! getent group kvm >/dev/null; then
      groupadd --system kvm
      changed "created the group kvm"
    fi
    kvm_now=$(perms /dev/kvm)
    if [[ "$kvm_now" != "root:kvm 660" ]]; then
      chown root:kvm /dev/kvm
      chmod 0660 /dev/kvm
      changed "/dev/kvm is now root:kvm, mode 0660 (was $kvm_now)"
    else
      ok "/dev/kvm exists (root:kvm, mode 0660)"
    fi
  fi
  # udev makes /dev/kvm anew at every boot; this keeps it root:kvm 0660
  # (QEMU runs as libvirt-qemu, which is in the group kvm).
  printf '%s\n' '# Written by Aula'"'"'s hypervisor-setup.sh: QEMU (libvirt-qemu, group kvm) uses KVM; nobody else.' \
    'KERNEL=="kvm", GROUP="kvm", MODE="0660"' > "$WORK/udev.rules"
  install_file "$UDEV_RULE" "$WORK/udev.rules" 644 "udev rule" || true
fi

if [[ -n "$DOMAIN_TYPE" ]]; then
  ok "domain_type = \"$DOMAIN_TYPE\" (--domain-type)"
  if [[ "$DOMAIN_TYPE" == kvm && $kvm_present -eq 0 ]]; then
    warn "--domain-type kvm, but /dev/kvm does not exist: guests will fail to start until KVM works (modprobe kvm_intel or kvm_amd)."
  fi
elif [[ $kvm_present -eq 1 ]]; then
  DOMAIN_TYPE=auto
  ok "/dev/kvm exists: domain_type = \"auto\" (the agent checks at start that KVM really works; under nested virtualisation it may not, and the agent then uses qemu)"
else
  DOMAIN_TYPE=qemu
  warn "/dev/kvm does not exist: domain_type = \"qemu\", so guests run under TCG emulation, several times slower; enable virtualisation in the firmware, load kvm_intel or kvm_amd, and run this again with --force-config."
fi

# ---------------------------------------------------------------- 3. agent binary

AGENT_RESTART=0
if [[ -n "$AGENT_BINARY" ]]; then
  if install_file "$AGENT_DEST" "$AGENT_BINARY" 755 "aula-agent binary"; then
    AGENT_RESTART=1
  fi
  AGENT=$AGENT_DEST
else
  AGENT=$(find_agent)
  ok "aula-agent is installed at $AGENT"
fi
AGENT_REAL=$AGENT
[[ "$AGENT" == "$AGENT_DEST" ]] && AGENT_REAL=$(p "$AGENT_DEST")
HAS_SERVE=0
"$AGENT_REAL" serve --help >/dev/null 2>&1 && HAS_SERVE=1

# ---------------------------------------------------------------- 4. storage

# QEMU runs as libvirt-qemu and must pass through every folder above a disk.
for name in "${STORAGE_NAMES[@]}"; do
  dir=${STORAGE[$name]}
  ensure_dir "$dir" root root 755
  parent=$(dirname "$dir")
  while [[ "$parent" != / ]]; do
    if [[ $(( 8#$(stat -c '%a' "$(p "$parent")") & 1 )) -eq 0 ]]; then
      warn "$parent (above the storage $name) is not open to others (o+x): QEMU, running as libvirt-qemu, cannot reach disks under it; chmod o+x $parent."
    fi
    parent=$(dirname "$parent")
  done
done

# ---------------------------------------------------------------- 5. agent.toml

listen_port=${LISTEN##*:}
{
  cat <<EOF
# aula-agent's configuration, written by provisioning/hypervisor-setup.sh (run
# it again with --force-config to rewrite this file). The agent refuses unknown
# keys; docs/admin-guide.md describes each one.

[agent]
state_dir = "$STATE_DIR"
listen = "$LISTEN"
# Empty: the URL recorded at enrolment.
broker_url = ""
libvirt_uri = "$LIBVIRT_URI"
# auto (the agent checks at start whether KVM works), kvm, or qemu (TCG).
domain_type = "$DOMAIN_TYPE"
heartbeat_seconds = 10
log_level = "info"
# The libvirt network desktops join.
network = "$NETWORK"

[spice]
listen = "0.0.0.0"
# The address viewers connect to; empty: the host of the enrolment address.
public_host = ""
# Also an unencrypted SPICE port: for tests only.
plain_port = false

[storage.paths]
EOF
  for name in "${STORAGE_NAMES[@]}"; do
    printf '%s = "%s"\n' "$name" "${STORAGE[$name]}"
  done
} > "$WORK/agent.toml"

CONFIG_REAL=$(p "$CONFIG")
ensure_dir /etc/aula root root 755
if [[ -f "$CONFIG_REAL" ]] && ! cmp -s "$WORK/agent.toml" "$CONFIG_REAL"; then
  if [[ $FORCE_CONFIG -eq 1 ]]; then
    cp -p "$CONFIG_REAL" "$CONFIG_REAL.bak"
    install_file "$CONFIG" "$WORK/agent.toml" 644 "configuration" || true
    note "the old configuration is kept as $CONFIG.bak."
    AGENT_RESTART=1
  else
    diff -u --label "$CONFIG (now)" --label "$CONFIG (what this script writes)" \
      "$CONFIG_REAL" "$WORK/agent.toml" || true
    warn "$CONFIG differs from what this script writes (diff above) and was left alone: keep your edits, or run this again with --force-config to replace it (the old one is kept as $CONFIG.bak)."
  fi
elif install_file "$CONFIG" "$WORK/agent.toml" 644 "configuration"; then
  AGENT_RESTART=1
fi

# ---------------------------------------------------------------- 6. SPICE TLS in qemu.conf

# libvirtd refuses to start when spice_tls_x509_cert_dir does not exist, so
# the folders come first. 0711: QEMU may pass through the agent's state dir
# to spice/ but not list it (the modes aula-agent enroll sets too).
ensure_dir "$STATE_DIR" root root 711
ensure_dir "$SPICE_DIR" root root 755

if [[ -z "$ROOT" && ! -f "$QEMU_CONF" ]]; then
  warn "$QEMU_CONF does not exist (is libvirt-daemon-system installed?); writing one that holds only Aula's block."
fi
QEMU_CONF_CHANGED=0
if ensure_block "$QEMU_CONF" "$QEMU_BLOCK" 600 \
    "Aula's SPICE TLS block (spice_tls = 1, certificates in $SPICE_DIR)" "$QEMU_CONF_FOREIGN"; then
  QEMU_CONF_CHANGED=1
fi

# AppArmor confines each QEMU to what libvirt's abstraction allows, which
# names only /etc/pki/libvirt-spice for SPICE certificates. Guests started
# after this read the local addition; nothing needs reloading.
ensure_block "$APPARMOR_LOCAL" "$APPARMOR_BLOCK" 644 \
  "Aula's AppArmor rule (QEMU may read $SPICE_DIR)" || true

# ---------------------------------------------------------------- 7. libvirt network

libvirtd_hint() {
  if [[ $SYSTEMD -eq 1 ]]; then
    echo "systemctl start libvirtd"
  else
    echo "/usr/sbin/virtlogd --daemon && /usr/sbin/libvirtd --daemon"
  fi
}

if [[ -n "$ROOT" ]]; then
  note "libvirt's networks are left alone under --root."
elif ! command -v virsh >/dev/null 2>&1; then
  warn "virsh is missing (package libvirt-clients), so the libvirt network '$NETWORK' was not checked; install it and run this again."
elif ! LC_ALL=C timeout 20 virsh -q -c "$LIBVIRT_URI" uri >/dev/null 2>&1; then
  if [[ $SYSTEMD -eq 1 ]]; then
    warn "libvirtd does not answer at $LIBVIRT_URI, so the network '$NETWORK' was not checked: run '$(libvirtd_hint)' and run this again."
  else
    warn "libvirtd is not running (systemd is not PID 1 here, so nothing starts it), so the network '$NETWORK' was not checked: start it with '$(libvirtd_hint)' and run this again."
  fi
else
  if [[ $QEMU_CONF_CHANGED -eq 1 ]]; then
    if [[ $SYSTEMD -eq 1 ]]; then
      systemctl restart libvirtd
      changed "restarted libvirtd so that it reads $QEMU_CONF (running guests keep running)"
    else
      warn "libvirtd reads $QEMU_CONF only when it starts: restart it (running guests keep running)."
    fi
  fi
  vsh() { LC_ALL=C timeout 60 virsh -q -c "$LIBVIRT_URI" "$@"; }
  net_ok=1
  if ! net_info=$(vsh net-info "$NETWORK" 2>/dev/null); then
    if [[ "$NETWORK" == default && -f /usr/share/libvirt/networks/default.xml ]]; then
      out=$(vsh net-define /usr/share/libvirt/networks/default.xml 2>&1) \
        || die "virsh net-define /usr/share/libvirt/networks/default.xml failed: $out"
      changed "defined the libvirt network 'default' (from /usr/share/libvirt/networks/default.xml)"
      net_info=$(vsh net-info "$NETWORK")
    else
      warn "the libvirt network '$NETWORK' does not exist: define it ('virsh net-define FILE.xml') and run this again."
      net_ok=0
    fi
  fi
  if [[ $net_ok -eq 1 ]]; then
    if ! grep -qE '^Autostart:[[:space:]]+yes' <<<"$net_info"; then
      out=$(vsh net-autostart "$NETWORK" 2>&1) || die "virsh net-autostart $NETWORK failed: $out"
      changed "the libvirt network '$NETWORK' now starts with libvirtd"
    fi
    if ! grep -qE '^Active:[[:space:]]+yes' <<<"$net_info"; then
      out=$(vsh net-start "$NETWORK" 2>&1) || die "virsh net-start $NETWORK failed: $out"
      changed "started the libvirt network '$NETWORK'"
    fi
    if grep -qE '^Autostart:[[:space:]]+yes' <<<"$net_info" && grep -qE '^Active:[[:space:]]+yes' <<<"$net_info"; then
      ok "the libvirt network '$NETWORK' is defined, autostarted and active"
    fi
  fi
fi

# ---------------------------------------------------------------- 8. systemd unit

cat > "$WORK/aula-agent.service" <<EOF
# aula-agent, written by provisioning/hypervisor-setup.sh.
[Unit]
Description=Aula agent (runs virtual desktops for the Aula broker)
# The agent drives libvirt through its socket and talks to the broker.
After=network-online.target libvirtd.service
Wants=network-online.target libvirtd.service

[Service]
Type=exec
ExecStart=$AGENT serve --config $CONFIG
Restart=on-failure
RestartSec=5
# Guests are libvirtd's children, not the agent's; on stop or restart only the
# agent goes, and a qemu-img it started may finish. Desktops keep running.
KillMode=process

# Hardening that leaves libvirt alone. The agent runs as root: it writes disks
# for QEMU and the certificates in $STATE_DIR.
NoNewPrivileges=yes
ProtectHome=yes
# /usr, /boot and /etc read-only; /var/lib (disks, state) stays writable.
ProtectSystem=full
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
# Unix for libvirt's socket and the journal, IP for the broker, netlink for
# name resolution.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Left out on purpose: PrivateTmp, PrivateDevices, ProtectSystem=strict and
# TemporaryFileSystem. libvirtd and QEMU run outside the agent's mount
# namespace, so every path the agent hands them (disks, ISOs, temporary
# files) must mean the same on both sides, and the socket under /run/libvirt
# must stay reachable.

[Install]
WantedBy=multi-user.target
EOF
if install_file "$UNIT" "$WORK/aula-agent.service" 644 "systemd unit"; then
  AGENT_RESTART=1
  if [[ $SYSTEMD -eq 1 ]]; then
    systemctl daemon-reload
  fi
fi

# ---------------------------------------------------------------- 9. enrolment

MARKER=$(p "$STATE_DIR/enrolment.json")
json_field() {  # the string or number value of "$1" in enrolment.json (nlohmann's dump(2))
  sed -n 's/^[[:space:]]*"'"$1"'":[[:space:]]*"\{0,1\}\([^",]*\)"\{0,1\},\{0,1\}[[:space:]]*$/\1/p' "$MARKER" | head -1
}
if [[ -f "$MARKER" ]]; then
  ok "enrolled as host '$(json_field host_name)' (id $(json_field host_id)) with $(json_field broker_url)"
  if [[ -n "$BROKER" ]]; then
    note "this host is enrolled already, so --broker was not used and no join token was spent; to enrol again, delete the host on the broker and run 'aula-agent enroll --force' with a new token."
  fi
elif [[ -n "$BROKER" && -n "$TOKEN" ]]; then
  if [[ -z "$ADDRESS" ]]; then
    host=$(hostname --fqdn 2>/dev/null || hostname)
    [[ -n "$host" && "$host" != localhost ]] \
      || die "cannot tell this machine's name for --address (hostname --fqdn says '$host'); give --address HOST:PORT."
    ADDRESS=$host:$listen_port
    note "--address not given: enrolling with $ADDRESS (this machine's name and the --listen port)."
  fi
  if ! out=$(AULA_JOIN_TOKEN=$TOKEN "$AGENT_REAL" enroll --broker "$BROKER" \
      --ca-fingerprint "$CA_FINGERPRINT" --address "$ADDRESS" --state-dir "$(p "$STATE_DIR")" 2>&1); then
    printf '%s\n' "$out" | sed 's/^/  /' >&2
    die "enrolment with $BROKER failed (aula-agent's message above); nothing of it was stored."
  fi
  printf '%s\n' "$out" | sed 's/^/  /'
  [[ -f "$MARKER" ]] || die "aula-agent enroll succeeded but wrote no $STATE_DIR/enrolment.json."
  changed "enrolled with $BROKER as host '$(json_field host_name)' at $ADDRESS"
  AGENT_RESTART=1
else
  if [[ -n "$BROKER" ]]; then
    warn "not enrolled: --broker was given but no join token; pass --token-file FILE (or set AULA_JOIN_TOKEN)."
  else
    warn "this host is not enrolled: on the broker run 'aulactl enrolment-tokens create --host-name NAME --pool-id N', put the token in a file (mode 0600) and run this again with --broker https://BROKER:8443 --ca-fingerprint FP --token-file FILE."
  fi
fi

# The SPICE certificate QEMU reads (after enrolment).
if [[ -f "$MARKER" ]]; then
  # An older aula-agent enroll makes the state dir 0700.
  [[ $(perms "$(p "$STATE_DIR")") == "root:root 711" ]] || ensure_dir "$STATE_DIR" root root 711
  missing=()
  for f in ca-cert.pem server-cert.pem server-key.pem; do
    [[ -f "$(p "$SPICE_DIR/$f")" ]] || missing+=("$f")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    warn "$SPICE_DIR lacks ${missing[*]}: this aula-agent stored its SPICE certificate elsewhere (an older build), so QEMU cannot offer SPICE over TLS; install a newer aula-agent and enrol again ('aula-agent enroll --force' with a new token)."
  elif getent group libvirt-qemu >/dev/null; then
    key=$(p "$SPICE_DIR/server-key.pem")
    key_now=$(perms "$key")
    if [[ "$key_now" != "root:libvirt-qemu 640" ]]; then
      chown root:libvirt-qemu "$key"
      chmod 0640 "$key"
      changed "$SPICE_DIR/server-key.pem is now root:libvirt-qemu, mode 0640 so that QEMU can read it (was $key_now)"
    else
      ok "the SPICE certificate in $SPICE_DIR is readable by QEMU (key root:libvirt-qemu, mode 0640)"
    fi
  else
    warn "there is no group libvirt-qemu (is libvirt-daemon-system installed?): check that QEMU can read $SPICE_DIR/server-key.pem."
  fi
fi

# ---------------------------------------------------------------- 10. service

START_CMD="$AGENT serve --config $CONFIG"
if [[ $HAS_SERVE -eq 0 ]]; then
  warn "this aula-agent has no 'serve' subcommand yet (its service mode is still being built), so the service was not started; install a newer aula-agent and run this again."
elif [[ -n "$ROOT" ]]; then
  note "systemd is left alone under --root; on the machine itself: systemctl enable --now aula-agent"
elif [[ $SYSTEMD -eq 0 ]]; then
  when="Start it by hand"
  [[ -f "$MARKER" ]] || when="Once the host is enrolled, start it by hand"
  note "systemd is not running here (PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo unknown)): nothing starts the agent at boot. $when: $START_CMD"
elif [[ ! -f "$MARKER" ]]; then
  if ! systemctl is-enabled --quiet aula-agent; then
    systemctl enable --quiet aula-agent
    changed "aula-agent starts at boot (systemctl enable aula-agent); it is not started now because the host is not enrolled"
  else
    ok "aula-agent is enabled; it is not started because the host is not enrolled"
  fi
else
  if ! systemctl is-enabled --quiet aula-agent || ! systemctl is-active --quiet aula-agent; then
    systemctl enable --now --quiet aula-agent
    changed "aula-agent is enabled and running (systemctl enable --now aula-agent)"
  elif [[ $AGENT_RESTART -eq 1 ]]; then
    systemctl restart aula-agent
    changed "restarted aula-agent for its new binary, configuration or unit (desktops keep running)"
  else
    ok "aula-agent is enabled and running"
  fi
fi

# ---------------------------------------------------------------- summary

if [[ $CHANGES -eq 0 ]]; then
  echo "$PROG: everything was already in place: 0 changes, $WARNINGS warning(s)."
else
  echo "$PROG: $CHANGES change(s), $WARNINGS warning(s)."
fi
