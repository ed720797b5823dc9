/* template.h: the template snapshot that pool members are cloned from (docs/vm.md).
 *
 * One template per image version: the standard image is booted once, with its RAM in a file
 * (memory-backend-file, share=on) and a null-co placeholder disk, to wisp-init's READY.  The
 * control connection is closed again (so that the snapshot has no host attached), the VM is
 * stopped, and its device state migrates to a file passed over QMP with getfd, with the
 * capability x-ignore-shared set: the RAM stays in its file and is not copied into the stream.
 * QEMU then quits.  What is left, in STATE_DIR/templates/KEY16/ (the key's first 16 digits):
 *
 *   ram            the guest RAM (the size of the guest; written pages only, it is sparse)
 *   state          the migration stream (device state, about 60 KB)
 *   manifest.json  key, memory, accelerator, placeholder size, QEMU version, timings
 *
 * KEY is the image's input hash (image.json "input_hash"), so a new image makes a new template
 * and an unchanged one reuses it.  The template is built in KEY16.tmp and renamed into place, so
 * a crash mid-build leaves no half template that looks whole; KEY16.lock (flock) makes a second
 * manager wait for a build in progress and then reuse it.
 *
 * The template never reads /proc/sys/kernel/random/boot_id: the kernel makes it on the first
 * read, so each clone draws its own after the claim's SEED. */
#ifndef WISP_TEMPLATE_H
#define WISP_TEMPLATE_H

#include "vm_config.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

struct vm_template_config {
    const char *state_dir; /* templates live in STATE_DIR/templates/KEY */
    const char *key;       /* the image's input hash (vm_template_image_key) */
    const char *kernel, *initrd;
    unsigned mem_mib;           /* 0: 256 */
    enum vm_accel accel;        /* AUTO: probe */
    uint64_t placeholder_bytes; /* 0: 1 GiB; clones keep it until the claim resizes */
    bool sandbox;
    const char *qemu;    /* NULL: $WISP_QEMU, else qemu-system-x86_64 */
    int boot_timeout_ms; /* to READY; 0: 120 s */
    /* QEMU's user for the template boot and every clone (vm_config.run_as, runas.h), or NULL. */
    const char *run_as;
};

struct vm_template {
    char *dir, *key, *kernel, *initrd, *qemu;
    char *ram_path, *state_path;
    unsigned mem_mib;
    enum vm_accel accel;
    uint64_t placeholder_bytes;
    bool sandbox;
    bool built_now;     /* false: reused from disk */
    double boot_ms;     /* launch to READY, when it was built */
    double snapshot_ms; /* stop + migrate + completed */
    char *run_as;       /* vm_template_config.run_as (owned), or NULL */
};

/* The image's input hash from IMAGE_DIR/image.json (g_free it). */
char *vm_template_image_key(const char *image_dir, GError **error);

/* Loads the template for cfg->key from disk when its manifest matches the config, else builds
 * it (replacing a stale one).  Blocking: a build boots a VM (seconds under TCG). */
struct vm_template *vm_template_ensure(const struct vm_template_config *cfg, GError **error);

/* The VM config of a clone of t (RAM share=off, -incoming defer, -S, placeholder disk), with
 * its sockets in run_dir.  The strings are t's: keep t alive while the config is used. */
void vm_template_clone_config(const struct vm_template *t, const char *run_dir,
                              struct vm_config *out);

void vm_template_free(struct vm_template *t);

/* For clone.c: set x-ignore-shared on a VM; poll query-migrate until completed. */
struct vm;
bool vm_template_set_ignore_shared(struct vm *vm, GError **error);
bool vm_template_migration_wait(struct vm *vm, int timeout_ms, GError **error);

#endif
