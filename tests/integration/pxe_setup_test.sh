#!/usr/bin/env bash
# Tests provisioning/pxe-setup.sh: every bad input exits 2 with its sentence,
# --print-config writes the expected dnsmasq lines, and end to end, in a
# private network namespace with a real aula-broker: a BIOS PC under QEMU
# (its e1000 ROM is iPXE) and a UEFI PC (OVMF's own PXE, which loads
# snponly.efi by TFTP) reach the broker's /boot/ipxe with their MAC in dhcp
# mode, and a BIOS PC does again in proxy mode beside another dnsmasq playing
# the school's DHCP server (in a second namespace).
#
# With --secure-boot it tests the Secure Boot path instead: pxe-setup.sh
# --secure-boot sends PCs to the broker's TFTP; a UEFI PC on OVMF's Secure
# Boot build with Microsoft's keys enrolled loads Debian's signed shim and
# GRUB from the broker (provisioning/fetch-loaders.sh, cached in
# LOADERS_DIR), GRUB asks the broker for the PC's script and loads the
# built image (IMAGE_DIR, image/build.sh's thin flavour) released with
# aulactl; the kernel says Secure Boot and lockdown are on and the greeter's
# login screen comes up (its screendump goes to $AULA_GREETER_SHOTS_DIR
# when that is set).
#
#   tests/integration/pxe_setup_test.sh provisioning/pxe-setup.sh build/dev/server/aula-broker
#   tests/integration/pxe_setup_test.sh provisioning/pxe-setup.sh build/dev/server/aula-broker \
#       --secure-boot build/dev/server/aulactl build/dev/image/thin build/dev/loaders
#
# Run as root. Exit 0 on pass, 77 when it cannot run here (says why), 1 on
# failure (says what).
set -uo pipefail

SETUP=${1:?usage: pxe_setup_test.sh PXE_SETUP_SH AULA_BROKER}
BROKER_BIN=${2:?usage: pxe_setup_test.sh PXE_SETUP_SH AULA_BROKER}
START_TIME=$SECONDS
SECURE_BOOT=0
if [[ "${3:-}" == --secure-boot ]]; then
  SECURE_BOOT=1
  AULACTL=${4:?usage: pxe_setup_test.sh SETUP BROKER --secure-boot AULACTL IMAGE_DIR LOADERS_DIR}
  IMAGE_DIR=${5:?usage: pxe_setup_test.sh SETUP BROKER --secure-boot AULACTL IMAGE_DIR LOADERS_DIR}
  LOADERS_DIR=${6:?usage: pxe_setup_test.sh SETUP BROKER --secure-boot AULACTL IMAGE_DIR LOADERS_DIR}
  SB_CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
  SB_VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
fi

skip() {
  echo "SKIP: $*"
  exit 77
}
fail() {
  echo "FAIL: $*" >&2
  for f in "${WORK:-/nonexistent}"/broker.log "${WORK:-/nonexistent}"/pxe/dnsmasq.log; do
    [[ -f "$f" ]] || continue
    echo "--- last lines of $f" >&2
    tail -15 "$f" >&2
  done
  exit 1
}
step() { echo "== $* ($((SECONDS - START_TIME))s)"; }

[[ $(id -u) -eq 0 ]] || skip "needs root: network namespaces, tap devices and dnsmasq on port 67."
[[ -x "$SETUP" ]] || fail "$SETUP is not an executable script."
[[ -x "$BROKER_BIN" ]] || fail "$BROKER_BIN is not an executable aula-broker."
for tool in ip dnsmasq qemu-system-x86_64 curl ss; do
  command -v "$tool" >/dev/null 2>&1 \
    || skip "$tool is missing; provisioning/install-deps.sh installs it."
done
for f in /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/snponly.efi; do
  [[ -f "$f" ]] || skip "$f is missing (package ipxe); provisioning/install-deps.sh installs it."
done
if [[ $SECURE_BOOT -eq 1 ]]; then
  for f in "$SB_CODE" "$SB_VARS"; do
    [[ -f "$f" ]] || skip "$f is missing (package ovmf); provisioning/install-deps.sh installs it."
  done
  [[ -x "$AULACTL" ]] || fail "$AULACTL is not an executable aulactl."
  # The image is LabImage's (greeter_vm_tests), which runs first in the suite.
  [[ -f "$IMAGE_DIR/vmlinuz" && -f "$IMAGE_DIR/initrd.img" && -f "$IMAGE_DIR/manifest.json" ]] \
    || skip "no built image in $IMAGE_DIR: build it first (cmake --build --preset dev --target aula-image, or run greeter_vm_tests' LabImage)."
  command -v python3 >/dev/null 2>&1 || skip "python3 is missing; the test talks QMP with it (provisioning/lib/lab_pc.py)."
fi

NS=aulapxe-$$-$RANDOM
NS_SCHOOL=$NS-s
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aula-pxe-test.XXXXXX")
# dnsmasq serves TFTP as an unprivileged user, who must reach $WORK/pxe.
chmod 0755 "$WORK"
PIDS=()

cleanup() {
  local pid ns i alive
  "$SETUP" --stop --state-dir "$WORK/pxe" >/dev/null 2>&1 || true
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 50; i++)); do
    alive=0
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [[ $alive -eq 0 ]] && break
    sleep 0.1
  done
  # Whatever still runs inside our own namespaces was started by this test.
  for ns in "$NS" "$NS_SCHOOL"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  sleep 0.3
  ip netns del "$NS_SCHOOL" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS" 2>"$WORK/netns.err" \
  || skip "ip netns is unusable here ($(head -1 "$WORK/netns.err")); the test needs network namespaces."
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up || skip "ip netns exec does not work here; the test needs network namespaces."

# The lab's network: br0 with this machine's address, tap0 for the PC.
SUBNET=10.77.0
SERVER=$SUBNET.1
in_ns ip link add br0 type bridge || skip "cannot make a bridge in a network namespace here."
in_ns ip tuntap add dev tap0 mode tap || skip "cannot make a tap device (/dev/net/tun) here."
in_ns ip link set tap0 master br0
in_ns ip addr add "$SERVER/24" dev br0
in_ns ip link set br0 up
in_ns ip link set tap0 up

# The broker's boot listener.
B=http://$SERVER:8080

if [[ $SECURE_BOOT -eq 0 ]]; then
# ---------------------------------------------------------------- input checks

step "input checks"
# expect_bad WANTED_SENTENCE_PART ARGS...: exit 2 and the sentence on stderr.
expect_bad() {
  local want=$1 rc
  shift
  in_ns "$SETUP" --skip-install --state-dir "$WORK/pxe" "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
  [[ $rc -eq 2 ]] || fail "pxe-setup.sh $* exited $rc, not 2 (stderr: $(cat "$WORK/err"))."
  grep -qF -- "$want" "$WORK/err" \
    || fail "pxe-setup.sh $* said '$(cat "$WORK/err")', without '$want'."
  [[ $(wc -l <"$WORK/err") -eq 1 ]] || fail "pxe-setup.sh $* said more than one line: $(cat "$WORK/err")"
}
DHCP=(--interface br0 --broker "$B" --mode dhcp --range "$SUBNET.100,$SUBNET.150")
expect_bad "the interface 'nosuch0' does not exist" --interface nosuch0 --broker "$B" --mode proxy
expect_bad "--interface is missing" --broker "$B" --mode proxy
expect_bad "--broker is missing" --interface br0 --mode proxy
expect_bad "--mode is missing" --interface br0 --broker "$B"
expect_bad "--mode must be dhcp" --interface br0 --broker "$B" --mode both
expect_bad "cannot check the broker's own CA" --interface br0 --broker "https://$SERVER:8443" --mode proxy
expect_bad "--broker takes the broker's boot listener as http://HOST:PORT" \
  --interface br0 --broker "http://" --mode proxy
expect_bad "--broker takes the broker's boot listener as http://HOST:PORT" \
  --interface br0 --broker "$SERVER:8080" --mode proxy
expect_bad "--broker takes the broker's boot listener as http://HOST:PORT" \
  --interface br0 --broker "http://$SERVER:99999" --mode proxy
expect_bad "--broker takes the broker's boot listener as http://HOST:PORT" \
  --interface br0 --broker "$B/boot/ipxe" --mode proxy
expect_bad "--range is for --mode dhcp" --interface br0 --broker "$B" --mode proxy \
  --range "$SUBNET.100,$SUBNET.150"
expect_bad "--mode dhcp needs --range" --interface br0 --broker "$B" --mode dhcp
expect_bad "is not inside br0's subnet $SUBNET.0/24" --interface br0 --broker "$B" --mode dhcp \
  --range 10.99.0.100,10.99.0.150
expect_bad "starts after it ends" --interface br0 --broker "$B" --mode dhcp \
  --range "$SUBNET.150,$SUBNET.100"
expect_bad "--range takes START,END" --interface br0 --broker "$B" --mode dhcp --range "$SUBNET.100"
expect_bad "holds this machine's own address" --interface br0 --broker "$B" --mode dhcp \
  --range "$SUBNET.1,$SUBNET.10"
expect_bad "--router 10.99.0.1 is not inside br0's subnet" "${DHCP[@]}" --router 10.99.0.1
expect_bad "--dns is for --mode dhcp" --interface br0 --broker "$B" --mode proxy --dns 10.0.0.1
expect_bad "--subnet 10.99.0.0/24 does not hold br0's address" --interface br0 --broker "$B" \
  --mode proxy --subnet 10.99.0.0/24
expect_bad "--efi-binary must be snponly or ipxe" "${DHCP[@]}" --efi-binary grub
expect_bad "--stop and --print-config exclude each other" --stop --print-config
expect_bad "--secure-boot takes the IPv4 address of the broker's TFTP listener" "${DHCP[@]}" \
  --secure-boot broker.example
expect_bad "--efi-binary does not apply with --secure-boot" "${DHCP[@]}" --secure-boot "$SERVER" \
  --efi-binary ipxe
expect_bad "unknown option '--bogus'" --bogus

# A foreign DHCP server on br0's port 67.
in_ns dnsmasq --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
  --dhcp-range="$SUBNET.200,$SUBNET.210,1h" --dhcp-leasefile="$WORK/foreign.leases" \
  --pid-file="$WORK/foreign.pid" || fail "could not start the foreign dnsmasq."
expect_bad "UDP port 67 on br0 is taken by dnsmasq" "${DHCP[@]}"
kill "$(cat "$WORK/foreign.pid")"

# expect_lines ARGS...: --print-config output holds each line of $WANT.
expect_lines() {
  in_ns "$SETUP" --state-dir "$WORK/pxe-print" --print-config "$@" >"$WORK/conf" 2>"$WORK/err" \
    || fail "pxe-setup.sh --print-config $* failed: $(cat "$WORK/err")"
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    grep -qxF -- "$line" "$WORK/conf" \
      || fail "pxe-setup.sh --print-config $* lacks the line '$line'; it printed: $(cat "$WORK/conf")"
  done <<<"$WANT"
  [[ ! -e "$WORK/pxe-print" ]] || fail "pxe-setup.sh --print-config $* wrote to the state dir."
}
# shellcheck disable=SC2016  # ${...} are iPXE's
URL_Q='/boot/ipxe?mac=${netX/mac}&ip=${netX/ip}&platform=${platform}&buildarch=${buildarch}'
WANT="port=0
interface=br0
bind-interfaces
enable-tftp
tftp-root=$WORK/pxe-print/tftp
dhcp-match=set:ipxe,175
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:bios,option:client-arch,0
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
dhcp-range=$SUBNET.100,$SUBNET.150,255.255.255.0,12h
dhcp-option=option:router,$SUBNET.254
dhcp-option=option:dns-server,$SUBNET.253,$SUBNET.252
dhcp-boot=tag:ipxe,$B$URL_Q
dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe
dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi"
expect_lines "${DHCP[@]}" --router "$SUBNET.254" --dns "$SUBNET.253,$SUBNET.252" --lease-time 12h
WANT="dhcp-range=$SUBNET.0,proxy,255.255.255.0
pxe-service=tag:!ipxe,x86PC,\"Aula network boot\",undionly.kpxe
pxe-service=tag:!ipxe,X86-64_EFI,\"Aula network boot\",ipxe.efi
pxe-service=tag:!ipxe,BC_EFI,\"Aula network boot\",ipxe.efi
pxe-service=tag:ipxe,x86PC,\"Aula network boot\",$B$URL_Q
dhcp-boot=tag:ipxe,$B$URL_Q"
expect_lines --interface br0 --broker "$B/" --mode proxy --efi-binary ipxe
grep -q 'dhcp-boot=tag:!ipxe' "$WORK/conf" && fail "proxy mode must boot firmware by pxe-service only."
grep -q 'option:router' "$WORK/conf" && fail "proxy mode must not tell clients a router."
# --secure-boot: every loader from the broker's TFTP, none from dnsmasq's.
WANT="dhcp-boot=tag:ipxe,$B$URL_Q
dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,,$SUBNET.9
dhcp-boot=tag:!ipxe,tag:efi64,shimx64.efi,,$SUBNET.9"
expect_lines "${DHCP[@]}" --secure-boot "$SUBNET.9"
grep -v '^#' "$WORK/conf" | grep -q 'tftp' && fail "with --secure-boot dnsmasq must serve no TFTP."
WANT="pxe-service=tag:!ipxe,x86PC,\"Aula network boot\",undionly.kpxe,$SUBNET.9
pxe-service=tag:!ipxe,X86-64_EFI,\"Aula network boot\",shimx64.efi,$SUBNET.9
pxe-service=tag:!ipxe,BC_EFI,\"Aula network boot\",shimx64.efi,$SUBNET.9"
expect_lines --interface br0 --broker "$B" --mode proxy --secure-boot "$SUBNET.9"

fi  # not --secure-boot

# ---------------------------------------------------------------- the broker

step "starting aula-broker in $NS"
printf 'Test-pxe-%s\n' "$RANDOM$RANDOM" >"$WORK/admin.pw"
"$BROKER_BIN" init --data-dir "$WORK/broker" --name "$SERVER" --listen "$SERVER:8443" \
  --admin-password-file "$WORK/admin.pw" >"$WORK/init.log" 2>&1 \
  || fail "aula-broker init failed: $(cat "$WORK/init.log")"
printf '\n[boot]\nlisten = "%s:8080"\n' "$SERVER" >>"$WORK/broker/broker.toml"
if [[ $SECURE_BOOT -eq 1 ]]; then
  # The broker's TFTP on the lab's address: dnsmasq serves none with
  # --secure-boot. The kernel's console and the journal go to the serial
  # port, where the test reads them.
  printf 'tftp_listen = "%s:69"\nloaders_dir = "%s"\n' "$SERVER" "$LOADERS_DIR" \
    >>"$WORK/broker/broker.toml"
  printf 'kernel_args = "console=ttyS0 panic=-1 systemd.journald.forward_to_console=1"\n' \
    >>"$WORK/broker/broker.toml"
  if [[ ! -f "$LOADERS_DIR/shimx64.efi" || ! -f "$LOADERS_DIR/grubx64.efi" ]]; then
    step "fetching Debian's signed loaders into $LOADERS_DIR"
    "$(dirname "$SETUP")/fetch-loaders.sh" --skip-install "$LOADERS_DIR" >"$WORK/loaders.out" 2>&1 \
      || fail "fetch-loaders.sh failed: $(tail -3 "$WORK/loaders.out")"
  fi
fi
ip netns exec "$NS" "$BROKER_BIN" --config "$WORK/broker/broker.toml" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do
  in_ns curl -s -f -m 2 "$B/boot/ipxe" 2>/dev/null | head -1 | grep -q '^#!ipxe' && break
  sleep 0.2
done
((i < 100)) || fail "aula-broker did not answer $B/boot/ipxe within 20 s."

if [[ $SECURE_BOOT -eq 0 ]]; then
# ---------------------------------------------------------------- PCs

# Starts a PC with MAC $1 on tap0 (BIOS e1000, or UEFI when $2 is uefi) and
# waits up to $3 s for the broker's "Boot: MAC" line; kills the PC then.
boot_pc() {
  local mac=$1 kind=$2 wait=$3 qpid i
  local args=(-accel tcg -m 256 -display none -nographic -serial none -monitor none -no-reboot
              -netdev "tap,id=n0,ifname=tap0,script=no,downscript=no")
  if [[ "$kind" == uefi ]]; then
    cp /usr/share/OVMF/OVMF_VARS.fd "$WORK/vars-$mac.fd"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd"
           -drive "if=pflash,format=raw,unit=1,file=$WORK/vars-$mac.fd"
           -device "virtio-net-pci,netdev=n0,romfile=,mac=$mac")
  else
    args+=(-boot n -device "e1000,netdev=n0,mac=$mac")
  fi
  ip netns exec "$NS" qemu-system-x86_64 "${args[@]}" </dev/null >"$WORK/qemu-$mac.log" 2>&1 &
  qpid=$!
  PIDS+=("$qpid")
  for ((i = 0; i < wait * 2; i++)); do
    grep -q "Boot: $mac " "$WORK/broker.log" && break
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.5
  done
  kill -TERM "$qpid" 2>/dev/null
  wait "$qpid" 2>/dev/null
  grep -q "Boot: $mac " "$WORK/broker.log" \
    || fail "the $kind PC $mac did not reach the broker within $wait s (QEMU said: $(tail -3 "$WORK/qemu-$mac.log"))."
  echo "   $(grep "Boot: $mac " "$WORK/broker.log" | head -1 | sed 's/.*Boot: /Boot: /')"
}

# Our dnsmasq processes (by their configuration file).
count_ours() {
  local f n=0
  for f in /proc/[0-9]*/cmdline; do
    { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF -- "--conf-file=$WORK/pxe/dnsmasq.conf" && n=$((n + 1))
  done
  echo "$n"
}

# ---------------------------------------------------------------- (a) dhcp mode

step "(a) dhcp mode: pxe-setup.sh twice"
for run in 1 2; do
  in_ns "$SETUP" --skip-install --state-dir "$WORK/pxe" "${DHCP[@]}" >"$WORK/setup.out" 2>&1 \
    || fail "pxe-setup.sh --mode dhcp (run $run) failed: $(cat "$WORK/setup.out")"
done
grep -q "stopped the dnsmasq this script had started" "$WORK/setup.out" \
  || fail "the second run did not replace the first run's dnsmasq: $(cat "$WORK/setup.out")"
[[ $(count_ours) -eq 1 ]] || fail "after two runs $(count_ours) dnsmasq processes run, not 1."
[[ -f "$WORK/pxe/tftp/undionly.kpxe" && -f "$WORK/pxe/tftp/snponly.efi" ]] \
  || fail "the TFTP root lacks undionly.kpxe or snponly.efi."

step "(a) BIOS PC (iPXE ROM) in dhcp mode"
MAC_BIOS=52:54:00:a7:$(printf '%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)))
boot_pc "$MAC_BIOS" bios 90
grep "Boot: $MAC_BIOS " "$WORK/broker.log" | grep -q "($SUBNET.1[0-4][0-9]\|($SUBNET.150" \
  || fail "the BIOS PC's address is not from pxe-setup.sh's --range."

# The broker recorded the unknown MAC (admin API).
token=$(in_ns curl -s -k -m 10 -X POST "https://$SERVER:8443/api/v1/session" \
  -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$(head -1 "$WORK/admin.pw")\"}" \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[[ -n "$token" ]] || fail "could not log in to the broker as admin."
hosts=$(in_ns curl -s -k -m 10 -H "Authorization: Bearer $token" "https://$SERVER:8443/api/v1/boot-hosts")
grep -qi "$MAC_BIOS" <<<"$hosts" || fail "GET /api/v1/boot-hosts does not list $MAC_BIOS: $hosts"

if [[ -f /usr/share/OVMF/OVMF_CODE.fd && -f /usr/share/OVMF/OVMF_VARS.fd ]]; then
  step "(a) UEFI PC (OVMF's PXE, snponly.efi by TFTP) in dhcp mode"
  MAC_UEFI=52:54:00:e7:$(printf '%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)))
  boot_pc "$MAC_UEFI" uefi 100
  grep -q "sent $WORK/pxe/tftp/snponly.efi" "$WORK/pxe/dnsmasq.log" \
    || fail "the UEFI PC reached the broker without loading snponly.efi by TFTP."
  grep "Boot: $MAC_UEFI " "$WORK/broker.log" | grep -q 'efi x86_64' \
    || fail "the UEFI PC's request does not say 'efi x86_64'."
else
  echo "   not tested: UEFI (OVMF is missing; package ovmf)"
fi

# ---------------------------------------------------------------- (b) proxy mode

step "(b) proxy mode beside the school's DHCP server"
ip netns add "$NS_SCHOOL" || fail "could not make the school's namespace."
in_ns ip link add vs0 type veth peer name vs1 || fail "could not make a veth pair."
in_ns ip link set vs1 netns "$NS_SCHOOL"
in_ns ip link set vs0 master br0
in_ns ip link set vs0 up
ip netns exec "$NS_SCHOOL" ip addr add "$SUBNET.2/24" dev vs1
ip netns exec "$NS_SCHOOL" ip link set vs1 up
ip netns exec "$NS_SCHOOL" ip link set lo up
# Addresses only: no boot options at all.
ip netns exec "$NS_SCHOOL" dnsmasq --conf-file=/dev/null --port=0 --interface=vs1 --bind-interfaces \
  --dhcp-range="$SUBNET.50,$SUBNET.60,1h" --dhcp-leasefile="$WORK/school.leases" \
  --pid-file="$WORK/school.pid" --log-facility="$WORK/school.log" --log-dhcp \
  || fail "could not start the school's dnsmasq."
PIDS+=("$(cat "$WORK/school.pid")")

in_ns "$SETUP" --skip-install --state-dir "$WORK/pxe" --interface br0 --broker "$B" --mode proxy \
  >"$WORK/setup.out" 2>&1 || fail "pxe-setup.sh --mode proxy failed: $(cat "$WORK/setup.out")"
[[ $(count_ours) -eq 1 ]] || fail "after switching to proxy mode $(count_ours) dnsmasq processes run, not 1."
MAC_PROXY=52:54:00:b7:$(printf '%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)))
boot_pc "$MAC_PROXY" bios 90
grep "Boot: $MAC_PROXY " "$WORK/broker.log" | grep -q "($SUBNET.[56][0-9]," \
  || fail "in proxy mode the PC's address did not come from the school's DHCP server."
grep -qi "DHCPACK.*$MAC_PROXY" "$WORK/pxe/dnsmasq.log" \
  && fail "in proxy mode pxe-setup.sh's dnsmasq handed out an address."
grep -qi "proxy" "$WORK/pxe/dnsmasq.log" || fail "pxe-setup.sh's dnsmasq log shows no proxy-DHCP."

step "--stop"
in_ns "$SETUP" --stop --state-dir "$WORK/pxe" >"$WORK/setup.out" 2>&1 \
  || fail "pxe-setup.sh --stop failed: $(cat "$WORK/setup.out")"
[[ $(count_ours) -eq 0 ]] || fail "pxe-setup.sh --stop left $(count_ours) dnsmasq running."

echo "PASS: pxe-setup.sh ($((SECONDS - START_TIME)) s)"
exit 0
fi  # not --secure-boot

# ---------------------------------------------------------------- (c) Secure Boot

step "(c) releasing the image with aulactl"
token=$(in_ns curl -s -k -m 10 -X POST "https://$SERVER:8443/api/v1/session" \
  -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$(head -1 "$WORK/admin.pw")\"}" \
  | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[[ -n "$token" ]] || fail "could not log in to the broker as admin."
MAC_SB=52:54:00:5b:$(printf '%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)))
VERSION=$(tr -d '\n' <"$IMAGE_DIR/version")
mkdir -p "$WORK/admin"
aulactl() {
  in_ns env HOME="$WORK/admin" XDG_CONFIG_HOME="$WORK/admin/config" AULA_URL="https://$SERVER:8443" \
    AULA_TOKEN="$token" AULA_CA_FILE="$WORK/broker/ca/ca.crt" "$AULACTL" "$@" >"$WORK/aulactl.out" 2>&1 \
    || fail "aulactl $* failed: $(cat "$WORK/aulactl.out")"
}
aulactl images add "$IMAGE_DIR"
aulactl images promote "$VERSION" --channel stable
aulactl boot-hosts set "$MAC_SB" --kind thin_client

step "(c) pxe-setup.sh --secure-boot $SERVER (dhcp mode)"
in_ns "$SETUP" --skip-install --state-dir "$WORK/pxe" --interface br0 --broker "$B" --mode dhcp \
  --range "$SUBNET.100,$SUBNET.150" --secure-boot "$SERVER" >"$WORK/setup.out" 2>&1 \
  || fail "pxe-setup.sh --secure-boot failed: $(cat "$WORK/setup.out")"
grep -q '^enable-tftp' "$WORK/pxe/dnsmasq.conf" && fail "with --secure-boot dnsmasq must serve no TFTP."
grep -qxF "dhcp-boot=tag:!ipxe,tag:efi64,shimx64.efi,,$SERVER" "$WORK/pxe/dnsmasq.conf" \
  || fail "UEFI PCs are not sent to shimx64.efi on the broker's TFTP: $(grep dhcp-boot "$WORK/pxe/dnsmasq.conf")"
grep -q warning "$WORK/setup.out" && fail "pxe-setup.sh warned: $(grep warning "$WORK/setup.out")"

step "(c) a UEFI PC with Secure Boot on (OVMF secboot, Microsoft's keys)"
cp "$SB_VARS" "$WORK/sb-vars.fd"
ip netns exec "$NS" qemu-system-x86_64 -accel tcg -machine q35,smm=on -m 1536 \
  -global driver=cfi.pflash01,property=secure,value=on \
  -drive "if=pflash,format=raw,unit=0,readonly=on,file=$SB_CODE" \
  -drive "if=pflash,format=raw,unit=1,file=$WORK/sb-vars.fd" \
  -netdev "tap,id=n0,ifname=tap0,script=no,downscript=no" \
  -device "virtio-net-pci,netdev=n0,romfile=,mac=$MAC_SB" -vga std -display none \
  -serial "file:$WORK/sb-serial.log" -qmp "unix:$WORK/qmp.sock,server=on,wait=off" \
  -monitor none -no-reboot </dev/null >"$WORK/qemu-sb.log" 2>&1 &
QPID=$!
PIDS+=("$QPID")
serial_tail() { tr -d '\r' <"$WORK/sb-serial.log" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' | grep -v '^\s*$' | tail -"$1"; }
for ((i = 0; i < 480; i++)); do
  grep -q "The login screen is up." "$WORK/sb-serial.log" 2>/dev/null && break
  kill -0 "$QPID" 2>/dev/null || break
  sleep 0.5
done
grep -q "The login screen is up." "$WORK/sb-serial.log" \
  || fail "the Secure Boot PC did not reach the login screen within 240 s; its console ended: $(serial_tail 25)"
echo "   $((SECONDS - START_TIME)) s: the login screen is up"

# What the loaders and the kernel said.
grep -q "Boot: $MAC_SB .* by GRUB: thin $VERSION (channel stable)" "$WORK/broker.log" \
  || fail "the broker did not answer GRUB with the image: $(grep 'Boot:' "$WORK/broker.log" | tail -3)"
echo "   $(grep "Boot: $MAC_SB " "$WORK/broker.log" | head -1 | sed 's/.*Boot: /Boot: /')"
grep -q "Secure boot enabled" "$WORK/sb-serial.log" \
  || fail "the kernel does not say Secure Boot is on: $(grep -i 'secure' "$WORK/sb-serial.log" | head -3)"
grep -q "Kernel is locked down from EFI Secure Boot" "$WORK/sb-serial.log" \
  || fail "the kernel is not in lockdown: $(grep -i 'lockdown' "$WORK/sb-serial.log" | head -3)"
grep -qi "module verification failed\|Loading of unsigned module is rejected" "$WORK/sb-serial.log" \
  && fail "a module was refused under lockdown: $(grep -i 'module verification\|unsigned module' "$WORK/sb-serial.log" | head -3)"
echo "   the kernel: Secure boot enabled; Kernel is locked down from EFI Secure Boot"

# The screen, as the student sees it (demo.sh's lab-PC helper checks it is
# the login screen and saves it).
python3 "$(dirname "$SETUP")/lib/lab_pc.py" --qmp "$WORK/qmp.sock" --serial "$WORK/sb-serial.log" \
  --shots "$WORK/shots" --login-screen-only || fail "the Secure Boot PC's screen is not the login screen."
if [[ -n "${AULA_GREETER_SHOTS_DIR:-}" ]]; then
  mkdir -p "$AULA_GREETER_SHOTS_DIR"
  cp "$WORK/shots/lab-pc-login.png" "$AULA_GREETER_SHOTS_DIR/image-login-secureboot.png"
fi
kill -TERM "$QPID" 2>/dev/null
wait "$QPID" 2>/dev/null
echo "PASS: a Secure Boot PC boots the image through shim and GRUB ($((SECONDS - START_TIME)) s)"

