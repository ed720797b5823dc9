/* proc_net.h: TCP listeners from /proc/net/tcp and /proc/net/tcp6, for STATUS. */
#ifndef WISP_AGENT_PROC_NET_H
#define WISP_AGENT_PROC_NET_H

#include "protocol.h"

/* Parses the content of /proc/net/tcp (family 4) or tcp6 (family 6), adding the sockets in
 * LISTEN state to out[count..max); returns the new count.  Lines that don't parse are skipped. */
unsigned proc_net_listeners(const char *text, int family, struct wisp_listener *out, unsigned count,
                            unsigned max);

#endif
