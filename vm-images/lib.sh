# vm-images/lib.sh: helpers the image scripts share (sourced, not run).

# Prints "<script>: message" to stderr and exits 1.
die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# require TOOL...: fails naming the first tool that is not on PATH.
require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/deps installs it)"
    done
}

# install_busybox ROOT [flat]: the static busybox as ROOT/bin/busybox with a symlink for each
# applet where busybox itself puts it (bin, sbin, usr/bin, usr/sbin).  With "flat", usr/bin
# and usr/sbin applets go to bin and sbin (the initramfs has no /usr).
install_busybox() {
    local root=$1 flat=${2:-} bb applet dir
    bb=$(command -v busybox) || die "busybox is missing (scripts/deps installs busybox-static)"
    # busybox-static's binary must not need a loader: the initramfs and the base have none
    # (besides the one e2fsck brings into the initramfs).
    file -L "$bb" | grep -q 'statically linked' || die "$bb is not static: install busybox-static"
    mkdir -p "$root/bin" "$root/sbin"
    install -m 0755 "$bb" "$root/bin/busybox"
    while read -r applet; do
        [[ $applet == */* ]] || continue # linuxrc: not wanted
        dir=${applet%/*}
        [[ -n $flat ]] && dir=${dir#usr/}
        mkdir -p "$root/$dir"
        [[ -e $root/$dir/${applet##*/} ]] || ln -s /bin/busybox "$root/$dir/${applet##*/}"
    done < <("$root/bin/busybox" --list-full | LC_ALL=C sort)
}

# set_times ROOT EPOCH: every file's times to EPOCH (symlinks themselves too), so that the
# archive and the filesystem do not depend on when they were built.
set_times() {
    find "$1" -exec touch -h -d "@$2" {} +
}
