/* status.h: the STATUS reply: uptime, memory, load, TCP listeners, idle time, sessions. */
#ifndef WISP_AGENT_STATUS_H
#define WISP_AGENT_STATUS_H

#include "protocol.h"

struct agent;

void status_reply(struct agent *a, const struct wisp_msg *m);

/* Parses /proc/net/tcp or tcp6 content (family 4 or 6), adding LISTEN sockets to out (at most
 * max); returns the new count.  Separate from status_reply for testing. */
unsigned status_parse_listeners(const char *text, int family, struct wisp_listener *out,
                                unsigned count, unsigned max);

#endif
