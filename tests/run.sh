#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/run.sh BUILD JOBS LABEL TEST...
#
# Runs the test binaries TEST..., at most JOBS at a time (JOBS 1: one after the other, in
# order). Each binary's output is printed whole once it ends (never interleaved), headed by
# "== [LABEL ]NAME" and followed by its wall time. ING_BUILD=BUILD is exported so the binaries
# find the programs under test; $RUN_PREFIX (e.g. a valgrind command line) is put before each
# binary. After the first failure no new binary is started; the ones running are waited for,
# their output printed, and the script exits 1 naming every failure. Ends with the total time
# and the list of the cases that skipped themselves.
set -u
build=${1:?usage: tests/run.sh BUILD JOBS LABEL TEST...}
jobs=${2:?usage: tests/run.sh BUILD JOBS LABEL TEST...}
label=${3-}
shift 3
export ING_BUILD=$build
out=$build/tests/.run
rm -rf "$out"
mkdir -p "$out"
: > "$out/skipped"
start=$(date +%s)
failed=()
declare -A pid_of=() t0_of=()
running=0

# finish NAME: prints the output of the ended binary NAME and records its result.
finish() {
    local name=$1 rc=$2 t1
    t1=$(date +%s)
    echo "== ${label:+$label }$name"
    cat "$out/$name.out"
    grep -h '^\[  SKIPPED \] test_' "$out/$name.out" | sed "s|.*SKIPPED \] |$name: |" \
        >> "$out/skipped"
    echo "   ($name: $((t1 - ${t0_of[$name]})) s)"
    if [ "$rc" != 0 ]; then
        echo "FAILED: $name (exit $rc)"
        failed+=("$name")
    fi
}

# reap: waits for any running binary and finishes it.
reap() {
    local p rc name
    wait -n -p p
    rc=$?
    for name in "${!pid_of[@]}"; do
        if [ "${pid_of[$name]}" = "$p" ]; then
            unset "pid_of[$name]"
            running=$((running - 1))
            finish "$name" "$rc"
            return
        fi
    done
}

for t in "$@"; do
    [ ${#failed[@]} = 0 ] || break
    while [ "$running" -ge "$jobs" ]; do reap; done
    [ ${#failed[@]} = 0 ] || break
    name=${t##*/}
    t0_of[$name]=$(date +%s)
    # shellcheck disable=SC2086 # RUN_PREFIX is a command line, split on purpose
    ${RUN_PREFIX-} "$t" > "$out/$name.out" 2>&1 &
    pid_of[$name]=$!
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do reap; done

total=$(($(date +%s) - start))
if [ ${#failed[@]} != 0 ]; then
    echo "FAILED${label:+ under $label}: ${failed[*]} (after $total s)"
    exit 1
fi
echo "== all test binaries passed${label:+ under $label} in $total s;" \
    "skipped: $(sort -u "$out/skipped" | wc -l)"
sort -u "$out/skipped" | sed 's/^/   skipped /'
