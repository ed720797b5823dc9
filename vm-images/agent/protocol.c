/* protocol.c: frame headers, names of types and errors, and the incremental frame reader.
 * Message payloads are encoded and decoded in protocol_msg.c.
 * docs/protocol.md has the layout of every frame. */
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

#include "protocol_le.h"

const char *wisp_err_to_string(int err)
{
    switch (err < 0 ? -err : err) {
    case 0:
        return "success";
    case WISP_E_BAD_MAGIC:
        return "bad magic";
    case WISP_E_BAD_VERSION:
        return "unsupported version";
    case WISP_E_BAD_FLAGS:
        return "bad flags";
    case WISP_E_TOO_LARGE:
        return "payload too large";
    case WISP_E_UNKNOWN_TYPE:
        return "unknown message type";
    case WISP_E_TRUNCATED:
        return "truncated payload";
    case WISP_E_TRAILING:
        return "trailing bytes in payload";
    case WISP_E_BAD_FIELD:
        return "bad field value";
    case WISP_E_NOMEM:
        return "out of memory";
    case WISP_E_BAD_STATE:
        return "not allowed in this state";
    case WISP_E_NOT_FOUND:
        return "not found";
    case WISP_E_EXISTS:
        return "already exists";
    case WISP_E_NO_CREDIT:
        return "no flow-control credit";
    case WISP_E_SYSTEM:
        return "system error";
    case WISP_E_BUSY:
        return "busy";
    }
    return "unknown error";
}

const char *wisp_msg_type_to_string(uint8_t type)
{
    switch ((enum wisp_msg_type)type) {
    case WISP_MSG_HELLO:
        return "hello";
    case WISP_MSG_READY:
        return "ready";
    case WISP_MSG_OK:
        return "ok";
    case WISP_MSG_ERROR:
        return "error";
    case WISP_MSG_ATTACH:
        return "attach";
    case WISP_MSG_SEED:
        return "seed";
    case WISP_MSG_EXEC:
        return "exec";
    case WISP_MSG_STARTED:
        return "started";
    case WISP_MSG_STDIN:
        return "stdin";
    case WISP_MSG_STDIN_CLOSE:
        return "stdin-close";
    case WISP_MSG_STDOUT:
        return "stdout";
    case WISP_MSG_STDERR:
        return "stderr";
    case WISP_MSG_WINDOW:
        return "window";
    case WISP_MSG_SIGNAL:
        return "signal";
    case WISP_MSG_RESIZE:
        return "resize";
    case WISP_MSG_EXIT:
        return "exit";
    case WISP_MSG_FREEZE:
        return "freeze";
    case WISP_MSG_THAW:
        return "thaw";
    case WISP_MSG_SERVICE_START:
        return "service-start";
    case WISP_MSG_SERVICE_STOP:
        return "service-stop";
    case WISP_MSG_SERVICE_LIST:
        return "service-list";
    case WISP_MSG_SERVICE_LIST_REPLY:
        return "service-list-reply";
    case WISP_MSG_SERVICE_LOGS:
        return "service-logs";
    case WISP_MSG_SERVICE_LOGS_REPLY:
        return "service-logs-reply";
    case WISP_MSG_STATUS:
        return "status";
    case WISP_MSG_STATUS_REPLY:
        return "status-reply";
    case WISP_MSG_SHUTDOWN:
        return "shutdown";
    }
    return NULL;
}

bool wisp_msg_type_known(uint8_t type)
{
    return wisp_msg_type_to_string(type) != NULL;
}

/* ---- headers ---- */

int wisp_header_decode(const uint8_t buf[WISP_PROTO_HEADER_SIZE], uint32_t max_payload,
                       struct wisp_header *out)
{
    memset(out, 0, sizeof *out);
    out->magic = (uint32_t)get_le(buf, 4);
    if (out->magic != WISP_PROTO_MAGIC)
        return -WISP_E_BAD_MAGIC;
    out->version = buf[4];
    out->type = buf[5];
    out->flags = (uint16_t)get_le(buf + 6, 2);
    out->stream = (uint32_t)get_le(buf + 8, 4);
    out->length = (uint32_t)get_le(buf + 12, 4);
    /* The length is checked first among the rest: a frame whose length is sane can be skipped
     * whole, keeping the stream in sync, whatever else is wrong with it. */
    if (out->length > max_payload || out->length > WISP_PROTO_MAX_PAYLOAD)
        return -WISP_E_TOO_LARGE;
    if (out->version < WISP_PROTO_MIN_VERSION || out->version > WISP_PROTO_VERSION)
        return -WISP_E_BAD_VERSION;
    if (out->flags != 0)
        return -WISP_E_BAD_FLAGS;
    return 0;
}

void wisp_header_encode(uint8_t buf[WISP_PROTO_HEADER_SIZE], uint8_t type, uint32_t stream,
                        uint32_t length)
{
    put_le(buf, WISP_PROTO_MAGIC, 4);
    buf[4] = WISP_PROTO_VERSION;
    buf[5] = type;
    put_le(buf + 6, 0, 2);
    put_le(buf + 8, stream, 4);
    put_le(buf + 12, length, 4);
}

/* ---- incremental reader ---- */

int wisp_reader_init(struct wisp_reader *r, uint32_t max_payload)
{
    memset(r, 0, sizeof *r);
    if (max_payload == 0 || max_payload > WISP_PROTO_MAX_PAYLOAD)
        max_payload = WISP_PROTO_MAX_PAYLOAD;
    r->max_payload = max_payload;
    r->payload = malloc(max_payload);
    if (r->payload == NULL)
        return -WISP_E_NOMEM;
    return 0;
}

void wisp_reader_free(struct wisp_reader *r)
{
    free(r->payload);
    r->payload = NULL;
}

void wisp_reader_reset(struct wisp_reader *r)
{
    r->hdr_len = 0;
    r->payload_len = 0;
    r->skip = 0;
    r->in_garbage = false;
    memset(&r->h, 0, sizeof r->h);
}

/* After a bad magic: keeps the longest tail of hdr[1..] that could start a magic, so that a
 * frame right after garbage is found even when the garbage ends mid-header. */
static void reader_drop_to_magic(struct wisp_reader *r)
{
    static const uint8_t magic[4] = {'W', 'I', 'S', 'P'};
    size_t start = 1;
    for (; start < r->hdr_len; start++) {
        size_t n = r->hdr_len - start;
        if (n > 4)
            n = 4;
        if (memcmp(r->hdr + start, magic, n) == 0)
            break;
    }
    memmove(r->hdr, r->hdr + start, r->hdr_len - start);
    r->hdr_len -= start;
}

int wisp_reader_feed(struct wisp_reader *r, const uint8_t *data, size_t len, size_t *used,
                     struct wisp_frame *frame, struct wisp_header *err_header)
{
    size_t off = 0;
    *used = 0;
    while (off < len) {
        if (r->skip > 0) {
            size_t n = len - off;
            if (n > r->skip)
                n = (size_t)r->skip;
            r->skip -= n;
            off += n;
            continue;
        }
        if (r->hdr_len < WISP_PROTO_HEADER_SIZE) {
            size_t n = WISP_PROTO_HEADER_SIZE - r->hdr_len;
            if (n > len - off)
                n = len - off;
            memcpy(r->hdr + r->hdr_len, data + off, n);
            r->hdr_len += n;
            off += n;
            /* A wrong first byte is known before the header is complete; checking early lets
             * garbage be dropped byte by byte without waiting for 16 of them. */
            size_t m = r->hdr_len < 4 ? r->hdr_len : 4;
            if (memcmp(r->hdr, "WISP", m) != 0) {
                bool report = !r->in_garbage;
                r->in_garbage = true;
                reader_drop_to_magic(r);
                if (report) {
                    r->errors++;
                    *used = off;
                    if (err_header)
                        memset(err_header, 0, sizeof *err_header);
                    return -WISP_E_BAD_MAGIC;
                }
                continue;
            }
            if (r->hdr_len < WISP_PROTO_HEADER_SIZE)
                continue;
            int e = wisp_header_decode(r->hdr, r->max_payload, &r->h);
            if (e < 0) {
                r->errors++;
                if (err_header)
                    *err_header = r->h;
                if (e == -WISP_E_TOO_LARGE) {
                    /* The length can't be trusted: drop the header and hunt for the next
                     * magic rather than swallowing up to 4 GiB. */
                    r->in_garbage = true;
                    reader_drop_to_magic(r);
                } else {
                    r->skip = r->h.length;
                    r->hdr_len = 0;
                    r->in_garbage = false;
                }
                *used = off;
                return e;
            }
            r->in_garbage = false;
            r->payload_len = 0;
        }
        size_t n = r->h.length - r->payload_len;
        if (n > len - off)
            n = len - off;
        memcpy(r->payload + r->payload_len, data + off, n);
        r->payload_len += n;
        off += n;
        if (r->payload_len == r->h.length)
            break;
    }
    /* A frame with an empty payload is complete as soon as its header is. */
    if (r->hdr_len == WISP_PROTO_HEADER_SIZE && r->skip == 0 && r->payload_len == r->h.length) {
        frame->h = r->h;
        frame->payload = r->payload;
        r->hdr_len = 0;
        r->payload_len = 0;
        r->frames++;
        *used = off;
        return 1;
    }
    *used = off;
    return 0;
}
