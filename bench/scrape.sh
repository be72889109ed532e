#!/bin/bash
# SPDX-License-Identifier: MIT
# scrape.sh BUILD_DIR [RUNS]: what scraping the metrics port costs the backend (bench/README.md,
# "Scraping /metrics"). Runs loadgen's lifecycle workload (LIFECYCLE_JOBS, default 1,000,000)
# RUNS times (default 3) in each of three ways, interleaved: without --metrics; with
# --metrics and nobody scraping; with --metrics and GET /metrics ten times a second during the
# whole run (bash's /dev/tcp, so the scraper costs little CPU itself). Prints each RESULT
# line's jobs_per_s and server_cpu_us_per_job, then the medians. The metrics port is
# 127.0.0.1:$SCRAPE_PORT (default 19464). Every run is bounded by --max-seconds.
set -u
B=${1:?usage: bench/scrape.sh BUILD_DIR [RUNS]}
RUNS=${2:-3}
L="$B/bench/loadgen"
[ -x "$L" ] || { echo "scrape.sh: $L not found: run make benches first" >&2; exit 1; }
port=${SCRAPE_PORT:-19464}
jobs=${LIFECYCLE_JOBS:-1000000}
out=$(mktemp -d "${TMPDIR:-/tmp}/scrape.XXXXXX")
trap 'rm -rf "$out"' EXIT

scraper() { # GET /metrics every 100 ms until the file $1 exists; counts answers in $2
    local n=0
    while [ ! -e "$1" ]; do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            printf 'GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n' >&3
            read -r -d '' -u 3 _ && true
            exec 3<&-
            n=$((n + 1))
        fi
        sleep 0.1
    done
    echo "$n" > "$2"
}

run() { # run NAME ARGS...: one loadgen run, its figures appended to $out/NAME
    local name=$1
    shift
    local line
    line=$(ING_BUILD="$B" "$L" --mode lifecycle --payload 128 --jobs "$jobs" --max-seconds 50 \
        --quiet "$@" | grep '^RESULT')
    local jps cpu
    jps=$(sed -n 's/.* jobs_per_s=\([0-9.]*\).*/\1/p' <<< "$line")
    cpu=$(sed -n 's/.* server_cpu_us_per_job=\([0-9.]*\).*/\1/p' <<< "$line")
    echo "$jps $cpu" >> "$out/$name"
    printf '%-12s jobs_per_s=%-10s server_cpu_us_per_job=%s\n' "$name" "$jps" "$cpu"
}

for i in $(seq "$RUNS"); do
    run off
    run idle --backend-arg --metrics --backend-arg "tcp://127.0.0.1:$port"
    rm -f "$out/stop"
    scraper "$out/stop" "$out/count.$i" &
    run scraped --backend-arg --metrics --backend-arg "tcp://127.0.0.1:$port"
    touch "$out/stop"
    wait
    echo "             (scrapes answered during the run and after: $(cat "$out/count.$i"))"
done
for name in off idle scraped; do
    med=$(sort -n "$out/$name" | awk '{a[NR]=$1; c[NR]=$2} END {m=int((NR+1)/2); print a[m], c[m]}')
    printf 'median %-8s jobs_per_s=%s server_cpu_us_per_job=%s\n' "$name" ${med}
done
