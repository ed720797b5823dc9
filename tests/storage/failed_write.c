/* failed_write: a write that fails part way leaves no block whose content changes later with
 * no write to it.
 *
 * durability=local, 1 MiB chunks, upload-delay=600 (nothing uploads).  Chunk 2 gets block 0,
 * a flush, block 5, a flush, block 6: its live file is now the one of the first flush, made
 * again from its successor with only the blocks written since copied in.  Then a zero request
 * from the middle of block 0 through block 3, with fallocate's hole punching failing (EIO, by
 * tests/storage/punch_fail_shim.c preloaded into nbdkit): the head of block 0 is zeroed and
 * logged, the middle fails, the request fails.  Block 0 is read; then a flush and a write to
 * block 7 (the chunk's next live file is made from this one); block 0 must read the same; and
 * again after kill -9 and the log's replay.  Before the fix the next file kept block 0's old
 * bytes: the read after the flush showed data the failed request had zeroed. */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KiB   (UINT64_C(1) << 10)
#define MiB   (UINT64_C(1) << 20)
#define CHUNK (2 * MiB) /* chunk 2's offset */
#define BLOCK (4 * KiB)

static void read_block0(struct nbd_handle *h, uint8_t *buf)
{
    WS_NBD(nbd_pread(h, buf, BLOCK, CHUNK, 0));
}

int main(void)
{
    uint8_t before[BLOCK], after_flush[BLOCK], after_crash[BLOCK];

    ws_init("failed_write");
    const char *shim = getenv("WISP_TEST_PUNCH_FAIL_SHIM");
    if (!shim || access(shim, R_OK) != 0) {
        printf("SKIP: WISP_TEST_PUNCH_FAIL_SHIM is not set (run it with meson test)\n");
        return 77;
    }
    char *flag = g_strdup_printf("%s/fail-punch", ws_tmpdir());
    setenv("WISP_TEST_PUNCH_FAIL", flag, 1);
    setenv("LD_PRELOAD", shim, 1); /* for the nbdkit this test starts */

    struct ws_server *s = ws_server_new(WS_STORE_FILE);
    uint8_t *shadow = ws_shadow_new(8 * MiB);
    ws_server_set(s, "durability", "local");
    ws_server_set(s, "upload-delay", "600");
    ws_disk_create(s, "p", "8M", "1M");
    ws_server_start(s);
    struct nbd_handle *h = ws_connect(s, "p");
    ws_write_random(h, shadow, CHUNK, BLOCK, ws_rand());
    WS_NBD(nbd_flush(h, 0));
    ws_write_random(h, shadow, CHUNK + 5 * BLOCK, BLOCK, ws_rand());
    WS_NBD(nbd_flush(h, 0));
    ws_write_random(h, shadow, CHUNK + 6 * BLOCK, BLOCK, ws_rand());

    WS_CHECK(g_file_set_contents(flag, "", 0, NULL), "create %s", flag);
    int r = nbd_zero(h, 4 * BLOCK - 2 * KiB, CHUNK + 2 * KiB, 0);
    WS_CHECK(unlink(flag) == 0, "unlink %s", flag);
    WS_CHECK(r < 0, "the zero request did not fail: the shim was not used");
    ws_log("a zero request with hole punching failing: %s", nbd_get_error());
    read_block0(h, before);

    WS_NBD(nbd_flush(h, 0));
    ws_write_random(h, shadow, CHUNK + 7 * BLOCK, BLOCK, ws_rand());
    read_block0(h, after_flush);
    WS_CHECK(memcmp(before, after_flush, BLOCK) == 0,
             "block 0 changed with no write to it (a flush and a write to block 7)");
    WS_NBD(nbd_flush(h, 0));
    ws_disconnect(h);

    ws_server_kill9(s);
    ws_server_start(s);
    h = ws_connect(s, "p");
    read_block0(h, after_crash);
    ws_disconnect(h);
    WS_CHECK(memcmp(after_flush, after_crash, BLOCK) == 0,
             "block 0 changed across kill -9 and the log's replay");
    ws_log("block 0 the same after the failed request, a flush and a write, and kill -9");
    ws_server_stop(s);
    ws_shadow_free(shadow, 8 * MiB);
    g_free(flag);
    return 0;
}
