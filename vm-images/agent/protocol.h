/* protocol.h: the Wisp control protocol between the host and wisp-init (docs/protocol.md).
 *
 * Plain C with no dependency beyond libc, so that the static guest binary and the host driver
 * link the same two files.  Every frame is a 16-byte little-endian header followed by at most
 * WISP_PROTO_MAX_PAYLOAD bytes of payload:
 *
 *   offset  size  field
 *   0       4     magic    "WISP" (0x50534957 read as a little-endian u32)
 *   4       1     version  protocol version of the frame (1)
 *   5       1     type     enum wisp_msg_type
 *   6       2     flags    0 in version 1; anything else is refused
 *   8       4     stream   request id or exec session id; 0 is the connection itself
 *   12      4     length   payload bytes that follow
 *
 * Functions return 0 (or a byte count) on success and a negative enum wisp_err on failure.
 * Nothing here logs, allocates without a bound, or exits. */
#ifndef WISP_PROTOCOL_H
#define WISP_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WISP_PROTO_MAGIC       0x50534957u /* bytes 'W' 'I' 'S' 'P' */
#define WISP_PROTO_VERSION     1
#define WISP_PROTO_MIN_VERSION 1
#define WISP_PROTO_HEADER_SIZE 16
#define WISP_PROTO_MAX_PAYLOAD (64u * 1024u)
#define WISP_PROTO_MAX_FRAME   (WISP_PROTO_HEADER_SIZE + WISP_PROTO_MAX_PAYLOAD)
/* Bound on every string array (argv, env) and record array, on top of the payload bound. */
#define WISP_PROTO_MAX_ITEMS 4096

enum wisp_msg_type {
    /* connection */
    WISP_MSG_HELLO = 0x01, /* host -> guest */
    WISP_MSG_READY = 0x02, /* guest -> host */
    WISP_MSG_OK = 0x03,    /* reply without data */
    WISP_MSG_ERROR = 0x04, /* reply, or a connection-level error on stream 0 */
    /* the sprite's disk and container */
    WISP_MSG_ATTACH = 0x10,
    WISP_MSG_SEED = 0x11, /* host -> guest: entropy for a clone (since 1, added with pools) */
    /* exec sessions: the stream id names the session */
    WISP_MSG_EXEC = 0x20,
    WISP_MSG_STARTED = 0x21,
    WISP_MSG_STDIN = 0x22,
    WISP_MSG_STDIN_CLOSE = 0x23,
    WISP_MSG_STDOUT = 0x24,
    WISP_MSG_STDERR = 0x25,
    WISP_MSG_WINDOW = 0x26,
    WISP_MSG_SIGNAL = 0x27,
    WISP_MSG_RESIZE = 0x28,
    WISP_MSG_EXIT = 0x29,
    /* filesystem */
    WISP_MSG_FREEZE = 0x30,
    WISP_MSG_THAW = 0x31,
    /* services */
    WISP_MSG_SERVICE_START = 0x40,
    WISP_MSG_SERVICE_STOP = 0x41,
    WISP_MSG_SERVICE_LIST = 0x42,
    WISP_MSG_SERVICE_LIST_REPLY = 0x43,
    WISP_MSG_SERVICE_LOGS = 0x44,
    WISP_MSG_SERVICE_LOGS_REPLY = 0x45,
    /* the VM */
    WISP_MSG_STATUS = 0x50,
    WISP_MSG_STATUS_REPLY = 0x51,
    WISP_MSG_SHUTDOWN = 0x52,
};

/* Error codes, negative as return values and positive on the wire (ERROR.code). */
enum wisp_err {
    WISP_E_BAD_MAGIC = 1,    /* the bytes are not a frame header */
    WISP_E_BAD_VERSION = 2,  /* frame or HELLO version not supported */
    WISP_E_BAD_FLAGS = 3,    /* header flags not zero */
    WISP_E_TOO_LARGE = 4,    /* payload length above the maximum, or an encode does not fit */
    WISP_E_UNKNOWN_TYPE = 5, /* message type not known to this version */
    WISP_E_TRUNCATED = 6,    /* payload ends inside a field */
    WISP_E_TRAILING = 7,     /* payload has bytes after its last field */
    WISP_E_BAD_FIELD = 8,    /* a field's value is out of range (NUL in a string, empty argv...) */
    WISP_E_NOMEM = 9,        /* allocation failed */
    WISP_E_BAD_STATE = 10,   /* not allowed now (exec before attach, attach twice, ...) */
    WISP_E_NOT_FOUND = 11,   /* no such session or service */
    WISP_E_EXISTS = 12,      /* stream id or service name already in use */
    WISP_E_NO_CREDIT = 13,   /* STDIN beyond the window the guest granted */
    WISP_E_SYSTEM = 14,      /* a system call failed; ERROR.sys_errno says which errno */
    WISP_E_BUSY = 15,        /* too many sessions, services, ... */
};

const char *wisp_err_to_string(int err); /* accepts err or -err */
const char *wisp_msg_type_to_string(uint8_t type);
bool wisp_msg_type_known(uint8_t type);

struct wisp_header {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t stream;
    uint32_t length;
};

/* Fills out from buf.  Checks magic, version (WISP_PROTO_MIN_VERSION..WISP_PROTO_VERSION),
 * flags and length against max_payload, in that order; on a later failure the earlier fields of
 * out are valid (so an error reply can name the stream). */
int wisp_header_decode(const uint8_t buf[WISP_PROTO_HEADER_SIZE], uint32_t max_payload,
                       struct wisp_header *out);
void wisp_header_encode(uint8_t buf[WISP_PROTO_HEADER_SIZE], uint8_t type, uint32_t stream,
                        uint32_t length);

/* SEED carries this many random bytes: at least 32 (the CRNG's key size), at most 512. */
#define WISP_SEED_MIN_BYTES 32
#define WISP_SEED_MAX_BYTES 512

/* Exec flags. */
#define WISP_EXEC_TTY   0x1u /* a pty for stdin/stdout (stderr goes to the pty too) */
#define WISP_EXEC_STDIN 0x2u /* the host sends stdin; without it stdin is /dev/null */

/* Exit kinds. */
#define WISP_EXIT_CODE   0 /* code is the exit status */
#define WISP_EXIT_SIGNAL 1 /* code is the signal number */

/* Service restart policies. */
enum wisp_restart {
    WISP_RESTART_NEVER = 0,
    WISP_RESTART_ON_FAILURE = 1,
    WISP_RESTART_ALWAYS = 2,
};

enum wisp_service_state {
    WISP_SERVICE_STOPPED = 0,
    WISP_SERVICE_RUNNING = 1,
    WISP_SERVICE_BACKOFF = 2, /* exited, restart pending */
    WISP_SERVICE_FAILED = 3,  /* exited, no restart by policy */
};

/* A string array: count entries, then a NULL, as execve wants. */
struct wisp_strv {
    uint32_t count;
    char **v;
};

struct wisp_listener {
    uint8_t family; /* 4 or 6 */
    uint16_t port;
    uint8_t addr[16]; /* IPv4 in the first 4 bytes */
};

struct wisp_session_info {
    uint32_t stream;
    uint32_t pid;
    uint8_t state; /* 0 running, 1 exited and EXIT not yet delivered */
};

struct wisp_service_info {
    char *name;
    uint8_t state; /* enum wisp_service_state */
    uint32_t pid;
    uint32_t restarts;
    uint8_t last_kind; /* WISP_EXIT_* of the last exit */
    uint32_t last_code;
};

/* One decoded message.  Strings are NUL-terminated and contain no NUL.  After wisp_msg_decode,
 * strings and arrays live in one allocation freed by wisp_msg_free, while u.data.data points into
 * the payload that was decoded (no copy of stream data).  To encode, fill the fields with the
 * caller's own memory. */
struct wisp_msg {
    uint8_t type;
    uint32_t stream;
    union {
        struct {
            uint16_t min_version, max_version;
            uint64_t nonce;
            char *client;
        } hello;
        struct {
            uint16_t version;
            uint32_t max_payload;
            uint64_t nonce;   /* the HELLO's, or 0 when sent unasked on a connect */
            uint64_t boot_id; /* random per boot: a changed one means the guest rebooted */
            uint64_t uptime_ms;
            uint8_t attached;
            char *agent;
        } ready;
        struct {
            uint32_t code; /* enum wisp_err */
            int32_t sys_errno;
            char *message;
        } error;
        struct {
            char *device; /* empty: /dev/vda */
            char *hostname;
            struct wisp_strv env; /* added to every exec's and service's environment */
        } attach;
        struct {
            uint32_t flags; /* WISP_EXEC_* */
            uint16_t rows, cols;
            uint32_t window; /* initial stdout+stderr credit, bytes */
            char *cwd;       /* empty: / */
            struct wisp_strv argv;
            struct wisp_strv env;
        } exec;
        struct {
            uint32_t pid;          /* in the guest's root pid namespace */
            uint32_t stdin_window; /* initial stdin credit, bytes */
        } started;
        struct {
            const uint8_t *data;
            uint32_t len;
        } data; /* STDIN, STDOUT, STDERR, SERVICE_LOGS_REPLY, SEED */
        struct {
            uint32_t increment;
        } window;
        struct {
            uint32_t signo;
        } signal;
        struct {
            uint16_t rows, cols;
        } resize;
        struct {
            uint8_t kind; /* WISP_EXIT_* */
            uint8_t core_dumped;
            uint32_t code;
        } exit;
        struct {
            char *name;
            struct wisp_strv argv;
            struct wisp_strv env;
            char *cwd;
            uint32_t restart; /* enum wisp_restart */
            uint32_t restart_delay_ms;
        } service_start;
        struct {
            char *name;
            uint32_t max_bytes;
        } service_ref; /* SERVICE_STOP (max_bytes 0), SERVICE_LOGS */
        struct {
            uint32_t count;
            struct wisp_service_info *services;
        } service_list;
        struct {
            uint64_t uptime_ms;
            uint64_t mem_total_kib, mem_available_kib;
            uint32_t load_milli[3]; /* 1, 5 and 15 minute load average x 1000 */
            uint64_t idle_ms;       /* since the last exec, stdin/stdout or service output */
            uint8_t attached, frozen;
            uint32_t listener_count;
            struct wisp_listener *listeners;
            uint32_t session_count;
            struct wisp_session_info *sessions;
        } status;
    } u;
    void *arena; /* owned by a decoded message */
};

/* Decodes the payload of a frame whose header h passed wisp_header_decode.  On success *out
 * owns an allocation (free with wisp_msg_free); on failure nothing needs freeing and out->type
 * and out->stream are still set so that the error can be answered. */
int wisp_msg_decode(const struct wisp_header *h, const uint8_t *payload, struct wisp_msg *out);
void wisp_msg_free(struct wisp_msg *m);

/* Encodes m as one whole frame (header and payload) into buf.  Returns the frame's length, or
 * -WISP_E_TOO_LARGE if it does not fit cap or WISP_PROTO_MAX_PAYLOAD, -WISP_E_UNKNOWN_TYPE or
 * -WISP_E_BAD_FIELD for a message that could not be decoded back. */
int wisp_msg_encode(const struct wisp_msg *m, uint8_t *buf, size_t cap);

/* The incremental frame reader: feed it whatever read() returned and take frames out.
 *
 * Framing errors are recovered from inside the reader, so the caller only answers them:
 * - bad magic: the reader drops bytes until a magic appears again; reported once per run of
 *   garbage;
 * - oversized length: the header is dropped and the reader looks for the next magic, without
 *   allocating anything;
 * - bad version or flags with a sane length: the payload is skipped, keeping the stream in sync.
 * The payload buffer is allocated once, at init. */
struct wisp_reader {
    uint32_t max_payload;
    uint8_t hdr[WISP_PROTO_HEADER_SIZE];
    size_t hdr_len;
    struct wisp_header h;
    uint8_t *payload;
    size_t payload_len;
    uint64_t skip;   /* payload bytes still to drop */
    bool in_garbage; /* a bad magic was already reported for this run */
    uint64_t frames; /* counters, for logs and tests */
    uint64_t errors;
};

struct wisp_frame {
    struct wisp_header h;
    const uint8_t *payload; /* valid until the next wisp_reader_feed or reset */
};

int wisp_reader_init(struct wisp_reader *r, uint32_t max_payload);
void wisp_reader_free(struct wisp_reader *r);
/* Forgets a partial frame, e.g. when the host disconnects. */
void wisp_reader_reset(struct wisp_reader *r);
/* Consumes bytes from data[0..len) up to the end of one frame and sets *used.  Returns 1 with
 * *frame set when a frame is complete, 0 when all bytes were used without completing one, or a
 * negative enum wisp_err for a framing error (*err_header then holds what was read of the bad
 * header, stream included when the magic was right).  Call again with the rest. */
int wisp_reader_feed(struct wisp_reader *r, const uint8_t *data, size_t len, size_t *used,
                     struct wisp_frame *frame, struct wisp_header *err_header);

#endif
