/* wispd_config.c: wispd's settings from flags, an INI file and defaults (wispd_config.h). */
#include "wispd_config.h"

#include "runas.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WISPD_GROUP "wispd"

static bool wispd_config_read_idle(struct wispd_config *cfg, GKeyFile *kf, const char *path,
                                   bool reload, GError **error);

/* Reads the [wispd] group of path into cfg, where cfg has no value yet (flags win). */
static bool wispd_config_read_file(struct wispd_config *cfg, const char *path, bool override_pool,
                                   GError **error)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();

    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, error))
        return false;
    struct {
        const char *key;
        char **field;
    } strings[] = {
        {"state-dir", &cfg->state_dir}, {"cache-dir", &cfg->cache_dir},
        {"image-dir", &cfg->image_dir}, {"store", &cfg->store_url},
        {"listen", &cfg->listen},       {"tokens", &cfg->tokens_file},
        {"plugin", &cfg->plugin},       {"wisp-cli", &cfg->wisp_cli},
        {"qemu-user", &cfg->qemu_user},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(strings); i++)
        if (!*strings[i].field && g_key_file_has_key(kf, WISPD_GROUP, strings[i].key, NULL))
            *strings[i].field = g_key_file_get_string(kf, WISPD_GROUP, strings[i].key, NULL);
    if (!cfg->listen_tcp && g_key_file_has_key(kf, WISPD_GROUP, "listen-tcp", NULL))
        cfg->listen_tcp = g_key_file_get_string(kf, WISPD_GROUP, "listen-tcp", NULL);
    struct {
        const char *key;
        unsigned *field;
        bool override;
    } numbers[] = {
        {"pool-size", &cfg->pool_size, override_pool},
        {"memory-mib", &cfg->mem_mib, false},
        {"cpus", &cfg->vcpus, false},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(numbers); i++) {
        if ((*numbers[i].field && !numbers[i].override) ||
            !g_key_file_has_key(kf, WISPD_GROUP, numbers[i].key, NULL))
            continue;
        GError *e = NULL;
        gint v = g_key_file_get_integer(kf, WISPD_GROUP, numbers[i].key, &e);
        if (e || v < 0 || v > 1024) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: %s must be a number from 0 to 1024", path, numbers[i].key);
            g_clear_error(&e);
            return false;
        }
        *numbers[i].field = (unsigned)v;
    }
    if (!cfg->sandbox_set && g_key_file_has_key(kf, WISPD_GROUP, "sandbox", NULL)) {
        GError *e = NULL;
        cfg->sandbox = g_key_file_get_boolean(kf, WISPD_GROUP, "sandbox", &e);
        if (e) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: sandbox must be true or false", path);
            g_clear_error(&e);
            return false;
        }
        cfg->sandbox_set = true;
    }
    return wispd_config_read_idle(cfg, kf, path, override_pool, error);
}

static void wispd_config_idle_defaults(struct wispd_config *cfg);

static void wispd_config_defaults(struct wispd_config *cfg)
{
    if (!cfg->cache_dir)
        cfg->cache_dir = g_build_filename(cfg->state_dir, "cache", NULL);
    if (!cfg->image_dir)
        cfg->image_dir = g_build_filename(cfg->state_dir, "image", NULL);
    if (!cfg->store_url)
        cfg->store_url = g_strdup_printf("file://%s/store", cfg->state_dir);
    if (!cfg->listen)
        cfg->listen = g_build_filename(cfg->state_dir, "wispd.sock", NULL);
    if (!cfg->tokens_file)
        cfg->tokens_file = g_build_filename(cfg->state_dir, "tokens", NULL);
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *dir = self ? g_path_get_dirname(self) : g_strdup(".");
    if (!cfg->plugin) {
        /* The one built beside wispd in a build tree, else nbdkit's installed "wisp". */
        g_autofree char *built =
            g_build_filename(dir, "..", "nbdkit-plugin", "nbdkit-wisp-plugin.so", NULL);
        cfg->plugin =
            g_file_test(built, G_FILE_TEST_EXISTS) ? g_steal_pointer(&built) : g_strdup("wisp");
    }
    /* Installed side by side (and so are they in the build tree's pool/). */
    if (!cfg->wisp_cli)
        cfg->wisp_cli = g_build_filename(dir, "wisp", NULL);
    if (!cfg->pool_size)
        cfg->pool_size = 2;
    if (!cfg->mem_mib)
        cfg->mem_mib = 256;
    if (!cfg->vcpus)
        cfg->vcpus = 1;
    if (!cfg->sandbox_set)
        cfg->sandbox = true;
    if (!cfg->qemu_user)
        cfg->qemu_user = g_strdup(VM_RUNAS_DEFAULT_USER);
    wispd_config_idle_defaults(cfg);
}

bool wispd_config_load(struct wispd_config *cfg, int *argc, char ***argv, GError **error)
{
    gint pool_size = -1, mem = 0, cpus = 0;
    gboolean no_sandbox = FALSE;
    cfg->idle_warm_s = cfg->idle_cold_s = cfg->memory_low_mib = cfg->memory_psi = -1;
    cfg->cold_store_wait_s = -1;
    GOptionEntry entries[] = {
        {"config", 'c', 0, G_OPTION_ARG_FILENAME, &cfg->config_file, "INI file ([wispd] group)",
         "FILE"},
        {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &cfg->state_dir,
         "accounts, templates, run directories (default /var/lib/wisp)", "DIR"},
        {"cache-dir", 0, 0, G_OPTION_ARG_FILENAME, &cfg->cache_dir, "chunk cache (STATE/cache)",
         "DIR"},
        {"image-dir", 0, 0, G_OPTION_ARG_FILENAME, &cfg->image_dir,
         "the standard image (STATE/image)", "DIR"},
        {"store", 0, 0, G_OPTION_ARG_STRING, &cfg->store_url,
         "object store URL (file://STATE/store)", "URL"},
        {"listen", 0, 0, G_OPTION_ARG_FILENAME, &cfg->listen, "API unix socket (STATE/wispd.sock)",
         "PATH"},
        {"listen-tcp", 0, 0, G_OPTION_ARG_STRING, &cfg->listen_tcp,
         "also the API on TCP, bearer token required (none; put TLS in front)", "ADDR:PORT"},
        {"tokens", 0, 0, G_OPTION_ARG_FILENAME, &cfg->tokens_file,
         "bearer tokens, ACCOUNT TOKEN per line (STATE/tokens)", "FILE"},
        {"plugin", 0, 0, G_OPTION_ARG_FILENAME, &cfg->plugin, "nbdkit plugin (wisp)", "PATH"},
        {"wisp-cli", 0, 0, G_OPTION_ARG_FILENAME, &cfg->wisp_cli, "the wisp CLI (next to wispd)",
         "PATH"},
        {"pool-size", 0, 0, G_OPTION_ARG_INT, &pool_size, "warm VMs kept ready (2)", "N"},
        {"memory-mib", 0, 0, G_OPTION_ARG_INT, &mem, "guest memory per sprite (256)", "MIB"},
        {"cpus", 0, 0, G_OPTION_ARG_INT, &cpus, "vCPUs per sprite (1)", "N"},
        {"no-sandbox", 0, 0, G_OPTION_ARG_NONE, &no_sandbox,
         "QEMU without -sandbox on (on by default)", NULL},
        {"qemu-user", 0, 0, G_OPTION_ARG_STRING, &cfg->qemu_user,
         "QEMU drops to this user where the host allows (" VM_RUNAS_DEFAULT_USER "; \"\": no)",
         "USER"},
        {"idle-warm", 0, 0, G_OPTION_ARG_INT, &cfg->idle_warm_s,
         "seconds idle before warm sleep (30; 0: never)", "S"},
        {"idle-cold", 0, 0, G_OPTION_ARG_INT, &cfg->idle_cold_s,
         "seconds idle before cold sleep (600; 0: never)", "S"},
        {"memory-low-mib", 0, 0, G_OPTION_ARG_INT, &cfg->memory_low_mib,
         "MemAvailable below this is memory pressure (1024; 0: not checked)", "MIB"},
        {"cold-store-wait", 0, 0, G_OPTION_ARG_INT, &cfg->cold_store_wait_s,
         "seconds a cold sleep waits for the store before it resumes the sprite (120)", "S"},
        {"memory-psi", 0, 0, G_OPTION_ARG_INT, &cfg->memory_psi,
         "/proc/pressure/memory some avg10 at or above this is pressure (20; 0: not checked)",
         "PERCENT"},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the Wisp daemon");

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, argc, argv, error))
        return false;
    if (*argc > 1) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "unexpected argument: %s",
                    (*argv)[1]);
        return false;
    }
    if (cfg->idle_warm_s < -1 || cfg->idle_cold_s < -1 || cfg->memory_low_mib < -1 ||
        cfg->memory_psi < -1 || cfg->memory_psi > 100) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--idle-warm, --idle-cold, --memory-low-mib or --memory-psi out of range");
        return false;
    }
    if (pool_size > 1024 || mem < 0 || mem > 1 << 20 || cpus < 0 || cpus > 64) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--pool-size, --memory-mib or --cpus out of range");
        return false;
    }
    cfg->pool_size = pool_size > 0 ? (unsigned)pool_size : 0;
    cfg->mem_mib = (unsigned)mem;
    cfg->vcpus = (unsigned)cpus;
    if (no_sandbox) {
        cfg->sandbox = false;
        cfg->sandbox_set = true;
    }
    if (cfg->config_file && !wispd_config_read_file(cfg, cfg->config_file, false, error))
        return false;
    if (!cfg->state_dir)
        cfg->state_dir = g_strdup("/var/lib/wisp");
    /* One spelling of it, absolute and without symlinks where it exists: every path derived
     * from it, and the search for what an earlier wispd left (its command lines), use it. */
    char *real = realpath(cfg->state_dir, NULL);
    char *canonical = real ? g_strdup(real) : g_canonicalize_filename(cfg->state_dir, NULL);
    free(real);
    g_free(cfg->state_dir);
    cfg->state_dir = canonical;
    wispd_config_defaults(cfg);
    return true;
}

bool wispd_config_reload(const struct wispd_config *cur, struct wispd_config *out, GError **error)
{
    *out = (struct wispd_config){0};
    out->pool_size = cur->pool_size;
    out->idle_warm_s = cur->idle_warm_s;
    out->idle_cold_s = cur->idle_cold_s;
    out->memory_low_mib = cur->memory_low_mib;
    out->memory_psi = cur->memory_psi;
    out->cold_store_wait_s = cur->cold_store_wait_s;
    if (cur->config_file && !wispd_config_read_file(out, cur->config_file, true, error)) {
        wispd_config_clear(out);
        return false;
    }
    return true;
}

void wispd_config_clear(struct wispd_config *cfg)
{
    g_free(cfg->config_file);
    g_free(cfg->state_dir);
    g_free(cfg->cache_dir);
    g_free(cfg->image_dir);
    g_free(cfg->store_url);
    g_free(cfg->listen);
    g_free(cfg->listen_tcp);
    g_free(cfg->tokens_file);
    g_free(cfg->plugin);
    g_free(cfg->wisp_cli);
    g_free(cfg->qemu_user);
    *cfg = (struct wispd_config){0};
}

/* ---- the idle policy's settings -------------------------------------------------------------
 * Seconds and MiB: 0 switches the measure off, so "unset" is -1 here, not 0. */

static bool wispd_config_read_idle(struct wispd_config *cfg, GKeyFile *kf, const char *path,
                                   bool reload, GError **error)
{
    struct {
        const char *key;
        int *field;
        int max;
    } keys[] = {
        {"idle-warm", &cfg->idle_warm_s, 7 * 86400},
        {"idle-cold", &cfg->idle_cold_s, 30 * 86400},
        {"memory-low-mib", &cfg->memory_low_mib, 1 << 24},
        {"memory-psi", &cfg->memory_psi, 100},
        {"cold-store-wait", &cfg->cold_store_wait_s, 3600},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        if ((*keys[i].field >= 0 && !reload) ||
            !g_key_file_has_key(kf, WISPD_GROUP, keys[i].key, NULL))
            continue;
        GError *e = NULL;
        gint v = g_key_file_get_integer(kf, WISPD_GROUP, keys[i].key, &e);
        if (e || v < 0 || v > keys[i].max) {
            g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE,
                        "%s: %s must be a number from 0 to %d", path, keys[i].key, keys[i].max);
            g_clear_error(&e);
            return false;
        }
        *keys[i].field = v;
    }
    return true;
}

static void wispd_config_idle_defaults(struct wispd_config *cfg)
{
    if (cfg->idle_warm_s < 0)
        cfg->idle_warm_s = 30;
    if (cfg->idle_cold_s < 0)
        cfg->idle_cold_s = 600;
    if (cfg->memory_low_mib < 0)
        cfg->memory_low_mib = 1024;
    if (cfg->memory_psi < 0)
        cfg->memory_psi = 20;
    if (cfg->cold_store_wait_s <= 0)
        cfg->cold_store_wait_s = 120;
}
