/* proc_net.c: see proc_net.h. */
#include "proc_net.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* /proc/net/tcp prints each 32-bit word of the address in host (little-endian) order. */
static bool parse_addr(const char *hex, size_t len, uint8_t addr[16])
{
    memset(addr, 0, 16);
    if (len != 8 && len != 32)
        return false;
    for (size_t w = 0; w < len / 8; w++) {
        for (size_t b = 0; b < 4; b++) {
            int hi = hexval(hex[w * 8 + (3 - b) * 2]);
            int lo = hexval(hex[w * 8 + (3 - b) * 2 + 1]);
            if (hi < 0 || lo < 0)
                return false;
            addr[w * 4 + b] = (uint8_t)(hi << 4 | lo);
        }
    }
    return true;
}

unsigned proc_net_listeners(const char *text, int family, struct wisp_listener *out, unsigned count,
                            unsigned max)
{
    const char *line = strchr(text, '\n'); /* the header line */
    while (line != NULL && count < max) {
        line++;
        /* sscanf on the rest of a 4 MiB text would measure all of it (strlen) for every line:
         * one line at a time, copied.  The fields used are in its first 80 bytes. */
        char copy[160], local[64], state[8];
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len >= sizeof copy)
            len = sizeof copy - 1;
        memcpy(copy, line, len);
        copy[len] = '\0';
        /* "  0: 0100007F:0016 00000000:0000 0A ..." */
        if (sscanf(copy, " %*[0-9]: %63[0-9A-Fa-f:] %*s %7s", local, state) == 2 &&
            strcmp(state, "0A") == 0) {
            char *colon = strchr(local, ':');
            if (colon != NULL) {
                struct wisp_listener *l = &out[count];
                l->family = (uint8_t)family;
                l->port = (uint16_t)strtoul(colon + 1, NULL, 16);
                if (parse_addr(local, (size_t)(colon - local), l->addr))
                    count++;
            }
        }
        line = strchr(line, '\n');
    }
    return count;
}
