/* export_name.c: parsing of NBD export names (see export_name.h). */
#include "export_name.h"

#include <errno.h>
#include <string.h>

int export_name_parse(const char *name, struct export_name *out, const char **why)
{
    size_t len = strnlen(name, 2 * META_DISK_NAME_MAX + 2);
    const char *at = memchr(name, '@', len);
    size_t disk_len = at ? (size_t)(at - name) : len;

    memset(out, 0, sizeof *out);
    if (len > 2 * META_DISK_NAME_MAX + 1) {
        *why = "longer than 257 bytes";
        return -EINVAL;
    }
    if (disk_len > META_DISK_NAME_MAX) {
        *why = "the disk name is longer than 128 bytes";
        return -EINVAL;
    }
    memcpy(out->disk, name, disk_len);
    if (!meta_disk_name_valid(out->disk, why))
        return -EINVAL;
    if (!at)
        return 0;
    if (strlen(at + 1) > META_DISK_NAME_MAX) {
        *why = "the checkpoint name is longer than 128 bytes";
        return -EINVAL;
    }
    strcpy(out->checkpoint, at + 1);
    if (!meta_disk_name_valid(out->checkpoint, why)) {
        memset(out, 0, sizeof *out);
        return -EINVAL;
    }
    return 0;
}
