/* fuzz_protocol: the control protocol's reader and decoder on arbitrary bytes, as wisp-init reads
 * them from the host.  The first byte picks how the input is split into reads, the rest is the
 * byte stream.  Checks the promises of protocol.h: the reader never uses more than it was given,
 * every frame it yields has a sane header, and every message that decodes encodes back to exactly
 * the bytes it came from. */
#include "protocol.h"

#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t again[WISP_PROTO_MAX_FRAME];

static void check_frame(const struct wisp_frame *f)
{
    FUZZ_ASSERT(f->h.magic == WISP_PROTO_MAGIC);
    FUZZ_ASSERT(f->h.version == WISP_PROTO_VERSION && f->h.flags == 0);
    FUZZ_ASSERT(f->h.length <= WISP_PROTO_MAX_PAYLOAD);

    struct wisp_msg m;
    int r = wisp_msg_decode(&f->h, f->payload, &m);
    FUZZ_ASSERT(m.type == f->h.type && m.stream == f->h.stream);
    if (r < 0) {
        FUZZ_ASSERT(r >= -WISP_E_BUSY);
        FUZZ_ASSERT(m.arena == NULL);
        return;
    }
    /* The encoding is canonical: what decodes encodes back byte for byte. */
    int n = wisp_msg_encode(&m, again, sizeof again);
    FUZZ_ASSERT(n == (int)(WISP_PROTO_HEADER_SIZE + f->h.length));
    FUZZ_ASSERT(memcmp(again + WISP_PROTO_HEADER_SIZE, f->payload, f->h.length) == 0);
    struct wisp_header h2;
    FUZZ_ASSERT(wisp_header_decode(again, WISP_PROTO_MAX_PAYLOAD, &h2) == 0);
    FUZZ_ASSERT(h2.type == f->h.type && h2.stream == f->h.stream && h2.length == f->h.length);
    wisp_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct wisp_reader reader;
    static int ready;
    if (!ready) {
        FUZZ_ASSERT(wisp_reader_init(&reader, WISP_PROTO_MAX_PAYLOAD) == 0);
        ready = 1;
    }
    wisp_reader_reset(&reader);
    if (size == 0)
        return 0;
    size_t step = (size_t)data[0] + 1;
    data++;
    size--;

    size_t off = 0;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        size_t pos = 0;
        while (pos < n) {
            size_t used = 0;
            struct wisp_frame f;
            struct wisp_header eh;
            int r = wisp_reader_feed(&reader, data + off + pos, n - pos, &used, &f, &eh);
            FUZZ_ASSERT(used <= n - pos);
            pos += used;
            if (r == 1)
                check_frame(&f);
            else if (r == 0)
                FUZZ_ASSERT(pos == n);
            else
                FUZZ_ASSERT(r == -WISP_E_BAD_MAGIC || r == -WISP_E_BAD_VERSION ||
                            r == -WISP_E_BAD_FLAGS || r == -WISP_E_TOO_LARGE);
        }
        off += n;
    }
    return 0;
}
