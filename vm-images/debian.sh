#!/bin/bash
# vm-images/debian.sh: the tree of the --debian base, a minimal Debian 12 from the mirror.
#
#   debian.sh TREE MIRROR EPOCH
#
# debootstrap --variant=minbase bookworm into TREE (which must not exist), then the same /etc
# files the busybox base has where Debian's need changing (hostname, hosts, a root without a
# password), and the downloaded package files and lists removed: apt-get update fetches the
# lists again inside a sprite.  Not bit-reproducible (dpkg's logs and database carry times of
# their own); build-image caches it by the mirror's InRelease instead.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

(($# == 3)) || die "usage: debian.sh TREE MIRROR EPOCH"
tree=$1 mirror=$2 epoch=$3
skel=$(cd "$(dirname "$0")/rootfs" && pwd)
require debootstrap
((EUID == 0)) || die "must run as root (debootstrap)"
[[ ! -e $tree ]] || die "$tree exists"

log=$(mktemp "${TMPDIR:-/tmp}/wisp-debootstrap.XXXXXX")
trap 'rm -f "$log"' EXIT
if ! debootstrap --variant=minbase bookworm "$tree" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "debootstrap from $mirror failed"
fi

cp "$skel/etc/hostname" "$skel/etc/hosts" "$tree/etc/"
# root without a password (exec goes through wisp-init, not login), as in the busybox base.
sed -i 's/^root:[^:]*:/root:*:/' "$tree/etc/shadow"
echo "deb $mirror bookworm main" >"$tree/etc/apt/sources.list"
# Each sprite gets its own machine-id at first boot (systemd's convention: empty file).
: >"$tree/etc/machine-id"
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/cache/apt/*.bin \
    "$tree"/var/lib/apt/lists/* "$tree"/var/log/bootstrap.log "$tree"/var/log/apt/* \
    "$tree"/var/log/dpkg.log
mkdir -p "$tree/var/lib/apt/lists/partial"
set_times "$tree" "$epoch"
