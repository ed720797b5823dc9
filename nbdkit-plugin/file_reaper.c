/* file_reaper.c: unlinks on a thread of its own (file_reaper.h). */
#include "file_reaper.h"

#include "log.h"

#include <errno.h>
#include <glib.h>
#include <string.h>
#include <unistd.h>

struct file_reaper {
    GThreadPool *pool; /* one thread: unlinks in the order queued */
};

static void file_reaper_unlink_now(const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("reaper", "unlink %s: %s", path, strerror(errno));
}

static void file_reaper_run(gpointer path, gpointer unused)
{
    file_reaper_unlink_now(path);
    g_free(path);
}

struct file_reaper *file_reaper_new(void)
{
    struct file_reaper *r = g_new0(struct file_reaper, 1);
    GError *err = NULL;

    r->pool = g_thread_pool_new(file_reaper_run, NULL, 1, TRUE, &err);
    if (!r->pool) {
        log_error("reaper", "cannot start the unlink thread: %s", err->message);
        g_error_free(err);
        g_free(r);
        return NULL;
    }
    return r;
}

void file_reaper_free(struct file_reaper *r)
{
    if (!r)
        return;
    g_thread_pool_free(r->pool, FALSE, TRUE); /* finish the queue, then join */
    g_free(r);
}

void file_reaper_unlink(struct file_reaper *r, const char *path)
{
    GError *err = NULL;

    if (!r) {
        file_reaper_unlink_now(path);
        return;
    }
    if (!g_thread_pool_push(r->pool, g_strdup(path), &err)) {
        log_warn("reaper", "cannot queue %s: %s; unlinking it now", path, err->message);
        g_error_free(err);
        file_reaper_unlink_now(path);
    }
}
