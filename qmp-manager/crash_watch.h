/* crash_watch.h: noticing that a sprite's QEMU died, on the main loop, within milliseconds.
 *
 * A pidfd (pidfd_open, Linux 5.3) becomes readable when the process exits, whoever killed it;
 * it is watched as an fd source on the caller's GMainContext, so no SIGCHLD handler is needed and
 * a pid reused by another process cannot be mistaken for QEMU.  The QMP socket closing is the
 * second signal (qmp_client_set_close_handler); the pidfd is the one that decides.
 *
 * crash_watch_sprite() is the manager's use: when the QEMU of a running sprite exits without the
 * manager having asked (the watch is freed before a sleep's quit or a destroy), it reaps it
 * (vm_is_running) and records CRASHED with the wait status in the sprite database. */
#ifndef WISP_CRASH_WATCH_H
#define WISP_CRASH_WATCH_H

#include "sprite_db.h"
#include "vm.h"

#include <glib.h>
#include <sys/types.h>

typedef struct crash_watch crash_watch;

/* Runs once, on ctx, when pid exits.  The watch stays allocated until crash_watch_free. */
typedef void (*crash_watch_cb)(pid_t pid, void *opaque);

crash_watch *crash_watch_pid(GMainContext *ctx, pid_t pid, crash_watch_cb cb, void *opaque,
                             GError **error);
/* The sprite's QEMU exiting marks it crashed in db (see above).  vm and db must outlive the
 * watch. */
crash_watch *crash_watch_sprite(GMainContext *ctx, sprite_db *db, const char *name, struct vm *vm,
                                GError **error);
/* Whether the exit was seen (and, for a sprite, recorded). */
bool crash_watch_fired(const crash_watch *w);
/* Monotonic time (µs) at which the exit was seen, 0 before. */
gint64 crash_watch_fired_us(const crash_watch *w);
void crash_watch_free(crash_watch *w);

#endif
