#!/bin/bash
# forensics: the walk-through of docs/forensics.md, step by step, with a real server.
#
#   1. an ext4 image (mkfs.ext4 -d with a few files and directories) is copied into a Wisp disk
#      with `nbdcopy --flush`, and checkpointed;
#   2. the live disk then changes (a file added with `debugfs -w`, copied in again);
#   3. the checkpoint export DISK@CKPT: `nbdinfo` shows it read-only with an ext4 filesystem;
#      `nbdcopy` of it to a file is byte for byte the original image; `qemu-img compare` agrees;
#   4. `nbdfuse --readonly` exposes it as a file: `debugfs -R 'ls -l /'` lists the files of the
#      original (not the later one), `debugfs -R 'cat'` prints their content, writes to the file
#      fail; `fuse2fs -o ro,fakeroot` mounts it when fuse2fs is installed;
#   5. unmounted with fusermount3 (or fusermount, or umount).
#
# Exits 77 (skipped) when nbdkit, nbdinfo, nbdcopy, nbdfuse, mkfs.ext4, debugfs or /dev/fuse
# is missing, or when FUSE mounts are not permitted here.  A trap unmounts, stops every process
# it started and removes its files on any exit, failures and signals included.
#
# Environment: WISP_PLUGIN, WISP_CLI (set by meson); WISP_NBDKIT_PRELOAD (sanitizer runtime for
# nbdkit in sanitizer builds); WISP_TEST_KEEP=1 keeps the directory.
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '[%6.2fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')" "$*"; }
t0=$(date +%s.%N)

PLUGIN=${WISP_PLUGIN:-}
WISP=${WISP_CLI:-}
[[ -n $PLUGIN && -r $PLUGIN && -n $WISP && -x $WISP ]] ||
    skip "WISP_PLUGIN and WISP_CLI are not set or not built (run it with meson test)"
for tool in nbdkit nbdinfo nbdcopy nbdfuse mkfs.ext4 debugfs cmp awk; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (it is in scripts/deps)"
done
[[ -c /dev/fuse ]] || skip "/dev/fuse is missing: no FUSE here"
if command -v fusermount3 >/dev/null; then
    unmount_cmd=(fusermount3 -u)
elif command -v fusermount >/dev/null; then
    unmount_cmd=(fusermount -u)
else
    unmount_cmd=(umount)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/wft-forensics-XXXXXX")
SOCK=$dir/nbd.sock
CTL=$dir/ctl
mounts=()   # mount points to unmount on exit
pids=()     # processes to stop on exit
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    for m in "${mounts[@]}"; do
        if mountpoint -q "$m" 2>/dev/null || grep -q " $m " /proc/mounts; then
            "${unmount_cmd[@]}" "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        fi
    done
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    for m in "${mounts[@]}"; do
        grep -q " $m " /proc/mounts && echo "forensics: $m is still mounted" >&2 && rc=1
    done
    if [[ $rc -ne 0 && $rc -ne 77 && -f $dir/nbdkit.log ]]; then
        echo "---- nbdkit log ----" >&2
        tail -n 40 "$dir/nbdkit.log" >&2
    fi
    if [[ ${WISP_TEST_KEEP:-} == 1 ]]; then
        echo "forensics: kept $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# ---- the server ----------------------------------------------------------------------------
mkdir -p "$dir/store"
env ${WISP_NBDKIT_PRELOAD:+LD_PRELOAD=$WISP_NBDKIT_PRELOAD ASAN_OPTIONS=detect_leaks=0} \
    nbdkit -f -U "$SOCK" "$PLUGIN" store="file://$dir/store" cache="$dir/cache" \
    meta="$dir/meta" control="$CTL" >"$dir/nbdkit.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
    [[ -S $CTL && -S $SOCK ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || fail "nbdkit exited at start-up: $(cat "$dir/nbdkit.log")"
    sleep 0.1
done
[[ -S $CTL ]] || fail "nbdkit did not start within 60 s"
export WISP_CONTROL=$CTL
step "server started"

# ---- 1. an ext4 image, copied into a disk and checkpointed ---------------------------------
mkdir -p "$dir/src/etc" "$dir/src/home/alice/notes" "$dir/src/var/log"
echo "evidence-host" >"$dir/src/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n' \
    >"$dir/src/etc/passwd"
echo "meet at noon" >"$dir/src/home/alice/notes/todo.txt"
head -c 300000 /dev/urandom >"$dir/src/home/alice/blob.bin"
for i in $(seq 1 50); do echo "log line $i"; done >"$dir/src/var/log/syslog"
truncate -s 64M "$dir/fs.img"
mkfs.ext4 -q -F -L evidence -d "$dir/src" "$dir/fs.img"
debugfs -R 'ls -l /etc' "$dir/fs.img" 2>/dev/null | grep -q hostname ||
    fail "mkfs.ext4 -d did not add the files"

"$WISP" disk create evidence --size 64M --chunk-size 64K >/dev/null
nbdcopy --flush "$dir/fs.img" "nbd+unix:///evidence?socket=$SOCK"
"$WISP" disk checkpoint evidence seized --comment "image as received" >/dev/null
"$WISP" disk checkpoints evidence | grep -q "^seized .*image as received" ||
    fail "the checkpoint is not listed: $("$WISP" disk checkpoints evidence)"
step "image copied into disk 'evidence' and checkpointed as 'seized'"

# ---- 2. the live disk changes afterwards ---------------------------------------------------
cp "$dir/fs.img" "$dir/fs2.img"
echo "written after the checkpoint" >"$dir/later.txt"
debugfs -w -R "write $dir/later.txt later.txt" "$dir/fs2.img" >/dev/null 2>&1
debugfs -R 'ls -l /' "$dir/fs2.img" 2>/dev/null | grep -q later.txt ||
    fail "debugfs -w did not add later.txt"
nbdcopy --flush "$dir/fs2.img" "nbd+unix:///evidence?socket=$SOCK"
step "the live disk changed (later.txt added)"

# ---- 3. nbdinfo, nbdcopy, qemu-img ---------------------------------------------------------
URI="nbd+unix:///evidence@seized?socket=$SOCK"
info=$(nbdinfo "$URI")
echo "$info" | grep -q 'export-size: 67108864' || fail "nbdinfo: size: $info"
echo "$info" | grep -q 'is_read_only: true' || fail "nbdinfo: not read-only: $info"
echo "$info" | grep -q 'ext4 filesystem' || fail "nbdinfo: no ext4 content: $info"
echo "$info" | grep -q 'volume name "evidence"' || fail "nbdinfo: label: $info"
nbdinfo --list "nbd+unix://?socket=$SOCK" | grep -q 'export="evidence"' ||
    fail "nbdinfo --list does not list the disk"
step "nbdinfo: 64 MiB, read-only, ext4 labelled 'evidence'"

nbdcopy "$URI" "$dir/seized.img"
cmp "$dir/fs.img" "$dir/seized.img" || fail "the copy of the checkpoint differs from the image"
nbdcopy "nbd+unix:///evidence?socket=$SOCK" "$dir/head.img"
cmp -s "$dir/fs2.img" "$dir/head.img" || fail "the copy of the head differs from the second image"
cmp -s "$dir/fs.img" "$dir/head.img" && fail "the head did not change"
step "nbdcopy of the checkpoint is the original image, byte for byte"

if command -v qemu-img >/dev/null; then
    qemu-img info --output=json "$URI" | grep -q '"virtual-size": 67108864' ||
        fail "qemu-img info: $(qemu-img info "$URI")"
    qemu-img compare -f raw -F raw "$dir/fs.img" "$URI" >/dev/null ||
        fail "qemu-img compare: the checkpoint differs from the image"
    qemu-img convert -O qcow2 "$URI" "$dir/seized.qcow2"
    qemu-img compare -f raw -F qcow2 "$dir/fs.img" "$dir/seized.qcow2" >/dev/null ||
        fail "qemu-img convert to qcow2 differs"
    step "qemu-img info, compare and convert read the checkpoint"
else
    step "qemu-img is not installed: its steps are skipped"
fi

# ---- 4. nbdfuse + debugfs (+ fuse2fs) ------------------------------------------------------
mkdir -p "$dir/mnt"
mounts+=("$dir/mnt")
nbdfuse --readonly -P "$dir/nbdfuse.pid" "$dir/mnt/disk.img" "$URI" 2>"$dir/nbdfuse.err" &
fuse_pid=$!
pids+=("$fuse_pid")
for _ in $(seq 300); do
    [[ -s $dir/nbdfuse.pid ]] && break
    if ! kill -0 "$fuse_pid" 2>/dev/null; then
        err=$(cat "$dir/nbdfuse.err")
        case $err in
        *"ermission denied"* | *"ot permitted"* | *"fuse: device not found"* | *"fusermount"*)
            skip "FUSE mounts are not permitted here: $err" ;;
        esac
        fail "nbdfuse exited: $err"
    fi
    sleep 0.1
done
[[ -s $dir/nbdfuse.pid ]] || fail "nbdfuse did not come up within 30 s"
[[ $(stat -c %s "$dir/mnt/disk.img") -eq 67108864 ]] || fail "the fuse file's size: $(ls -l "$dir/mnt")"
step "nbdfuse exposes evidence@seized as $dir/mnt/disk.img"

listing=$(debugfs -R 'ls -l /' "$dir/mnt/disk.img" 2>/dev/null)
for f in etc home var lost+found; do
    echo "$listing" | grep -q " $f\$" || fail "debugfs ls -l / lacks $f: $listing"
done
echo "$listing" | grep -q later.txt && fail "the checkpoint shows a file written after it"
debugfs -R 'ls -l /home/alice' "$dir/mnt/disk.img" 2>/dev/null | grep -q ' 300000 .*blob.bin$' ||
    fail "debugfs: /home/alice/blob.bin: $(debugfs -R 'ls -l /home/alice' "$dir/mnt/disk.img")"
[[ $(debugfs -R 'cat /home/alice/notes/todo.txt' "$dir/mnt/disk.img" 2>/dev/null) == "meet at noon" ]] ||
    fail "debugfs cat of todo.txt"
debugfs -R "dump /home/alice/blob.bin $dir/blob.out" "$dir/mnt/disk.img" >/dev/null 2>&1
cmp "$dir/src/home/alice/blob.bin" "$dir/blob.out" || fail "debugfs dump of blob.bin differs"
step "debugfs lists and reads the checkpoint's files (not the later one)"
echo "$listing" | sed 's/^/    /'

if dd if=/dev/zero of="$dir/mnt/disk.img" bs=4096 count=1 conv=notrunc,nocreat 2>/dev/null; then
    fail "a write to the read-only fuse file succeeded"
fi
cmp "$dir/fs.img" "$dir/mnt/disk.img" || fail "the fuse file differs from the image"
step "writes to the fuse file fail; its content is the image"

if command -v fuse2fs >/dev/null; then
    mkdir -p "$dir/fs"
    mounts=("$dir/fs" "${mounts[@]}")
    fuse2fs -o ro,fakeroot "$dir/mnt/disk.img" "$dir/fs"
    [[ $(cat "$dir/fs/etc/hostname") == evidence-host ]] || fail "fuse2fs: /etc/hostname"
    "${unmount_cmd[@]}" "$dir/fs"
    step "fuse2fs -o ro,fakeroot mounts the filesystem"
else
    step "fuse2fs is not installed: its step is skipped"
fi

# ---- 5. unmount ------------------------------------------------------------------------------
"${unmount_cmd[@]}" "$dir/mnt"
for _ in $(seq 100); do
    kill -0 "$fuse_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$fuse_pid" 2>/dev/null && fail "nbdfuse did not exit after ${unmount_cmd[*]}"
grep -q " $dir/mnt " /proc/mounts && fail "$dir/mnt is still mounted"
step "unmounted with ${unmount_cmd[*]}"

# The checkpoint can go once nothing reads it.
"$WISP" disk checkpoint-delete evidence seized

# The server stops cleanly (in a sanitizer build, a finding would make it fail here).
kill -TERM "${pids[0]}"
status=0
wait "${pids[0]}" || status=$?
pids=("${pids[@]:1}")
[[ $status -eq 0 ]] || fail "nbdkit exited with status $status after SIGTERM"
grep -q 'Sanitizer' "$dir/nbdkit.log" && fail "a sanitizer finding in the nbdkit log"
step "forensics: all checks passed"
