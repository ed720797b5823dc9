#!/usr/bin/python3
"""hold_disks.py SOCKET PREFIX COUNT READY_FILE: opens one NBD connection to each of the exports
PREFIX000 .. PREFIX{COUNT-1} on the unix socket, writes 4 KiB of random data at offset 0 of each,
flushes, reads it back and checks it, then writes READY_FILE and holds every connection open
until SIGTERM.  Used by scripts/bench storage to measure the server's memory with COUNT open
disks.  Needs python3-libnbd (run it with /usr/bin/python3)."""
import os
import signal
import sys

import nbd


def main():
    sock, prefix, count, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    handles = []
    for i in range(count):
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///{prefix}{i:03d}?socket={sock}")
        data = os.urandom(4096)
        h.pwrite(data, 0)
        h.flush()
        if h.pread(4096, 0) != data:
            sys.exit(f"{prefix}{i:03d}: read back different data")
        handles.append(h)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(ready + ".tmp", "w") as f:
        f.write(f"{len(handles)}\n")
    os.rename(ready + ".tmp", ready)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
