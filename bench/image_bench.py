#!/usr/bin/env python3
"""The lab image's size, boot time and serving rate, as Markdown tables on stdout.

    bench/image_bench.py [--image-dir build/dev/image/thin] [--build-dir build/dev] [--runs 3]
                         [--clients 30] [--rounds 3]

Sizes come from the image's manifest.json (image/build.sh writes it).

Everything else goes through a real aula-broker (a temporary data dir, its
plain-HTTP boot listener on loopback) to which the image is added with
aulactl and released on `stable`, as an admin would.

The boot time is power-on to the greeter's first frame under QEMU (TCG), the
PC booting from the network: QEMU's iPXE ROM asks the broker's /boot/ipxe,
loads the kernel and initramfs from it and boots. Beside it, the floor: a
second PC, pinned to a "floor" image with the same kernel and a one-line
initramfs whose /init prints a line and powers off, through the same path.
The ratio of the two is the figure; runs alternate so that the machine's
load falls on both alike.

The serving rate is `clients` downloads of the initramfs at once (one curl
with --parallel) from the broker's boot listener, beside nginx serving the
same file from the same disk on the same machine, in alternating rounds; the
figure is the ratio of the aggregate MB/s.
"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """A real aula-broker in a temporary data dir, with its boot listener on."""

    def __init__(self, build, work):
        self.work = work
        self.build = build
        self.port, self.boot_port = free_port(), free_port()
        data = os.path.join(work, "broker")
        pw = os.path.join(work, "admin-password")
        with open(pw, "w") as f:
            f.write("bench-admin-password-1\n")
        subprocess.run([os.path.join(build, "server", "aula-broker"), "init", "--data-dir", data,
                        "--admin-password-file", pw, "--listen", "127.0.0.1:%d" % self.port,
                        "--name", "127.0.0.1", "--name", "10.0.2.2"],
                       check=True, stdout=subprocess.DEVNULL)
        config = os.path.join(data, "broker.toml")
        with open(config, "a") as f:
            f.write('\n[boot]\nlisten = "127.0.0.1:%d"\nkernel_args = "console=ttyS0 panic=-1 '
                    'systemd.journald.forward_to_console=1"\n' % self.boot_port)
        self.ca = os.path.join(data, "ca", "ca.crt")
        self.log = open(os.path.join(work, "broker.log"), "w")
        self.proc = subprocess.Popen([os.path.join(build, "server", "aula-broker"), "--config",
                                      config], stdout=self.log, stderr=subprocess.STDOUT)
        context = ssl.create_default_context(cafile=self.ca)
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    "https://127.0.0.1:%d/api/v1/session" % self.port,
                    data=json.dumps({"username": "admin",
                                     "password": "bench-admin-password-1"}).encode(),
                    headers={"Content-Type": "application/json"})
                self.token = json.load(urllib.request.urlopen(request, context=context))["token"]
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the broker did not come up; see %s" % self.log.name)
                time.sleep(0.2)

    def aulactl(self, *args):
        env = dict(os.environ, AULA_URL="https://127.0.0.1:%d" % self.port, AULA_TOKEN=self.token,
                   AULA_CA_FILE=self.ca, HOME=self.work,
                   XDG_CONFIG_HOME=os.path.join(self.work, "config"))
        done = subprocess.run([os.path.join(self.build, "server", "aulactl")] + list(args),
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError("aulactl %s: %s" % (" ".join(args), done.stderr.strip()))
        return done.stdout

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def floor_image(kernel, work):
    """An image dir like image/build.sh's: the same kernel, the one-line initramfs."""
    out = os.path.join(work, "floor-image")
    os.makedirs(out)
    shutil.copy(kernel, os.path.join(out, "vmlinuz"))
    shutil.copy(floor_initrd(work), os.path.join(out, "initrd.img"))
    artefacts = []
    for name in ("vmlinuz", "initrd.img"):
        data = open(os.path.join(out, name), "rb").read()
        artefacts.append({"file": name, "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    version = "floor-" + artefacts[1]["sha256"][:12]
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"flavour": "thin", "version": version, "artefacts": artefacts}, f)
    return out, version


def boot(mac, boot_port, marker, work, limit=300):
    serial = os.path.join(work, "serial.log")
    if os.path.exists(serial):
        os.remove(serial)
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1536", "-vga", "std", "-display", "none",
           "-nic", "user,model=e1000,mac=%s,bootfile=http://10.0.2.2:%d/boot/ipxe"
           % (mac, boot_port), "-boot", "n", "-no-reboot", "-serial", "file:" + serial]
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


def fetch_all(url, clients):
    """Seconds for `clients` downloads of url at once, and the bytes they got."""
    args = ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-immediate",
            "--parallel-max", str(clients), "--write-out", "%{size_download}\n"]
    for _ in range(clients):
        args += ["--output", "/dev/null", url]
    start = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    took = time.monotonic() - start
    return took, sum(int(x) for x in done.stdout.split())


def nginx(root, work):
    if not shutil.which("nginx"):
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        "nginx-light"], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""daemon off; worker_processes auto; pid %(w)s/nginx.pid;
error_log %(w)s/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:%(p)d; root %(r)s; } }
""" % {"w": work, "p": port, "r": root})
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start; see %s/nginx-error.log" % work)
            time.sleep(0.1)


def print_boot_table(image_s, floor_s, runs):
    print("Power-on to first sign of life under QEMU TCG, booting from the network through the "
          "broker (QEMU's iPXE ROM, /boot/ipxe, kernel and initramfs over HTTP; %d runs, "
          "alternating):\n" % runs)
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
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--image-dir", default="build/dev/image/thin")
    p.add_argument("--build-dir", default="build/dev")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
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
    work = tempfile.mkdtemp(prefix="aula-image-bench.")
    broker = None
    web = None
    try:
        broker = Broker(a.build_dir, work)
        broker.aulactl("images", "add", a.image_dir)
        broker.aulactl("images", "promote", manifest["version"], "--channel", "stable")
        floor_dir, floor_version = floor_image(kernel, work)
        broker.aulactl("images", "add", floor_dir)
        lab_pc, floor_pc = "52:54:00:be:00:01", "52:54:00:be:00:02"
        broker.aulactl("boot-hosts", "set", lab_pc, "--kind", "thin_client")
        broker.aulactl("boot-hosts", "set", floor_pc, "--kind", "thin_client")
        broker.aulactl("images", "pin", floor_pc, "--version", floor_version)

        image_s, floor_s = [], []
        for _ in range(a.runs):
            t = boot(floor_pc, broker.boot_port, "AULA-FLOOR-UP", work)
            if t is not None:
                floor_s.append(t)
            t = boot(lab_pc, broker.boot_port, "The greeter's first frame is on screen.", work)
            if t is not None:
                image_s.append(t)

        if a.runs > 0:
            print_boot_table(image_s, floor_s, a.runs)

        # The same file for nginx, from the same disk.
        root = os.path.join(work, "www")
        os.makedirs(root)
        os.chmod(work, 0o755)  # nginx's workers run as www-data
        initrd = os.path.join(a.image_dir, "initrd.img")
        shutil.copy(initrd, os.path.join(root, "initrd.img"))
        web, web_port = nginx(root, work)
        size = os.path.getsize(initrd)
        urls = {"broker": "http://127.0.0.1:%d/boot/images/thin/%s/initrd.img"
                % (broker.boot_port, manifest["version"]),
                "nginx": "http://127.0.0.1:%d/initrd.img" % web_port}
        rates = {"broker": [], "nginx": []}
        for name in rates:  # warm the page cache for both
            fetch_all(urls[name], 2)
        for _ in range(a.rounds):
            for name in ("broker", "nginx"):
                took, got = fetch_all(urls[name], a.clients)
                if got != size * a.clients:
                    raise RuntimeError("%s served %d bytes, not %d" % (name, got,
                                                                        size * a.clients))
                rates[name].append(got / took / 1e6)
    finally:
        if web:
            web.terminate()
            web.wait()
        if broker:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("Serving the initramfs (%.1f MiB) to %d clients at once on loopback (one curl "
          "--parallel; %d rounds, alternating):\n" % (size / mib, a.clients, a.rounds))
    print("| server | median MB/s | min–max MB/s |\n|---|---:|---:|")
    for name, label in (("broker", "aula-broker boot listener (sendfile)"),
                        ("nginx", "nginx-light, sendfile on, workers auto")):
        xs = rates[name]
        print("| %s | %.0f | %.0f–%.0f |" % (label, statistics.median(xs), min(xs), max(xs)))
    print("| **ratio** broker/nginx (goal ≥ 0.8) | **%.2f** | |" % (
        statistics.median(rates["broker"]) / statistics.median(rates["nginx"])))
    print()
    return 0 if a.runs == 0 or (image_s and floor_s) else 1


if __name__ == "__main__":
    sys.exit(main())
