/* sleep_helpers.h: what the cold-sleep and idle tests of wispd share: a counter process in a
 * sprite (it must outlive a sleep), a file with known content, the state as GET shows it. */
#ifndef WISP_TEST_WISPD_SLEEP_HELPERS_H
#define WISP_TEST_WISPD_SLEEP_HELPERS_H

#include "wispd_fixture.h"

/* Starts a detached shell loop in the sprite writing "PID N" to /tmp/counter every 0.2 s. */
void sh_counter_start(const char *sprite, const char *token);
/* Reads the counter; checks that the same process is still counting (it advances within 5 s).
 * pid0: the pid it must have, or 0 (any).  Returns its pid. */
long sh_counter_alive(const char *sprite, const char *token, long pid0);
/* Writes 256 KiB of random data to /root/FILE and syncs; returns its md5 (g_free it). */
char *sh_file_write(const char *sprite, const char *token, const char *file);
/* The md5 of /root/FILE (g_free it). */
char *sh_file_md5(const char *sprite, const char *token, const char *file);
/* GET's "state" and "mode" ("" when absent) as "STATE/MODE" (g_free it). */
char *sh_state(const char *sprite, const char *token);
/* Polls GET every 0.5 s until sh_state is want; fails after timeout_s.  Returns the seconds. */
double sh_wait_state(const char *sprite, const char *token, const char *want, double timeout_s);
/* Whether the file exists. */
bool sh_exists(const char *path);

#endif
