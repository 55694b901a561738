#!/usr/bin/env bash
# Starts virtlogd and libvirtd (each only if not running) on a machine
# without systemd as PID 1, and returns once both are started.
#
#   provisioning/start-libvirtd.sh
#
# On a host with systemd, use `systemctl start libvirtd` instead. Here the
# daemons run below a small reaper: PID 1 on such machines (containers, CI)
# may reap no orphans, and libvirt starts QEMU with -daemonize, so an
# exited QEMU would stay a zombie that libvirt waits on for its whole kill
# timeout. The reaper is a detached Python process made a child subreaper
# (prctl PR_SET_CHILD_SUBREAPER = 36) that starts each daemon with -d and
# then reaps every orphan until the daemons are gone. Used by demo.sh and by
# the tests' libvirtd fixture.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
  echo "start-libvirtd.sh: run it as root (qemu:///system)." >&2
  exit 2
fi
exec python3 - virtlogd libvirtd <<'PY'
import ctypes, os, shutil, subprocess, sys
if os.fork() > 0:
    os._exit(0)
os.setsid()
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
for name in sys.argv[1:]:
    if subprocess.run(['pgrep', '-x', name]).returncode == 0:
        continue
    pid = os.fork()
    if pid == 0:
        os.execvp(name, [name, '-d'])
    os.waitpid(pid, 0)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
PY
