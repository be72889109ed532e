#!/bin/bash
# SPDX-License-Identifier: MIT
# make interop: the backend against real ZeroMQ peers (Debian's python3-zmq and
# python3-msgpack, test-only). Skips with a clear message where they are missing, except
# when CI is set (not empty): a CI run must not pass without the interop suite.
set -u
build=${1:-build}
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
if ! "$py" -c 'import zmq, msgpack' 2>/dev/null; then
    if [ -n "${CI:-}" ]; then
        echo "interop: FAILED: CI is set but python3-zmq and python3-msgpack are not installed"
        echo "         (apt-get install python3-zmq python3-msgpack)"
        exit 1
    fi
    echo "interop: SKIPPED: python3-zmq and python3-msgpack are not installed"
    echo "         (apt-get install python3-zmq python3-msgpack)"
    exit 0
fi
exec timeout 300 "$py" "$(dirname "$0")/interop.py" "$build"
