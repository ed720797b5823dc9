/* clone.h: a pool member, restored from the template (docs/vm.md).
 *
 * QEMU starts with the template's command line except that the RAM file is mapped share=off (a
 * private copy-on-write mapping: the clone's writes never reach the template's file, and pages
 * it never writes stay shared in the page cache with every other clone), plus -incoming defer
 * and -S.  Then: x-ignore-shared, getfd of the template's state file, migrate-incoming fd:,
 * completed.  The clone stays paused with the placeholder disk in slot0 until a claim. */
#ifndef WISP_CLONE_H
#define WISP_CLONE_H

#include "template.h"
#include "vm.h"

/* Restores a paused clone of t with its sockets in run_dir.  *restore_ms (may be NULL): launch
 * to migration completed. */
struct vm *vm_clone_restore(const struct vm_template *t, const char *run_dir, GMainContext *ctx,
                            double *restore_ms, GError **error);

#endif
