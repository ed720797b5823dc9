#!/bin/bash
# vm-images/rootfs.sh: the base root filesystem, an ext4 image made sparse at the disk's size.
#
#   rootfs.sh SIZE OUT EPOCH UUID [TREE]
#
# SIZE is what truncate(1) takes (100G); UUID names the filesystem and seeds its directory
# hash, so that the same inputs give the same bytes (with EPOCH as every time).  The tree is a
# busybox userland plus vm-images/rootfs/ (etc: a root user, hostname, profile), or TREE (the
# --debian base, debian.sh), taken as it is.
#
# Why sparse at the full size and not small and grown at first boot (docs/image.md): the chunk
# store never stores zero chunks and the import skips holes, so the 100 GiB image costs only
# the metadata written, and the guest mounts it without a resize.  The mkfs options make that
# hold after boot too: inode tables and the journal are zeroed here (in the file: holes) and
# flagged so, so the kernel's lazy init has nothing left to write.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

(($# == 4 || $# == 5)) || die "usage: rootfs.sh SIZE OUT EPOCH UUID [TREE]"
size=$1 out=$2 epoch=$3 uuid=$4 tree=${5:-}
skel=$(cd "$(dirname "$0")/rootfs" && pwd)
require mkfs.ext4 debugfs truncate file
((EUID == 0)) || die "must run as root: the files in the image must belong to root"

root=$(mktemp -d "${TMPDIR:-/tmp}/wisp-rootfs.XXXXXX")
trap 'rm -rf "$root" "$root.sif" "$root.err"' EXIT
if [[ -n $tree ]]; then
    [[ -x $tree/bin/sh ]] || die "$tree has no /bin/sh: not a root filesystem"
    rmdir "$root"
    root=$tree
    trap 'rm -f "$root.sif" "$root.err"' EXIT
else
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,lib,etc,root,home,tmp,proc,sys,dev,run,mnt}
    mkdir -p "$root"/{var/tmp,var/log,var/spool}
    install_busybox "$root"
    cp -R "$skel/etc/." "$root/etc/"
    chmod 0755 "$root"
    chmod 0700 "$root/root"
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0640 "$root/etc/shadow"
    chown -R 0:0 "$root"
    set_times "$root" "$epoch"
fi

rm -f "$out"
truncate -s "$size" "$out"
# -m 0: everyone in a sprite is root, so blocks reserved for root protect nothing.
# -J size=128: a 100 GiB filesystem would get a 1 GiB journal, whose blocks the guest fills
#   (and the store then keeps) as it writes; 128 MiB is plenty for one user's VM.
# assume_storage_prezeroed=1 (e2fsprogs 1.47): the file is new and all holes, so mke2fs writes
#   no zeros and marks every group's inode table zeroed; otherwise the guest kernel's lazy
#   init would write GiBs of zeros through the disk after the first mount, and
#   lazy_itable_init=0 alone leaves 136 MiB of fallocated (unwritten) extents in the file.
# E2FSPROGS_FAKE_TIME: the superblock's times are EPOCH too.
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -t ext4 -d "$root" -L wisp-root -m 0 -J size=128 \
    -U "$uuid" -E "hash_seed=$uuid,assume_storage_prezeroed=1,root_owner=0:0" \
    "$out" || die "mkfs.ext4 failed on $out"
# mkfs.ext4 -d copies each file's ctime, which no one can set on the host: set it to EPOCH in
# the image.  Names are quoted for debugfs; the few it could not parse (a double quote or a
# newline in them) keep their ctime.
(cd "$root" && find . ! -name '*"*' ! -name $'*\n*' | sed 's,^\.,,; s,^$,/,' |
    sed "s,.*,sif \"&\" ctime @$epoch,") >"$root.sif"
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$root.sif" "$out" >/dev/null 2>"$root.err" ||
    die "debugfs: $(cat "$root.err")"
if grep -v '^debugfs ' "$root.err" | grep -q .; then
    die "debugfs could not set the times: $(grep -v '^debugfs ' "$root.err" | head -n 3)"
fi
rm -f "$root.sif" "$root.err"
