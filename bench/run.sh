#!/bin/sh
# Builds the benchmarks with the dev preset and runs them, printing their
# tables in Markdown on stdout (build output goes to stderr):
#   - placement_bench: host placement decisions per second (Google Benchmark);
#   - broker_bench: the broker under load over HTTPS on simulated hosts;
#   - disk_bench: the agent's overlays and templates with the real qemu-img,
#     in a folder under $AULA_DISK_BENCH_DIR (default /var/tmp; a real disk,
#     not tmpfs, with about 22 GiB free for the run);
#   - agent_bench: a desktop's start through broker and agent next to virsh,
#     and the heartbeat's cost with 0, 10 and 50 running guests, on the real
#     stack (libvirtd, aula-broker, aula-agent). Needs root; without it, it
#     prints one line saying it was skipped;
#   - greeter_bench: aula-greeter's start and memory against a real broker,
#     drawing the login screen and copying a guest frame, beside their floors;
#   - directory_bench: directory logins per layout (slapd, Samba AD) beside a
#     local login;
#   - session_bench: Enter to the first desktop frame in aula-greeter beside
#     remote-viewer opening the .vv (Xvfb), and the greeter's memory in a
#     session, on the real stack (needs root).
# Arguments go to broker_bench: --seconds N (default 10), --users N (default
# 3500), --postgres (also measure on a throw-away PostgreSQL server).
# docs/performance.md explains the figures and cites a run of this script.
#
#   bench/run.sh --postgres > results.md
#
# On a shared machine, limit the build with CMAKE_BUILD_PARALLEL_LEVEL=1.
set -eu

cd "$(dirname "$0")/.."

cmake --preset dev >&2
cmake --build --preset dev --target broker_bench placement_bench disk_bench \
  agent_bench greeter_bench directory_bench session_bench >&2

echo "## Placement benchmark"
echo
echo "\`placement_bench\` on $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo '```'
build/dev/bench/placement_bench --benchmark_counters_tabular=true
echo '```'
echo
build/dev/bench/broker_bench "$@"
echo
build/dev/bench/disk_bench --dir "${AULA_DISK_BENCH_DIR:-/var/tmp}"
echo
build/dev/bench/agent_bench
echo
echo "## Greeter"
echo
build/dev/bench/greeter_bench
echo
echo "## Directory logins"
echo
build/dev/bench/directory_bench
echo
echo "## Opening a desktop: aula-greeter beside remote-viewer"
echo
build/dev/bench/session_bench
