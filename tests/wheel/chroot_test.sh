#!/bin/bash
# `make test-wheel`: the wheel works on a Linux machine that has Python and nothing else.
#
# usage (root): tests/wheel/chroot_test.sh WHEEL [CACHE_DIR]
#
# 1. `auditwheel show WHEEL` must tag it manylinux (a plain linux_x86_64 wheel fails here).
# 2. A clean Debian 12 (bookworm) chroot: debootstrap --variant=minbase plus python3 and
#    python3-venv from Debian's mirror, nothing else: no compiler, no -dev packages, no libcurl,
#    libh2o or libbson (the test checks that). Built once (about 1-2 min, network) and cached as
#    CACHE_DIR/bookworm-minbase-python3.tar.gz; each run unpacks a fresh copy (seconds).
# 3. Inside it, in private mount and network namespaces (only loopback: the wheel must not need
#    the network, and the demo's ports cannot clash with the host's): a venv, `pip install
#    --no-index WHEEL`, then tests/wheel/inside.py: ldd of the installed extension lists nothing
#    outside p2prpc.libs/ but glibc's libraries and libz (which CPython itself links), and the
#    seed's example (examples/demo.py: a broker, a worker and clientapp.py twice) runs.
# Every failure is reported; the exit status is 1 if any step failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: $0 WHEEL [CACHE_DIR]" >&2; exit 2; }
wheel=$(realpath "$1")
cache=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/p2prpc-build}
auditwheel=${AUDITWHEEL:-$repo/build/wheel-tools/bin/auditwheel}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball=$cache/bookworm-minbase-python3.tar.gz
[ "$(id -u)" = 0 ] || { echo "$0: needs root (debootstrap, chroot, unshare)" >&2; exit 2; }
failed=0
t0=$(date +%s)
step() { echo "== test-wheel [$(( $(date +%s) - t0 ))s] $*"; }

step "auditwheel show $(basename "$wheel")"
show=$("$auditwheel" show "$wheel" 2>&1) || true
echo "$show"
if ! tr '\n' ' ' <<<"$show" | grep -Eq 'consistent with the following platform tag: "manylinux_[0-9]+_[0-9]+_x86_64"' ||
   [[ $(basename "$wheel") != *-manylinux_* ]]; then
  echo "FAIL: auditwheel does not call this a manylinux wheel" >&2
  failed=1
fi

if [ ! -f "$tarball" ]; then
  step "building the chroot (debootstrap bookworm minbase + python3 python3-venv from $mirror)"
  command -v debootstrap >/dev/null || { echo "$0: debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
  mkdir -p "$cache"
  build=$(mktemp -d "$cache/debootstrap.XXXXXX")
  trap 'rm -rf --one-file-system "$build"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$build/root" "$mirror" \
    >"$build/log" 2>&1 || { tail -30 "$build/log" >&2; echo "$0: debootstrap failed" >&2; exit 2; }
  rm -rf "$build"/root/var/cache/apt/archives/*.deb "$build"/root/var/lib/apt/lists/*
  tar -C "$build/root" --numeric-owner -czf "$build/root.tar.gz" .
  mv "$build/root.tar.gz" "$tarball"
  rm -rf --one-file-system "$build"
  trap - EXIT
fi

work=$(mktemp -d /tmp/p2prpc-test-wheel.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
root=$work/root
step "unpacking a fresh chroot from $tarball"
mkdir "$root"
tar -C "$root" --numeric-owner -xzf "$tarball"
mkdir "$root/test"
cp "$wheel" "$root/test/"
cp -r "$repo/examples" "$root/test/examples"
cp "$here/inside.py" "$root/test/"

step "in the chroot: venv, pip install --no-index $(basename "$wheel"), inside.py"
# The mounts live in the private namespace and go away with it.
if ! unshare --mount --net --propagation private --fork -- /bin/sh -ec '
  ip link set lo up
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  exec env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 /usr/sbin/chroot "$1" /bin/sh -ec "
    cd /test
    python3 -m venv /opt/venv
    /opt/venv/bin/python -m pip install -q --no-index --no-cache-dir ./$2
    /opt/venv/bin/python inside.py"
' sh "$root" "$(basename "$wheel")"; then
  echo "FAIL: the wheel does not work in a clean chroot" >&2
  failed=1
fi

step "$([ $failed = 0 ] && echo PASS || echo FAIL) ($(basename "$wheel"))"
exit $failed
