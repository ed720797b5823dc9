/* sprite_service_stream.c: exec streams of the sprite service (sprite_service.h): an exec
 * that outlives the call, for api_exec_ws.c.  Shares sprite_service_internal.h. */
#include "sprite_service.h"
#include "sprite_service_internal.h"

#include "log.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>

/* ---- exec streams: an exec that outlives the call (api_exec_ws.c) ------------------------- */

/* Lifetime: made by sprite_service_stream_open, which leaves it holding one svc_enter (busy),
 * one reference on the live sprite and one of its holds; sprite_service_stream_close gives all
 * three back.  `ended` and the list link are under svc->mu; `exec` belongs to the stream's
 * user between open and close. */
struct sprite_stream {
    sprite_service *svc;
    struct live_sprite *l;
    agent_exec *exec;
    char *ended; /* why the service ended it (delete, restore), or NULL; under svc->mu */
    void (*on_end)(void *opaque);
    void *opaque;
};

struct svc_stream_args {
    const struct agent_exec_opts *opts;
    struct sprite_stream *s;
};

static JsonNode *svc_stream_verb(sprite_service *svc, account_db *db, struct live_sprite *l,
                                 const void *arg, GError **error)
{
    const struct svc_stream_args *a = arg;

    (void)db;
    if (!svc_ensure_running(svc, l, error))
        return NULL;
    agent_exec *e = svc_exec_start(l, a->opts, 60000, error);
    if (!e)
        return NULL;
    a->s->exec = e;
    a->s->l = l;
    /* The stream keeps what svc_on_sprite gives back when this returns: one more call inside
     * svc_enter (so that shutdown waits for it), one more reference, and a hold. */
    g_mutex_lock(&svc->mu);
    svc->busy++;
    l->refs++;
    l->holds++;
    l->streams = g_slist_prepend(l->streams, a->s);
    g_mutex_unlock(&svc->mu);
    return json_node_new(JSON_NODE_NULL);
}

sprite_stream *sprite_service_stream_open(sprite_service *svc, const char *account,
                                          const char *name, const struct agent_exec_opts *opts,
                                          void (*on_end)(void *opaque), void *opaque,
                                          GError **error)
{
    struct sprite_stream *s = g_new0(struct sprite_stream, 1);
    struct svc_stream_args a = {opts, s};

    s->svc = svc;
    s->on_end = on_end;
    s->opaque = opaque;
    JsonNode *ok = svc_on_sprite(svc, account, name, svc_stream_verb, &a, error);
    if (!ok) {
        g_free(s);
        return NULL;
    }
    json_node_unref(ok);
    return s;
}

agent_exec *sprite_stream_exec(sprite_stream *s)
{
    return s->exec;
}

char *sprite_stream_ended(sprite_stream *s)
{
    g_mutex_lock(&s->svc->mu);
    char *why = g_strdup(s->ended);
    g_mutex_unlock(&s->svc->mu);
    return why;
}

void sprite_service_stream_close(sprite_stream *s)
{
    sprite_service *svc;

    if (!s)
        return;
    svc = s->svc;
    agent_exec_free(s->exec);
    g_mutex_lock(&svc->mu);
    s->l->streams = g_slist_remove(s->l->streams, s);
    s->l->holds--;
    g_cond_broadcast(&svc->idle); /* svc_streams_end waits for holds to drop */
    g_mutex_unlock(&svc->mu);
    svc_put_live(svc, s->l);
    svc_leave(svc);
    g_free(s->ended);
    g_free(s);
}

/* Ends the sprite's open streams before its VM goes (op held): each is told why (its user
 * kills the process and sends that as its error) and this waits, up to 60 s, for all to
 * close.  A stream that does not close in time fails the verb rather than leave it a VM
 * that is gone. */
bool svc_streams_end(sprite_service *svc, struct live_sprite *l, const char *why, GError **error)
{
    gint64 until = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    g_mutex_lock(&svc->mu);
    /* on_end only flags the stream (api_exec_ws.c never calls back in here), so it may run
     * under svc->mu; that also keeps every listed stream alive while it runs. */
    for (GSList *i = l->streams; i; i = i->next) {
        struct sprite_stream *s = i->data;
        if (!s->ended) {
            s->ended = g_strdup(why);
            if (s->on_end)
                s->on_end(s->opaque);
        }
    }
    if (l->holds > 0)
        log_info(SVC_LOG, "%s: ending %u exec stream(s): %s", l->key, l->holds, why);
    while (l->holds > 0 && g_cond_wait_until(&svc->idle, &svc->mu, until))
        ;
    unsigned left = l->holds;
    g_mutex_unlock(&svc->mu);
    if (left > 0)
        return svc_fail(error, SPRITE_SERVICE_ERROR_CONFLICT,
                        "sprite '%s': %u exec stream(s) did not end in 60 s", l->name, left);
    return true;
}
