/* service.h: the service manager: long-running processes in the container, restarted on exit by
 * policy, their stdout and stderr kept in a ring buffer (SERVICE_RING) and appended to
 * /var/log/wisp/NAME.log on the sprite's disk (renamed to NAME.log.1 past SERVICE_LOG_MAX).
 * A declaration is kept on the disk too (/var/lib/wisp/services/NAME.svc, the SERVICE_START
 * frame itself) until SERVICE_STOP, and every ATTACH starts what is declared there. */
#ifndef WISP_AGENT_SERVICE_H
#define WISP_AGENT_SERVICE_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

#define SERVICE_MAX           32
#define SERVICE_RING          (64 * 1024)
#define SERVICE_LOG_MAX       (1024 * 1024)
#define SERVICE_STOP_GRACE_MS 5000

struct agent;

void service_start(struct agent *a, const struct wisp_msg *m);
void service_stop(struct agent *a, const struct wisp_msg *m);
void service_list(struct agent *a, const struct wisp_msg *m);
void service_logs(struct agent *a, const struct wisp_msg *m);

size_t services_poll_fill(struct agent *a, struct pollfd *fds, size_t max);
void services_service(struct agent *a, const struct pollfd *fds, size_t n);
/* Restarts and stop deadlines due at now_ms; returns ms until the next one, or -1. */
int services_tick(struct agent *a, uint64_t now_ms);
bool services_reaped(struct agent *a, pid_t pid, int status, uint64_t now_ms);
/* After ATTACH: starts the services declared on the sprite's disk by earlier SERVICE_STARTs. */
void services_restore(struct agent *a);
/* For shutdown: no more restarts, and their log files closed. */
void services_shutdown(struct agent *a);

#endif
