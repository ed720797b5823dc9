/* status.h: the STATUS reply: uptime, memory, load, TCP listeners, idle time, sessions. */
#ifndef WISP_AGENT_STATUS_H
#define WISP_AGENT_STATUS_H

#include "protocol.h"

struct agent;

void status_reply(struct agent *a, const struct wisp_msg *m);

#endif
