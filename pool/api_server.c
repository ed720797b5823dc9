/* api_server.c: routes, request checks and JSON answers of wispd's API (api_server.h). */
#include "api_server.h"

#include "api_auth.h"
#include "api_exec_ws.h"
#include "log.h"

#include <errno.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <libsoup/soup.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_LOG "api"

struct api_server {
    SoupServer *server;
    sprite_service *svc;
    GHashTable *tokens;
    char *socket_path;
    api_exec_ws *ws; /* streaming execs (api_exec_ws.h) */
    vm_pool *pool;   /* the warm pool of `image`, for /v1/pools; NULL: none */
    char *image;
    bool stopping; /* api_server_stop has begun: every new request is 503 */
};

void api_respond(SoupServerMessage *msg, guint status, JsonNode *body)
{
    gsize len = 0;
    char *text = json_to_string(body, FALSE);
    len = strlen(text);
    soup_server_message_set_status(msg, status, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE, text, len);
    /* libsoup 3.2 (Debian 12) never notices a client closing an idle keep-alive connection,
     * so each one would keep its file forever (fixed in 3.3.0, libsoup commit d20c6601).
     * One request per connection is cheap on a unix socket; tests/wispd/load.c counts. */
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection",
                                 "close");
}

void api_error(SoupServerMessage *msg, guint status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "error", text);
    json_object_set_int_member(o, "status", status);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    api_respond(msg, status, n);
    json_node_unref(n);
}

guint api_status_of(const GError *err)
{
    if (err->domain != SPRITE_SERVICE_ERROR)
        return SOUP_STATUS_INTERNAL_SERVER_ERROR;
    switch ((enum sprite_service_error_code)err->code) {
    case SPRITE_SERVICE_ERROR_INVALID:
        return SOUP_STATUS_BAD_REQUEST;
    case SPRITE_SERVICE_ERROR_NOT_FOUND:
        return SOUP_STATUS_NOT_FOUND;
    case SPRITE_SERVICE_ERROR_EXISTS:
    case SPRITE_SERVICE_ERROR_CONFLICT:
        return SOUP_STATUS_CONFLICT;
    case SPRITE_SERVICE_ERROR_SHUTDOWN:
        return SOUP_STATUS_SERVICE_UNAVAILABLE;
    case SPRITE_SERVICE_ERROR_FAILED:
        break;
    }
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
}

/* ---- jobs: one verb, run in a worker thread ------------------------------------------------ */

enum api_verb {
    API_CREATE,
    API_LIST,
    API_GET,
    API_DELETE,
    API_EXEC,
    API_CHECKPOINT,
    API_CHECKPOINTS,
    API_RESTORE,
    API_CHECKPOINT_DELETE,
    API_SLEEP,
    API_WAKE,
};

struct api_job {
    enum api_verb verb;
    sprite_service *svc;
    SoupServerMessage *msg;
    guint ok_status;
    char *account, *name, *checkpoint;
    char **argv, **env;
    char *cwd, *stdin_data;
    size_t stdin_len;
    int timeout_ms;
    bool cold; /* API_SLEEP: "mode":"cold" */
};

static void api_job_free(struct api_job *j)
{
    g_object_unref(j->msg);
    g_free(j->account);
    g_free(j->name);
    g_free(j->checkpoint);
    g_strfreev(j->argv);
    g_strfreev(j->env);
    g_free(j->cwd);
    g_free(j->stdin_data);
    g_free(j);
}

static void api_job_run(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
    struct api_job *j = data;
    GError *err = NULL;
    JsonNode *r = NULL;

    switch (j->verb) {
    case API_CREATE:
        r = sprite_service_create(j->svc, j->account, j->name, &err);
        break;
    case API_LIST:
        r = sprite_service_list(j->svc, j->account, &err);
        break;
    case API_GET:
        r = sprite_service_get(j->svc, j->account, j->name, &err);
        break;
    case API_DELETE:
        r = sprite_service_delete(j->svc, j->account, j->name, &err);
        break;
    case API_EXEC: {
        struct sprite_exec_request req = {.argv = (const char *const *)j->argv,
                                          .env = (const char *const *)j->env,
                                          .cwd = j->cwd,
                                          .stdin_data = j->stdin_data,
                                          .stdin_len = j->stdin_len,
                                          .timeout_ms = j->timeout_ms};
        r = sprite_service_exec(j->svc, j->account, j->name, &req, &err);
        break;
    }
    case API_CHECKPOINT:
        r = sprite_service_checkpoint(j->svc, j->account, j->name, &err);
        break;
    case API_CHECKPOINTS:
        r = sprite_service_checkpoints(j->svc, j->account, j->name, &err);
        break;
    case API_RESTORE:
        r = sprite_service_restore(j->svc, j->account, j->name, j->checkpoint, &err);
        break;
    case API_CHECKPOINT_DELETE:
        r = sprite_service_checkpoint_delete(j->svc, j->account, j->name, j->checkpoint, &err);
        break;
    case API_SLEEP:
        r = sprite_service_sleep_mode(j->svc, j->account, j->name, j->cold, &err);
        break;
    case API_WAKE:
        r = sprite_service_wake(j->svc, j->account, j->name, &err);
        break;
    }
    if (r)
        g_task_return_pointer(task, r, (GDestroyNotify)json_node_unref);
    else
        g_task_return_error(task, err);
}

/* Back in the main loop: the answer, and the paused message goes on. */
static void api_job_done(GObject *source, GAsyncResult *res, gpointer data)
{
    struct api_job *j = data;
    GError *err = NULL;
    JsonNode *r = g_task_propagate_pointer(G_TASK(res), &err);

    if (r) {
        api_respond(j->msg, j->ok_status, r);
        json_node_unref(r);
    } else {
        guint status = api_status_of(err);
        if (status >= 500)
            log_warn(API_LOG, "%s %s: %s", soup_server_message_get_method(j->msg),
                     g_uri_get_path(soup_server_message_get_uri(j->msg)), err->message);
        api_error(j->msg, status, "%s", err->message);
        g_clear_error(&err);
    }
    soup_server_message_unpause(j->msg);
    api_job_free(j);
}

static void api_job_start(struct api_job *j)
{
    GTask *task = g_task_new(NULL, NULL, api_job_done, j);
    g_task_set_task_data(task, j, NULL); /* freed by api_job_done */
    soup_server_message_pause(j->msg);
    g_task_run_in_thread(task, api_job_run);
    g_object_unref(task);
}

/* ---- request bodies ------------------------------------------------------------------------ */

/* The body as a JSON object whose members are all in allowed (NULL-terminated).  An empty body
 * is an empty object.  NULL after answering 400. */
static JsonObject *api_body_object(SoupServerMessage *msg, const char *const *allowed)
{
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    g_autoptr(JsonParser) parser = json_parser_new();
    GError *err = NULL;

    if (body->length > API_BODY_MAX) {
        api_error(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "the body is over %d bytes",
                  API_BODY_MAX);
        return NULL;
    }
    if (body->length == 0)
        return json_object_new();
    if (!json_parser_load_from_data(parser, body->data, (gssize)body->length, &err)) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "malformed JSON: %s", err->message);
        g_clear_error(&err);
        return NULL;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "the body must be a JSON object");
        return NULL;
    }
    JsonObject *o = json_node_get_object(root);
    g_autoptr(GList) members = json_object_get_members(o);
    for (GList *m = members; m; m = m->next) {
        if (!allowed || !g_strv_contains(allowed, m->data)) {
            api_error(msg, SOUP_STATUS_BAD_REQUEST, "unknown field '%s'", (const char *)m->data);
            return NULL;
        }
    }
    return json_object_ref(o);
}

/* A string member (NULL if absent); false after answering 400 if it is not a string. */
static bool api_get_string(SoupServerMessage *msg, JsonObject *o, const char *member,
                           const char **out)
{
    JsonNode *n = json_object_get_member(o, member);
    *out = NULL;
    if (!n)
        return true;
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "'%s' must be a string", member);
        return false;
    }
    *out = json_node_get_string(n);
    return true;
}

/* A string array member as a NULL-terminated vector (NULL if absent). */
static bool api_get_strv(SoupServerMessage *msg, JsonObject *o, const char *member, char ***out)
{
    JsonNode *n = json_object_get_member(o, member);
    *out = NULL;
    if (!n)
        return true;
    if (!JSON_NODE_HOLDS_ARRAY(n))
        goto bad;
    JsonArray *a = json_node_get_array(n);
    guint len = json_array_get_length(a);
    if (len > 4096)
        goto bad;
    char **v = g_new0(char *, len + 1);
    for (guint i = 0; i < len; i++) {
        JsonNode *e = json_array_get_element(a, i);
        if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING) {
            g_strfreev(v);
            goto bad;
        }
        v[i] = g_strdup(json_node_get_string(e));
    }
    *out = v;
    return true;
bad:
    api_error(msg, SOUP_STATUS_BAD_REQUEST, "'%s' must be an array of strings", member);
    return false;
}

/* An "env" object {"K": "V"} as "K=V" strings. */
static bool api_get_env(SoupServerMessage *msg, JsonObject *o, char ***out)
{
    JsonNode *n = json_object_get_member(o, "env");
    g_autoptr(GList) keys = NULL;
    *out = NULL;
    if (!n)
        return true;
    if (!JSON_NODE_HOLDS_OBJECT(n))
        goto bad;
    JsonObject *eo = json_node_get_object(n);
    keys = json_object_get_members(eo);
    GPtrArray *v = g_ptr_array_new();
    for (GList *k = keys; k; k = k->next) {
        JsonNode *e = json_object_get_member(eo, k->data);
        const char *key = k->data;
        if (!*key || strchr(key, '=') || !JSON_NODE_HOLDS_VALUE(e) ||
            json_node_get_value_type(e) != G_TYPE_STRING) {
            g_ptr_array_add(v, NULL);
            g_strfreev((char **)g_ptr_array_free(v, FALSE));
            goto bad;
        }
        g_ptr_array_add(v, g_strdup_printf("%s=%s", key, json_node_get_string(e)));
    }
    g_ptr_array_add(v, NULL);
    *out = (char **)g_ptr_array_free(v, FALSE);
    return true;
bad:
    api_error(msg, SOUP_STATUS_BAD_REQUEST, "'env' must be an object of string values");
    return false;
}

/* ---- routes -------------------------------------------------------------------------------- */

static struct api_job *api_job_new(api_server *api, SoupServerMessage *msg, enum api_verb verb,
                                   const char *account, const char *name, guint ok_status)
{
    struct api_job *j = g_new0(struct api_job, 1);
    j->verb = verb;
    j->svc = api->svc;
    j->msg = g_object_ref(msg);
    j->account = g_strdup(account);
    j->name = g_strdup(name);
    j->ok_status = ok_status;
    return j;
}

static void api_route_exec(api_server *api, SoupServerMessage *msg, const char *account,
                           const char *name)
{
    static const char *const allowed[] = {"argv", "stdin", "env", "cwd", "timeout_s", NULL};
    g_autoptr(JsonObject) o = api_body_object(msg, allowed);
    const char *stdin_text = NULL, *cwd = NULL;
    char **argv = NULL, **env = NULL;

    if (!o)
        return;
    if (!api_get_strv(msg, o, "argv", &argv) || !api_get_string(msg, o, "stdin", &stdin_text) ||
        !api_get_string(msg, o, "cwd", &cwd) || !api_get_env(msg, o, &env))
        goto fail;
    if (!argv || !argv[0] || !*argv[0]) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "'argv' must name a program");
        goto fail;
    }
    gint64 timeout_s = 60;
    JsonNode *t = json_object_get_member(o, "timeout_s");
    if (t) {
        if (!JSON_NODE_HOLDS_VALUE(t) || json_node_get_value_type(t) != G_TYPE_INT64 ||
            json_node_get_int(t) < 1 || json_node_get_int(t) > 3600) {
            api_error(msg, SOUP_STATUS_BAD_REQUEST, "'timeout_s' must be 1 to 3600");
            goto fail;
        }
        timeout_s = json_node_get_int(t);
    }
    struct api_job *j = api_job_new(api, msg, API_EXEC, account, name, SOUP_STATUS_OK);
    j->argv = argv;
    j->env = env;
    j->cwd = g_strdup(cwd);
    if (stdin_text) {
        j->stdin_data = g_strdup(stdin_text);
        j->stdin_len = strlen(stdin_text);
    }
    j->timeout_ms = (int)timeout_s * 1000;
    api_job_start(j);
    return;
fail:
    g_strfreev(argv);
    g_strfreev(env);
}

static void api_route_create(api_server *api, SoupServerMessage *msg, const char *account)
{
    static const char *const allowed[] = {"name", NULL};
    g_autoptr(JsonObject) o = api_body_object(msg, allowed);
    const char *name = NULL;

    if (!o || !api_get_string(msg, o, "name", &name))
        return;
    if (!name || !sprite_service_name_valid(name)) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST,
                  "'name' must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit");
        return;
    }
    api_job_start(api_job_new(api, msg, API_CREATE, account, name, SOUP_STATUS_CREATED));
}

/* Verbs without a body: any body given must be empty or {}. */
static bool api_no_body(SoupServerMessage *msg)
{
    g_autoptr(JsonObject) o = api_body_object(msg, NULL);
    return o != NULL;
}

/* POST .../sleep: {"mode": "warm"|"cold"}, or no body (warm). */
static void api_route_sleep(api_server *api, SoupServerMessage *msg, const char *account,
                            const char *name)
{
    static const char *const allowed[] = {"mode", NULL};
    g_autoptr(JsonObject) o = api_body_object(msg, allowed);
    const char *mode = NULL;

    if (!o || !api_get_string(msg, o, "mode", &mode))
        return;
    if (mode && strcmp(mode, "warm") != 0 && strcmp(mode, "cold") != 0) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "'mode' must be \"warm\" or \"cold\"");
        return;
    }
    struct api_job *j = api_job_new(api, msg, API_SLEEP, account, name, SOUP_STATUS_OK);
    j->cold = mode && strcmp(mode, "cold") == 0;
    api_job_start(j);
}

/* ---- transport and pools ------------------------------------------------------------------- */

/* Whether the request came over TCP (where a token is required) rather than the unix socket. */
static bool api_on_tcp(SoupServerMessage *msg)
{
    GSocketAddress *local = soup_server_message_get_local_address(msg);
    return local && G_IS_INET_SOCKET_ADDRESS(local);
}

/* The caller's account, from its bearer token (required on TCP; the unix socket's callers are
 * "default" without one).  NULL after answering 401. */
static const char *api_account_or_401(api_server *api, SoupServerMessage *msg,
                                      SoupMessageHeaders *h, bool tcp)
{
    const char *authorization = soup_message_headers_get_one(h, "Authorization");
    const char *account = api_auth_account_on(api->tokens, authorization, tcp);

    if (!account)
        api_error(msg, SOUP_STATUS_UNAUTHORIZED, "%s",
                  authorization ? "unknown bearer token"
                                : "a bearer token is required on TCP (Authorization: Bearer ...)");
    return account;
}

#define API_POOL_SIZE_MAX 64

static JsonNode *api_pools_json(api_server *api)
{
    struct vm_pool_stats st;
    JsonArray *a = json_array_new();

    if (api->pool) {
        vm_pool_get_stats(api->pool, &st);
        JsonObject *p = json_object_new();
        json_object_set_string_member(p, "image", api->image);
        json_object_set_int_member(p, "size", st.size);
        json_object_set_int_member(p, "warm", st.ready);
        json_object_set_int_member(p, "refilling", st.refilling);
        json_object_set_int_member(p, "claims", (gint64)st.taken);
        json_object_set_int_member(p, "restored", (gint64)st.restored);
        json_object_set_int_member(p, "failed", (gint64)st.failed);
        json_object_set_double_member(p, "last_restore_ms", st.last_restore_ms);
        if (st.last_error[0])
            json_object_set_string_member(p, "last_error", st.last_error);
        json_array_add_object_element(a, p);
    }
    JsonObject *o = json_object_new();
    json_object_set_array_member(o, "pools", a);
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

struct api_resize {
    api_server *api;
    SoupServerMessage *msg;
    unsigned size, stopped;
};

/* In a worker thread: a smaller size stops QEMUs, which the main loop must not wait for. */
static void api_resize_run(GTask *task, gpointer source, gpointer data, GCancellable *cancel)
{
    struct api_resize *r = data;
    r->stopped = vm_pool_resize(r->api->pool, r->size);
    g_task_return_boolean(task, TRUE);
}

static void api_resize_done(GObject *source, GAsyncResult *res, gpointer data)
{
    struct api_resize *r = data;
    JsonNode *n = api_pools_json(r->api);
    JsonObject *o = json_node_get_object(n);

    json_object_set_int_member(o, "stopped", r->stopped);
    log_info(API_LOG, "pool %s resized to %u (%u waiting members stopped)", r->api->image, r->size,
             r->stopped);
    api_respond(r->msg, SOUP_STATUS_OK, n);
    json_node_unref(n);
    soup_server_message_unpause(r->msg);
    g_object_unref(r->msg);
    g_free(r);
}

/* GET /v1/pools, PUT /v1/pools/IMAGE {"size": N}.  Pools are the host's, not an account's:
 * any account may read them, only the operator (the unix socket, mode 0600) may resize. */
static void api_route_pools(api_server *api, SoupServerMessage *msg, const char *method,
                            const char *image, bool tcp)
{
    static const char *const allowed[] = {"size", NULL};

    if (!image && strcmp(method, "GET") == 0) {
        if (api_no_body(msg)) {
            JsonNode *n = api_pools_json(api);
            api_respond(msg, SOUP_STATUS_OK, n);
            json_node_unref(n);
        }
        return;
    }
    if (!image || strcmp(method, "PUT") != 0) {
        api_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                  "%s is not allowed here (GET /v1/pools, PUT /v1/pools/IMAGE)", method);
        return;
    }
    if (tcp) {
        api_error(msg, SOUP_STATUS_FORBIDDEN,
                  "pools are host-wide: resize them over wispd's unix socket (the operator's)");
        return;
    }
    if (!api->pool || strcmp(image, api->image) != 0) {
        api_error(msg, SOUP_STATUS_NOT_FOUND, "no pool for image '%s' (GET /v1/pools lists them)",
                  image);
        return;
    }
    g_autoptr(JsonObject) o = api_body_object(msg, allowed);
    if (!o)
        return;
    JsonNode *sz = json_object_get_member(o, "size");
    if (!sz || !JSON_NODE_HOLDS_VALUE(sz) || json_node_get_value_type(sz) != G_TYPE_INT64 ||
        json_node_get_int(sz) < 1 || json_node_get_int(sz) > API_POOL_SIZE_MAX) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST, "'size' must be an integer from 1 to %d",
                  API_POOL_SIZE_MAX);
        return;
    }
    struct api_resize *r = g_new0(struct api_resize, 1);
    r->api = api;
    r->msg = g_object_ref(msg);
    r->size = (unsigned)json_node_get_int(sz);
    GTask *task = g_task_new(NULL, NULL, api_resize_done, r);
    g_task_set_task_data(task, r, NULL);
    soup_server_message_pause(msg);
    g_task_run_in_thread(task, api_resize_run);
    g_object_unref(task);
}

/* The methods of /v1/sprites/NAME[/SUB[/ID[/LAST]]] (n segments after the split), for 405's
 * Allow header; NULL when there is no such route, whatever the method (404). */
static const char *api_sprite_route_methods(guint n, const char *sub, const char *last)
{
    if (n == 4)
        return "GET, DELETE";
    if (n == 5 && (strcmp(sub, "exec") == 0 || strcmp(sub, "checkpoints") == 0))
        return "GET, POST";
    if (n == 5 && (strcmp(sub, "sleep") == 0 || strcmp(sub, "wake") == 0))
        return "POST";
    if (n == 6 && strcmp(sub, "checkpoints") == 0)
        return "DELETE";
    if (n == 7 && strcmp(sub, "checkpoints") == 0 && strcmp(last, "restore") == 0)
        return "POST";
    return NULL;
}

static void api_handle(SoupServer *server, SoupServerMessage *msg, const char *path,
                       GHashTable *query, gpointer opaque)
{
    api_server *api = opaque;
    const char *method = soup_server_message_get_method(msg);
    SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
    bool tcp = api_on_tcp(msg);
    const char *account = api_account_or_401(api, msg, h, tcp);

    if (!account)
        return;
    g_auto(GStrv) seg = g_strsplit(path, "/", -1);
    guint n = g_strv_length(seg);
    if (n >= 3 && n <= 4 && !seg[0][0] && strcmp(seg[1], "v1") == 0 &&
        strcmp(seg[2], "pools") == 0) {
        api_route_pools(api, msg, method, n == 4 ? seg[3] : NULL, tcp);
        return;
    }
    /* "/v1/sprites/NAME/..." splits into "", "v1", "sprites", NAME, ... */
    if (n < 3 || seg[0][0] || strcmp(seg[1], "v1") != 0 || strcmp(seg[2], "sprites") != 0) {
        api_error(msg, SOUP_STATUS_NOT_FOUND, "no such resource: %s", path);
        return;
    }
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    bool del = strcmp(method, "DELETE") == 0;
    if (n == 3) {
        if (get && api_no_body(msg))
            api_job_start(api_job_new(api, msg, API_LIST, account, NULL, SOUP_STATUS_OK));
        else if (post)
            api_route_create(api, msg, account);
        else if (!get)
            api_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "%s is not allowed here", method);
        return;
    }
    const char *name = seg[3];
    if (!sprite_service_name_valid(name)) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST,
                  "invalid sprite name: 1-63 of a-z, 0-9 and '-', starting with a letter or digit");
        return;
    }
    const char *sub = n > 4 ? seg[4] : NULL;
    enum api_verb verb;
    guint ok = SOUP_STATUS_OK;
    const char *allow;
    if (n == 4 && get)
        verb = API_GET;
    else if (n == 4 && del)
        verb = API_DELETE;
    else if (n == 5 && get && strcmp(sub, "exec") == 0 && api_exec_ws_wanted(msg)) {
        api_exec_ws_route(api->ws, msg, account, name);
        return;
    } else if (n == 5 && post && strcmp(sub, "exec") == 0) {
        api_route_exec(api, msg, account, name);
        return;
    } else if (n == 5 && post && strcmp(sub, "sleep") == 0) {
        api_route_sleep(api, msg, account, name);
        return;
    } else if (n == 5 && post && strcmp(sub, "wake") == 0)
        verb = API_WAKE;
    else if (n == 5 && post && strcmp(sub, "checkpoints") == 0) {
        verb = API_CHECKPOINT;
        ok = SOUP_STATUS_CREATED;
    } else if (n == 5 && get && strcmp(sub, "checkpoints") == 0)
        verb = API_CHECKPOINTS;
    else if (n == 7 && post && strcmp(sub, "checkpoints") == 0 && strcmp(seg[6], "restore") == 0) {
        if (!sprite_service_name_valid(seg[5])) {
            api_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid checkpoint id");
            return;
        }
        verb = API_RESTORE;
    } else if (n == 6 && del && strcmp(sub, "checkpoints") == 0) {
        if (!sprite_service_name_valid(seg[5])) {
            api_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid checkpoint id");
            return;
        }
        verb = API_CHECKPOINT_DELETE;
    } else if (n == 5 && get && strcmp(sub, "exec") == 0) {
        api_error(msg, SOUP_STATUS_BAD_REQUEST,
                  "GET %s is a streaming exec: it needs a WebSocket handshake (Upgrade: "
                  "websocket); POST runs a buffered one",
                  path);
        return;
    } else if ((allow = api_sprite_route_methods(n, sub, n > 6 ? seg[6] : NULL))) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", allow);
        api_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "%s is not allowed on %s (only %s)", method,
                  path, allow);
        return;
    } else {
        api_error(msg, SOUP_STATUS_NOT_FOUND, "no such resource: %s %s", method, path);
        return;
    }
    if (!api_no_body(msg))
        return;
    struct api_job *j = api_job_new(api, msg, verb, account, name, ok);
    if (verb == API_RESTORE || verb == API_CHECKPOINT_DELETE)
        j->checkpoint = g_strdup(seg[5]);
    api_job_start(j);
}

/* A refused request's body is still read (libsoup reads a body whether or not the answer is
 * set, unless the client sent "Expect: 100-continue"), but never kept; past this much the
 * connection is closed instead, so that nobody keeps wispd reading a body without end.  A
 * client sending up to this much without the Expect header still gets its answer. */
#define API_REFUSED_BODY_DRAIN (8 * API_BODY_MAX)

static void api_refused_body_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer opaque)
{
    goffset *seen = opaque;

    *seen += (goffset)g_bytes_get_size(chunk);
    if (*seen <= API_REFUSED_BODY_DRAIN)
        return;
    g_signal_handlers_disconnect_by_func(msg, api_refused_body_chunk, opaque);
    GIOStream *conn = soup_server_message_steal_connection(msg);
    if (conn) {
        g_io_stream_close(conn, NULL, NULL);
        g_object_unref(conn);
    }
}

/* A request answered from its headers (by api_early, or by libsoup itself: a malformed or
 * absolute-URI request line is 400 before any handler runs) never has its body kept.  This
 * runs after both, on every request. */
static void api_refuse_answered_body(SoupServerMessage *msg, gpointer opaque)
{
    (void)opaque;
    if (soup_server_message_get_status(msg) == 0)
        return;
    soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
    goffset *seen = g_new0(goffset, 1);
    g_object_set_data_full(G_OBJECT(msg), "wisp-refused-body-bytes", seen, g_free);
    g_signal_connect(msg, "got-chunk", G_CALLBACK(api_refused_body_chunk), seen);
}

static void api_request_started(SoupServer *server, SoupServerMessage *msg, gpointer opaque)
{
    (void)server;
    g_signal_connect(msg, "got-headers", G_CALLBACK(api_refuse_answered_body), opaque);
}

/* Before the body is read, whatever would refuse the request refuses it, so that nobody makes
 * wispd keep a body it will not use (api_refuse_answered_body): wispd stopping (503), no
 * account (401), a body of no declared length (411: libsoup would keep a chunked body to its
 * end, however long, before the handler could see it), or a declared length over the limit
 * (413).  An answer set here skips the handler. */
static void api_early(SoupServer *server, SoupServerMessage *msg, const char *path,
                      GHashTable *query, gpointer opaque)
{
    api_server *api = opaque;
    SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);

    if (api->stopping)
        api_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "wispd is shutting down");
    else if (!api_account_or_401(api, msg, h, api_on_tcp(msg)))
        return;
    else if (soup_message_headers_get_encoding(h) == SOUP_ENCODING_CHUNKED)
        api_error(msg, SOUP_STATUS_LENGTH_REQUIRED,
                  "send the body with a Content-Length (chunked request bodies are refused)");
    else if (soup_message_headers_get_content_length(h) > API_BODY_MAX)
        api_error(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "the body is over %d bytes",
                  API_BODY_MAX);
}

api_server *api_server_start(const char *socket_path, sprite_service *svc, GHashTable *tokens,
                             GError **error)
{
    api_server *api = g_new0(api_server, 1);
    GSocket *sock = NULL;
    GSocketAddress *addr = NULL;

    api->svc = svc;
    api->tokens = tokens;
    api->socket_path = g_strdup(socket_path);
    api->ws = api_exec_ws_new(svc);
    api->server = soup_server_new("server-header", "wispd", NULL);
    g_signal_connect(api->server, "request-started", G_CALLBACK(api_request_started), api);
    soup_server_add_early_handler(api->server, NULL, api_early, api, NULL);
    soup_server_add_handler(api->server, NULL, api_handle, api, NULL);
    if (unlink(socket_path) < 0 && errno != ENOENT) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "unlink %s: %s", socket_path,
                    g_strerror(errno));
        goto fail;
    }
    sock =
        g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, error);
    if (!sock)
        goto fail;
    addr = g_unix_socket_address_new(socket_path);
    /* 0600 from the start: no moment when another user could connect. */
    mode_t old = umask(0177);
    gboolean bound = g_socket_bind(sock, addr, TRUE, error);
    umask(old);
    if (!bound)
        goto fail;
    if (chmod(socket_path, 0600) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "chmod %s: %s", socket_path,
                    g_strerror(errno));
        goto fail;
    }
    /* Room for a burst of clients while the main loop is busy (the kernel caps it at
     * net.core.somaxconn): a full backlog refuses a unix-socket connect outright. */
    g_socket_set_listen_backlog(sock, API_LISTEN_BACKLOG);
    if (!g_socket_listen(sock, error) || !soup_server_listen_socket(api->server, sock, 0, error))
        goto fail;
    g_object_unref(sock);
    g_object_unref(addr);
    log_info(API_LOG, "listening on %s", socket_path);
    return api;
fail:
    if (sock)
        g_object_unref(sock);
    if (addr)
        g_object_unref(addr);
    api->tokens = NULL; /* the caller's on failure */
    api_server_stop(api);
    return NULL;
}

bool api_server_listen_tcp(api_server *api, const char *addr_port, GError **error)
{
    const char *colon = addr_port ? strrchr(addr_port, ':') : NULL;
    char *end = NULL;
    guint64 port = colon ? g_ascii_strtoull(colon + 1, &end, 10) : 0;

    if (!colon || colon == addr_port || !end || *end || end == colon + 1 || port == 0 ||
        port > 65535) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "listen-tcp '%s': expected ADDR:PORT, such as 127.0.0.1:8080 or [::1]:8080",
                    addr_port ? addr_port : "");
        return false;
    }
    g_autofree char *host = g_strndup(addr_port, (gsize)(colon - addr_port));
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host) - 2);
        host[strlen(host) - 2] = '\0';
    }
    GSocketAddress *addr = g_inet_socket_address_new_from_string(host, (guint)port);
    if (!addr) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "listen-tcp '%s': '%s' is not an IP address", addr_port, host);
        return false;
    }
    bool ok = soup_server_listen(api->server, addr, 0, error);
    g_object_unref(addr);
    if (ok)
        log_info(API_LOG, "listening on tcp %s (bearer token required)", addr_port);
    return ok;
}

void api_server_set_pool(api_server *api, vm_pool *pool, const char *image)
{
    api->pool = pool;
    g_free(api->image);
    api->image = g_strdup(image);
}

void api_server_set_tokens(api_server *api, GHashTable *tokens)
{
    if (api->tokens)
        g_hash_table_unref(api->tokens);
    api->tokens = tokens;
}

void api_server_stop(api_server *api)
{
    if (!api)
        return;
    api->stopping = true;      /* api_exec_ws_free runs the main context: requests may still come */
    api_exec_ws_free(api->ws); /* kills the streams' processes: before the service goes */
    if (api->server) {
        soup_server_disconnect(api->server);
        g_object_unref(api->server);
    }
    unlink(api->socket_path);
    g_free(api->image);
    if (api->tokens)
        g_hash_table_unref(api->tokens);
    g_free(api->socket_path);
    g_free(api);
}
