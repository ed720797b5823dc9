/* agent_client.h: the host's end of the control channel to wisp-init (docs/protocol.md).
 *
 * The channel is QEMU's unix socket behind the virtserialport "wisp.ctl"; the frames are those
 * of vm-images/agent/protocol.h, the same code the guest links.  One reader thread takes frames
 * off the socket and files them under their stream: replies to requests (attach, freeze, status,
 * ...) and the output of exec sessions.  Callers block in the calls below, each with a timeout,
 * from any thread; several execs run at once on the one connection.
 *
 * Flow control, both ways, in bytes of credit:
 *   - stdout and stderr: the host grants the guest `window` bytes in EXEC and grants more with
 *     WINDOW as its reader consumes them, so an exec that prints 1 GiB never holds more than a
 *     window in the host's buffers or in the guest's;
 *   - stdin: the guest grants credit in STARTED and WINDOW; agent_exec_write() waits for it.
 *
 * Errors: a GError in the AGENT_ERROR domain; AGENT_ERROR_REMOTE carries wisp-init's own
 * error (enum wisp_err as text, and its errno when it has one).
 *
 * A broken connection fails every waiting call with AGENT_ERROR_CLOSED; the guest's processes
 * are not affected (wisp-init keeps them), and a new agent_client can connect. */
#ifndef WISP_AGENT_CLIENT_H
#define WISP_AGENT_CLIENT_H

#include "protocol.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_ERROR (agent_error_quark())
GQuark agent_error_quark(void);

enum agent_error_code {
    AGENT_ERROR_CONNECT,
    AGENT_ERROR_CLOSED,
    AGENT_ERROR_TIMEOUT,
    AGENT_ERROR_PROTOCOL, /* the guest sent what this side cannot take */
    AGENT_ERROR_REMOTE,   /* wisp-init answered with ERROR */
    AGENT_ERROR_IO,
};

typedef struct agent_client agent_client;
typedef struct agent_exec agent_exec;

/* What READY said. */
struct agent_ready {
    uint16_t version;
    uint32_t max_payload;
    uint64_t boot_id, uptime_ms;
    bool attached;
    char agent[64];
};

/* Connects to the control socket (retrying while QEMU has not created it), starts the reader. */
agent_client *agent_client_connect(const char *ctl_path, int timeout_ms, GError **error);
/* Closes the connection, fails what waits, joins the reader, frees.  Sessions must be freed
 * first. */
void agent_client_free(agent_client *c);

/* Sends HELLO until wisp-init answers READY (it cannot read before it has opened its port,
 * so HELLO is repeated every 200 ms).  out may be NULL. */
bool agent_client_wait_ready(agent_client *c, int timeout_ms, struct agent_ready *out,
                             GError **error);

/* attach: device (NULL: /dev/vda), hostname, env (NULL-terminated "K=V", may be NULL). */
bool agent_client_attach(agent_client *c, const char *device, const char *hostname,
                         const char *const *env, int timeout_ms, GError **error);
/* SEED: len (WISP_SEED_MIN_BYTES..WISP_SEED_MAX_BYTES) random bytes that wisp-init mixes into
 * the kernel's RNG and reseeds it with; a clone's first message after it is claimed. */
bool agent_client_seed(agent_client *c, const void *bytes, size_t len, int timeout_ms,
                       GError **error);
bool agent_client_freeze(agent_client *c, int timeout_ms, GError **error);
bool agent_client_thaw(agent_client *c, int timeout_ms, GError **error);
/* A clean unmount and poweroff; QEMU then exits. */
bool agent_client_shutdown(agent_client *c, int timeout_ms, GError **error);
/* STATUS: *out gets the decoded STATUS_REPLY (wisp_msg_free and g_free it). */
struct wisp_msg *agent_client_status(agent_client *c, int timeout_ms, GError **error);

/* Services. */
bool agent_client_service_start(agent_client *c, const char *name, const char *const *argv,
                                const char *const *env, const char *cwd, enum wisp_restart restart,
                                uint32_t restart_delay_ms, int timeout_ms, GError **error);
bool agent_client_service_stop(agent_client *c, const char *name, int timeout_ms, GError **error);
/* SERVICE_LIST_REPLY, decoded (wisp_msg_free and g_free it). */
struct wisp_msg *agent_client_service_list(agent_client *c, int timeout_ms, GError **error);
/* The last max_bytes of the service's log (g_free it; *len gets its length). */
char *agent_client_service_logs(agent_client *c, const char *name, uint32_t max_bytes, size_t *len,
                                int timeout_ms, GError **error);

/* ---- exec ---------------------------------------------------------------------------------- */

struct agent_exec_opts {
    const char *const *argv; /* required, NULL-terminated */
    const char *const *env;  /* NULL-terminated "K=V", or NULL */
    const char *cwd;         /* NULL: / */
    bool tty;                /* a pty: stdout and stderr both come as stdout */
    bool with_stdin;         /* else the process reads /dev/null */
    uint16_t rows, cols;     /* the pty's size (tty only); 0: 24x80 */
    uint32_t window;         /* stdout+stderr credit in bytes; 0: 256 KiB */
};

enum agent_stream_kind {
    AGENT_STDOUT = 1,
    AGENT_STDERR = 2,
};

/* Starts the process and waits for STARTED (or wisp-init's error). */
agent_exec *agent_exec_start(agent_client *c, const struct agent_exec_opts *opts, int timeout_ms,
                             GError **error);
void agent_exec_free(agent_exec *e);
/* The process's pid in the guest (0 for an adopted session). */
uint32_t agent_exec_pid(const agent_exec *e);
/* The session's stream id, which a later connection needs to adopt it. */
uint32_t agent_exec_stream(const agent_exec *e);
/* Takes over a session that an earlier connection started (the guest keeps sessions across
 * host disconnects): sends WINDOW on its stream, after which its output and EXIT flow to this
 * connection.  window: the output credit (0: 256 KiB).  STATUS lists the sessions there are. */
agent_exec *agent_exec_adopt(agent_client *c, uint32_t stream, uint32_t window, GError **error);

/* Writes all of buf to stdin, waiting for credit as needed. */
bool agent_exec_write(agent_exec *e, const void *buf, size_t len, int timeout_ms, GError **error);
bool agent_exec_close_stdin(agent_exec *e, GError **error);
bool agent_exec_signal(agent_exec *e, int signo, GError **error);
bool agent_exec_resize(agent_exec *e, uint16_t rows, uint16_t cols, GError **error);

/* Reads output: blocks until some is there, the process has exited with all of it read
 * (returns 0), or the timeout (-1 with AGENT_ERROR_TIMEOUT).  *kind says which stream. */
ssize_t agent_exec_read(agent_exec *e, void *buf, size_t cap, enum agent_stream_kind *kind,
                        int timeout_ms, GError **error);
/* Waits for the exit (discarding output still unread).  *kind: WISP_EXIT_CODE or
 * WISP_EXIT_SIGNAL; *code: the status or the signal. */
bool agent_exec_wait(agent_exec *e, int timeout_ms, int *kind, int *code, GError **error);
/* The shell's convention: the status, or 128 + the signal. */
int agent_exec_status_code(int kind, int code);

/* All in one, for short commands: runs argv with stdin_data (NULL: no stdin), collects stdout
 * and stderr (each may be NULL to discard; g_free them), returns the shell-style status
 * (agent_exec_status_code) or -1 with error. */
int agent_exec_run(agent_client *c, const char *const *argv, const void *stdin_data,
                   size_t stdin_len, char **out, size_t *out_len, char **err, int timeout_ms,
                   GError **error);

#endif
