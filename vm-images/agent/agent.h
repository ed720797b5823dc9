/* agent.h: wisp-init's state, one struct passed to every module (no global state pointer). */
#ifndef WISP_AGENT_AGENT_H
#define WISP_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "channel.h"
#include "container.h"

#define AGENT_NAME "wisp-init 0.1.0"

struct session;
struct service;

struct agent {
    struct channel chan;
    struct container ct;
    struct session *sessions;
    unsigned session_count;
    uint32_t fill_cursor; /* stream id after which fill() looks for data next: round robin */
    struct service *services;
    unsigned service_count;
    uint64_t boot_id;
    uint64_t last_activity_ms;
    uint64_t shutdown_at_ms; /* 0, or when the SHUTDOWN's OK has had its chance to leave */
    bool serve_fd_mode;      /* wisp-init --serve-fd (tests): no disk may be touched */
};

/* Milliseconds of CLOCK_MONOTONIC: timers and the idle time. */
uint64_t agent_now_ms(void);
void agent_touch(struct agent *a);
/* The protocol's entry point: one whole frame from the host (dispatch.c). */
void agent_handle_frame(struct agent *a, const struct wisp_frame *f);
void agent_send_ready(struct agent *a, uint64_t nonce);

#endif
