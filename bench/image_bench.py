#!/usr/bin/env python3
"""The lab image's size and boot time, as Markdown tables on stdout.

    bench/image_bench.py [--image-dir build/dev/image/thin] [--runs 3]

Sizes come from the image's manifest.json (image/build.sh writes it). The
boot time is power-on to the greeter's first frame under QEMU (TCG, the
kernel and initramfs given to QEMU directly), beside the floor: the same
kernel with a one-line initramfs whose /init prints a line and powers off.
The ratio of the two is the figure; runs alternate so that the machine's
load falls on both alike. The greeter is given a broker address nothing
answers on, so that first frame is its retry screen (a broker that answers
adds its own round trips, which are not the image's).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FLOOR_INIT = r"""
#include <stdio.h>
#include <sys/reboot.h>
#include <unistd.h>
int main(void) {
  FILE* c = fopen("/dev/console", "w");
  if (c) { fputs("AULA-FLOOR-UP\n", c); fclose(c); }
  sync();
  reboot(RB_POWER_OFF);
  return 0;
}
"""


def floor_initrd(work):
    src = os.path.join(work, "init.c")
    with open(src, "w") as f:
        f.write(FLOOR_INIT)
    root = os.path.join(work, "floor")
    os.makedirs(os.path.join(root, "dev"))
    # The kernel gives /init its console only through this node.
    subprocess.run(["mknod", "-m", "600", os.path.join(root, "dev", "console"), "c", "5", "1"],
                   check=True)
    subprocess.run(["gcc", "-static", "-O2", "-o", os.path.join(root, "init"), src], check=True)
    out = os.path.join(work, "floor.img")
    with open(out, "wb") as f:
        files = subprocess.run(["sh", "-c", "cd '%s' && find . | sort" % root],
                               capture_output=True, check=True).stdout
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=files, stdout=f,
                       cwd=root, check=True)
    return out


def boot(kernel, initrd, marker, append, work, limit=300):
    serial = os.path.join(work, "serial.log")
    if os.path.exists(serial):
        os.remove(serial)
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1536", "-vga", "std", "-display", "none",
           "-nic", "user,model=e1000", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
           "-append", "console=ttyS0 panic=-1 " + append, "-serial", "file:" + serial]
    start = time.monotonic()
    q = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < limit:
            try:
                with open(serial, "rb") as f:
                    if marker.encode() in f.read():
                        return time.monotonic() - start
            except FileNotFoundError:
                pass
            if q.poll() is not None:
                break
            time.sleep(0.05)
        return None
    finally:
        q.kill()
        q.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image-dir", default="build/dev/image/thin")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    manifest = json.load(open(os.path.join(a.image_dir, "manifest.json")))
    mib = 1024 * 1024
    print("## Lab image (`bench/image_bench.py`)\n")
    print("%s, nproc %d, load average %s before, image %s (%s, GPU drivers %s)\n" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(),
        " ".join(open("/proc/loadavg").read().split()[:3]), manifest["version"],
        manifest["compression"], ",".join(manifest["gpu_drivers"])))
    print("| part | bytes | MiB |\n|---|---:|---:|")
    for art in manifest["artefacts"]:
        print("| %s | %d | %.2f |" % (art["file"], art["bytes"], art["bytes"] / mib))
    total = manifest["total_bytes"]
    print("| **total** (goal ≤ 40 MiB, never over 64) | %d | **%.2f** |" % (total, total / mib))
    print("| the root unpacked, %d files | %d | %.1f |\n" % (
        manifest["root"]["files"], manifest["root"]["bytes"], manifest["root"]["bytes"] / mib))
    print("The 25 largest files of the root:\n\n| file | KiB |\n|---|---:|")
    for f in manifest["largest_files"]:
        print("| `%s` | %d |" % (f["path"], f["bytes"] // 1024))
    print()

    kernel = os.path.join(a.image_dir, "vmlinuz")
    initrd = os.path.join(a.image_dir, "initrd.img")
    work = tempfile.mkdtemp(prefix="aula-image-bench.")
    try:
        floor = floor_initrd(work)
        image_s, floor_s = [], []
        for _ in range(a.runs):
            t = boot(kernel, floor, "AULA-FLOOR-UP", "", work)
            if t is not None:
                floor_s.append(t)
            t = boot(kernel, initrd, "The greeter's first frame is on screen.",
                     "systemd.journald.forward_to_console=1 aula.broker=https://10.0.2.2:9 "
                     "aula.ca_fp=" + "ab" * 32, work)
            if t is not None:
                image_s.append(t)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("Power-on to first sign of life under QEMU TCG (direct kernel boot, %d runs, "
          "alternating):\n" % a.runs)
    print("| figure | median s | min–max s |\n|---|---:|---:|")
    for name, xs in (("lab image: the greeter's first frame", image_s),
                     ("floor: same kernel, one-line initramfs", floor_s)):
        if xs:
            print("| %s | %.1f | %.1f–%.1f |" % (name, statistics.median(xs), min(xs), max(xs)))
        else:
            print("| %s | (no run reached it) | |" % name)
    if image_s and floor_s:
        print("| **ratio** (goal ≤ 2.5) | **%.2f** | |" % (
            statistics.median(image_s) / statistics.median(floor_s)))
    print()
    return 0 if image_s and floor_s else 1


if __name__ == "__main__":
    sys.exit(main())
