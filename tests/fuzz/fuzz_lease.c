/* fuzz_lease: lease_parse on arbitrary bytes (a lease object read from the store), checking
 * the promises of lease.h on every result. */
#include "lease.h"

#include <errno.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lease_info info;
    int r = lease_parse(data, size, &info);

    if (r < 0) {
        FUZZ_ASSERT(r == -EBADMSG);
        FUZZ_ASSERT(!info.found);
        return 0;
    }
    FUZZ_ASSERT(r == 0 && info.found);
    FUZZ_ASSERT(info.generation > 0);
    FUZZ_ASSERT(info.ttl > 0 && info.ttl < 1e6);
    FUZZ_ASSERT(memchr(info.holder, '\0', sizeof info.holder) != NULL);
    FUZZ_ASSERT(memchr(info.instance, '\0', sizeof info.instance) != NULL);
    return 0;
}
