#!/usr/bin/env bash
# Builds the HTTP request parser's libFuzzer target with ASan and UBSan and
# runs it for a while over the seed corpus.
#
#   tests/fuzz/build_and_run.sh [SECONDS]      (default 20)
#
# Needs clang++ with libFuzzer (Debian: clang-14 and libclang-rt-14-dev) and
# libfmt-dev. The build and the inputs the fuzzer finds go to a scratch
# directory ($AULA_FUZZ_DIR, or a new one under $TMPDIR), so the checked-in
# seeds stay as they are. Exits non-zero when the fuzzer finds a crash; the
# input that caused it is kept in the scratch directory, whose path is printed.
set -euo pipefail

seconds="${1:-20}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
cxx="${CXX_FUZZ:-clang++}"
work="${AULA_FUZZ_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/aula-fuzz.XXXXXX")}"
mkdir -p "${work}/corpus"

echo "Building the fuzz target in ${work}."
# The parser and router live in http_server.cpp, which needs no socket or TLS
# library: only fmt (and nlohmann/json's headers).
"${cxx}" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"${root}/common/include" \
  "${here}/http_request_fuzz.cpp" "${root}/common/src/http_server.cpp" \
  -lfmt -o "${work}/http_request_fuzz"

echo "Fuzzing for ${seconds} s."
status=0
# New inputs go to the first directory (scratch); the seeds are only read.
"${work}/http_request_fuzz" -max_total_time="${seconds}" -print_final_stats=1 \
  -artifact_prefix="${work}/" "${work}/corpus" "${here}/corpus/http_request" || status=$?

if [[ ${status} -ne 0 ]]; then
  echo "The fuzzer found a problem (exit ${status}); the input is in ${work}:" >&2
  ls "${work}" | grep -E '^(crash|leak|timeout|oom)-' >&2 || true
  exit "${status}"
fi
echo "No crash in ${seconds} s."
if [[ -z "${AULA_FUZZ_DIR:-}" ]]; then
  rm -rf "${work}"
fi
