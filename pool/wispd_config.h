/* wispd_config.h: wispd's settings, from an INI file (GKeyFile, group [wispd]) and flags.
 *
 * Flags win over the file; the file wins over the defaults.  SIGHUP reads the file again, and
 * only the settings that can change at run time (the pool size, the idle policy's) take effect. */
#ifndef WISP_WISPD_CONFIG_H
#define WISP_WISPD_CONFIG_H

#include <glib.h>
#include <stdbool.h>

struct wispd_config {
    char *config_file; /* NULL: none */
    char *state_dir;   /* accounts, templates, run directories, the embedded store */
    char *cache_dir;   /* the storage server's chunk cache; default STATE/cache */
    char *image_dir;   /* vmlinux, initramfs.cpio.gz, rootfs.ext4, image.json */
    char *store_url;   /* default file://STATE/store */
    char *listen;      /* the API's unix socket; default STATE/wispd.sock */
    char *listen_tcp;  /* ADDR:PORT for the API on TCP too (tokens required); NULL: none */
    char *tokens_file; /* "ACCOUNT TOKEN" lines; default STATE/tokens */
    char *plugin;      /* nbdkit's plugin: a path or "wisp" */
    char *wisp_cli;    /* the wisp CLI, for the first import of the base disk */
    unsigned pool_size;
    unsigned mem_mib, vcpus;
    bool sandbox;     /* QEMU under -sandbox on; default true */
    bool sandbox_set; /* said by a flag or the file */
    char *qemu_user;  /* QEMU's user where the host allows (runas.h); "" : the caller's */
    /* The idle policy (idle_policy.h); -1 until set, then the defaults.  Reloaded on SIGHUP
     * (the file's values then win over the flags'). */
    int idle_warm_s;    /* idle-warm: 30 */
    int idle_cold_s;    /* idle-cold: 600 */
    int memory_low_mib; /* memory-low-mib: 1024 (0: not checked) */
    int memory_psi;     /* memory-psi: 20 (percent of some avg10; 0: not checked) */
    /* cold-store-wait: 120 s; how long a cold sleep whose QEMU has exited waits for the store
     * before it resumes the sprite from its local copy (read at start only). */
    int cold_store_wait_s;
};

/* Parses argv (GOption) and the config file it names; fills in the defaults.  false with error
 * on a bad flag or file. */
bool wispd_config_load(struct wispd_config *cfg, int *argc, char ***argv, GError **error);
/* Reads the config file again into *out (a copy of cur with the file's values). */
bool wispd_config_reload(const struct wispd_config *cur, struct wispd_config *out, GError **error);
void wispd_config_clear(struct wispd_config *cfg);

#endif
