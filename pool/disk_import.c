/* disk_import.c: a file's data into a Wisp disk through nbdkit and libnbd (see disk_import.h). */
#include "disk_import.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <libnbd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Flush (upload and commit) after this much data, so that the dirty data nbdkit must keep in
 * its cache stays far below the default cache-size (10G) whatever the file's size. */
#define DISK_IMPORT_FLUSH_EVERY (1ULL << 30)
/* How long nbdkit may take to start and answer the handshake, and to finish after the
 * connection closes (its last upload round is already done then: the flush waited for it).
 * After a failure it gets only DISK_IMPORT_KILL_TIMEOUT_S after a SIGTERM. */
#define DISK_IMPORT_START_TIMEOUT_S 60
#define DISK_IMPORT_EXIT_TIMEOUT_S  60
#define DISK_IMPORT_KILL_TIMEOUT_S  5

static double disk_import_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int disk_import_fail(char *why, size_t len, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int disk_import_fail(char *why, size_t len, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    log_error("import", "%s", why);
    return err;
}

/* Starts `nbdkit -s` on one end of a socketpair; returns the other end, or -errno. */
static int disk_import_spawn(const struct disk_import_options *o, pid_t *pid, char *why,
                             size_t why_len)
{
    char *store = NULL, *cache = NULL, *meta = NULL;
    int sv[2], err;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return disk_import_fail(why, why_len, -errno, "socketpair: %s", strerror(errno));
    /* GLib aborts when out of memory, as everywhere in the CLI. */
    store = g_strdup_printf("store=%s", o->store_url);
    cache = g_strdup_printf("cache=%s", o->cache_dir);
    meta = g_strdup_printf("meta=%s", o->meta_dir);
    /* -s: one connection on stdin/stdout, and nbdkit exits when it closes.  durability=remote
     * without shipping the log: a flush returns once the data is uploaded and committed to the
     * head.  No GC or statistics in a process that lives for one import. */
    const char *argv[16];
    int n = 0;
    argv[n++] = "nbdkit";
    argv[n++] = "-s";
    argv[n++] = "--exit-with-parent";
    argv[n++] = o->plugin;
    argv[n++] = store;
    argv[n++] = cache;
    argv[n++] = meta;
    argv[n++] = "durability=remote";
    argv[n++] = "ship-log=false";
    argv[n++] = "gc-interval=0";
    argv[n++] = "stats-interval=0";
    /* WISP_NBDKIT_PRELOAD (set by the tests of a sanitizer build, as for the servers their
     * fixtures start): nbdkit is not instrumented, so the plugin's sanitizer runtime must be
     * preloaded into it.  There nbdkit hangs at exit in p11-kit's destructor once leases are
     * on (docs/storage.md), so leases are off. */
    const char *preload = getenv("WISP_NBDKIT_PRELOAD");
    if (preload && *preload)
        argv[n++] = "lease-ttl=0";
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    *pid = fork();
    if (*pid < 0) {
        err = disk_import_fail(why, why_len, -errno, "fork: %s", strerror(errno));
        goto fail;
    }
    if (*pid == 0) {
        int log = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (log < 0 || dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0 || dup2(log, 2) < 0)
            _exit(126);
        signal(SIGPIPE, SIG_DFL);
        /* A process group of its own: ^C on the terminal reaches only the CLI, which stops
         * the copy and then nbdkit in order.  --exit-with-parent covers the CLI dying. */
        if (setpgid(0, 0) < 0)
            _exit(124);
        signal(SIGINT, SIG_IGN);
        /* nbdkit's own leaks are not ours to find. */
        if (preload && *preload &&
            (setenv("LD_PRELOAD", preload, 1) < 0 ||
             setenv("ASAN_OPTIONS", "detect_leaks=0", 1) < 0))
            _exit(125);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "exec nbdkit: %s\n", strerror(errno));
        _exit(127);
    }
    close(sv[1]);
    g_free(store);
    g_free(cache);
    g_free(meta);
    return sv[0];
fail:
    close(sv[0]);
    close(sv[1]);
    g_free(store);
    g_free(cache);
    g_free(meta);
    return err;
}

/* Waits for nbdkit; kills it after the timeout.  After a failure (failed), it is asked to stop
 * at once.  Returns its exit status or 128+signal. */
static int disk_import_reap(pid_t pid, bool failed)
{
    double end =
        disk_import_now() + (failed ? DISK_IMPORT_KILL_TIMEOUT_S : DISK_IMPORT_EXIT_TIMEOUT_S);
    int status;

    if (failed)
        kill(pid, SIGTERM);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return 128;
        if (disk_import_now() > end) {
            kill(pid, SIGKILL);
            if (waitpid(pid, &status, 0) < 0)
                return 128;
            break;
        }
        usleep(10000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The NBD handshake, bounded in time: an nbdkit that cannot start normally exits and the
 * connection closes, but one that hangs on its way out would keep nbd_connect_socket
 * waiting for ever.  Takes sock over. */
static int disk_import_connect(struct nbd_handle *h, int sock, const char *disk,
                               const char *log_path, char *why, size_t why_len)
{
    double end = disk_import_now() + DISK_IMPORT_START_TIMEOUT_S;

    if (nbd_set_export_name(h, disk) < 0) {
        close(sock);
        return disk_import_fail(why, why_len, -EINVAL, "export name %s: %s", disk, nbd_get_error());
    }
    if (nbd_aio_connect_socket(h, sock) < 0) /* owns sock from here, whatever it returns */
        goto fail;
    while (!nbd_aio_is_ready(h)) {
        if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h) || nbd_poll(h, 200) < 0)
            goto fail;
        if (disk_import_now() > end)
            return disk_import_fail(why, why_len, -ETIMEDOUT,
                                    "nbdkit did not answer within %d s (its log: %s)",
                                    DISK_IMPORT_START_TIMEOUT_S, log_path);
    }
    return 0;
fail:
    return disk_import_fail(why, why_len, -EIO,
                            "cannot open the disk through nbdkit: %s (its log: %s)",
                            nbd_get_error() ? nbd_get_error() : "connection closed", log_path);
}

static bool disk_import_all_zero(const uint8_t *buf, size_t len)
{
    /* Compare the buffer with itself shifted by one byte: zero iff the first byte is. */
    return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

/* Sums the data extents of fd (SEEK_DATA/SEEK_HOLE), for the progress total. */
static int disk_import_data_bytes(int fd, uint64_t size, uint64_t *out)
{
    off_t pos = 0;

    *out = 0;
    while ((uint64_t)pos < size) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO ? 0 : -errno;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        *out += (uint64_t)(hole - data);
        pos = hole;
    }
    return 0;
}

/* The copy proper: each chunk that meets a data extent is read whole, and written unless it
 * is all zeros.  Chunks in holes are counted, never read. */
static int disk_import_copy(struct nbd_handle *h, int fd, const struct disk_import_options *o,
                            struct disk_import_stats *st, double t0, char *why, size_t why_len)
{
    const uint64_t cs = o->chunk_size;
    uint64_t chunk = 0, since_flush = 0;
    uint8_t *buf = malloc(cs);
    int r = 0;

    if (!buf)
        return disk_import_fail(why, why_len, -ENOMEM, "out of memory (a %u-byte buffer)",
                                o->chunk_size);
    while (chunk < st->chunks_total) {
        off_t data = lseek(fd, (off_t)(chunk * cs), SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break; /* only a hole is left */
        if (data < 0) {
            r = disk_import_fail(why, why_len, -errno, "SEEK_DATA: %s", strerror(errno));
            goto out;
        }
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            r = disk_import_fail(why, why_len, -errno, "SEEK_HOLE: %s", strerror(errno));
            goto out;
        }
        uint64_t first = (uint64_t)data / cs, end = ((uint64_t)hole + cs - 1) / cs;
        st->chunks_zero += first - chunk; /* the hole before this extent */
        for (chunk = first; chunk < end; chunk++) {
            uint64_t off = chunk * cs;
            size_t len = (size_t)(st->file_bytes - off < cs ? st->file_bytes - off : cs);
            ssize_t n;

            if (o->cancel && *o->cancel) {
                r = disk_import_fail(why, why_len, -ECANCELED, "interrupted");
                goto out;
            }
            n = pread(fd, buf, len, (off_t)off);
            if (n != (ssize_t)len) {
                r = disk_import_fail(why, why_len, n < 0 ? -errno : -EIO, "read at offset %llu: %s",
                                     (unsigned long long)off,
                                     n < 0 ? strerror(errno) : "short read (file changed?)");
                goto out;
            }
            if (disk_import_all_zero(buf, len)) {
                st->chunks_zero++;
            } else {
                /* A short last chunk is written short: the disk's tail beyond the file is
                 * already zeros. */
                if (nbd_pwrite(h, buf, len, off, 0) < 0) {
                    r = disk_import_fail(why, why_len, -EIO, "write at offset %llu: %s",
                                         (unsigned long long)off, nbd_get_error());
                    goto out;
                }
                st->chunks_written++;
                st->written_bytes += len;
                since_flush += len;
            }
            /* Progress counts the part of the chunk that is data in the file. */
            uint64_t lo = off > (uint64_t)data ? off : (uint64_t)data;
            uint64_t hi = off + len < (uint64_t)hole ? off + len : (uint64_t)hole;
            st->done_bytes += hi - lo;
            if (since_flush >= DISK_IMPORT_FLUSH_EVERY) {
                if (nbd_flush(h, 0) < 0) {
                    r = disk_import_fail(why, why_len, -EIO, "flush: %s", nbd_get_error());
                    goto out;
                }
                since_flush = 0;
            }
            st->seconds = disk_import_now() - t0;
            if (o->progress)
                o->progress(st, o->opaque);
        }
    }
    st->chunks_zero += st->chunks_total - chunk; /* the trailing hole */
    /* Two extents that share a chunk are read with the first: count the second's bytes too. */
    st->done_bytes = st->data_bytes;
out:
    free(buf);
    return r;
}

int disk_import_run(int fd, const char *disk, const struct disk_import_options *o,
                    struct disk_import_stats *st, char *why, size_t why_len)
{
    double t0 = disk_import_now();
    struct nbd_handle *h = NULL;
    struct stat sb;
    pid_t pid = -1;
    int r, sock, status;

    memset(st, 0, sizeof *st);
    why[0] = '\0';
    if (fstat(fd, &sb) < 0)
        return disk_import_fail(why, why_len, -errno, "fstat: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return disk_import_fail(why, why_len, -EINVAL, "not a regular file");
    if (o->chunk_size == 0 || (o->chunk_size & (o->chunk_size - 1)))
        return disk_import_fail(why, why_len, -EINVAL, "chunk size %u is not a power of two",
                                o->chunk_size);
    st->file_bytes = (uint64_t)sb.st_size;
    st->chunks_total = (st->file_bytes + o->chunk_size - 1) / o->chunk_size;
    r = disk_import_data_bytes(fd, st->file_bytes, &st->data_bytes);
    if (r < 0)
        return disk_import_fail(why, why_len, r, "SEEK_DATA/SEEK_HOLE: %s", strerror(-r));

    sock = disk_import_spawn(o, &pid, why, why_len);
    if (sock < 0)
        return sock;
    h = nbd_create();
    if (!h) {
        close(sock);
        r = disk_import_fail(why, why_len, -ENOMEM, "nbd_create: %s", nbd_get_error());
        goto reap;
    }
    r = disk_import_connect(h, sock, disk, o->log_path, why, why_len);
    if (r < 0)
        goto reap;
    int64_t size = nbd_get_size(h);
    if (size < 0 || (uint64_t)size < st->file_bytes) {
        r = disk_import_fail(why, why_len, -ENOSPC,
                             "the disk (%lld bytes) is smaller than the file", (long long)size);
        goto reap;
    }
    r = disk_import_copy(h, fd, o, st, t0, why, why_len);
    if (r == 0 && nbd_flush(h, 0) < 0)
        r = disk_import_fail(why, why_len, -EIO, "the final flush failed: %s (nbdkit's log: %s)",
                             nbd_get_error(), o->log_path);
    if (r == 0 && nbd_shutdown(h, 0) < 0)
        r = disk_import_fail(why, why_len, -EIO, "disconnect: %s", nbd_get_error());
reap:
    if (h)
        nbd_close(h); /* closes the socket: nbdkit -s exits */
    status = disk_import_reap(pid, r < 0);
    if (status != 0 && r == 0)
        r = disk_import_fail(why, why_len, -EIO, "nbdkit exited with status %d (its log: %s)",
                             status, o->log_path);
    st->seconds = disk_import_now() - t0;
    if (r == 0 && o->progress)
        o->progress(st, o->opaque);
    return r;
}
