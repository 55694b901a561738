#!/usr/bin/env bash
# clang-tidy over Aula's own code (every .cpp the build compiles: the
# programs, tests, test tools and benchmarks, and the project headers they
# include) with the checks in .clang-tidy, warnings as errors. Needs a
# configured build for its compile_commands.json; the test command runs it
# after the dev build.
#
#   provisioning/lint.sh                 # uses build/dev
#   provisioning/lint.sh build/asan      # another build folder
#   AULA_JOBS=1 provisioning/lint.sh     # one file at a time
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/dev}"
JOBS="${AULA_JOBS:-$(nproc)}"

if [[ ! -f "$BUILD/compile_commands.json" ]]; then
  echo "lint.sh: $BUILD has no compile_commands.json; run 'cmake --preset dev' first." >&2
  exit 2
fi
if ! command -v run-clang-tidy >/dev/null; then
  echo "lint.sh: run-clang-tidy is missing; run provisioning/install-deps.sh (package clang-tidy)." >&2
  exit 2
fi

# Every .cpp of the tree that the build compiles: the programs, their tests,
# the test tools and the benchmarks. (The fuzzer is built apart, by clang.)
mapfile -t files < <(python3 - "$ROOT" "$BUILD/compile_commands.json" <<'PY'
import json, os, subprocess, sys
root, commands = sys.argv[1], sys.argv[2]
compiled = {os.path.realpath(os.path.join(c["directory"], c["file"])) for c in json.load(open(commands))}
for f in subprocess.run(["git", "-C", root, "ls-files", "--", "*.cpp"], capture_output=True,
                        text=True, check=True).stdout.split():
    if os.path.realpath(os.path.join(root, f)) in compiled:
        print(f)
PY
)
# run-clang-tidy takes regular expressions of paths: anchor each file.
patterns=()
for f in "${files[@]}"; do
  patterns+=("^$(printf '%s' "$ROOT/$f" | sed 's/[.[\*^$+?(){}|]/\\&/g')\$")
done

start=$(date +%s)
# The build's flags are GCC's; clang does not know some of its warnings.
if ! run-clang-tidy -p "$BUILD" -j "$JOBS" -quiet -extra-arg=-Wno-unknown-warning-option \
    "${patterns[@]}" > "$BUILD/clang-tidy.log" 2>&1; then
  grep -E "(warning|error): " "$BUILD/clang-tidy.log" | sort -u >&2 || true
  echo "lint.sh: clang-tidy found the problems above (whole output: $BUILD/clang-tidy.log)." >&2
  exit 1
fi
echo "lint.sh: ${#files[@]} files clean in $(( $(date +%s) - start )) s."
