#!/usr/bin/env bash
# Tests provisioning/hypervisor-setup.sh as an admin would use it, inside
# temporary --root folders so the machine stays untouched: a first run
# changes things and a second changes nothing; an edited agent.toml is kept
# unless --force-config; a qemu.conf that sets spice_tls itself is refused;
# bad options exit 2; and a real enrolment with a real broker happens once.
#
#   hypervisor_setup_test.sh SETUP_SCRIPT AULA_BROKER AULACTL AULA_AGENT
#
# Exits 77 (counted as skipped by CTest) when it cannot run here.
set -euo pipefail

if [[ $# -ne 4 ]]; then
  echo "usage: $0 SETUP_SCRIPT AULA_BROKER AULACTL AULA_AGENT" >&2
  exit 2
fi
SETUP=$1 BROKER_BIN=$2 AULACTL=$3 AGENT=$4

if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: hypervisor-setup.sh needs root (it sets owners and modes), even under --root."
  exit 77
fi
for bin in "$BROKER_BIN" "$AULACTL" "$AGENT"; do
  if [[ ! -x "$bin" ]]; then
    echo "SKIP: $bin is not built; build aula-broker, aulactl and aula-agent first."
    exit 77
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/aula-hvsetup-test.XXXXXX")
BROKER_PID=""
cleanup() {
  if [[ -n "$BROKER_PID" ]]; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

CHECKS=0
fail() {
  echo "FAIL: $*" >&2
  if [[ -n "${OUT:-}" && -f "$OUT" ]]; then
    echo "---- the script's last output ($OUT):" >&2
    cat "$OUT" >&2
  fi
  exit 1
}
pass() {
  CHECKS=$((CHECKS + 1))
  echo "ok $CHECKS - $*"
}

# run EXPECTED_STATUS ROOT ARGS...: runs the script, output in $OUT.
RUNS=0
run() {
  local expected=$1 status=0
  shift
  RUNS=$((RUNS + 1))
  OUT=$TMP/run-$RUNS.out
  "$SETUP" "$@" >"$OUT" 2>&1 || status=$?
  [[ $status -eq "$expected" ]] || fail "hypervisor-setup.sh $* exited $status, expected $expected"
}
has() { grep -qF -- "$1" "$OUT" || fail "the output lacks '$1'"; }
lacks() { ! grep -qF -- "$1" "$OUT" || fail "the output has '$1' but should not"; }
changes() { sed -n 's/^hypervisor-setup.sh: \([0-9][0-9]*\) change(s).*/\1/p' "$OUT"; }
# A fingerprint of a folder: every file's content, owner and mode.
snapshot() {
  (cd "$1" && find . -printf '%p %u:%g %m\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r md5sum)
}

# ---------------------------------------------------------------- first and second run
R1=$TMP/root1
mkdir -p "$R1/etc/libvirt"
# Debian's qemu.conf as shipped, when libvirt is installed here: its
# commented-out "#spice_tls = 1" lines are no conflict, and every line of it
# must stay. (Only its comments: the machine's own settings are not ours.)
STOCK_QCONF=""
if [[ -r /etc/libvirt/qemu.conf ]]; then
  STOCK_QCONF=$TMP/qemu.conf.stock
  # (without the block the libvirtd test fixture adds while its daemon runs)
  grep -E '^[[:space:]]*(#|$)' /etc/libvirt/qemu.conf | grep -v 'aula-test' > "$STOCK_QCONF" || true
  chmod 0600 "$STOCK_QCONF"
  cp -p "$STOCK_QCONF" "$R1/etc/libvirt/qemu.conf"
fi
run 0 --root "$R1" --skip-install --agent-binary "$AGENT"
n=$(changes)
[[ -n "$n" && "$n" -gt 0 ]] || fail "the first run reports no changes"
has "changed: created /var/lib/aula/templates"
has "changed: wrote configuration /etc/aula/agent.toml"
has "changed: wrote systemd unit /etc/systemd/system/aula-agent.service"
has "warning: this host is not enrolled"
has "aulactl enrolment-tokens create --host-name NAME --pool-id N"
pass "first run: $n changes"

cmp -s "$AGENT" "$R1/usr/local/bin/aula-agent" || fail "aula-agent was not installed"
[[ $(stat -c '%a' "$R1/usr/local/bin/aula-agent") == 755 ]] || fail "aula-agent is not 0755"
for d in templates desktops media; do
  [[ $(stat -c '%U %a' "$R1/var/lib/aula/$d") == "root 755" ]] || fail "/var/lib/aula/$d is not root 0755"
done
[[ $(stat -c '%a' "$R1/etc/aula/agent.toml") == 644 ]] || fail "agent.toml is not 0644"
keys=$(grep -oE '^[a-z_]+ =' "$R1/etc/aula/agent.toml" | tr -d ' =' | tr '\n' ' ')
[[ "$keys" == "state_dir listen broker_url libvirt_uri domain_type heartbeat_seconds log_level network listen public_host plain_port templates desktops media " ]] \
  || fail "agent.toml has the keys '$keys'"
grep -qx 'domain_type = "qemu"' "$R1/etc/aula/agent.toml" || fail "without /dev/kvm domain_type is not qemu"
has 'warning: /dev/kvm does not exist: domain_type = "qemu"'
UNIT=$R1/etc/systemd/system/aula-agent.service
for line in "ExecStart=/usr/local/bin/aula-agent serve --config /etc/aula/agent.toml" \
            "KillMode=process" "Restart=on-failure" "RestartSec=5" "NoNewPrivileges=yes" \
            "ProtectHome=yes" "After=network-online.target libvirtd.service"; do
  grep -qxF "$line" "$UNIT" || fail "the unit lacks '$line'"
done
if command -v systemd-analyze >/dev/null; then
  # verify wants ExecStart's binary to exist on this machine.
  sed "s|^ExecStart=/usr/local/bin/aula-agent|ExecStart=$R1/usr/local/bin/aula-agent|" "$UNIT" \
    > "$TMP/aula-agent.service"
  systemd-analyze verify "$TMP/aula-agent.service" >"$TMP/verify.out" 2>&1 \
    || { cat "$TMP/verify.out" >&2; fail "systemd-analyze verify refuses the unit"; }
  [[ ! -s "$TMP/verify.out" ]] || { cat "$TMP/verify.out" >&2; fail "systemd-analyze verify warns about the unit"; }
fi
QCONF=$R1/etc/libvirt/qemu.conf
has "changed: /etc/libvirt/qemu.conf: added Aula's SPICE TLS block"
grep -qx 'spice_tls = 1' "$QCONF" || fail "qemu.conf lacks spice_tls = 1"
grep -qx 'spice_tls_x509_cert_dir = "/var/lib/aula-agent/spice"' "$QCONF" || fail "qemu.conf lacks the cert dir"
if [[ -n "$STOCK_QCONF" ]]; then
  diff "$STOCK_QCONF" "$QCONF" | grep -q '^<' && fail "lines of the stock qemu.conf were changed or removed"
  [[ $(stat -c '%a' "$QCONF") == $(stat -c '%a' "$STOCK_QCONF") ]] || fail "qemu.conf's mode changed"
fi
[[ -d "$R1/var/lib/aula-agent/spice" ]] || fail "the SPICE cert dir was not made (libvirtd refuses to start without it)"
pass "files, owners and modes as documented"

before=$(snapshot "$R1")
run 0 --root "$R1" --skip-install --agent-binary "$AGENT"
has "hypervisor-setup.sh: everything was already in place: 0 changes"
lacks "changed:"
has "ok: configuration /etc/aula/agent.toml is up to date"
[[ "$(snapshot "$R1")" == "$before" ]] || fail "the second run changed files"
pass "second run: 0 changes, nothing touched"

# ---------------------------------------------------------------- an admin's edits
sed -i 's/^log_level = "info"/log_level = "debug"/' "$R1/etc/aula/agent.toml"
run 0 --root "$R1" --skip-install --agent-binary "$AGENT"
has '-log_level = "debug"'
has '+log_level = "info"'
has "warning: /etc/aula/agent.toml differs from what this script writes"
has "--force-config"
has "0 changes"
grep -qx 'log_level = "debug"' "$R1/etc/aula/agent.toml" || fail "the edited agent.toml was overwritten"
pass "an edited agent.toml is kept, with a diff and a warning"

run 0 --root "$R1" --skip-install --agent-binary "$AGENT" --force-config
has "changed: updated configuration /etc/aula/agent.toml"
grep -qx 'log_level = "info"' "$R1/etc/aula/agent.toml" || fail "--force-config did not rewrite agent.toml"
grep -qx 'log_level = "debug"' "$R1/etc/aula/agent.toml.bak" || fail "--force-config kept no backup"
[[ $(changes) == 1 ]] || fail "--force-config made $(changes) changes, expected 1"
pass "--force-config replaces it and keeps the old one as agent.toml.bak"

# ---------------------------------------------------------------- qemu.conf
sed -i 's|^spice_tls_x509_cert_dir = .*|spice_tls_x509_cert_dir = "/old"|' "$QCONF"
printf '# an admin line after the block\n' >> "$QCONF"
run 0 --root "$R1" --skip-install --agent-binary "$AGENT"
has "changed: /etc/libvirt/qemu.conf: updated Aula's SPICE TLS block"
[[ $(grep -c '^# BEGIN aula (' "$QCONF") == 1 ]] || fail "the block was not replaced in place"
grep -qx 'spice_tls_x509_cert_dir = "/var/lib/aula-agent/spice"' "$QCONF" || fail "the block was not rewritten"
[[ $(tail -1 "$QCONF") == "# an admin line after the block" ]] || fail "the rest of qemu.conf moved"
pass "a changed block in qemu.conf is replaced in place, the rest left alone"

printf 'spice_tls = 0\n' >> "$QCONF"
line=$(wc -l < "$QCONF")
before=$(snapshot "$R1")
run 1 --root "$R1" --skip-install --agent-binary "$AGENT" --storage media=/srv/new-media
has "/etc/libvirt/qemu.conf line $line sets \"spice_tls = 0\" outside the block"
has "Nothing was changed."
[[ "$(snapshot "$R1")" == "$before" ]] || fail "the refused run changed files"
pass "a foreign spice_tls outside the block is refused, naming the line, before any change"
sed -i '$d' "$QCONF"

# ---------------------------------------------------------------- options
run 2 --root "$R1" --skip-install --no-such-flag
has "hypervisor-setup.sh: unknown option '--no-such-flag'; see --help."
[[ $(wc -l < "$OUT") == 1 ]] || fail "a bad option gives more than one line"
run 2 --root "$R1" --domain-type xen
has "--domain-type must be auto, kvm or qemu, not 'xen'."
run 2 --root "$R1" --storage media
has "--storage takes NAME=DIR"
run 2 --root "$R1" --broker https://broker.example:8443
has "--broker needs --ca-fingerprint"
run 0 --help
for flag in --agent-binary --broker --ca-fingerprint --token-file --address --listen --network \
            --domain-type --storage --force-config --skip-install --root --help; do
  grep -qE -- "^  (-h, )?$flag( |$)" "$OUT" || fail "--help does not describe $flag"
done
pass "bad options and values exit 2 with one sentence; --help names every option"

R2=$TMP/root2
mkdir -p "$R2/dev"
: > "$R2/dev/kvm"   # stands in for the device: only its presence is read under --root
run 0 --root "$R2" --skip-install --agent-binary "$AGENT" --storage templates=/srv/tpl \
  --storage iso=/srv/iso --network lab --listen 0.0.0.0:9500
grep -qx 'domain_type = "auto"' "$R2/etc/aula/agent.toml" || fail "with /dev/kvm domain_type is not auto"
grep -qx 'templates = "/srv/tpl"' "$R2/etc/aula/agent.toml" || fail "--storage templates= was not used"
grep -qx 'iso = "/srv/iso"' "$R2/etc/aula/agent.toml" || fail "--storage iso= was not added"
grep -qx 'desktops = "/var/lib/aula/desktops"' "$R2/etc/aula/agent.toml" || fail "the default desktops storage went"
grep -qx 'network = "lab"' "$R2/etc/aula/agent.toml" || fail "--network was not used"
grep -qx 'listen = "0.0.0.0:9500"' "$R2/etc/aula/agent.toml" || fail "--listen was not used"
[[ -d "$R2/srv/tpl" && -d "$R2/srv/iso" ]] || fail "the --storage folders were not made"
grep -qx 'KERNEL=="kvm", GROUP="kvm", MODE="0660"' "$R2/etc/udev/rules.d/65-aula-kvm.rules" \
  || fail "the udev rule for /dev/kvm is missing"
has "/dev/kvm exists; its owner and mode are left alone under --root"
run 0 --root "$R2" --skip-install --agent-binary "$AGENT" --storage templates=/srv/tpl \
  --storage iso=/srv/iso --network lab --listen 0.0.0.0:9500
has "0 changes"
pass "--storage, --network, --listen; with /dev/kvm: domain_type auto and the udev rule"

# ---------------------------------------------------------------- a real enrolment
B=$TMP/broker
export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/home/.config
mkdir -p "$HOME"
printf 'test-admin-%s\n' "$RANDOM$RANDOM" > "$TMP/admin.pw"
"$BROKER_BIN" init --data-dir "$B" --admin-password-file "$TMP/admin.pw" --listen 127.0.0.1:0 \
  > "$TMP/init.out" 2>&1 || { cat "$TMP/init.out" >&2; fail "aula-broker init failed"; }
"$BROKER_BIN" --config "$B/broker.toml" --port-file "$TMP/broker.addr" > "$TMP/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do [[ -s "$TMP/broker.addr" ]] && break; sleep 0.1; done
[[ -s "$TMP/broker.addr" ]] || { cat "$TMP/broker.log" >&2; fail "the broker did not start"; }
URL="https://$(cat "$TMP/broker.addr")"
FP=$(openssl x509 -in "$B/ca/ca.crt" -noout -fingerprint -sha256 | sed 's/^.*=//')
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
"$AULACTL" login --url "$URL" --ca-file "$B/ca/ca.crt" --user admin --password-file "$TMP/admin.pw" >/dev/null
POOL=$("$AULACTL" --json pools create --name lab | json id)
TOKEN=$("$AULACTL" --json enrolment-tokens create --host-name hv-test --pool-id "$POOL" | json token)
[[ "$TOKEN" == aula_j_* ]] || fail "aulactl made no join token"
install -m 0600 /dev/null "$TMP/join.token"
printf '%s\n' "$TOKEN" > "$TMP/join.token"

R3=$TMP/root3
mkdir "$R3"
run 0 --root "$R3" --skip-install --agent-binary "$AGENT" --broker "$URL" --ca-fingerprint "$FP" \
  --address 127.0.0.1:9443
has "warning: not enrolled: --broker was given but no join token"
[[ ! -e "$R3/var/lib/aula-agent/enrolment.json" ]] || fail "enrolled without a token"
pass "--broker without a token warns and does not enrol"

run 0 --root "$R3" --skip-install --agent-binary "$AGENT" --broker "$URL" --ca-fingerprint "$FP" \
  --token-file "$TMP/join.token" --address 127.0.0.1:9443
has "changed: enrolled with $URL as host 'hv-test' at 127.0.0.1:9443"
lacks "$TOKEN"
MARKER=$R3/var/lib/aula-agent/enrolment.json
[[ -f "$MARKER" ]] || fail "enrolment.json is missing after enrolment"
grep -q '"host_name": "hv-test"' "$MARKER" || fail "enrolment.json does not name hv-test"
[[ $(stat -c '%a' "$R3/var/lib/aula-agent") == 711 ]] || fail "the state dir is not 0711 after enrolment"
"$AULACTL" --json hosts list | grep -q '"hv-test"' || fail "the broker does not list hv-test"
pass "enrolled with a real broker: enrolment.json written, the host known to the broker"

before=$(snapshot "$R3")
AULA_JOIN_TOKEN=$TOKEN run 0 --root "$R3" --skip-install --agent-binary "$AGENT" --broker "$URL" \
  --ca-fingerprint "$FP" --address 127.0.0.1:9443
has "ok: enrolled as host 'hv-test'"
has "hypervisor-setup.sh: everything was already in place: 0 changes"
lacks "changed:"
[[ "$(snapshot "$R3")" == "$before" ]] || fail "the second run changed files of the enrolled host"
used=$("$AULACTL" --json enrolment-tokens list | python3 -c 'import json,sys; print(sum(1 for t in json.load(sys.stdin) if t.get("used_at")))')
[[ "$used" == 1 ]] || fail "$used join tokens are used, expected 1"
pass "second run: already enrolled, no second enrolment, 0 changes"

echo "hypervisor_setup_test.sh: all $CHECKS checks passed."
