/* cli_restore_meta.c: `wisp disk restore-meta --store URL --meta DIR [--replica NAME]
 * [--verify sample|full|none] [--cache DIR] [--json]`.
 *
 * Rebuilds a metadata directory from its replica in the object store (meta/replica.h) on a
 * host that has only the store's address and credentials, and verifies it: the database's own
 * checks, then every chunk a disk head or checkpoint names must exist in the store, and a
 * random sample of them (all with --verify full) must hash to their names.  DIR must be empty
 * or absent.  With --cache DIR, the cache directory the server will use, unuploaded data
 * whose files are there is kept; otherwise (a fresh host) it is dropped and each disk comes
 * back at its last committed head. */
#include "cli.h"
#include "meta_json.h"
#include "replica.h"
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 1 if dir has an entry, 0 if it is empty or absent, -errno. */
static int cli_restore_meta_dir_used(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int used = 0;

    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            used = 1;
    closedir(d);
    return used;
}

static void cli_restore_meta_print(const struct replica_restore_info *info, const char *name,
                                   const char *dir, enum replica_verify verify, bool json)
{
    long long age = info->replicated_at ? (long long)(time(NULL) - info->replicated_at) : -1;

    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        meta_json_member_bool(b, "ok", TRUE);
        meta_json_member_string(b, "replica", name);
        meta_json_member_string(b, "meta", dir);
        meta_json_member_string(b, "verify", replica_verify_to_string(verify));
        meta_json_member_int(b, "generation", (gint64)info->generation);
        meta_json_member_int(b, "seq", (gint64)info->seq);
        meta_json_member_int(b, "segments", (gint64)info->segments);
        meta_json_member_int(b, "segments_ignored", (gint64)info->segments_ignored);
        meta_json_member_int(b, "snapshot_bytes", (gint64)info->snapshot_bytes);
        meta_json_member_int(b, "wal_bytes", (gint64)info->wal_bytes);
        meta_json_member_int(b, "db_bytes", (gint64)info->db_bytes);
        meta_json_member_int(b, "replicated_at", (gint64)info->replicated_at);
        meta_json_member_int(b, "age_s", (gint64)age);
        meta_json_member_int(b, "disks", (gint64)info->disks);
        meta_json_member_int(b, "checkpoints", (gint64)info->checkpoints);
        meta_json_member_int(b, "pending_dropped", (gint64)info->pending_dropped);
        meta_json_member_int(b, "chunks", (gint64)info->chunks);
        meta_json_member_int(b, "chunks_hashed", (gint64)info->chunks_hashed);
        json_builder_end_object(b);
        JsonNode *root = json_builder_get_root(b);
        char *text = json_to_string(root, FALSE);
        printf("%s\n", text);
        g_free(text);
        json_node_unref(root);
        g_object_unref(b);
        return;
    }
    printf("restored %s from replica '%s': generation %016" PRIx64 ", snapshot of %" PRIu64
           " bytes and %u log segments (to sequence %016" PRIx64 ")\n",
           dir, name, info->generation, info->snapshot_bytes, info->segments, info->seq);
    if (age >= 0)
        printf("replicated %lld s ago\n", age);
    if (info->segments_ignored)
        printf("warning: %u segments after a gap or a damaged one were not applied\n",
               info->segments_ignored);
    printf("%u disks, %u checkpoints", info->disks, info->checkpoints);
    if (info->pending_dropped)
        printf("; %u disks lost data flushed but never uploaded (durability=local) and are at "
               "their last committed head",
               info->pending_dropped);
    printf("\n");
    if (verify == REPLICA_VERIFY_NONE)
        printf("chunks not verified (--verify none)\n");
    else
        printf("verified: all %" PRIu64 " chunks named exist in the store; %" PRIu64
               " hashed (%s)\n",
               info->chunks, info->chunks_hashed, replica_verify_to_string(verify));
}

int cli_restore_meta_main(int argc, char **argv)
{
    char *store_url = NULL, *meta_dir = NULL, *name = NULL, *verify_s = NULL, *cache = NULL;
    gboolean json = FALSE;
    GOptionEntry entries[] = {
        {"store", 's', 0, G_OPTION_ARG_STRING, &store_url, "Store URL (default $WISP_STORE)",
         "URL"},
        {"meta", 'm', 0, G_OPTION_ARG_FILENAME, &meta_dir,
         "Metadata directory to rebuild: empty or absent (default $WISP_META)", "DIR"},
        {"replica", 'r', 0, G_OPTION_ARG_STRING, &name,
         "Replica name, the server's replica= (default 'default')", "NAME"},
        {"verify", 0, 0, G_OPTION_ARG_STRING, &verify_s,
         "sample: every chunk named exists, 16 hashed (default); full: all hashed; none", "HOW"},
        {"cache", 0, 0, G_OPTION_ARG_FILENAME, &cache,
         "The server's cache directory, to keep unuploaded data found there", "DIR"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL},
        G_OPTION_ENTRY_NULL,
    };
    struct replica_restore_options o = {.verify = REPLICA_VERIFY_SAMPLE};
    struct replica_restore_info info;
    struct store *st = NULL;
    int status = CLI_EXIT_ERROR, r;

    if (cli_parse_options("disk", "restore-meta", "--store URL --meta DIR",
                          "rebuild metadata from its replica in the store, verified", entries,
                          &argc, &argv) != CLI_EXIT_OK)
        return CLI_EXIT_USAGE;
    if (!store_url && getenv("WISP_STORE"))
        store_url = g_strdup(getenv("WISP_STORE"));
    if (!meta_dir && getenv("WISP_META"))
        meta_dir = g_strdup(getenv("WISP_META"));
    if (!store_url || !meta_dir || argc > 0) {
        cli_error("usage: wisp disk restore-meta --store URL --meta DIR [--replica NAME] "
                  "[--verify sample|full|none] [--cache DIR] [--json]");
        status = CLI_EXIT_USAGE;
        goto out;
    }
    o.name = name ? name : REPLICA_NAME_DEFAULT;
    o.cache_dir = cache;
    if (verify_s && strcmp(verify_s, "full") == 0) {
        o.verify = REPLICA_VERIFY_FULL;
    } else if (verify_s && strcmp(verify_s, "none") == 0) {
        o.verify = REPLICA_VERIFY_NONE;
    } else if (verify_s && strcmp(verify_s, "sample") != 0) {
        cli_error("--verify %s: expected sample, full or none", verify_s);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    if (!replica_name_valid(o.name, NULL)) {
        cli_error("--replica %s: not a valid replica name", o.name);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    r = cli_restore_meta_dir_used(meta_dir);
    if (r != 0) {
        if (r > 0)
            cli_error("%s is not empty: restore-meta rebuilds metadata only into an empty or "
                      "new directory (move the old one away first)",
                      meta_dir);
        else
            cli_error("%s: %s", meta_dir, g_strerror(-r));
        goto out;
    }
    r = store_open(store_url, NULL, &st);
    if (r < 0) {
        cli_error("%s: %s", store_url, store_last_error());
        goto out;
    }
    r = replica_restore(st, meta_dir, &o, &info);
    if (r == -ENOENT) {
        cli_error("%s holds no replica '%s' (meta/%s/) to restore", store_describe(st), o.name,
                  o.name);
    } else if (r == -EIO && (info.chunks_missing || info.chunks_corrupt)) {
        cli_error("verification failed: %" PRIu64 " chunks missing and %" PRIu64
                  " corrupt in the store (the first: %s); nothing was restored into %s",
                  info.chunks_missing, info.chunks_corrupt, info.first_bad_chunk, meta_dir);
    } else if (r == -EBADMSG) {
        cli_error("the replica '%s' fails its checks (see above); nothing was restored into %s",
                  o.name, meta_dir);
    } else if (r < 0) {
        cli_error("restore of replica '%s' into %s: %s", o.name, meta_dir, g_strerror(-r));
    } else {
        cli_restore_meta_print(&info, o.name, meta_dir, o.verify, json);
        status = CLI_EXIT_OK;
    }
out:
    store_close(st);
    g_free(store_url);
    g_free(meta_dir);
    g_free(name);
    g_free(verify_s);
    g_free(cache);
    return status;
}
