/* crash_watch.c: a QEMU's exit seen through a pidfd (see crash_watch.h). */
#include "crash_watch.h"

#include "log.h"
#include "proc.h"

#include <errno.h>
#include <glib-unix.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WATCH_LOG "crash-watch"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

struct crash_watch {
    int pidfd;
    pid_t pid;
    GSource *source;
    crash_watch_cb cb;
    void *opaque;
    gint64 fired_us;
    /* crash_watch_sprite */
    sprite_db *db;
    char *name;
    struct vm *vm;
};

static gboolean crash_watch_ready(gint fd, GIOCondition cond, gpointer opaque)
{
    crash_watch *w = opaque;

    (void)fd;
    (void)cond;
    w->fired_us = g_get_monotonic_time();
    if (w->cb)
        w->cb(w->pid, w->opaque);
    return G_SOURCE_REMOVE;
}

crash_watch *crash_watch_pid(GMainContext *ctx, pid_t pid, crash_watch_cb cb, void *opaque,
                             GError **error)
{
    crash_watch *w = g_new0(crash_watch, 1);

    w->pid = pid;
    w->cb = cb;
    w->opaque = opaque;
    w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (w->pidfd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "pidfd_open %d: %s", (int)pid, g_strerror(errno));
        g_free(w);
        return NULL;
    }
    w->source = g_unix_fd_source_new(w->pidfd, G_IO_IN);
    g_source_set_callback(w->source, (GSourceFunc)(void (*)(void))crash_watch_ready, w, NULL);
    g_source_attach(w->source, ctx);
    return w;
}

static void crash_watch_mark_crashed(pid_t pid, void *opaque)
{
    crash_watch *w = opaque;
    GError *err = NULL;

    /* Reap it now, so the status says how it died (and no zombie stays). */
    (void)vm_is_running(w->vm);
    g_autofree char *why =
        g_strdup_printf("QEMU %d %s without being asked", (int)pid,
                        w->vm->pid ? "exited" : proc_status_to_string(w->vm->exit_status));
    log_warn(WATCH_LOG, "sprite %s: %s", w->name, why);
    if (!sprite_db_end(w->db, w->name, SPRITE_CRASHED, 0, NULL, NULL, why, &err)) {
        log_error(WATCH_LOG, "sprite %s: recording the crash: %s", w->name, err->message);
        g_error_free(err);
    }
}

crash_watch *crash_watch_sprite(GMainContext *ctx, sprite_db *db, const char *name, struct vm *vm,
                                GError **error)
{
    crash_watch *w = crash_watch_pid(ctx, vm->pid, crash_watch_mark_crashed, NULL, error);

    if (!w)
        return NULL;
    w->opaque = w;
    w->db = db;
    w->name = g_strdup(name);
    w->vm = vm;
    return w;
}

bool crash_watch_fired(const crash_watch *w)
{
    return w->fired_us != 0;
}

gint64 crash_watch_fired_us(const crash_watch *w)
{
    return w->fired_us;
}

void crash_watch_free(crash_watch *w)
{
    if (!w)
        return;
    /* Destroying a source that already ran to its end is allowed; our reference is freed. */
    g_source_destroy(w->source);
    g_source_unref(w->source);
    if (w->pidfd >= 0)
        close(w->pidfd);
    g_free(w->name);
    g_free(w);
}
