#!/usr/bin/env bash
# Aula's whole test run, from a bare Debian 12 machine (as root):
#   installs dependencies, checks formatting, configures and builds with
#   warnings as errors, runs clang-tidy (provisioning/lint.sh), runs every
#   test (unit, integration, e2e) through CTest,
#   then the unit tests again under ASan+UBSan. Exits non-zero on any failure.
#
#   provisioning/test.sh              # everything
#   AULA_SKIP_ASAN=1 provisioning/test.sh   # skip the sanitizer pass (local iteration only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="${AULA_JOBS:-$(nproc)}"
START=$(date +%s)

step() { printf '\n==== %s\n' "$*"; }

step "Dependencies"
"$ROOT/provisioning/install-deps.sh"

step "Format (clang-format, every C++ file)"
mapfile -t cxx < <(git ls-files -co --exclude-standard -- '*.cpp' '*.hpp' '*.h' '*.cc' | while read -r f; do [[ -f "$f" ]] && echo "$f"; done)
if [[ ${#cxx[@]} -gt 0 ]]; then
  if ! clang-format --dry-run --Werror "${cxx[@]}"; then
    echo "test.sh: the files above are not formatted; run: clang-format -i <file>" >&2
    exit 1
  fi
fi
echo "${#cxx[@]} files formatted correctly."

step "Build (dev preset, warnings as errors)"
cmake --preset dev >/dev/null
cmake --build --preset dev -j "$JOBS"

RESULTS="$ROOT/build/test-results"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

status=0
step "Lint (clang-tidy over every C++ file the build compiles; warnings as errors)"
"$ROOT/provisioning/lint.sh" "$ROOT/build/dev" || status=1

step "Tests: unit, integration, e2e (dev preset)"
ctest --preset dev -j "$JOBS" --output-junit "$RESULTS/dev.xml" || status=1

step "Fuzz: HTTP request parser (libFuzzer, ${AULA_FUZZ_SECONDS:-20} s)"
if ! "$ROOT/tests/fuzz/build_and_run.sh" "${AULA_FUZZ_SECONDS:-20}" > "$RESULTS/fuzz.log" 2>&1; then
  tail -40 "$RESULTS/fuzz.log"
  echo "test.sh: the fuzzer found a crash in the HTTP request parser; see above." >&2
  status=1
else
  grep -E "^stat::number_of_executed_units|Done [0-9]+ runs" "$RESULTS/fuzz.log" | tail -2 || true
fi

if [[ "${AULA_SKIP_ASAN:-0}" != 1 ]]; then
  step "Build (asan preset: AddressSanitizer + UndefinedBehaviorSanitizer)"
  cmake --preset asan >/dev/null
  cmake --build --preset asan -j "$JOBS" --target aula_unit_tests
  step "Tests: unit (asan preset)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --preset asan -j "$JOBS" --output-junit "$RESULTS/asan.xml" || status=1
fi

step "Summary"
echo "test.sh: finished in $(( $(date +%s) - START )) s with status $status."
python3 - "$RESULTS" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
total = {"passed": 0, "failed": 0, "skipped": 0}
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for s in suites:
        for case in s.findall("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                total["failed"] += 1
            elif case.find("skipped") is not None or case.get("status") in ("notrun", "disabled"):
                total["skipped"] += 1
            else:
                total["passed"] += 1
print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
PY
exit $status
