#!/bin/sh
# SPDX-License-Identifier: MIT
# mancheck.sh [BUILD_DIR [MAN_DIR]]: the man pages against the programs (make mancheck).
#
# 1. Every option that a program's --help lists (for inginious-ctl also each command's
#    --help) must appear in its page under MAN_DIR (default dist/man, next to this script's
#    tree): a long option anywhere in --help (--name), a short one where --help lists it
#    ("  -v, --verbose"). Every missing option is printed as "PAGE: missing OPTION", so that
#    they can all be added at once.
# 2. mandoc -Tlint (Debian's mandoc) must print nothing for any page. The pages are linted
#    from a temporary man hierarchy (-M) so that their cross-references (Xr) resolve.
# Exit status 0 when both hold, 1 otherwise, 2 when something needed is missing.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$TOP/build}
MAN=${2:-$TOP/dist/man}
command -v mandoc >/dev/null || { echo "mancheck: mandoc is not installed" >&2; exit 2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mancheck.XXXXXX") || exit 2
trap 'rm -rf "$TMP"' EXIT
fail=0

# options FILE: the options a --help text lists, one a line.
options() {
    grep -oE -- '(^|[^A-Za-z0-9_/-])--[a-z][a-z0-9-]*' "$1" | sed 's/^[^-]*//'
    sed -n 's/^ *\(-[A-Za-z]\), .*/\1/p' "$1"
}

# check PROGRAM PAGE HELPFILE...: every option of the help files is in the page.
check() {
    prog=$1 page=$2
    shift 2
    if [ ! -f "$MAN/$page" ]; then
        echo "$page: missing (no man page for $prog)"
        fail=1
        return
    fi
    mandoc -Tascii "$MAN/$page" | col -bx > "$TMP/$page.txt"
    cat "$@" > "$TMP/$prog.help"
    for o in $(options "$TMP/$prog.help" | sort -u); do
        if ! grep -qE -- "(^|[^A-Za-z0-9-])$o([^A-Za-z0-9-]|\$)" "$TMP/$page.txt"; then
            echo "$page: missing $o (listed by $prog --help)"
            fail=1
        fi
    done
}

for p in inginious-backend inginious-agent-process inginious-ctl; do
    [ -x "$BUILD/$p" ] || { echo "mancheck: $BUILD/$p is missing: run make first" >&2; exit 2; }
    "$BUILD/$p" --help > "$TMP/$p.main" 2>&1 || {
        echo "mancheck: $p --help failed" >&2
        exit 2
    }
done
check inginious-backend inginious-backend.8 "$TMP/inginious-backend.main"
check inginious-agent-process inginious-agent-process.8 "$TMP/inginious-agent-process.main"
# inginious-ctl: its commands are the lines "  NAME ..." after "Commands"; each has --help.
cmds=$(sed -n '/^Commands/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' "$TMP/inginious-ctl.main")
[ -n "$cmds" ] || { echo "mancheck: no commands found in inginious-ctl --help" >&2; exit 2; }
files="$TMP/inginious-ctl.main"
for c in $cmds; do
    "$BUILD/inginious-ctl" "$c" --help > "$TMP/ctl-$c.help" 2>&1
    files="$files $TMP/ctl-$c.help"
    grep -qE -- "^\.It Cm $c( |\$)" "$MAN/inginious-ctl.1" ||
        { echo "inginious-ctl.1: missing the command $c"; fail=1; }
done
# shellcheck disable=SC2086
check inginious-ctl inginious-ctl.1 $files

# mandoc -Tlint, with the pages in a man hierarchy of their own.
for m in "$MAN"/*.[1-8]; do
    s=${m##*.}
    mkdir -p "$TMP/man/man$s" && cp "$m" "$TMP/man/man$s/"
done
MAKEWHATIS=$(command -v makewhatis || echo /usr/sbin/makewhatis)
"$MAKEWHATIS" "$TMP/man" || { echo "mancheck: makewhatis failed" >&2; exit 2; }
if ! mandoc -Tlint -W style -M "$TMP/man" "$MAN"/*.[1-8] > "$TMP/lint" 2>&1 || [ -s "$TMP/lint" ]; then
    sed "s|$MAN/||" "$TMP/lint"
    echo "mancheck: mandoc -Tlint is not silent"
    fail=1
fi
[ $fail = 0 ] && echo "mancheck: every --help option is in its page; mandoc -Tlint is silent"
exit $fail
