/* fuzz_write_log: write_log_decode on arbitrary bytes (a record of the local write log, read
 * back from the cache directory after a crash), checking the promises of write_log.h on every
 * result: a record is accepted only whole and checked, and what it names stays in bounds. */
#include "write_log.h"

#include <errno.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t id[META_WRITE_LOG_ID_LEN];
    struct write_log_record rec;

    if (size < WRITE_LOG_HEADER_SIZE)
        return 0;
    int64_t want = write_log_payload_len(data);
    int r = write_log_decode(data, data + WRITE_LOG_HEADER_SIZE, size - WRITE_LOG_HEADER_SIZE, id,
                             &rec);
    FUZZ_ASSERT(r == 0 || r == -EBADMSG);
    if (r < 0)
        return 0;
    FUZZ_ASSERT(want >= 0 && (size_t)want == size - WRITE_LOG_HEADER_SIZE);
    FUZZ_ASSERT(rec.kind >= WRITE_LOG_DATA && rec.kind <= WRITE_LOG_RESET);
    if (rec.kind == WRITE_LOG_DATA || rec.kind == WRITE_LOG_HOLE) {
        FUZZ_ASSERT(rec.n_blocks > 0 && rec.first_block + rec.n_blocks <= 1024);
        FUZZ_ASSERT((rec.kind == WRITE_LOG_DATA) == (rec.data != NULL));
    } else {
        FUZZ_ASSERT(rec.n_blocks == 0 && rec.data == NULL);
    }
    return 0;
}
