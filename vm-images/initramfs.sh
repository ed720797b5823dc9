#!/bin/bash
# vm-images/initramfs.sh: the initramfs wisp-init runs from.
#
#   initramfs.sh KERNEL_DIR WISP_INIT OUT EPOCH
#
# KERNEL_DIR is kernel.sh's output (modules/ and modules/order).  Writes OUT, a gzip'd newc
# cpio whose bytes depend only on the inputs (every time is EPOCH, names sorted).  The layout
# is what wisp-init relies on (vm-images/README.md):
#   /init                 WISP_INIT
#   /lib/modules/*.ko     the modules, and /lib/modules/order: their file names in load order
#   /bin/busybox          with applet symlinks in /bin and /sbin
#   /sbin/e2fsck, /sbin/resize2fs (and fsck.ext4, e2fsck's other name) with their shared
#                         libraries and the dynamic loader, copied as ldd lists them
#   /dev/console, /dev/null   so that PID 1 has a console before it mounts devtmpfs
#   /proc /sys /mnt /tmp /run /etc (mtab -> /proc/self/mounts, for e2fsck's mount check)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

(($# == 4)) || die "usage: initramfs.sh KERNEL_DIR WISP_INIT OUT EPOCH"
kdir=$1 init=$2 out=$3 epoch=$4
require cpio gzip ldd file e2fsck resize2fs
[[ -f $kdir/modules/order ]] || die "$kdir/modules/order is missing (run kernel.sh first)"
[[ -f $init && -x $init ]] || die "wisp-init $init is not an executable file"
# wisp-init is PID 1 before anything is mounted: it must not need a loader or libraries.
file -L "$init" | grep -Eq 'statically linked|static-pie linked' ||
    die "$init is not a static executable (wisp-init must be linked statically)"

root=$(mktemp -d "${TMPDIR:-/tmp}/wisp-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{dev,proc,sys,mnt,tmp,run,etc,lib/modules}
chmod 1777 "$root/tmp"
install -m 0755 "$init" "$root/init"
install_busybox "$root" flat

while read -r ko; do
    [[ -n $ko ]] || continue
    [[ -f $kdir/modules/$ko ]] || die "$ko is in the order file but not in $kdir/modules"
    install -m 0644 "$kdir/modules/$ko" "$root/lib/modules/$ko"
done <"$kdir/modules/order"
install -m 0644 "$kdir/modules/order" "$root/lib/modules/order"

# e2fsck and resize2fs are dynamic: copy each library ldd names to the same path, following
# symlinks (the guest needs the file under the name the binary asks for).
for tool in e2fsck resize2fs; do
    bin=$(command -v "$tool")
    rm -f "$root/sbin/$tool" # busybox may have an applet of that name
    install -m 0755 "$bin" "$root/sbin/$tool"
    while read -r lib; do
        mkdir -p "$root${lib%/*}"
        cp -L "$lib" "$root$lib"
    done < <(ldd "$bin" | grep -Eo '/[^ ]+' | LC_ALL=C sort -u)
done
ln -sf e2fsck "$root/sbin/fsck.ext4"
ln -s /proc/self/mounts "$root/etc/mtab"
mknod -m 0600 "$root/dev/console" c 5 1
mknod -m 0666 "$root/dev/null" c 1 3

set_times "$root" "$epoch"
# newc with inode and device numbers renumbered (--reproducible), names sorted, owner root;
# gzip -n leaves out the name and time.
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) |
    gzip -9 -n >"$out"
