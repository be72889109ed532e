#!/bin/sh
# SPDX-License-Identifier: MIT
# demo.sh BUILD_DIR: the whole system on one machine, in well under a minute.
#
# Starts inginious-backend on two free loopback ports (port 0, read back from --port-file),
# one inginious-agent-process with the example environment (environments/process/default)
# and the example tasks (tasks/demo/*), then submits four jobs with inginious-ctl and
# prints each result:
#   demo/answer with the right answer   -> success
#   demo/answer with a wrong answer     -> failed
#   demo/loop, limits.time = 1          -> timeout (an endless loop stopped after 1 s of CPU)
#   demo/sleep, killed while it runs    -> killed
# The killed job is submitted with `submit --wait` in the background (the submitting client
# must stay connected: the backend kills the jobs of a client that goes away, and only the
# submitter hears the result); once `inginious-ctl queue` lists it as running, another
# `inginious-ctl kill` kills it and the background submit prints the agent's `killed`.
# Everything is stopped with SIGTERM by PID at the end (or on any exit, through a trap).
# Exit status 0 only if every job ended as expected. Uses /bin/sh and coreutils only.
set -u

BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
if ! BUILD=$(cd "$BUILD" 2>/dev/null && pwd); then
    echo "demo: no build directory '${1:-build}': run make first" >&2
    exit 2
fi
for b in inginious-backend inginious-agent-process inginious-ctl; do
    if [ ! -x "$BUILD/$b" ]; then
        echo "demo: $BUILD/$b is missing: run make first" >&2
        exit 2
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/inginious-demo.XXXXXX") || exit 2
# Jobs run as nobody when the agent runs as root: the environments must be readable.
chmod 755 "$TMP"
BACKEND_PID=
AGENT_PID=
KILL_SUBMIT_PID=
DONE=0

STATUS=
stop_pid() { # stop_pid PID NAME: SIGTERM, wait up to 5 s, then SIGKILL; exit status in STATUS
    STATUS=
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$1" 2>/dev/null; then
        echo "demo: $2 did not stop on SIGTERM: killed" >&2
        kill -KILL "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null
    STATUS=$?
}

cleanup() {
    stop_pid "$KILL_SUBMIT_PID" "inginious-ctl submit"
    stop_pid "$AGENT_PID" "inginious-agent-process"
    stop_pid "$BACKEND_PID" "inginious-backend"
    if [ "$DONE" != 1 ]; then
        for log in backend agent; do
            if [ -s "$TMP/$log.log" ]; then
                echo "---- last lines of the $log log" >&2
                tail -n 20 "$TMP/$log.log" >&2
            fi
        done
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_for() {
    n=$(($1 * 10))
    shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ $n -gt 0 ] || return 1
        sleep 0.1
    done
}

cp -R "$HERE/environments" "$HERE/tasks" "$TMP/"
chmod -R a+rX "$TMP/environments"

echo "== Starting inginious-backend"
"$BUILD/inginious-backend" --port-file "$TMP/ports" tcp://127.0.0.1:0 tcp://127.0.0.1:0 \
    >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
if ! wait_for 10 test -s "$TMP/ports"; then
    echo "demo: the backend did not start" >&2
    exit 1
fi
AGENT_ADDR=$(sed -n 's/^agent //p' "$TMP/ports")
CLIENT_ADDR=$(sed -n 's/^client //p' "$TMP/ports")
echo "   agents connect to $AGENT_ADDR, clients to $CLIENT_ADDR"
CTL() { "$BUILD/inginious-ctl" --backend "$CLIENT_ADDR" "$@"; }

echo "== Starting inginious-agent-process (environments and tasks from examples/)"
"$BUILD/inginious-agent-process" --name demo-agent --concurrency 4 \
    --environments "$TMP/environments" --tasks "$TMP/tasks" "$AGENT_ADDR" \
    >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
has_env() { CTL envs | grep -q '^process .*default'; }
if ! wait_for 10 has_env; then
    echo "demo: the agent did not register its environment" >&2
    exit 1
fi
CTL envs | sed 's/^/   /'

# Results: one line "NAME EXPECTED GOT" each, for the summary.
: >"$TMP/summary"

# show NAME EXPECTED FILE: prints a result (inginious-ctl's output) and records it.
show() {
    got=$(sed -n 's/^result: \([^ ]*\).*/\1/p' "$3" | head -n 1)
    [ -n "$got" ] || got="(none)"
    sed 's/^/   | /' "$3"
    echo "$1 $2 $got" >>"$TMP/summary"
}

# job NAME EXPECTED [SUBMIT OPTIONS]: submits one job, waits for its result and shows it.
job() {
    name=$1 expected=$2
    shift 2
    echo
    echo "== Job '$name' (expected: $expected)"
    CTL --timeout 30 submit --env-type process --env default --course demo --wait "$@" \
        >"$TMP/$name.out" 2>&1
    show "$name" "$expected" "$TMP/$name.out"
}

job correct-answer success --task answer --input '{"answer": "42"}'
job wrong-answer failed --task answer --input '{"answer": "41"}'
job endless-loop timeout --task loop --params '{"limits": {"time": 1}}'

echo
echo "== Job 'killed-while-running' (expected: killed)"
KILL_ID="demo-kill-$$"
CTL --timeout 30 submit --env-type process --env default --course demo --task sleep \
    --job-id "$KILL_ID" --wait >"$TMP/kill.out" 2>&1 &
KILL_SUBMIT_PID=$!
is_running() { CTL queue | awk -v id="$KILL_ID" '/^running:/ { r = 1; next }
                                                /^waiting:/ { r = 0 }
                                                r && $1 == id { found = 1 }
                                                END { exit !found }'; }
if wait_for 10 is_running; then
    echo "   $KILL_ID is running; inginious-ctl kill $KILL_ID"
    CTL kill "$KILL_ID" | sed 's/^/   /'
else
    echo "   $KILL_ID was never seen running" >&2
fi
# The background submit ends with the result (bounded by its --timeout).
wait "$KILL_SUBMIT_PID" 2>/dev/null
KILL_SUBMIT_PID=
show killed-while-running killed "$TMP/kill.out"

echo
echo "== Stopping the agent and the backend (SIGTERM)"
stop_pid "$AGENT_PID" "inginious-agent-process"
AGENT_PID=
echo "   inginious-agent-process exited with status $STATUS"
stop_pid "$BACKEND_PID" "inginious-backend"
BACKEND_PID=
echo "   inginious-backend exited with status $STATUS"

echo
echo "== Summary"
bad=0
total=0
printf '   %-22s %-10s %-10s %s\n' JOB EXPECTED GOT ""
while read -r name expected got; do
    total=$((total + 1))
    if [ "$expected" = "$got" ]; then
        verdict=ok
    else
        verdict=WRONG
        bad=$((bad + 1))
    fi
    printf '   %-22s %-10s %-10s %s\n' "$name" "$expected" "$got" "$verdict"
done <"$TMP/summary"
if [ "$bad" -eq 0 ] && [ "$total" -eq 4 ]; then
    echo "All $total jobs ended as expected."
    DONE=1
    exit 0
fi
echo "$bad of $total jobs did not end as expected." >&2
exit 1
