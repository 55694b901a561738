#!/usr/bin/env python3
"""Checks that every ELF program and shared library in an image's root can be
loaded: each library it names in DT_NEEDED is in the root's library folders.
Prints what is missing and exits 1, so a pruning step that went too far fails
the build instead of a lab PC. Libraries that no ELF file names are listed
with --unused (some are opened with dlopen, so they are not pruned blindly).

    image/elf_check.py ROOT [--unused]
"""
import os
import subprocess
import sys

LIB_DIRS = ["usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64",
            "usr/lib/x86_64-linux-gnu/systemd", "usr/lib/x86_64-linux-gnu/pulseaudio"]


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def needed(path):
    out = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        if "(NEEDED)" in line:
            libs.append(line.split("[", 1)[1].split("]", 1)[0])
    return libs


def main():
    root = sys.argv[1]
    unused = "--unused" in sys.argv
    elves = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p) and os.path.isfile(p) and is_elf(p):
                elves.append(p)
    missing = []
    named = set()
    for p in elves:
        rel = "/" + os.path.relpath(p, root)
        if rel.startswith("/usr/lib/modules/") or rel.startswith("/usr/lib/firmware/"):
            continue
        for lib in needed(p):
            named.add(lib)
            if not any(os.path.exists(os.path.join(root, d, lib)) for d in LIB_DIRS):
                missing.append(f"{rel} needs {lib}")
    for m in missing:
        print(f"elf_check: {m}, which is not in the image", file=sys.stderr)
    if unused:
        top = os.path.join(root, LIB_DIRS[0])
        for n in sorted(os.listdir(top)):
            if ".so" in n and not os.path.islink(os.path.join(top, n)):
                soname = n.split(".so")[0] + ".so"
                if not any(x.startswith(soname) for x in named):
                    print(f"elf_check: nothing links {n}")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
