#!/bin/bash
# tests/image/image-build.sh: builds the VM image twice into a private cache and checks it
# (see meson.build here).  Environment: WISP_BUILD_IMAGE (the script), WISP_INIT (the
# wisp-init to use if it exists), WISP_TEST_KEEP=1 keeps the work directory.
#
#   image-build.sh            the standard (busybox) image, every check
#   image-build.sh --debian   the --debian variant: its root filesystem and the cache
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '[%5ds] %s\n' $((SECONDS)) "$*"; }

build_image=${WISP_BUILD_IMAGE:?run it with meson test}
((EUID == 0)) || skip "build-image needs root"
command -v apt-get >/dev/null || skip "not a Debian system (no apt-get)"

work=$(mktemp -d "${TMPDIR:-/tmp}/wisp-image-test.XXXXXX")
cleanup() {
    if [[ ${WISP_TEST_KEEP:-} == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

real_init=
if [[ -n ${WISP_INIT:-} && -f $WISP_INIT ]]; then
    init=$WISP_INIT real_init=1
    step "wisp-init: $init"
else
    init=$(command -v busybox) || skip "busybox-static is not installed (scripts/deps)"
    step "no wisp-init built here (${WISP_INIT:-unset}): busybox stands in for /init"
fi

if [[ ${1:-} == --debian ]]; then
    command -v debootstrap >/dev/null || skip "debootstrap is not installed (scripts/deps)"
    "$build_image" "$work/out" --wisp-init "$init" --cache "$work/cache" --debian \
        2>"$work/build1.err" || fail "build-image --debian failed: $(cat "$work/build1.err")"
    step "$(tail -n 1 "$work/build1.err")"
    cd "$work/out"
    e2fsck -fn rootfs.ext4 >"$work/fsck.out" 2>&1 || fail "e2fsck -fn: $(cat "$work/fsck.out")"
    debugfs -R 'cat /etc/debian_version' rootfs.ext4 2>/dev/null | grep -q '^12\.' ||
        fail "no Debian 12 in the rootfs"
    debugfs -R 'stat /usr/bin/apt-get' rootfs.ext4 2>&1 | grep -q 'Inode:' || fail "no apt-get"
    debugfs -R 'cat /etc/shadow' rootfs.ext4 2>/dev/null | grep -q '^root:\*:' ||
        fail "root has a password in the Debian base"
    python3 -c 'import json,sys; j=json.load(open("image.json")); assert j["variant"] == "debian"' ||
        fail "image.json does not say variant debian"
    "$build_image" "$work/out2" --wisp-init "$init" --cache "$work/cache" --debian \
        2>"$work/build2.err" || fail "second build-image --debian failed"
    grep -q 'cache hit' "$work/build2.err" || fail "not a cache hit: $(cat "$work/build2.err")"
    step "$(tail -n 1 "$work/build2.err")"
    step "ok"
    exit 0
fi

# ---- 1. a build into an empty cache ---------------------------------------------------------
"$build_image" "$work/out" --wisp-init "$init" --cache "$work/cache" 2>"$work/build1.err" ||
    fail "build-image failed: $(cat "$work/build1.err")"
grep -q 'built' "$work/build1.err" || fail "first build was not a build: $(cat "$work/build1.err")"
step "$(tail -n 1 "$work/build1.err")"
cd "$work/out"
for f in vmlinux initramfs.cpio.gz rootfs.ext4 image.json; do
    [[ -s $f ]] || fail "no $f in the output"
done

# ---- 2. the kernel --------------------------------------------------------------------------
file vmlinux | grep -q 'ELF 64-bit LSB executable, x86-64' || fail "vmlinux: $(file vmlinux)"
readelf -n vmlinux | grep -q 'Xen.*0x00000012' || fail "vmlinux has no PVH entry note"
step "vmlinux: $(stat -c %s vmlinux) bytes, ELF with the PVH note"

# ---- 3. the initramfs -----------------------------------------------------------------------
file -L initramfs.cpio.gz | grep -q 'gzip compressed' || fail "initramfs: $(file initramfs.cpio.gz)"
mkdir "$work/initrd"
(cd "$work/initrd" && zcat "$work/out/initramfs.cpio.gz" | cpio -id --quiet) ||
    fail "the initramfs does not unpack"
zcat initramfs.cpio.gz | cpio -t --quiet >"$work/initrd.list"
for path in init bin/busybox bin/sh sbin/e2fsck sbin/resize2fs lib/modules/order dev/console \
    dev/null proc sys mnt tmp; do
    grep -qx "$path" "$work/initrd.list" || fail "the initramfs has no /$path"
done
[[ -x $work/initrd/init ]] || fail "/init is not executable"
if [[ -n $real_init ]]; then
    cmp -s "$work/initrd/init" "$init" || fail "/init is not $init"
fi
order=$work/initrd/lib/modules/order
while read -r ko; do
    [[ -f $work/initrd/lib/modules/$ko ]] || fail "$ko is in lib/modules/order but not there"
done <"$order"
for ko in virtio_mmio.ko virtio_blk.ko virtio_console.ko ext4.ko; do
    grep -qx "$ko" "$order" || fail "$ko is not in lib/modules/order"
done
line() { grep -nx "$1" "$order" | cut -d: -f1; }
(($(line virtio.ko) < $(line virtio_mmio.ko))) || fail "virtio.ko must load before virtio_mmio.ko"
(($(line jbd2.ko) < $(line ext4.ko))) || fail "jbd2.ko must load before ext4.ko"
(($(line crc32c_generic.ko) < $(line ext4.ko))) || fail "crc32c must load before ext4.ko"
# e2fsck and resize2fs run from the initramfs alone: their libraries were all copied.
chroot "$work/initrd" /sbin/e2fsck -V >/dev/null 2>&1 || fail "e2fsck does not run in the initramfs"
# (resize2fs without arguments prints its usage and exits 1: it ran if it printed that)
out=$(chroot "$work/initrd" /sbin/resize2fs 2>&1 || true)
[[ $out == *Usage:* ]] || fail "resize2fs does not run in the initramfs: $out"
chroot "$work/initrd" /bin/sh -c 'ls /bin >/dev/null' || fail "busybox sh does not run"
step "initramfs: $(stat -c %s initramfs.cpio.gz) bytes, $(wc -l <"$order") modules, e2fsck runs"

# ---- 4. the root filesystem -------------------------------------------------------------------
file rootfs.ext4 | grep -q 'ext4 filesystem data' || fail "rootfs: $(file rootfs.ext4)"
e2fsck -fn rootfs.ext4 >"$work/fsck.out" 2>&1 || fail "e2fsck -fn: $(cat "$work/fsck.out")"
apparent=$(stat -c %s rootfs.ext4)
allocated=$(($(stat -c %b rootfs.ext4) * $(stat -c %B rootfs.ext4)))
((apparent == 100 << 30)) || fail "rootfs.ext4 is $apparent bytes, expected 100 GiB"
((allocated < 64 << 20)) || fail "rootfs.ext4 allocates $allocated bytes: not sparse"
debugfs -R 'ls -l /bin' rootfs.ext4 2>/dev/null | grep -q ' busybox' || fail "no /bin/busybox"
debugfs -R 'cat /etc/passwd' rootfs.ext4 2>/dev/null | grep -q '^root:x:0:0:.*:/bin/sh$' ||
    fail "/etc/passwd has no root with /bin/sh"
debugfs -R 'stat /tmp' rootfs.ext4 2>/dev/null | grep -q 'Mode:  01777' || fail "/tmp is not 1777"
for d in root home proc sys dev run etc/hostname etc/profile bin/sh; do
    debugfs -R "stat /$d" rootfs.ext4 2>&1 | grep -q 'Inode:' || fail "no /$d in the rootfs"
done
# Nothing left for the guest kernel's lazy init: every group's inode table is zeroed.
groups=$(dumpe2fs rootfs.ext4 2>/dev/null | grep -c '^Group [0-9]*:')
zeroed=$(dumpe2fs rootfs.ext4 2>/dev/null | grep '^Group [0-9]*:' | grep -c 'ITABLE_ZEROED')
((groups > 0 && groups == zeroed)) || fail "$zeroed of $groups groups have ITABLE_ZEROED"
step "rootfs: $apparent bytes apparent, $allocated allocated, $groups groups zeroed, fsck clean"

# ---- 5. image.json ----------------------------------------------------------------------------
python3 - "$work/out" <<'PY' || fail "image.json does not describe the files"
import hashlib, json, os, sys
d = sys.argv[1]
j = json.load(open(d + "/image.json"))
assert len(j["input_hash"]) == 64, "input_hash"
assert j["kernel"]["package"].startswith("linux-image-6.1.0-"), j["kernel"]
for name in ("vmlinux", "initramfs.cpio.gz"):
    data = open(d + "/" + name, "rb").read()
    assert j["files"][name]["bytes"] == len(data), name
    assert j["files"][name]["sha256"] == hashlib.sha256(data).hexdigest(), name
r = j["files"]["rootfs.ext4"]
assert r["apparent_bytes"] == os.path.getsize(d + "/rootfs.ext4"), "apparent_bytes"
assert 0 < r["data_blocks"] < 200, r
print("image.json: kernel %s, input hash %s" % (j["kernel"]["release"], j["input_hash"][:16]))
PY

# ---- 6. the same inputs again: a cache hit, the same bytes ------------------------------------
start=$SECONDS
"$build_image" "$work/out2" --wisp-init "$init" --cache "$work/cache" 2>"$work/build2.err" ||
    fail "second build-image failed: $(cat "$work/build2.err")"
grep -q 'cache hit' "$work/build2.err" || fail "second build was not a cache hit: $(cat "$work/build2.err")"
((SECONDS - start < 30)) || fail "the cache hit took $((SECONDS - start)) s"
cmp -s "$work/out/image.json" "$work/out2/image.json" || fail "image.json differs on a cache hit"
cmp -s "$work/out/initramfs.cpio.gz" "$work/out2/initramfs.cpio.gz" || fail "initramfs differs"
step "$(tail -n 1 "$work/build2.err")"

# ---- 7. a damaged cache entry is rebuilt, to the same bytes (reproducible) ----------------------
entry=$(find "$work/cache" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
    -regex '.*/[0-9a-f]{64}' | head -n 1)
[[ -f $entry/initramfs.cpio.gz ]] || fail "no cache entry in $work/cache"
python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 0xFF]))' "$entry/initramfs.cpio.gz"
"$build_image" "$work/out3" --wisp-init "$init" --cache "$work/cache" 2>"$work/build3.err" ||
    fail "third build-image failed: $(cat "$work/build3.err")"
grep -q 'built' "$work/build3.err" || fail "a damaged entry was used: $(cat "$work/build3.err")"
cmp -s "$work/out/image.json" "$work/out3/image.json" || fail "a rebuild gave other bytes"
step "damaged entry rebuilt, same image.json (the build is reproducible)"

# ---- 8. a changed input is a new entry --------------------------------------------------------
"$build_image" "$work/out4" --wisp-init "$init" --cache "$work/cache" --size 1G \
    2>"$work/build4.err" || fail "--size 1G failed: $(cat "$work/build4.err")"
grep -q 'built' "$work/build4.err" || fail "--size 1G was not built: $(cat "$work/build4.err")"
(($(stat -c %s "$work/out4/rootfs.ext4") == 1 << 30)) || fail "--size 1G gave another size"
step "--size 1G: a new entry"
step "ok"
