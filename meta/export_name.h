/* export_name.h: NBD export names, "DISK" or "DISK@CHECKPOINT".
 *
 * Both parts obey meta_disk_name_valid: 1-128 bytes of [A-Za-z0-9._-], not starting with '.'
 * or '-'.  So an export name never holds '/', "..", control characters or a second '@'. */
#ifndef WISP_EXPORT_NAME_H
#define WISP_EXPORT_NAME_H

#include "meta.h"

#include <stdbool.h>

struct export_name {
    char disk[META_DISK_NAME_MAX + 1];
    char checkpoint[META_DISK_NAME_MAX + 1]; /* "" for the disk's head */
};

/* Returns 0, or -EINVAL with *why set to a static explanation. */
int export_name_parse(const char *name, struct export_name *out, const char **why);

#endif
