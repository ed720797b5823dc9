/* cli_import.c: `wisp disk import NAME FILE --store URL --meta DIR [--cache DIR]
 * [--chunk-size 1M] [--plugin PATH] [--json]`.
 *
 * Creates the disk NAME sized to FILE (rounded up to a whole chunk) and copies FILE's data
 * into it through a private nbdkit with the Wisp plugin (disk_import.c), so the store gets
 * exactly what a guest writing the same bytes would leave: chunks by content hash, zero
 * chunks never.  Offline like `wisp disk create --meta`: it fails while a server holds the
 * metadata.  If the copy fails or is interrupted, the disk is deleted again; chunks already
 * uploaded are unreferenced then, and garbage collection removes them after its grace. */
#include "cli.h"
#include "disk_import.h"
#include "meta.h"
#include "meta_json.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t cli_import_cancel;

static void cli_import_on_signal(int sig)
{
    cli_import_cancel = 1;
}

/* ---- progress -------------------------------------------------------------------------------- */

struct cli_import_bar {
    const char *name;
    double last; /* when it was last drawn */
    bool drawn;
};

static double cli_import_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cli_import_human(uint64_t bytes, char *out, size_t len)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;

    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

/* One line on stderr, redrawn at most ten times a second: bar, bytes, rate, time left.  The
 * bytes are those of the file's data extents, since holes cost nothing. */
static void cli_import_progress(const struct disk_import_stats *st, void *opaque)
{
    struct cli_import_bar *bar = opaque;
    double now = cli_import_now();
    bool done = st->done_bytes >= st->data_bytes;
    char have[32], total[32], rate[32], eta[32] = "";
    char cells[31];

    if (!done && bar->drawn && now - bar->last < 0.1)
        return;
    bar->last = now;
    bar->drawn = true;
    double frac = st->data_bytes ? (double)st->done_bytes / (double)st->data_bytes : 1.0;
    double bps = st->seconds > 0 ? (double)st->done_bytes / st->seconds : 0;
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++)
        cells[i] = i < fill ? '#' : '.';
    cells[30] = '\0';
    cli_import_human(st->done_bytes, have, sizeof have);
    cli_import_human(st->data_bytes, total, sizeof total);
    cli_import_human((uint64_t)bps, rate, sizeof rate);
    if (!done && bps > 0) {
        long left = (long)((double)(st->data_bytes - st->done_bytes) / bps);
        snprintf(eta, sizeof eta, "  ETA %ld:%02ld", left / 60, left % 60);
    }
    fprintf(stderr, "\r\033[Kimport %s [%s] %3.0f%%  %s / %s  %s/s%s", bar->name, cells, frac * 100,
            have, total, rate, eta);
    fflush(stderr);
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* The plugin: --plugin, else $WISP_PLUGIN, else the one built next to this binary (a build
 * tree: pool/wisp and nbdkit-plugin/nbdkit-wisp-plugin.so), else "wisp", which nbdkit finds
 * among its installed plugins. */
static char *cli_import_plugin(const char *given)
{
    char exe[PATH_MAX];
    ssize_t n;

    if (given)
        return g_strdup(given);
    if (getenv("WISP_PLUGIN") && *getenv("WISP_PLUGIN"))
        return g_strdup(getenv("WISP_PLUGIN"));
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *p = g_strdup_printf("%s/../nbdkit-plugin/nbdkit-wisp-plugin.so", dirname(exe));
        if (access(p, R_OK) == 0)
            return p;
        g_free(p);
    }
    return g_strdup("wisp");
}

static int cli_import_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) < 0 && errno != ENOENT)
        cli_error("remove %s: %s", path, g_strerror(errno));
    return 0;
}

static void cli_import_print_log_tail(const char *path)
{
    gchar *text = NULL;
    gsize len = 0;

    if (!g_file_get_contents(path, &text, &len, NULL) || len == 0) {
        g_free(text);
        return;
    }
    const char *p = text + len;
    for (int lines = 0; p > text && lines <= 15;)
        if (*--p == '\n' && p != text + len - 1)
            lines++;
    fprintf(stderr, "---- nbdkit's last messages ----\n%s%s", p == text ? p : p + 1,
            text[len - 1] == '\n' ? "" : "\n");
    g_free(text);
}

/* Deletes the disk a failed import made.  nbdkit has exited, so the lock is free. */
static void cli_import_undo(const char *meta_dir, const char *name)
{
    struct meta *m;
    int r = meta_open(meta_dir, true, &m);

    if (r == 0) {
        r = meta_disk_delete(m, name);
        meta_close(m);
    }
    if (r < 0)
        cli_error("the disk '%s' could not be deleted (%s): delete it with 'wisp disk delete "
                  "%s'",
                  name, g_strerror(-r), name);
    else
        cli_error("the disk '%s' was deleted again; chunks already uploaded are removed by "
                  "garbage collection (wisp disk gc)",
                  name);
}

static void cli_import_print(const char *name, const struct meta_disk *d,
                             const struct disk_import_stats *st, bool json)
{
    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        meta_json_member_bool(b, "ok", TRUE);
        meta_json_member_string(b, "name", name);
        meta_json_member_int(b, "size", (gint64)d->size);
        meta_json_member_int(b, "chunk_size", (gint64)d->chunk_size);
        meta_json_member_int(b, "bytes", (gint64)st->file_bytes);
        meta_json_member_int(b, "data_bytes", (gint64)st->data_bytes);
        meta_json_member_int(b, "written_bytes", (gint64)st->written_bytes);
        meta_json_member_int(b, "chunks", (gint64)st->chunks_total);
        meta_json_member_int(b, "chunks_written", (gint64)st->chunks_written);
        meta_json_member_int(b, "chunks_zero", (gint64)st->chunks_zero);
        meta_json_member_double(b, "seconds", st->seconds);
        json_builder_end_object(b);
        JsonNode *root = json_builder_get_root(b);
        char *text = json_to_string(root, TRUE);
        printf("%s\n", text);
        g_free(text);
        json_node_unref(root);
        g_object_unref(b);
        return;
    }
    char size[32], written[32];
    cli_import_human(d->size, size, sizeof size);
    cli_import_human(st->written_bytes, written, sizeof written);
    printf("imported %s: %s disk, %s written in %llu of %llu chunks (%llu zero, skipped) in "
           "%.2f s\n",
           name, size, written, (unsigned long long)st->chunks_written,
           (unsigned long long)st->chunks_total, (unsigned long long)st->chunks_zero, st->seconds);
}

/* ---- the verb ---------------------------------------------------------------------------------
 */

int cli_import_main(int argc, char **argv)
{
    char *store_url = NULL, *meta_dir = NULL, *cache = NULL, *chunk_s = NULL, *plugin_s = NULL;
    char *work = NULL, *log_path = NULL, *plugin = NULL;
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        {"store", 's', 0, G_OPTION_ARG_STRING, &store_url, "Store URL (default $WISP_STORE)",
         "URL"},
        {"meta", 'm', 0, G_OPTION_ARG_FILENAME, &meta_dir,
         "Metadata directory; no server may hold it (default $WISP_META)", "DIR"},
        {"cache", 0, 0, G_OPTION_ARG_FILENAME, &cache,
         "Chunk cache for the copy, e.g. the server's (default: a temporary one)", "DIR"},
        {"chunk-size", 0, 0, G_OPTION_ARG_STRING, &chunk_s,
         "Chunk size of the new disk, a power of two from 64K to 4M (default 1M)", "SIZE"},
        {"plugin", 0, 0, G_OPTION_ARG_FILENAME, &plugin_s,
         "nbdkit-wisp-plugin.so (default $WISP_PLUGIN, the build tree's, or nbdkit's 'wisp')",
         "PATH"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL},
        G_OPTION_ENTRY_NULL,
    };
    struct disk_import_stats st;
    struct meta_disk d;
    struct meta *m = NULL;
    struct stat sb;
    uint64_t chunk = 1 << 20;
    int status = CLI_EXIT_ERROR, fd = -1, r;
    char why[512];

    if (cli_parse_options("disk", "import", "NAME FILE",
                          "create the disk NAME from FILE's data, zero chunks skipped", entries,
                          &argc, &argv) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (!store_url && getenv("WISP_STORE"))
        store_url = g_strdup(getenv("WISP_STORE"));
    if (!meta_dir && getenv("WISP_META"))
        meta_dir = g_strdup(getenv("WISP_META"));
    if (argc != 2 || !store_url || !meta_dir) {
        cli_error("usage: wisp disk import NAME FILE --store URL --meta DIR [--cache DIR] "
                  "[--chunk-size 1M] [--plugin PATH] [--json]");
        status = CLI_EXIT_USAGE;
        goto out;
    }
    const char *name = argv[0], *file = argv[1];
    if (chunk_s) {
        gchar *end;
        guint64 v = g_ascii_strtoull(chunk_s, &end, 10);
        guint64 mult = *end == 'K' || *end == 'k' ? 1024 : *end == 'M' || *end == 'm' ? 1 << 20 : 1;
        if (mult > 1)
            end++;
        chunk = v * mult;
        if (end == chunk_s || *end || chunk < META_CHUNK_SIZE_MIN || chunk > META_CHUNK_SIZE_MAX ||
            (chunk & (chunk - 1))) {
            cli_error("--chunk-size %s: a power of two from 64K to 4M", chunk_s);
            status = CLI_EXIT_USAGE;
            goto out;
        }
    }

    /* Everything that can be checked is checked before the disk exists. */
    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cli_error("cannot open %s: %s", file, g_strerror(errno));
        goto out;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        cli_error("%s: not a regular file", file);
        goto out;
    }
    if (sb.st_size == 0) {
        cli_error("%s is empty: a disk needs at least one byte", file);
        goto out;
    }
    work = g_strdup_printf("%s/wisp-import-XXXXXX", g_get_tmp_dir());
    if (!g_mkdtemp(work)) {
        cli_error("mkdtemp %s: %s", work, g_strerror(errno));
        g_free(work);
        work = NULL;
        goto out;
    }
    log_path = g_strdup_printf("%s/nbdkit.log", work);
    if (!cache)
        cache = g_strdup_printf("%s/cache", work);
    plugin = cli_import_plugin(plugin_s);

    r = meta_open(meta_dir, true, &m);
    if (r == -EBUSY) {
        cli_error("the metadata in %s is held by a running server: stop it, or import into "
                  "another metadata directory",
                  meta_dir);
        goto out;
    }
    if (r < 0) {
        cli_error("cannot open the metadata in %s: %s", meta_dir, g_strerror(-r));
        goto out;
    }
    r = meta_disk_create(m, name, (uint64_t)sb.st_size, (uint32_t)chunk, &d);
    meta_close(m);
    if (r == -EEXIST) {
        cli_error("a disk named '%s' exists: delete it first, or choose another name", name);
        goto out;
    }
    if (r < 0) {
        cli_error("cannot create '%s': %s (names are 1-128 of [A-Za-z0-9._-])", name,
                  g_strerror(-r));
        goto out;
    }

    struct cli_import_bar bar = {.name = name};
    struct disk_import_options o = {
        .plugin = plugin,
        .store_url = store_url,
        .cache_dir = cache,
        .meta_dir = meta_dir,
        .log_path = log_path,
        .chunk_size = d.chunk_size,
        .progress = isatty(STDERR_FILENO) ? cli_import_progress : NULL,
        .opaque = &bar,
        .cancel = &cli_import_cancel,
    };
    struct sigaction sa = {.sa_handler = cli_import_on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    r = disk_import_run(fd, name, &o, &st, why, sizeof why);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (bar.drawn)
        fputc('\n', stderr);
    if (r < 0) {
        cli_error("import of %s into '%s' failed: %s", file, name, why);
        if (r != -ECANCELED) /* an interrupt is ours, nbdkit has nothing to say about it */
            cli_import_print_log_tail(log_path);
        cli_import_undo(meta_dir, name);
        goto out;
    }
    cli_import_print(name, &d, &st, json);
    status = CLI_EXIT_OK;
out:
    if (fd >= 0)
        close(fd);
    if (work)
        nftw(work, cli_import_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_free(work);
    g_free(log_path);
    g_free(plugin);
    g_free(store_url);
    g_free(meta_dir);
    g_free(cache);
    g_free(chunk_s);
    g_free(plugin_s);
    return status;
}
