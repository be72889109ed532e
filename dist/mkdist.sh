#!/bin/sh
# SPDX-License-Identifier: MIT
# mkdist.sh NAME OUT.tar.gz: the source tarball (make dist), reproducibly.
#
# The files are those git tracks (git ls-files; a tracked file deleted from the work tree is
# left out), or, outside a git checkout (an unpacked tarball), every file but build/. They go
# under NAME/, sorted by name, owned by 0:0, dated SOURCE_DATE_EPOCH (default: the last
# commit's date, else CHANGELOG.md's modification time), gzip without a name or a date:
# two runs on the same tree give the same bytes.
set -eu
[ $# -eq 2 ] || { echo "usage: mkdist.sh NAME OUT.tar.gz" >&2; exit 2; }
NAME=$1
OUT=$2
cd "$(dirname "$0")/.."
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mkdist.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z | tr '\0' '\n' | while IFS= read -r f; do
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\n' "$f"; fi
    done > "$TMP/files"
    : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
else
    find . -path ./build -prune -o \( -type f -o -type l \) -print | sed 's|^\./||' > "$TMP/files"
    : "${SOURCE_DATE_EPOCH:=$(stat -c %Y CHANGELOG.md)}"
fi
LC_ALL=C sort -o "$TMP/files" "$TMP/files"
[ -s "$TMP/files" ] || { echo "mkdist: no files" >&2; exit 1; }

tar --create --no-recursion --files-from="$TMP/files" --transform="s|^|$NAME/|S" \
    --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
    --mode='u+rw,go+r-w' --mtime="@$SOURCE_DATE_EPOCH" \
    | gzip -9 -n > "$TMP/out.tar.gz"
mv "$TMP/out.tar.gz" "$OUT"
echo "made $OUT ($(wc -l < "$TMP/files") files, dated @$SOURCE_DATE_EPOCH)"
