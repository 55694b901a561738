#!/usr/bin/env bash
# Aula's main job on one machine: installs what is needed, builds, and brings
# up every part of Aula that exists so far, with real guests, then prints
# what it started.
#
#   provisioning/demo.sh              # bring it up and keep it running (Ctrl-C stops it)
#   provisioning/demo.sh --headless   # bring it up, check each student's desktop over
#                                     # SPICE, stop, exit 0
#
# It starts: the broker (SQLite, HTTPS on 127.0.0.1); libvirtd (unless one
# runs) with an isolated network; an aula-agent enrolled with a join token;
# the test template (tests/template, a tiny guest whose screen reads "AULA
# TEST DESKTOP"); a school with a teacher, two students and a deployment;
# and a lab PC: the thin image (image/build.sh, cached) added to the broker
# and released on 'stable', and a QEMU PC that boots it from the network
# through the broker's boot listener into the greeter. Guests and the PC run
# under QEMU's TCG (no KVM needed). Everything it made is removed when it
# stops: desktops, network, data dir, and the qemu.conf lines it added.
# --headless also logs alice in on the lab PC with QMP key presses and checks
# that its screen shows her desktop (screenshots in build/dev/demo/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HEADLESS=0
for arg in "$@"; do
  case "$arg" in
    --headless) HEADLESS=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$arg'; see --help." >&2; exit 2 ;;
  esac
done
if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run it as root: it starts libvirtd and guests on qemu:///system." >&2
  exit 2
fi

"$ROOT/provisioning/install-deps.sh"
cmake --preset dev >/dev/null
cmake --build --preset dev -j "$(nproc)" --target aula-broker aulactl aula-agent aula-spice-probe
# The lab PC's image: minutes the first time, seconds when nothing changed.
cmake --build --preset dev --target aula-image >/dev/null

BIN="$ROOT/build/dev"
TEMPLATE="$BIN/demo/test-template.qcow2"
mkdir -p "$BIN/demo"
"$ROOT/tests/template/build-test-template.sh" "$TEMPLATE" >/dev/null

# QEMU runs as libvirt-qemu: everything it reads lives in a folder it may enter.
DEMO="${AULA_DEMO_DIR:-$(mktemp -d /var/lib/aula-demo.XXXXXX)}"
chmod 0711 "$DEMO"
export HOME="$DEMO/home"
mkdir -p "$HOME"
BROKER_PID="" AGENT_PID="" PC_PID="" STARTED_LIBVIRTD=0 NETWORK="" QEMU_CONF_SAVED=""
QEMU_CONF=/etc/libvirt/qemu.conf
ctl() { XDG_CONFIG_HOME="$DEMO/home/admin" "$BIN/server/aulactl" "$@"; }
ctl_as() { local who=$1; shift; XDG_CONFIG_HOME="$DEMO/home/$who" "$BIN/server/aulactl" "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

cleanup() {
  set +e
  if [[ -n "$BROKER_PID" && -n "${DEP:-}" ]]; then
    ctl deployments delete "$DEP" >/dev/null 2>&1
  fi
  [[ -n "$PC_PID" ]] && kill "$PC_PID" 2>/dev/null && wait "$PC_PID" 2>/dev/null
  [[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
  [[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  # Guests of this demo that are still there (the deployment's deletion failed).
  for dom in $(virsh -c qemu:///system list --all --name 2>/dev/null | grep '^aula-'); do
    if virsh -c qemu:///system dumpxml "$dom" 2>/dev/null | grep -q "$DEMO/"; then
      virsh -c qemu:///system destroy "$dom" >/dev/null 2>&1
      virsh -c qemu:///system undefine "$dom" >/dev/null 2>&1
    fi
  done
  [[ -n "$NETWORK" ]] && virsh -c qemu:///system net-destroy "$NETWORK" >/dev/null 2>&1
  if [[ $STARTED_LIBVIRTD -eq 1 ]]; then
    for pidfile in /run/libvirtd.pid /run/virtlogd.pid; do
      [[ -s $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null
    done
  fi
  [[ -n "$QEMU_CONF_SAVED" ]] && cp "$QEMU_CONF_SAVED" "$QEMU_CONF"
  [[ -n "${ADDED_LO:-}" ]] && ip addr del 10.0.2.2/32 dev lo
  [[ -z "${AULA_DEMO_DIR:-}" ]] && rm -rf "$DEMO"
}
trap cleanup EXIT

# --- libvirtd ---------------------------------------------------------------
# Without udev /dev/kvm stays root:root 0600, and libvirt then re-probes QEMU
# on every define (seconds each). Debian's udev rule, and hypervisor-setup.sh,
# make it root:kvm 0660; so does this. Guests still run under TCG.
if [[ -c /dev/kvm ]] && getent group kvm >/dev/null; then
  chown root:kvm /dev/kvm && chmod 0660 /dev/kvm
fi
SPICE_TLS=true
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  # SPICE over TLS needs qemu.conf's spice_tls, read at libvirtd's start.
  if ! grep -Eq '^\s*spice_tls\s*=' "$QEMU_CONF"; then
    QEMU_CONF_SAVED="$DEMO/qemu.conf.saved"
    cp "$QEMU_CONF" "$QEMU_CONF_SAVED"
    mkdir -p "$DEMO/agent/spice"
    printf '\n# demo.sh (removed when it stops)\nspice_tls = 1\nspice_tls_x509_cert_dir = "%s"\n' \
      "$DEMO/agent/spice" >> "$QEMU_CONF"
  elif ! grep -Eq '^\s*spice_tls\s*=\s*1' "$QEMU_CONF"; then
    SPICE_TLS=false
  fi
  "$ROOT/provisioning/start-libvirtd.sh"
  STARTED_LIBVIRTD=1
  for _ in $(seq 120); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.5; done
else
  # A running daemon keeps its settings: TLS only if it has it.
  grep -Eq '^\s*spice_tls\s*=\s*1' "$QEMU_CONF" || SPICE_TLS=false
fi
NETWORK="aula-demo-$$"
printf "<network><name>%s</name><bridge name='aulad%s' stp='off'/></network>\n" "$NETWORK" "$$" \
  > "$DEMO/network.xml"
virsh -c qemu:///system net-create "$DEMO/network.xml" >/dev/null

# --- broker -------------------------------------------------------------------
ADMIN_PW="demo-admin-$RANDOM$RANDOM"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BOOT_PORT=$(free_port)
PC_SPICE_PORT=$(free_port)
printf '%s\n' "$ADMIN_PW" > "$DEMO/admin.pw"
# 10.0.2.2: this machine's loopback as the lab PC on QEMU's user network sees it.
"$BIN/server/aula-broker" init --data-dir "$DEMO/broker" --admin-password-file "$DEMO/admin.pw" \
  --listen 127.0.0.1:0 --name 10.0.2.2 >/dev/null
mkdir -p "$DEMO/storage/templates" "$DEMO/storage/desktops"
chmod 0755 "$DEMO/storage" "$DEMO/storage/templates" "$DEMO/storage/desktops"
sed -i -e "s|^templates = .*|templates = \"$DEMO/storage/templates\"|" \
  -e "s|^desktops = .*|desktops = \"$DEMO/storage/desktops\"|" "$DEMO/broker/broker.toml"
cat >> "$DEMO/broker/broker.toml" <<TOML

[hosts]
# The test guest does not answer ACPI power-off: don't wait a minute for it.
shutdown_grace_seconds = 5

[boot]
listen = "127.0.0.1:$BOOT_PORT"
# The lab PC's journal, with the greeter's messages, on its serial line.
kernel_args = "console=ttyS0 systemd.journald.forward_to_console=1"
TOML
"$BIN/server/aula-broker" --config "$DEMO/broker/broker.toml" --port-file "$DEMO/broker.addr" \
  >"$DEMO/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 50); do [[ -s "$DEMO/broker.addr" ]] && break; sleep 0.1; done
if [[ ! -s "$DEMO/broker.addr" ]]; then
  echo "demo.sh: the broker did not start; its log:" >&2
  cat "$DEMO/broker.log" >&2
  exit 1
fi
URL="https://$(cat "$DEMO/broker.addr")"
CA="$DEMO/broker/ca/ca.crt"
FINGERPRINT=$(openssl x509 -in "$CA" -noout -fingerprint -sha256 | cut -d= -f2)
ctl login --url "$URL" --ca-file "$CA" --user admin --password-file "$DEMO/admin.pw" >/dev/null
CAT=$(ctl --json categories create --name "Demo School" | field id)
POOL=$(ctl --json pools create --name default | field id)

# --- agent --------------------------------------------------------------------
if ! ip -4 addr show dev lo | grep -q ' 10\.0\.2\.2/'; then
  ip addr add 10.0.2.2/32 dev lo
  ADDED_LO=1
fi
AGENT_PORT=$(free_port)
JOIN=$(ctl --json enrolment-tokens create --host-name hv1 --pool-id "$POOL" | field token)
AULA_JOIN_TOKEN="$JOIN" "$BIN/agent/aula-agent" enroll --broker "$URL" --ca-fingerprint "$FINGERPRINT" \
  --address "127.0.0.1:$AGENT_PORT" --state-dir "$DEMO/agent" >/dev/null
PLAIN=false
[[ $SPICE_TLS == true ]] || PLAIN=true
cat > "$DEMO/agent.toml" <<TOML
[agent]
state_dir = "$DEMO/agent"
listen = "127.0.0.1:$AGENT_PORT"
domain_type = "qemu"
heartbeat_seconds = 2
network = "$NETWORK"

[spice]
# The lab PC (QEMU's user network) reaches this machine as 10.0.2.2, which
# QEMU turns into 127.0.0.1 here; viewers on this machine reach 10.0.2.2
# through the address added to lo above. So SPICE listens on both (TLS, and
# a one-time ticket valid for a minute, guard every port).
listen = "0.0.0.0"
public_host = "10.0.2.2"
tls_port = $SPICE_TLS
plain_port = $PLAIN

[storage.paths]
templates = "$DEMO/storage/templates"
desktops = "$DEMO/storage/desktops"
TOML
"$BIN/agent/aula-agent" serve --config "$DEMO/agent.toml" >"$DEMO/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
  [[ $(ctl --json hosts list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["state"])') == online ]] && break
  sleep 0.2
done

# --- the school -----------------------------------------------------------------
cp "$TEMPLATE" "$DEMO/storage/templates/test-desktop.qcow2"
chmod 0644 "$DEMO/storage/templates/test-desktop.qcow2"
GROUP=$(ctl --json groups create --name "Class 1A" --category-id "$CAT" | field id)
ctl users create --username teacher --role manager --category-id "$CAT" --password teacher-pass-1 >/dev/null
for s in alice bob; do
  ctl users create --username "$s" --category-id "$CAT" --password "$s-pass-1" --group-ids "$GROUP" >/dev/null
done
TPL=$(ctl --json templates create --name "Test Desktop" --base-disk test-desktop.qcow2 --disk-gb 1 \
  --vcpus 1 --memory-mb 256 --access "category:$CAT" | field id)
printf 'teacher-pass-1\n' > "$DEMO/teacher.pw"
ctl_as teacher login --url "$URL" --ca-file "$CA" --user teacher --password-file "$DEMO/teacher.pw" >/dev/null
DEP=$(ctl_as teacher --json deployments create --name "Lesson 1" --template-id "$TPL" --group-id "$GROUP" | field id)
for s in alice bob; do
  printf '%s-pass-1\n' "$s" > "$DEMO/$s.pw"
  ctl_as "$s" login --url "$URL" --ca-file "$CA" --user "$s" --password-file "$DEMO/$s.pw" >/dev/null
done
desk_of() { ctl_as "$1" --json desktops list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'; }

# --- a lab PC -------------------------------------------------------------------
# As an admin releases a build: add it, put it on 'stable', enter the PC's MAC.
IMAGE_VERSION=$(cat "$BIN/image/thin/version")
ctl images add "$BIN/image/thin" >/dev/null
ctl images promote "$IMAGE_VERSION" --channel stable >/dev/null
PC_MAC=52:54:00:12:34:56
ctl boot-hosts set "$PC_MAC" --kind thin_client --hostname lab-pc-1 >/dev/null
# No disk: its firmware's iPXE asks the broker's /boot/ipxe what to boot.
# Its screen is on SPICE (remote-viewer), its keyboard on QMP.
qemu-system-x86_64 -name lab-pc-1 -accel tcg -m 1536 -vga std \
  -nic "user,model=e1000,mac=$PC_MAC,bootfile=http://10.0.2.2:$BOOT_PORT/boot/ipxe" -boot n \
  -spice "addr=127.0.0.1,port=$PC_SPICE_PORT,disable-ticketing=on" -display none \
  -audiodev none,id=speakers -device ich9-intel-hda -device hda-output,audiodev=speakers \
  -serial "file:$DEMO/lab-pc.serial" -qmp "unix:$DEMO/lab-pc.qmp,server=on,wait=off" \
  >"$DEMO/lab-pc.log" 2>&1 &
PC_PID=$!

echo
echo "Aula demo is up (data in $DEMO):"
echo "  broker        $URL  (pid $BROKER_PID, log $DEMO/broker.log)"
echo "  CA            $CA  (fingerprint $FINGERPRINT)"
echo "  agent         hv1 at 127.0.0.1:$AGENT_PORT  (pid $AGENT_PID, log $DEMO/agent.log)"
echo "  SPICE         $([[ $SPICE_TLS == true ]] && echo "TLS with the agent's certificate" || echo "plain port (libvirtd runs without spice_tls)")"
echo "  admin         admin / $ADMIN_PW"
echo "  teacher       teacher / teacher-pass-1   (manager of 'Demo School')"
echo "  students      alice / alice-pass-1, bob / bob-pass-1   (class 'Class 1A')"
echo "  deployment    'Lesson 1' (id $DEP): one 'Test Desktop' for each student"
echo "  boot listener http://127.0.0.1:$BOOT_PORT/boot/ipxe  (image thin $IMAGE_VERSION on 'stable')"
echo "  lab PC        lab-pc-1 ($PC_MAC), booting from the network under TCG (pid $PC_PID):"
echo "                screen: remote-viewer spice://127.0.0.1:$PC_SPICE_PORT"
echo "                console: tail -f $DEMO/lab-pc.serial   (the login screen is up in about a minute)"

if [[ $HEADLESS -eq 1 ]]; then
  echo
  echo "Checking each student's desktop as their viewer would:"
  for s in alice bob; do
    DESK=$(desk_of "$s")
    ctl_as "$s" --json desktops console "$DESK" > "$DEMO/$s.console"
    # The probe's arguments, one per NUL-terminated item (the host subject has spaces).
    python3 - "$DEMO/$s.console" "$DEMO/$s" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
open(sys.argv[2] + ".ticket", "w").write(d["ticket"])
open(sys.argv[2] + ".ca", "w").write(d["ca"])
args = ["--host", d["host"]]
if d.get("tls_port"):
    args += ["--tls-port", str(d["tls_port"]), "--ca-file", sys.argv[2] + ".ca",
             "--host-subject", d["host_subject"]]
else:
    args += ["--port", str(d["port"])]
open(sys.argv[2] + ".args", "w").write("".join(a + "\0" for a in args))
PY
    mapfile -d '' PROBE_ARGS < "$DEMO/$s.args"
    set -- "${PROBE_ARGS[@]}"
    # The guest boots in a few seconds under TCG; the ticket is valid for a minute.
    SEEN=""
    for _ in $(seq 20); do
      if "$BIN/tests/tools/aula-spice-probe" "$@" --ticket-file "$DEMO/$s.ticket" \
          --screenshot "$DEMO/$s.ppm" > "$DEMO/$s.probe" 2>&1; then
        SEEN=$(python3 - "$DEMO/$s.ppm" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
parts = data.split(b"\n", 3)
w, h = map(int, parts[1].split())
px = parts[3]
white = blue = 0
for i in range(0, w * h * 3, 3):
    r, g, b = px[i], px[i + 1], px[i + 2]
    if r > 160 and g > 160 and b > 160:
        white += 1
    elif b > 100 and r < 80 and g < 80:
        blue += 1
n = w * h
if white * 100 >= 5 * n and blue * 100 >= 40 * n:
    print(f"{w}x{h} frame, {100*blue//n}% blue background, {100*white//n}% white text")
PY
)
        [[ -n "$SEEN" ]] && break
      fi
      sleep 2
    done
    if [[ -z "$SEEN" ]]; then
      echo "demo.sh: $s's desktop did not show the test screen over SPICE; probe said:" >&2
      cat "$DEMO/$s.probe" >&2
      echo "agent log:" >&2; tail -20 "$DEMO/agent.log" >&2
      exit 1
    fi
    echo "  $s: desktop $DESK answered over SPICE ($([[ $* == *--tls-port* ]] && echo TLS || echo plain)) with its one-time ticket: $SEEN"
  done
  curl -sf --cacert "$CA" "$URL/healthz" >/dev/null && echo "  /healthz: ok"

  echo "Checking the lab PC as a student would: the greeter's login screen, then alice's desktop:"
  SHOTS="$BIN/demo"
  if ! python3 "$ROOT/provisioning/lib/lab_pc.py" --qmp "$DEMO/lab-pc.qmp" \
      --serial "$DEMO/lab-pc.serial" --user alice --password alice-pass-1 --shots "$SHOTS"; then
    echo "demo.sh: the lab PC did not get to alice's desktop; its console:" >&2
    tail -30 "$DEMO/lab-pc.serial" >&2
    echo "broker log:" >&2; grep -E "Boot:|error|warn" "$DEMO/broker.log" | tail -10 >&2
    exit 1
  fi
  grep -m1 "Boot: $PC_MAC" "$DEMO/broker.log" | sed 's/^/  broker: /'
  echo "demo.sh: headless check passed."
  exit 0
fi

echo
echo "Log in on the lab PC (remote-viewer spice://127.0.0.1:$PC_SPICE_PORT) as alice / alice-pass-1,"
echo "or open a student's desktop in remote-viewer (package virt-viewer) through the broker:"
for s in alice bob; do
  echo "  HOME=$HOME XDG_CONFIG_HOME=$DEMO/home/$s $BIN/server/aulactl desktops open $(desk_of "$s")"
done
echo "Press Ctrl-C to stop (the demo's desktops are deleted)."
wait "$BROKER_PID"
