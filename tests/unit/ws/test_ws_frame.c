/* test_ws_frame: the WebSocket frame codec of `wisp exec` (pool/ws_client.h): RFC 6455's own
 * examples, round trips at every length-encoding boundary, every prefix of a frame asks for
 * more bytes, and each malformed frame is refused with a reason. */
#include "ws_client.h"

#include <string.h>

#include "../parsers/check.h"

static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};

/* RFC 6455 1.3 and 5.7. */
static void test_rfc_examples(void)
{
    char *accept = ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==");
    CHECK(strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    g_free(accept);

    /* A single-frame unmasked text message "Hello", as a server sends it. */
    uint8_t unmasked[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    struct ws_frame f;
    const char *why = NULL;
    CHECK(ws_frame_parse(unmasked, sizeof unmasked, 1024, &f, &why) == (gssize)sizeof unmasked);
    CHECK(f.fin && f.opcode == WS_OP_TEXT && f.len == 5 && memcmp(f.payload, "Hello", 5) == 0);

    /* The same, masked as a client sends it: the encoder makes exactly these bytes. */
    const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    GByteArray *out = g_byte_array_new();
    ws_frame_encode(out, WS_OP_TEXT, "Hello", 5, mask);
    CHECK(out->len == sizeof masked && memcmp(out->data, masked, sizeof masked) == 0);
    CHECK(ws_frame_parse(out->data, out->len, 1024, &f, &why) == (gssize)sizeof masked);
    CHECK(f.len == 5 && memcmp(f.payload, "Hello", 5) == 0);
    g_byte_array_unref(out);

    /* A fragmented message's first part (not final) and an unmasked ping. */
    uint8_t first[] = {0x01, 0x03, 'H', 'e', 'l'};
    CHECK(ws_frame_parse(first, sizeof first, 1024, &f, &why) == (gssize)sizeof first);
    CHECK(!f.fin && f.opcode == WS_OP_TEXT && f.len == 3);
    uint8_t ping[] = {0x89, 0x05, 'H', 'e', 'l', 'l', 'o'};
    CHECK(ws_frame_parse(ping, sizeof ping, 1024, &f, &why) == (gssize)sizeof ping);
    CHECK(f.fin && f.opcode == WS_OP_PING && f.len == 5);
}

/* Round trips at the lengths where the encoding changes (7-bit, 16-bit, 64-bit), and every
 * proper prefix of each frame is incomplete. */
static void test_round_trips(void)
{
    const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 200000};
    for (size_t i = 0; i < G_N_ELEMENTS(lens); i++) {
        size_t len = lens[i];
        uint8_t *payload = g_malloc(len + 1);
        for (size_t j = 0; j < len; j++)
            payload[j] = (uint8_t)(j * 7 + i);
        GByteArray *out = g_byte_array_new();
        ws_frame_encode(out, WS_OP_BINARY, payload, len, mask);
        size_t head = len < 126 ? 6 : len <= 65535 ? 8 : 14;
        CHECK(out->len == head + len);
        CHECK((out->data[1] & 0x80) != 0); /* masked */
        struct ws_frame f;
        const char *why = NULL;
        /* Prefixes: a copy, as parsing unmasks in place. */
        for (size_t cut = 0; cut < out->len; cut += cut < 20 ? 1 : 4099) {
            uint8_t *copy = g_memdup2(out->data, out->len);
            CHECK(ws_frame_parse(copy, cut, 1 << 20, &f, &why) == 0);
            g_free(copy);
        }
        CHECK(ws_frame_parse(out->data, out->len, 1 << 20, &f, &why) == (gssize)out->len);
        CHECK(f.fin && f.opcode == WS_OP_BINARY && f.len == len);
        CHECK(len == 0 || memcmp(f.payload, payload, len) == 0);
        g_byte_array_unref(out);
        g_free(payload);
    }
}

static void test_malformed(void)
{
    struct ws_frame f;
    const char *why;

    uint8_t rsv[] = {0xc2, 0x00}; /* RSV1: compression, never agreed */
    why = NULL;
    CHECK(ws_frame_parse(rsv, sizeof rsv, 1024, &f, &why) == -1 && why);
    uint8_t opcode[] = {0x83, 0x00}; /* 0x3 is reserved */
    why = NULL;
    CHECK(ws_frame_parse(opcode, sizeof opcode, 1024, &f, &why) == -1 && why);
    uint8_t long_ping[130] = {0x89, 126, 0x00, 126};
    why = NULL;
    CHECK(ws_frame_parse(long_ping, sizeof long_ping, 1024, &f, &why) == -1 && why);
    uint8_t split_close[] = {0x08, 0x02, 0x03, 0xe8}; /* a close without FIN */
    why = NULL;
    CHECK(ws_frame_parse(split_close, sizeof split_close, 1024, &f, &why) == -1 && why);
    /* Over the largest message: refused from the header alone, before the payload is here. */
    uint8_t big[] = {0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0};
    why = NULL;
    CHECK(ws_frame_parse(big, sizeof big, 1 << 20, &f, &why) == -1 && why);
    uint8_t just_over[] = {0x82, 126, 0x01, 0x01};
    why = NULL;
    CHECK(ws_frame_parse(just_over, sizeof just_over, 256, &f, &why) == -1 && why);
}

int main(void)
{
    test_rfc_examples();
    test_round_trips();
    test_malformed();
    return check_exit_code();
}
