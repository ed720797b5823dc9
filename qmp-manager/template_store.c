/* template_store.c: a template's RAM in the object store (see template_store.h). */
#include "template_store.h"

#include "hash.h"
#include "log.h"
#include "sleep_internal.h"
#include "vm_gc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TPL_STORE_LOG "template"

/* The first 16 hex digits of the SHA-256 of the chunk hashes, in order. */
static bool template_store_id(const struct chunk_list *ram, const struct chunk_list *state,
                              char id[17], GError **error)
{
    GString *all = g_string_new(NULL);
    const struct chunk_list *lists[] = {ram, state};
    uint8_t sha[HASH_SHA256_LEN];
    char hex[HASH_SHA256_HEX_LEN + 1];

    for (int l = 0; l < 2; l++)
        for (guint i = 0; i < lists[l]->hashes->len; i++)
            g_string_append_printf(all, "%s\n", (char *)g_ptr_array_index(lists[l]->hashes, i));
    int r = hash_sha256(all->str, all->len, sha);
    g_string_free(all, TRUE);
    if (r < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "template: sha256: %s", g_strerror(-r));
        return false;
    }
    hash_to_hex(sha, sizeof sha, hex);
    memcpy(id, hex, 16);
    id[16] = '\0';
    return true;
}

/* The key recorded by an earlier publish, if the store still has that manifest. */
static char *template_store_published(struct store *st, const char *record)
{
    g_autofree char *key = NULL;
    struct store_stat sb;

    if (!g_file_get_contents(record, &key, NULL, NULL))
        return NULL;
    g_strstrip(key);
    if (!g_str_has_prefix(key, VM_TEMPLATE_PREFIX) || store_head(st, key, &sb) != 0)
        return NULL;
    return g_steal_pointer(&key);
}

char *vm_template_store_publish(struct store *st, const struct vm_template *t,
                                struct chunk_upload_stats *stats, GError **error)
{
    g_autofree char *record = g_build_filename(t->dir, "store-manifest", NULL);
    struct chunk_list ram = {0}, state = {0};
    struct chunk_upload_stats state_stats;
    char key16[17], id[17];
    char *key = NULL, *sprite = NULL, *text = NULL;

    if (stats)
        memset(stats, 0, sizeof *stats);
    key = template_store_published(st, record);
    if (key) {
        log_debug(TPL_STORE_LOG, "template %s already in %s as %s", t->key, store_describe(st),
                  key);
        return key;
    }
    g_strlcpy(key16, t->key, sizeof key16);
    sprite = g_strdup_printf("template/%s", key16);
    /* The same rule as a sleep's (sleep.c; the numbers in ram_chunks.h): the manifest is PUT
     * only while the pass that stored its chunks is fresh, else the pass is done again. */
    for (int pass_no = 1;; pass_no++) {
        struct chunk_pass pass;
        double elapsed;

        chunk_list_clear(&ram);
        chunk_list_clear(&state);
        g_clear_pointer(&key, g_free);
        g_clear_pointer(&text, g_free);
        if (!chunk_pass_begin(st, &pass, error) ||
            !chunk_list_store_in_pass(st, &pass, t->ram_path, RAM_CHUNK_BYTES_DEFAULT, NULL, &ram,
                                      pass_no == 1 ? stats : NULL, error) ||
            !chunk_list_store_in_pass(st, &pass, t->state_path, RAM_CHUNK_BYTES_DEFAULT, NULL,
                                      &state, &state_stats, error) ||
            !template_store_id(&ram, &state, id, error)) {
            g_prefix_error(error, "template: publish: ");
            goto done;
        }
        key = g_strdup_printf("%s%s/%s/manifest.json", VM_TEMPLATE_PREFIX, key16, id);
        text = sleep_manifest_build(sprite, key, t->mem_mib, &ram, &state);
        if (chunk_pass_fresh(&pass, &elapsed))
            break;
        if (pass_no == RAM_CHUNK_PASSES_MAX) {
            g_set_error(error, VM_ERROR, VM_ERROR_TIMEOUT,
                        "template: publish: storing the chunks took longer than %d s %d times",
                        RAM_CHUNK_PASS_MAX_S, RAM_CHUNK_PASSES_MAX);
            g_clear_pointer(&key, g_free);
            goto done;
        }
        log_warn(TPL_STORE_LOG,
                 "template %s: storing the chunks took %.0f s: again, for GC's grace", t->key,
                 elapsed);
    }
    /* Written last: its presence means every chunk it names is stored. */
    if (store_put(st, key, text, strlen(text)) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "template: publish: PUT %s: %s", key,
                    store_last_error());
        g_clear_pointer(&key, g_free);
        goto done;
    }
    GError *err = NULL;
    if (!g_file_set_contents(record, key, -1, &err)) {
        /* Only an optimisation: the next publish chunks the RAM again and finds it stored. */
        log_warn(TPL_STORE_LOG, "%s", err->message);
        g_error_free(err);
    }
    log_info(TPL_STORE_LOG,
             "template %s published to %s as %s: %u RAM chunks, %" G_GUINT64_FORMAT
             " bytes uploaded",
             t->key, store_describe(st), key, ram.hashes->len,
             stats ? stats->uploaded_bytes : (guint64)0);
done:
    g_free(sprite);
    g_free(text);
    chunk_list_clear(&ram);
    chunk_list_clear(&state);
    return key;
}

bool vm_template_store_delete(struct store *st, const char *manifest_key, GError **error)
{
    if (!g_str_has_prefix(manifest_key, VM_TEMPLATE_PREFIX) ||
        !g_str_has_suffix(manifest_key, "/manifest.json")) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "template: %s is not a template manifest",
                    manifest_key);
        return false;
    }
    if (store_delete(st, manifest_key) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "template: DELETE %s: %s", manifest_key,
                    store_last_error());
        return false;
    }
    return true;
}
