#!/bin/sh
# SPDX-License-Identifier: MIT
# distcheck.sh: the release as a user and a packager get it (make distcheck; make check).
#
#  1. make dist twice: the same bytes (reproducible); unpack into a temporary folder.
#  2. Build the unpacked tree (make, the product only), and with DISTCHECK_TEST=1 run its
#     whole make test there too.
#  3. make install DESTDIR=... (default paths under /usr/local): every file where it belongs,
#     no @TOKEN@ left in what was installed; the shared library exports nothing but ing_*
#     (nm -D, each symbol at version INGINIOUS_1.0) and the static archive defines no other
#     global (nm); a program with its own ev_run, buf_append and peer_init links with the
#     static library.
#  4. examples/client.c compiled against the installed copy through pkg-config, shared and
#     static, and both run against a real backend of the unpacked build on 127.0.0.1 port 0;
#     the installed inginious-ctl pings it too.
#  5. Man pages: tests/dist/mancheck.sh (every --help option in its page, mandoc -Tlint
#     silent) and mandoc -Tlint on the installed pages.
#  6. make install PREFIX=<temporary folder> (no DESTDIR): systemd-analyze verify on the
#     installed units, when dist/systemd exists; make uninstall leaves no file behind.
#  7. make deb, and lintian reports no error on the package (warnings are printed).
# Every process started is stopped by its PID. Exit status 0 when everything held.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
CC=${CC:-cc}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/distcheck.XXXXXX")
BACKEND_PID=
cleanup() {
    if [ -n "$BACKEND_PID" ]; then
        kill -TERM "$BACKEND_PID" 2>/dev/null || true
        wait "$BACKEND_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
step() { echo "== distcheck: $*"; }
die() {
    echo "distcheck: FAILED: $*" >&2
    exit 1
}
for t in mandoc pkg-config nm readelf objdump tar gzip; do
    command -v $t >/dev/null || die "$t is not installed (.ci/run installs it)"
done

# 1. The tarball, twice.
step "make dist (twice: the same bytes)"
ver() { sed -n "s/^#define ING_VERSION_$1 \\([0-9]*\\)\$/\\1/p" "$TOP/include/inginious/version.h"; }
VERSION=$(ver MAJOR).$(ver MINOR).$(ver PATCH)
case $VERSION in [0-9]*.[0-9]*.[0-9]*) ;; *) die "no version in include/inginious/version.h" ;; esac
NAME=inginious-backend-$VERSION
make -s -C "$TOP" dist BUILD="$TMP/d1" >/dev/null
make -s -C "$TOP" dist BUILD="$TMP/d2" >/dev/null
cmp "$TMP/d1/$NAME.tar.gz" "$TMP/d2/$NAME.tar.gz" || die "make dist is not reproducible"
tar -xzf "$TMP/d1/$NAME.tar.gz" -C "$TMP"
SRC=$TMP/$NAME
[ -f "$SRC/Makefile" ] && [ -f "$SRC/LICENSE" ] && [ -d "$SRC/dist/man" ] ||
    die "the tarball lacks Makefile, LICENSE or dist/man"
[ ! -e "$SRC/build" ] || die "the tarball holds build/"

# 2. Build the unpacked tree.
step "build the unpacked tree"
make -s -C "$SRC" -j2 >/dev/null
B=$SRC/build
for f in inginious-backend inginious-ctl inginious-agent-process libinginious.a \
    "libinginious.so.$VERSION"; do
    [ -e "$B/$f" ] || die "make did not build $f"
done
[ ! -e "$B/tests" ] || die "plain make built the tests (it must not need cmocka)"
if [ "${DISTCHECK_TEST:-0}" = 1 ]; then
    step "make test in the unpacked tree"
    make -s -C "$SRC" -j2 test > "$TMP/test.log" 2>&1 || {
        tail -30 "$TMP/test.log"
        die "make test failed in the unpacked tree"
    }
fi

# 3. Install into a DESTDIR, default paths.
step "make install DESTDIR=..."
D=$TMP/root
P=/usr/local
make -s -C "$SRC" install DESTDIR="$D" >/dev/null
for f in bin/inginious-backend bin/inginious-ctl bin/inginious-agent-process \
    include/inginious/client.h include/inginious/agent.h include/inginious/version.h \
    lib/libinginious.a "lib/libinginious.so.$VERSION" lib/libinginious.so.1 lib/libinginious.so \
    lib/pkgconfig/inginious.pc share/man/man8/inginious-backend.8 share/man/man1/inginious-ctl.1 \
    share/man/man8/inginious-agent-process.8 share/man/man3/libinginious.3; do
    [ -e "$D$P/$f" ] || die "make install did not install $P/$f"
done
[ "$(readlink "$D$P/lib/libinginious.so.1")" = "libinginious.so.$VERSION" ] ||
    die "libinginious.so.1 does not point to libinginious.so.$VERSION"
if grep -rl '@[A-Z]*@' "$D$P/share/man" "$D$P/lib/pkgconfig"; then
    die "@TOKEN@ left in the installed files above"
fi
SO=$D$P/lib/libinginious.so.$VERSION
readelf -d "$SO" | grep -q 'SONAME.*\[libinginious\.so\.1\]' || die "SONAME is not libinginious.so.1"

step "exports: nm -D (shared) and nm (static) show nothing but ing_*"
nm -D --defined-only "$SO" | awk '$2 != "A" {print $3}' | sed 's/@.*//' > "$TMP/dsyms"
[ -s "$TMP/dsyms" ] || die "the shared library exports nothing"
if grep -v '^ing_' "$TMP/dsyms"; then die "the shared library exports the names above"; fi
objdump -T "$SO" | awk '/ DF \.text/ && $NF ~ /^ing_/ && $(NF-1) != "INGINIOUS_1.0" {print}' \
    > "$TMP/unversioned"
[ ! -s "$TMP/unversioned" ] || { cat "$TMP/unversioned"; die "exports without version INGINIOUS_1.0"; }
nm -g --defined-only "$D$P/lib/libinginious.a" | awk 'NF == 3 {print $3}' > "$TMP/ssyms"
[ -s "$TMP/ssyms" ] || die "the static library defines nothing"
if grep -v '^ing_' "$TMP/ssyms"; then die "the static library defines the globals above"; fi
echo "   $(wc -l < "$TMP/dsyms") symbols exported, all ing_* at INGINIOUS_1.0"

export PKG_CONFIG_LIBDIR="$D$P/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D"
[ "$(pkg-config --modversion inginious)" = "$VERSION" ] || die "pkg-config --modversion"
grep -qx "libdir=$P/lib" "$D$P/lib/pkgconfig/inginious.pc" &&
    grep -qx "includedir=$P/include" "$D$P/lib/pkgconfig/inginious.pc" ||
    die "inginious.pc does not name $P/lib and $P/include"
cat > "$TMP/clash.c" <<'CLASH'
/* Names the library uses inside: a program may have its own. */
#include <stdio.h>
#include <inginious/version.h>
int ev_run(void);
int buf_append(void);
int peer_init(void);
int ev_run(void) { return 1; }
int buf_append(void) { return 2; }
int peer_init(void) { return 3; }
int main(void) { printf("%s %d\n", ing_version(), ev_run() + buf_append() + peer_init()); return 0; }
CLASH
# shellcheck disable=SC2046
$CC -std=c11 -Wall -Werror -o "$TMP/clash" "$TMP/clash.c" $(pkg-config --cflags inginious) \
    -Wl,-Bstatic $(pkg-config --static --libs inginious) -Wl,-Bdynamic ||
    die "a program defining ev_run, buf_append, peer_init does not link with libinginious.a"
[ "$("$TMP/clash")" = "$VERSION 6" ] || die "the clash program printed the wrong thing"

# 4. The example client, shared and static, against a real backend.
step "examples/client.c through pkg-config, shared and static"
W="-std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes"
# shellcheck disable=SC2046,SC2086
$CC $W -o "$TMP/client-shared" "$SRC/examples/client.c" $(pkg-config --cflags --libs inginious)
# shellcheck disable=SC2046,SC2086
$CC $W -o "$TMP/client-static" "$SRC/examples/client.c" $(pkg-config --cflags inginious) \
    -Wl,-Bstatic $(pkg-config --static --libs inginious) -Wl,-Bdynamic
readelf -d "$TMP/client-shared" | grep -q 'NEEDED.*\[libinginious\.so\.1\]' ||
    die "client-shared does not need libinginious.so.1"
if readelf -d "$TMP/client-static" | grep -q 'NEEDED.*libinginious'; then
    die "client-static needs the shared library"
fi
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR

"$B/inginious-backend" -q --port-file "$TMP/ports" tcp://127.0.0.1:0 tcp://127.0.0.1:0 \
    2> "$TMP/backend.log" &
BACKEND_PID=$!
i=0
while ! grep -q '^client ' "$TMP/ports" 2>/dev/null; do
    kill -0 "$BACKEND_PID" 2>/dev/null || { cat "$TMP/backend.log"; die "the backend exited"; }
    i=$((i + 1))
    [ $i -le $((100 * ${ING_SLOW:-1})) ] || die "the backend wrote no port file in time"
    sleep 0.1
done
ADDR=$(awk '$1 == "client" {print $2}' "$TMP/ports")
LD_LIBRARY_PATH="$D$P/lib" "$TMP/client-shared" "$ADDR" > "$TMP/out-shared" ||
    { cat "$TMP/out-shared"; die "client-shared failed against $ADDR"; }
"$TMP/client-static" "$ADDR" > "$TMP/out-static" ||
    { cat "$TMP/out-static"; die "client-static failed against $ADDR"; }
for o in "$TMP/out-shared" "$TMP/out-static"; do
    grep -q "^libinginious $VERSION " "$o" && grep -q "^connected to inginious-backend $VERSION" "$o" &&
        grep -q '^ping: ' "$o" && grep -q '^queue: 0 running, 0 waiting' "$o" ||
        { cat "$o"; die "unexpected output of ${o##*/}"; }
done
"$D$P/bin/inginious-ctl" --backend "$ADDR" ping > "$TMP/ping" || die "inginious-ctl ping failed"
kill -TERM "$BACKEND_PID"
wait "$BACKEND_PID" || die "the backend did not exit 0 on SIGTERM"
BACKEND_PID=

# 5. Man pages.
step "man pages: mancheck, mandoc -Tlint on the installed pages"
"$SRC/tests/dist/mancheck.sh" "$B" "$SRC/dist/man"
MAKEWHATIS=$(command -v makewhatis || echo /usr/sbin/makewhatis)
"$MAKEWHATIS" "$D$P/share/man"
mandoc -Tlint -W style -M "$D$P/share/man" "$D$P"/share/man/man*/* > "$TMP/lint" 2>&1 || true
[ ! -s "$TMP/lint" ] || { cat "$TMP/lint"; die "mandoc -Tlint on the installed pages"; }

# 6. A prefix install without DESTDIR: units verified in place; uninstall.
step "make install PREFIX=... ; systemd units; make uninstall"
PF=$TMP/prefix
make -s -C "$SRC" install PREFIX="$PF" >/dev/null
if [ -d "$SRC/dist/systemd" ]; then
    command -v systemd-analyze >/dev/null || die "systemd-analyze is not installed"
    units=$(ls "$PF"/lib/systemd/system/*.service "$PF"/lib/systemd/system/*.socket 2>/dev/null) ||
        die "make install installed no unit"
    # shellcheck disable=SC2086
    (cd "$TMP" && MANPATH="$PF/share/man" systemd-analyze verify $units) ||
        die "systemd-analyze verify"
    echo "   verified: $(echo "$units" | xargs -n1 basename | tr '\n' ' ')"
else
    echo "   (no dist/systemd in this tree: no unit to verify)"
fi
make -s -C "$SRC" uninstall PREFIX="$PF" >/dev/null
left=$(find "$PF" -type f -o -type l)
[ -z "$left" ] || { echo "$left"; die "make uninstall left the files above"; }
make -s -C "$SRC" uninstall DESTDIR="$D" >/dev/null
left=$(find "$D" \( -type f -o -type l \) ! -name mandoc.db)
[ -z "$left" ] || { echo "$left"; die "make uninstall DESTDIR=... left the files above"; }

# 7. The Debian package.
step "make deb; lintian"
if command -v dpkg-deb >/dev/null && command -v lintian >/dev/null; then
    make -s -C "$SRC" deb > "$TMP/deb.log" 2>&1 || { cat "$TMP/deb.log"; die "make deb"; }
    DEB=$(ls "$B"/inginious-backend_"$VERSION"_*.deb)
    dpkg-deb -c "$DEB" > "$TMP/deb.list"
    for f in usr/bin/inginious-backend "usr/lib/.*/libinginious.so.1" usr/include/inginious/client.h \
        usr/share/man/man8/inginious-backend.8.gz usr/share/doc/inginious-backend/copyright; do
        grep -q " \./$f" "$TMP/deb.list" || die "the .deb lacks $f"
    done
    lintian "$DEB" > "$TMP/lintian" 2>&1 || true
    grep -v 'running with root privileges' "$TMP/lintian" | sed 's/^/   /' || true
    if grep -q '^E: ' "$TMP/lintian"; then die "lintian reports errors"; fi
else
    die "dpkg-deb or lintian is not installed (.ci/run installs them)"
fi
echo "distcheck: $NAME is fine"
