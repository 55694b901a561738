#!/usr/bin/env python3
"""Writes an image's manifest (JSON on stdout): its version and options, the
packages in it with their versions and sizes, each artefact's size and
SHA-256, and the 25 largest files of its root."""
import argparse
import hashlib
import json
import os


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--packages", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--flavour", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--gpus", required=True)
    p.add_argument("--compress", required=True)
    p.add_argument("--cpio-size", type=int, required=True)
    p.add_argument("artefacts", nargs="+")
    a = p.parse_args()

    packages = []
    with open(a.packages) as f:
        for line in f:
            name, version, size = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            packages.append({"name": name, "version": version,
                             "installed_kib": int(size) if size.isdigit() else None})
    files = []
    total = 0
    for dirpath, _, names in os.walk(a.root):
        for n in names:
            path = os.path.join(dirpath, n)
            if os.path.islink(path):
                continue
            size = os.path.getsize(path)
            total += size
            files.append(("/" + os.path.relpath(path, a.root), size))
    files.sort(key=lambda f: (-f[1], f[0]))
    artefacts = [{"file": os.path.basename(x), "bytes": os.path.getsize(x), "sha256": sha256(x)}
                 for x in a.artefacts]
    manifest = {
        "version": a.version,
        "flavour": a.flavour,
        "kernel": a.kernel,
        "gpu_drivers": a.gpus.split(","),
        "compression": a.compress,
        "artefacts": artefacts,
        "total_bytes": sum(x["bytes"] for x in artefacts),
        "root": {"files": len(files), "bytes": total, "cpio_bytes": a.cpio_size},
        "largest_files": [{"path": f[0], "bytes": f[1]} for f in files[:25]],
        "packages": packages,
    }
    json.dump(manifest, indent=2, fp=__import__("sys").stdout)
    print()


if __name__ == "__main__":
    main()
