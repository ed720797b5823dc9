/* fuzz_export_name: export_name_parse on arbitrary strings, checking that an accepted name can
 * hold nothing that could escape a path or confuse a log. */
#include "export_name.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check_part(const char *part, bool may_be_empty)
{
    size_t n = strlen(part);

    FUZZ_ASSERT(n <= META_DISK_NAME_MAX);
    FUZZ_ASSERT(may_be_empty || n > 0);
    FUZZ_ASSERT(strstr(part, "..") == NULL || part[0] != '.');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)part[i];
        FUZZ_ASSERT(c > ' ' && c < 127 && c != '/' && c != '@' && c != '\\');
    }
    if (n > 0)
        FUZZ_ASSERT(part[0] != '.' && part[0] != '-');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = malloc(size + 1);
    struct export_name e;
    const char *why = NULL;

    if (!name)
        return 0;
    memcpy(name, data, size);
    name[size] = '\0';
    if (export_name_parse(name, &e, &why) == 0) {
        fuzz_check_part(e.disk, false);
        fuzz_check_part(e.checkpoint, true);
        /* The parts put back together are the name. */
        size_t dl = strlen(e.disk);
        FUZZ_ASSERT(strncmp(name, e.disk, dl) == 0);
        FUZZ_ASSERT(e.checkpoint[0] ? name[dl] == '@' && strcmp(name + dl + 1, e.checkpoint) == 0
                                    : name[dl] == '\0');
    } else {
        FUZZ_ASSERT(why != NULL && why[0] != '\0');
    }
    free(name);
    return 0;
}
