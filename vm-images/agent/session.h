/* session.h: exec sessions, one per EXEC, named by its stream id.
 *
 * A session's output goes child pipe (or pty) -> a 64 KiB ring per stream -> STDOUT/STDERR frames,
 * the last step only within the host's credit.  A full ring is not read from, so the child blocks
 * in write(): that is the whole back-pressure, and a session's memory is bounded whatever it
 * prints.  Stdin goes STDIN frames -> a ring of SESSION_STDIN_WINDOW bytes -> the child, and the
 * guest returns credit (WINDOW) as the child consumes it.
 *
 * A session belongs to the connection that started it.  When the host goes away the session
 * runs on, unadopted: nothing is sent for it until a host sends WINDOW on its stream. */
#ifndef WISP_AGENT_SESSION_H
#define WISP_AGENT_SESSION_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"
#include "ring.h"

#define SESSION_MAX 64
/* A finished session that no host holds is kept this long, for a host that reconnects to
 * adopt it and read its output and exit; then it is freed, or orphans left by hosts that never
 * came back would fill SESSION_MAX for good. */
#define SESSION_ORPHAN_KEEP_MS 60000
#define SESSION_OUT_RING       (64 * 1024)
#define SESSION_STDIN_WINDOW   (128 * 1024)
#define SESSION_DEFAULT_WINDOW (256 * 1024)
/* Credit is returned in batches of at least this much, or when the stdin ring empties. */
#define SESSION_WINDOW_BATCH (16 * 1024)

struct agent;

struct session {
    struct session *next;
    uint32_t stream;
    pid_t pid;
    bool tty;
    int in_fd, out_fd, err_fd; /* -1 once closed */
    struct ring out, err, in;
    uint64_t credit;        /* bytes of output the host accepts */
    uint64_t stdin_credit;  /* bytes of STDIN the host may still send */
    uint64_t stdin_unacked; /* written to the child, not yet returned as WINDOW */
    bool stdin_dead;        /* the child closed its stdin: STDIN is dropped (and credited) */
    bool stdin_close_pending;
    bool reaped;
    int wstatus;
    bool adopted;
    /* For freeing orphans: when the process was reaped, and when the host that started the
     * session went away (0: never, or adopted again since). */
    uint64_t reaped_at_ms, orphaned_at_ms;
};

void session_exec(struct agent *a, const struct wisp_msg *m);
void session_stdin(struct agent *a, const struct wisp_msg *m);
void session_stdin_close(struct agent *a, const struct wisp_msg *m);
void session_window(struct agent *a, const struct wisp_msg *m);
void session_signal(struct agent *a, const struct wisp_msg *m);
void session_resize(struct agent *a, const struct wisp_msg *m);

/* Adds the sessions' descriptors to fds (at most max); returns how many were added. */
size_t sessions_poll_fill(struct agent *a, struct pollfd *fds, size_t max);
/* After poll: moves bytes between children and rings. */
void sessions_service(struct agent *a, const struct pollfd *fds, size_t n);
/* Sends EXITs of finished sessions and frees them; returns credit for consumed stdin. */
void sessions_progress(struct agent *a);
/* A session has nothing left but its EXIT (which sessions_progress sends). */
/* Milliseconds until a finished orphan is due to be freed (SESSION_ORPHAN_KEEP_MS), or -1. */
int sessions_tick(const struct agent *a, uint64_t now);
bool sessions_exit_ready(const struct agent *a);
/* channel fill(): the next STDOUT/STDERR frame, round robin over the sessions. */
size_t sessions_fill(struct agent *a, uint8_t *buf, size_t cap);
/* wisp-init reaped pid: true when it was a session's process. */
bool sessions_reaped(struct agent *a, pid_t pid, int status);
/* The host went away. */
void sessions_disconnected(struct agent *a);

#endif
