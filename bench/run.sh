#!/bin/bash
# SPDX-License-Identifier: MIT
# run.sh BUILD_DIR: what `make bench` runs, after the build (this script builds nothing).
#   1. the lifecycle benchmark with its defaults at 128 B (4 clients x 64 in flight, 8 agents
#      x 64 slots, 1,000,000 jobs): its RESULT line and table, over the native protocol, then
#      over the ZeroMQ dialect (--dialect zmq: the same RESULT line with dialect=zmq);
#   2. the latency mode (one job in flight, 20,000 jobs).
# Takes about 15 s on the 2-core machine of bench/README.md; every run is bounded by
# --max-seconds. BENCH_ALL=1 also runs the micro-benchmarks (bench_slab, bench_sched,
# bench_loop and the other build/bench/bench_* programs; about a minute more).
# LIFECYCLE_JOBS=N changes the job count of step 1. Exit status: 1 if a run failed.
set -u
B=${1:?usage: bench/run.sh BUILD_DIR}
L="$B/bench/loadgen"
[ -x "$L" ] || { echo "run.sh: $L not found: run make first" >&2; exit 1; }
[ -x "$B/inginious-backend" ] || { echo "run.sh: $B/inginious-backend not found" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
jobs=${LIFECYCLE_JOBS:-1000000}
rc=0

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "== commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$(nproc)" -lt 2 ]; then
    echo "== note: fewer than 2 CPUs: the backend and the load generator share one (not pinned)"
fi

echo "== lifecycle, 128-byte inputdata, $jobs jobs, native protocol (bounded to 50 s)"
ING_BUILD="$B" "$L" --mode lifecycle --payload 128 --jobs "$jobs" --max-seconds 50 || rc=1

echo "== lifecycle, the same over the ZeroMQ dialect (ZMTP 3.1, INGInious' msgpack; bounded to 50 s)"
ING_BUILD="$B" "$L" --mode lifecycle --dialect zmq --payload 128 --jobs "$jobs" --max-seconds 50 || rc=1

echo "== latency: one job in flight, 20000 jobs (bounded to 30 s)"
ING_BUILD="$B" "$L" --mode latency --jobs 20000 --max-seconds 30 || rc=1

if [ "${BENCH_ALL:-0}" = 1 ]; then
    for p in "$B"/bench/bench_*; do
        [ -x "$p" ] || continue
        echo "== $(basename "$p")"
        timeout 120 "$p" || rc=1
    done
fi

echo "== compare with the relay (the ceiling, same workload): bash \$PEERS/measure.sh relay (the peers' measurement kit, bench/README.md)"
exit $rc
