#!/usr/bin/env python3
"""The lint cache's keys (provisioning/lint.sh).

    lint_keys.py ROOT COMPILE_COMMANDS CACHE JOBS KEYS_OUT FILE...

Prints the files (relative to ROOT) that must be checked: those whose key is
not in CACHE. Writes the keys of those files to KEYS_OUT, one per line, for
lint.sh to store once clang-tidy found them clean. A file whose key cannot be
made (the preprocessor failed) is always checked.
"""
import concurrent.futures
import hashlib
import json
import os
import shlex
import subprocess
import sys


def tool_version(tool):
    return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout


def preprocess_args(entry, source):
    """The entry's compile command as a clang preprocessor run to stdout."""
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out = ["clang++"]
    skip = False
    for a in args[1:]:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a in ("-c", source, entry["file"]):
            continue
        out.append(a)
    return out + ["-E", "-P", "-w", "-Wno-unknown-warning-option", source]


def main():
    root, commands, cache, jobs, keys_out = sys.argv[1:6]
    files = sys.argv[6:]
    root = os.path.realpath(root)
    with open(commands, encoding="utf-8") as f:
        entries = {os.path.realpath(os.path.join(e["directory"], e["file"])): e for e in json.load(f)}
    build = os.path.realpath(os.path.dirname(commands))
    common = hashlib.sha256()
    common.update(tool_version("clang-tidy").encode())
    common.update(tool_version("clang++").encode())
    with open(os.path.join(root, ".clang-tidy"), "rb") as f:
        common.update(f.read())

    def key_of(rel):
        source = os.path.join(root, rel)
        entry = entries.get(os.path.realpath(source))
        if entry is None:
            return rel, None
        args = preprocess_args(entry, entry["file"])
        run = subprocess.run(args, cwd=entry["directory"], capture_output=True)
        if run.returncode != 0:
            return rel, None
        h = common.copy()
        flags = " ".join(args).replace(build, "<build>").replace(root, "<root>")
        h.update(flags.encode())
        h.update(rel.encode())
        h.update(run.stdout.replace(build.encode(), b"<build>").replace(root.encode(), b"<root>"))
        return rel, h.hexdigest()

    unchecked, keys = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        for rel, key in pool.map(key_of, files):
            if key is not None and os.path.exists(os.path.join(cache, key)):
                continue
            unchecked.append(rel)
            if key is not None:
                keys.append(key)
    with open(keys_out, "w", encoding="utf-8") as f:
        f.write("".join(k + "\n" for k in keys))
    for rel in unchecked:
        print(rel)


if __name__ == "__main__":
    main()
