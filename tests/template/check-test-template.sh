#!/usr/bin/env bash
# Boots the Aula test template under QEMU (TCG, no KVM) and proves its screen shows the banner.
#
#   tests/template/check-test-template.sh [--vga qxl|std|virtio|cirrus] [--machine q35|pc]
#                                          IMAGE.qcow2 [SCREENSHOT.png]
#
# Boots IMAGE read-only (snapshot=on) with the disk on virtio, waits for `AULA-TEST-READY` on the
# serial console, takes a screendump through the QEMU monitor, counts the non-black pixels and
# the white text pixels, saves the frame as a PNG (default: IMAGE without .qcow2 + -screen.png)
# and stops QEMU. Exit 0 only if the text is on the screen.
#
# Environment: AULA_CHECK_TIMEOUT  seconds to wait for the marker (default 60)
#              AULA_CHECK_MIN_SHARE minimum non-black share in percent (default 2)
#              AULA_CHECK_MIN_TEXT  minimum white-text share in percent (default 1)
set -euo pipefail

prog=check-test-template
log() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
usage() {
    echo "usage: $0 [--vga qxl|std|virtio|cirrus] [--machine q35|pc] IMAGE.qcow2 [SCREENSHOT.png]" >&2
    exit 2
}

vga=qxl
machine=q35
while [[ $# -gt 0 ]]; do
    case $1 in
        --vga) [[ $# -ge 2 ]] || usage; vga=$2; shift 2 ;;
        --machine) [[ $# -ge 2 ]] || usage; machine=$2; shift 2 ;;
        -h | --help) usage ;;
        --) shift; break ;;
        -*) usage ;;
        *) break ;;
    esac
done
[[ $# -ge 1 && $# -le 2 ]] || usage
image=$1
[[ -f $image ]] || die "no image at $image (build it with tests/template/build-test-template.sh)"
image=$(readlink -f "$image")
png=${2:-${image%.qcow2}-screen.png}
timeout=${AULA_CHECK_TIMEOUT:-60}
min_share=${AULA_CHECK_MIN_SHARE:-2}
min_text=${AULA_CHECK_MIN_TEXT:-1}

# --- host tools -------------------------------------------------------------------------------
tools=("qemu-system-x86_64:qemu-system-x86" "python3:python3")
missing=()
for entry in "${tools[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry##*:}")
done
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing host packages: ${missing[*]} (run as root, or install them with apt-get)"
    log "installing missing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
        || die "could not install host packages: ${missing[*]}"
fi

# --- boot -------------------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aula-template-check.XXXXXX")
qemu_pid=""
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

serial=$tmp/serial.log
sock=$tmp/monitor.sock
ppm=$tmp/screen.ppm
qemu=(qemu-system-x86_64 -accel tcg -machine "$machine" -m 256
    -drive "file=$image,if=virtio,snapshot=on"
    -display none -vga "$vga" -nic none -no-reboot
    -serial "file:$serial" -monitor "unix:$sock,server,nowait")
log "booting: ${qemu[*]}"
start=$SECONDS
"${qemu[@]}" </dev/null >"$tmp/qemu.out" 2>&1 &
qemu_pid=$!

ready=""
while ((SECONDS - start < timeout)); do
    if grep -q 'AULA-TEST-READY' "$serial" 2>/dev/null; then
        ready=yes
        break
    fi
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        cat "$tmp/qemu.out" >&2 || true
        tr -d '\r' <"$serial" 2>/dev/null | tail -n 40 >&2 || true
        die "QEMU exited before the guest printed AULA-TEST-READY"
    fi
    sleep 0.5
done
if [[ -z $ready ]]; then
    echo "--- serial console (last 40 lines) ---" >&2
    tr -d '\r' <"$serial" 2>/dev/null | tail -n 40 >&2 || true
    die "no AULA-TEST-READY on the serial console within $timeout s"
fi
log "guest ready after $((SECONDS - start)) s (AULA-TEST-READY on ttyS0)"
sleep 1 # let the display catch up with the last characters written

# --- screendump through the monitor, analysis, PNG --------------------------------------------
status=0
python3 - "$sock" "$ppm" "$png" "$min_share" "$min_text" <<'PY' || status=$?
import re, socket, struct, sys, time, zlib

sock_path, ppm_path, png_path = sys.argv[1:4]
min_share, min_text = float(sys.argv[4]), float(sys.argv[5])

def monitor(cmd):
    """Run one human-monitor command and return what it printed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(sock_path)
    buf = b""
    def until_prompt():
        nonlocal buf
        while b"(qemu) " not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        out, _, buf = buf.partition(b"(qemu) ")
        return out
    until_prompt()
    s.sendall(cmd.encode() + b"\n")
    out = until_prompt()
    s.close()
    text = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", out).decode(errors="replace")
    return text.split("\n", 1)[1].strip() if "\n" in text else ""

err = monitor("screendump " + ppm_path)
for _ in range(50):
    try:
        data = open(ppm_path, "rb").read()
        break
    except FileNotFoundError:
        time.sleep(0.1)
else:
    sys.exit("check-test-template: error: screendump wrote nothing: " + err)

# P6 header: magic, width, height, maxval, separated by whitespace (comments allowed).
fields, pos = [], 0
while len(fields) < 4:
    m = re.compile(rb"\s*(#[^\n]*\n\s*)*(\S+)").match(data, pos)
    fields.append(m.group(2))
    pos = m.end()
pos += 1
if fields[0] != b"P6" or fields[3] != b"255":
    sys.exit("check-test-template: error: unexpected screendump format %r" % fields)
w, h = int(fields[1]), int(fields[2])
px = data[pos:pos + w * h * 3]
total = w * h
nonblack = text = 0
for i in range(0, len(px), 3):
    r, g, b = px[i], px[i + 1], px[i + 2]
    if r > 32 or g > 32 or b > 32:
        nonblack += 1
        if r > 200 and g > 200 and b > 200:
            text += 1

raw = b"".join(b"\0" + px[y * w * 3:(y + 1) * w * 3] for y in range(h))
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
with open(png_path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

share, text_share = 100.0 * nonblack / total, 100.0 * text / total
print("check-test-template: screen %dx%d: non-black %.1f%% of pixels (%d of %d), "
      "white text %.1f%%; saved %s" % (w, h, share, nonblack, total, text_share, png_path))
try:
    monitor("quit")
except OSError:
    pass
if share < min_share or text_share < min_text:
    sys.exit("check-test-template: FAIL: the banner is not on the screen (need >= %g%% non-black "
             "and >= %g%% white text)" % (min_share, min_text))
print("check-test-template: OK: the banner is on the screen")
PY
for _ in $(seq 1 25); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
exit "$status"
