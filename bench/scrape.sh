#!/bin/bash
# SPDX-License-Identifier: MIT
# scrape.sh BUILD_DIR [PAIRS]: what scraping the metrics port costs the backend (bench/README.md,
# "Scraping /metrics"), measured so that it survives a noisy shared machine.
#
# PAIRS pairs (default 6) of loadgen lifecycle runs (LIFECYCLE_JOBS jobs, default 1,000,000,
# 128-byte inputdata): A without --metrics, B with --metrics and GET /metrics SCRAPE_HZ times a
# second (default 10) during the whole run (bash's /dev/tcp, so the scraper costs little CPU
# itself). The two runs of a pair follow each other, in the order AB, BA, AB, ... (a drift of
# the machine's load between runs cancels over the pairs). For each pair it prints both runs'
# jobs_per_s and the backend's CPU time per job (cpu_ns_per_job: loadgen's server_sched_s, the
# backend's run time from /proc/PID/schedstat, in ns, divided by the jobs; the figure the
# machine's other load disturbs least, and finer than getrusage's 10 ms ticks), then the
# medians over the pairs of the paired differences B - A, in % of A. With SCRAPE_HZ=100 (ten times the rate) the cost is
# ten times larger and easier to see above the noise; divide by ten.
# On a machine as loaded as ours the paired differences scatter by tens of % (the batching of
# the lifecycle run changes with the load), so the cost can also be read from inside:
# SCRAPE_PERF=RUNS (needs perf) runs RUNS scraped runs under `perf record -g` (cpu-clock, 1999
# Hz, the backend's call chains: it is built with frame pointers) and prints, for each, the
# backend's samples and those under the metrics port's event-loop callbacks (httpd.c: on_accept,
# on_conn, on_timer, on_second, and what they call: parsing, /metrics rendering, the writes and
# the kernel's work in those system calls), their share of the backend's CPU, and the scrapes
# answered; then the median share. That share bounds the throughput lost: were the backend the
# bottleneck, its CPU per job would grow by that share; when it is not, less is lost.
# The metrics port is 127.0.0.1:$SCRAPE_PORT (default 19464). Every run is bounded by
# --max-seconds.
set -u
B=${1:?usage: bench/scrape.sh BUILD_DIR [PAIRS]}
PAIRS=${2:-6}
L="$B/bench/loadgen"
[ -x "$L" ] || { echo "scrape.sh: $L not found: run make benches first" >&2; exit 1; }
port=${SCRAPE_PORT:-19464}
jobs=${LIFECYCLE_JOBS:-1000000}
hz=${SCRAPE_HZ:-10}
period=$(awk -v h="$hz" 'BEGIN { printf "%.4f", 1 / h }')
out=$(mktemp -d "${TMPDIR:-/tmp}/scrape.XXXXXX")
trap 'rm -rf "$out"' EXIT

scraper() { # GET /metrics every $period s until the file $1 exists; counts answers in $2
    local n=0
    while [ ! -e "$1" ]; do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            printf 'GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n' >&3
            read -r -d '' -u 3 _ && true
            exec 3<&-
            n=$((n + 1))
        fi
        sleep "$period"
    done
    echo "$n" > "$2"
}

share() { # share PERF_DATA: "samples samples_in_metrics_port" of the backend ("inginious-backe")
    perf script -i "$1" --comm inginious-backe -F comm,ip,sym 2>/dev/null | awk '
        function end_sample() { if (ins) { tot++; if (hit) h++ } ins = 0 }
        /^[^ \t]/ { end_sample(); ins = 1; hit = 0; next }
        /^$/ { end_sample(); next }
        $2 ~ /^(on_accept|on_conn|on_timer|on_second|process|serve|respond|respond_error|flush)$/ { hit = 1 }
        END { end_sample(); print tot + 0, h + 0 }'
}

if [ -n "${SCRAPE_PERF:-}" ]; then
    command -v perf > /dev/null || { echo "scrape.sh: SCRAPE_PERF needs perf" >&2; exit 1; }
    echo "# $SCRAPE_PERF scraped runs under perf, $jobs jobs a run, $hz scrapes/s"
    for i in $(seq "$SCRAPE_PERF"); do
        rm -f "$out/stop"
        scraper "$out/stop" "$out/count" &
        line=$(ING_BUILD="$B" perf record -q -g -F 1999 -o "$out/perf.data" -- "$L" --mode lifecycle \
            --payload 128 --jobs "$jobs" --max-seconds 50 --quiet \
            --backend-arg --metrics --backend-arg "tcp://127.0.0.1:$port" 2>/dev/null | grep '^RESULT')
        touch "$out/stop"
        wait
        read -r tot in_port <<< "$(share "$out/perf.data")"
        jps=$(sed -n 's/.* jobs_per_s=\([0-9.]*\).*/\1/p' <<< "$line")
        secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<< "$line")
        [ "${tot:-0}" -gt 0 ] || { echo "scrape.sh: no backend samples" >&2; exit 1; }
        pct=$(awk -v a="$in_port" -v t="$tot" 'BEGIN { printf "%.3f", a * 100 / t }')
        echo "$pct" >> "$out/share"
        printf 'run %d jobs_per_s=%s backend_samples=%s in_metrics_port=%s share=%s %% (%s scrapes in %s s)\n' \
            "$i" "$jps" "$tot" "$in_port" "$pct" "$(cat "$out/count")" "$secs"
    done
    printf 'median share of the backend CPU in the metrics port: %s %%\n' \
        "$(sort -g "$out/share" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
    exit 0
fi

run() { # run NAME: one loadgen run; prints "jobs_per_s cpu_ns_per_job secs scrapes"
    local name=$1 line args=() n=0
    if [ "$name" = B ]; then
        args=(--backend-arg --metrics --backend-arg "tcp://127.0.0.1:$port")
        rm -f "$out/stop"
        scraper "$out/stop" "$out/count" &
    fi
    line=$(ING_BUILD="$B" "$L" --mode lifecycle --payload 128 --jobs "$jobs" --max-seconds 50 \
        --quiet "${args[@]}" | grep '^RESULT')
    if [ "$name" = B ]; then
        touch "$out/stop"
        wait
        n=$(cat "$out/count")
    fi
    local jps cpu secs
    jps=$(sed -n 's/.* jobs_per_s=\([0-9.]*\).*/\1/p' <<< "$line")
    cpu=$(sed -n 's/.* server_sched_s=\([0-9.]*\).*/\1/p' <<< "$line")
    [ -n "$cpu" ] && cpu=$(awk -v s="$cpu" -v j="$jobs" 'BEGIN { printf "%.1f", s * 1e9 / j }')
    secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<< "$line")
    [ -n "$jps" ] && [ -n "$cpu" ] || { echo "scrape.sh: run $name failed" >&2; exit 1; }
    echo "$jps $cpu $secs $n"
}

echo "# $PAIRS pairs, $jobs jobs a run, B scraped at $hz/s; A = no --metrics"
for i in $(seq "$PAIRS"); do
    if [ $((i % 2)) = 1 ]; then a=$(run A); b=$(run B); else b=$(run B); a=$(run A); fi
    read -r ja ca _ _ <<< "$a"
    read -r jb cb sb nb <<< "$b"
    printf 'pair %d A jobs_per_s=%s cpu_ns_per_job=%s | B jobs_per_s=%s cpu_ns_per_job=%s (%s scrapes in %s s)\n' \
        "$i" "$ja" "$ca" "$jb" "$cb" "$nb" "$sb"
    awk -v ja="$ja" -v jb="$jb" -v ca="$ca" -v cb="$cb" \
        'BEGIN { printf "%.3f %.3f\n", (jb - ja) * 100 / ja, (cb - ca) * 100 / ca }' >> "$out/diff"
done
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf 'median of paired differences B - A: jobs_per_s %s %%, cpu_ns_per_job %s %%\n' \
    "$(cut -d' ' -f1 "$out/diff" | median)" "$(cut -d' ' -f2 "$out/diff" | median)"
printf 'paired differences (jobs_per_s %%, cpu %%): %s\n' "$(tr '\n' ';' < "$out/diff")"
