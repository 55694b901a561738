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
start=$(date +%s)
# A file whose exact input was found clean before is not checked again: the
# key is clang's preprocessed text of the file (so every header it includes,
# ours and the system's), its flags, .clang-tidy and clang-tidy's version,
# with the checkout's path taken out so that another clone hits too. Only
# clean results are kept, one empty file per key. AULA_LINT_CACHE=off checks
# every file.
CACHE="${AULA_LINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aula-lint}"
keys_file="$BUILD/clang-tidy.keys"
if [[ "$CACHE" != off ]]; then
  mkdir -p "$CACHE"
  mapfile -t unchecked < <(python3 "$ROOT/provisioning/lint_keys.py" "$ROOT" "$BUILD/compile_commands.json" \
    "$CACHE" "$JOBS" "$keys_file" "${files[@]}")
else
  unchecked=("${files[@]}")
  : > "$keys_file"
fi

# run-clang-tidy takes regular expressions of paths: anchor each file.
patterns=()
for f in "${unchecked[@]}"; do
  patterns+=("^$(printf '%s' "$ROOT/$f" | sed 's/[.[\*^$+?(){}|]/\\&/g')\$")
done

# The build's flags are GCC's; clang does not know some of its warnings.
if [[ ${#unchecked[@]} -gt 0 ]] && ! run-clang-tidy -p "$BUILD" -j "$JOBS" -quiet \
    -extra-arg=-Wno-unknown-warning-option "${patterns[@]}" > "$BUILD/clang-tidy.log" 2>&1; then
  grep -E "(warning|error): " "$BUILD/clang-tidy.log" | sort -u >&2 || true
  echo "lint.sh: clang-tidy found the problems above (whole output: $BUILD/clang-tidy.log)." >&2
  exit 1
fi
if [[ "$CACHE" != off ]]; then
  while read -r key; do
    [[ -n "$key" ]] && : > "$CACHE/$key"
  done < "$keys_file"
fi
echo "lint.sh: ${#files[@]} files clean in $(( $(date +%s) - start )) s" \
  "(${#unchecked[@]} checked, $(( ${#files[@]} - ${#unchecked[@]} )) unchanged since a clean check in $CACHE)."
