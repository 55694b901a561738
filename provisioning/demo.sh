#!/usr/bin/env bash
# Aula's main job on one machine: installs what is needed, builds, and brings
# up every part of Aula that exists so far, then prints what it started.
#
#   provisioning/demo.sh              # bring it up and keep it running (Ctrl-C stops it)
#   provisioning/demo.sh --headless   # bring it up, check it answers, stop, exit 0
#
# Parts that exist now: the shared library (common/). The broker, the agent,
# the boot chain and the thin-client image join this script as they land.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HEADLESS=0
for arg in "$@"; do
  case "$arg" in
    --headless) HEADLESS=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$arg'; see --help." >&2; exit 2 ;;
  esac
done

"$ROOT/provisioning/install-deps.sh"
cmake --preset dev >/dev/null
cmake --build --preset dev -j "$(nproc)"

echo
echo "Aula demo: built $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'this tree')."
echo "Started: nothing yet. The shared library is built and tested; the broker"
echo "(issue 3) is the first service this script will start."
[[ $HEADLESS -eq 1 ]] && exit 0
exit 0
