#!/bin/sh
# SPDX-License-Identifier: MIT
# mkdeb.sh BUILD_DIR VERSION: BUILD_DIR/inginious-backend_VERSION_ARCH.deb (make deb).
#
# A DESTDIR install (PREFIX=/usr, LIBDIR=/usr/lib/MULTIARCH, SYSCONFDIR=/etc; the units of
# dist/systemd into /lib/systemd/system when that folder exists) into BUILD_DIR/deb/root;
# programs and the shared library stripped, man pages and the Debian changelog compressed
# with gzip -9n, the copyright file; then the control files of dist/debian (control with
# the version, architecture, installed size and the libc6 version the binaries need,
# shlibs, triggers for ldconfig) and md5sums, and dpkg-deb --root-owner-group. Every file is
# dated SOURCE_DATE_EPOCH (default: dist/debian/changelog's date).
set -eu
[ $# -eq 2 ] || { echo "usage: mkdeb.sh BUILD_DIR VERSION" >&2; exit 2; }
BUILD=$1
VERSION=$2
cd "$(dirname "$0")/.."
for t in dpkg-deb dpkg objdump strip; do
    command -v $t >/dev/null || { echo "mkdeb: $t is not installed" >&2; exit 2; }
done
clv=$(sed -n '1s/^inginious-backend (\([^)]*\)).*/\1/p' dist/debian/changelog)
[ "$clv" = "$VERSION" ] || {
    echo "mkdeb: dist/debian/changelog is at $clv, the release is $VERSION: add an entry" >&2
    exit 1
}
ARCH=$(dpkg --print-architecture)
MA=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || ${CC:-cc} -print-multiarch)
: "${SOURCE_DATE_EPOCH:=$(date -d "$(sed -n 's/^ -- .*>  //p' dist/debian/changelog | head -1)" +%s)}"
export SOURCE_DATE_EPOCH
DEB=$BUILD/deb
ROOT=$DEB/root
DOC=$ROOT/usr/share/doc/inginious-backend
rm -rf "$DEB"
mkdir -p "$ROOT"

make --no-print-directory install BUILD="$BUILD" DESTDIR="$(cd "$ROOT" && pwd)" PREFIX=/usr \
    LIBDIR="/usr/lib/$MA" SYSCONFDIR=/etc >/dev/null
for f in "$ROOT"/usr/bin/* "$ROOT/usr/lib/$MA"/libinginious.so.*.*; do
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$f"
done
strip --strip-debug "$ROOT/usr/lib/$MA/libinginious.a"
chmod 644 "$ROOT/usr/lib/$MA"/libinginious.so.*.*
find "$ROOT/usr/share/man" -type f -exec gzip -9 -n {} +
mkdir -p "$DOC"
install -m 644 dist/debian/copyright "$DOC/copyright"
gzip -9 -n -c dist/debian/changelog > "$DOC/changelog.gz"
chmod 644 "$DOC/changelog.gz"

# Depends: the newest GLIBC_ symbol version any binary needs.
glibc=$(objdump -T "$ROOT"/usr/bin/* "$ROOT/usr/lib/$MA"/libinginious.so.*.* |
    grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n -u | tail -1)
size=$(du -sk --apparent-size "$ROOT" | cut -f1)
mkdir -p "$ROOT/DEBIAN"
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@SIZE@|$size|" \
    -e "s|@DEPENDS@|libc6 (>= $glibc)|" dist/debian/control > "$ROOT/DEBIAN/control"
install -m 644 dist/debian/shlibs dist/debian/triggers "$ROOT/DEBIAN/"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    xargs md5sum) > "$ROOT/DEBIAN/md5sums"
chmod 644 "$ROOT"/DEBIAN/*
find "$ROOT" -type d -exec chmod 755 {} +
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

OUT=$BUILD/inginious-backend_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$OUT" >/dev/null
echo "made $OUT (Depends: libc6 (>= $glibc))"
