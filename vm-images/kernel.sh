#!/bin/bash
# vm-images/kernel.sh: the guest kernel from Debian's package, ready for PVH boot.
#
#   kernel.sh DEB OUTDIR MODULE...
#
# DEB is a linux-image-6.1.0-*-amd64 package (apt-get download, see build-image).  Writes:
#   OUTDIR/vmlinux          the uncompressed kernel (an ELF with the PVH note; QEMU -kernel
#                           boots it directly, about 4 s faster under TCG than the bzImage)
#   OUTDIR/modules/*.ko     MODULE... and everything they need, softdeps included
#   OUTDIR/modules/order    their file names, one a line, in load order
#   OUTDIR/kernel-release   the release string (uname -r in the guest)
#   OUTDIR/source-date-epoch  the package's vmlinuz time, for reproducible images
set -euo pipefail

die() { echo "kernel.sh: $*" >&2; exit 1; }

(($# >= 3)) || die "usage: kernel.sh DEB OUTDIR MODULE..."
deb=$1 out=$2
shift 2
[[ -f $deb ]] || die "no package file $deb"
for tool in dpkg-deb xz depmod modprobe readelf; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/deps installs it)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/wisp-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT

dpkg-deb -x "$deb" "$work/pkg"
vmlinuz=$(find "$work/pkg/boot" -name 'vmlinuz-*' -print -quit)
[[ -n $vmlinuz ]] || die "$deb holds no /boot/vmlinuz-*"
release=${vmlinuz##*/vmlinuz-}
config=$work/pkg/boot/config-$release
grep -qx 'CONFIG_KERNEL_XZ=y' "$config" ||
    die "$release is not xz-compressed (CONFIG_KERNEL_XZ); only that is extracted here"
grep -qx 'CONFIG_PVH=y' "$config" || die "$release has no PVH entry point (CONFIG_PVH)"

# The bzImage is a boot stub followed by the xz-compressed vmlinux: find the xz stream's magic
# and decompress that one stream (--single-stream ignores what follows it).
offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1)
[[ -n $offset ]] || die "no xz stream in $vmlinuz"
# (xz stops reading early, so tail must not be in a pipeline that pipefail judges.)
xz -dc --single-stream < <(tail -c +$((offset + 1)) "$vmlinuz") >"$out/vmlinux" ||
    die "xz could not decompress the kernel in $vmlinuz"
readelf -n "$out/vmlinux" 2>/dev/null | grep -q 'Xen.*0x00000012' ||
    die "the extracted vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"

# Load order: modprobe resolves dependencies and softdeps (ext4 wants crc32c first) from the
# modules.dep that depmod writes for the unpacked tree, without touching the host's modules.
depmod -b "$work/pkg" "$release" || die "depmod failed for $release"
mkdir -p "$out/modules"
: >"$out/modules/order"
for mod in "$@"; do
    lines=$(modprobe -d "$work/pkg" -S "$release" --show-depends "$mod") ||
        die "module $mod: not in $release"
    while read -r verb path _; do
        [[ $verb == insmod ]] || continue # "builtin NAME": nothing to load
        file=${path##*/}
        grep -qxF "$file" "$out/modules/order" && continue
        cp "$path" "$out/modules/$file"
        echo "$file" >>"$out/modules/order"
    done <<<"$lines"
done
echo "$release" >"$out/kernel-release"
# The kernel's build time: every time in the image is this one, so its bytes do not depend on
# when it was made.
stat -c %Y "$vmlinuz" >"$out/source-date-epoch"
