#!/usr/bin/env bash
# Aula's main job on one machine: installs what is needed, builds, and brings
# up every part of Aula that exists so far, then prints what it started.
#
#   provisioning/demo.sh              # bring it up and keep it running (Ctrl-C stops it)
#   provisioning/demo.sh --headless   # bring it up, check it answers, stop, exit 0
#
# Today that is the broker (on SQLite, HTTPS on 127.0.0.1) with a school in
# it: a category, a class, a teacher, two students, a template and a
# deployment. Hosts are simulated until the agent lands (issue 4): desktops
# "run" in memory only. The agent, the boot chain and the thin-client image
# join this script as they land.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HEADLESS=0
for arg in "$@"; do
  case "$arg" in
    --headless) HEADLESS=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$arg'; see --help." >&2; exit 2 ;;
  esac
done

"$ROOT/provisioning/install-deps.sh"
cmake --preset dev >/dev/null
cmake --build --preset dev -j "$(nproc)" --target aula-broker aulactl

BIN="$ROOT/build/dev/server"
DEMO="${AULA_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/aula-demo.XXXXXX")}"
export HOME="$DEMO/home" XDG_CONFIG_HOME="$DEMO/home/.config"
mkdir -p "$HOME"
BROKER_PID=""
cleanup() {
  [[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
  [[ -z "${AULA_DEMO_DIR:-}" ]] && rm -rf "$DEMO"
}
trap cleanup EXIT

ADMIN_PW="demo-admin-$RANDOM$RANDOM"
printf '%s\n' "$ADMIN_PW" > "$DEMO/admin.pw"
"$BIN/aula-broker" init --data-dir "$DEMO/broker" --admin-password-file "$DEMO/admin.pw" \
  --listen 127.0.0.1:0 >/dev/null
mkdir -p "$DEMO/storage/templates"
cat >> "$DEMO/broker/broker.toml" <<TOML

[debug]
# No agent yet: desktops start on in-memory hosts.
simulate_hosts = true
TOML
sed -i "s|^templates = .*|templates = \"$DEMO/storage/templates\"|" "$DEMO/broker/broker.toml"

"$BIN/aula-broker" --config "$DEMO/broker/broker.toml" --port-file "$DEMO/broker.addr" \
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
ctl() { "$BIN/aulactl" "$@"; }
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

ctl login --url "$URL" --ca-file "$CA" --user admin --password-file "$DEMO/admin.pw" >/dev/null
CAT=$(ctl --json categories create --name "Demo School" | id_of)
POOL=$(ctl --json pools create --name default | id_of)
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$XDG_CONFIG_HOME/aula/aulactl.json")
for h in hv1 hv2; do
  HID=$(ctl --json hosts create --name "$h" --pool-id "$POOL" --cpus 16 --memory-mb 65536 | id_of)
  # A simulated host reports its load the way an agent's heartbeat will.
  curl -sf --cacert "$CA" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"cpu_idle":0.9,"free_memory_mb":60000,"cpus":16,"memory_mb":65536}' \
    "$URL/api/v1/hosts/$HID/heartbeat" >/dev/null
done
GROUP=$(ctl --json groups create --name "Class 1A" --category-id "$CAT" | id_of)
ctl users create --username teacher --role manager --category-id "$CAT" --password teacher-pass-1 >/dev/null
for s in alice bob; do
  ctl users create --username "$s" --category-id "$CAT" --password "$s-pass-1" --group-ids "$GROUP" >/dev/null
done
: > "$DEMO/storage/templates/debian.qcow2"
TPL=$(ctl --json templates create --name "Debian Desktop" --base-disk debian.qcow2 --disk-gb 20 --vcpus 2 \
  --memory-mb 2048 --access "category:$CAT" | id_of)

printf 'teacher-pass-1\n' > "$DEMO/teacher.pw"
ctl login --url "$URL" --ca-file "$CA" --user teacher --password-file "$DEMO/teacher.pw" >/dev/null
DEP=$(ctl --json deployments create --name "Lesson 1" --template-id "$TPL" --group-id "$GROUP" | id_of)

echo
echo "Aula demo is up (data in $DEMO):"
echo "  broker        $URL  (pid $BROKER_PID, log $DEMO/broker.log)"
echo "  CA            $CA"
echo "  admin         admin / $ADMIN_PW"
echo "  teacher       teacher / teacher-pass-1   (manager of 'Demo School')"
echo "  students      alice / alice-pass-1, bob / bob-pass-1   (class 'Class 1A')"
echo "  deployment    'Lesson 1' (id $DEP): one 'Debian Desktop' for each student"
echo "  hosts         hv1, hv2 (simulated: no agent yet)"

if [[ $HEADLESS -eq 1 ]]; then
  echo
  echo "Checking it as the teacher and as a student would:"
  ctl deployments start "$DEP" >/dev/null
  ctl deployments show "$DEP"
  printf 'alice-pass-1\n' > "$DEMO/alice.pw"
  ctl login --url "$URL" --ca-file "$CA" --user alice --password-file "$DEMO/alice.pw"
  ctl desktops list
  DESK=$(ctl --json desktops list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  ctl --json desktops console "$DESK" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  console:", d["host"], "tls-port", d["tls_port"], "ticket expires at", d["expires_at"])'
  curl -sf --cacert "$CA" "$URL/healthz" >/dev/null && echo "  /healthz: ok"
  echo "demo.sh: headless check passed."
  exit 0
fi

echo
echo "Try, in another shell:"
echo "  export HOME=$HOME XDG_CONFIG_HOME=$XDG_CONFIG_HOME"
echo "  $BIN/aulactl deployments show $DEP"
echo "Press Ctrl-C to stop."
wait "$BROKER_PID"
