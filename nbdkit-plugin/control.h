/* control.h: the storage server's control socket.
 *
 * A unix socket (mode 0600) where each request is one line of JSON and each answer is one line
 * of JSON.  Requests: {"op": "disk-create", "name", "size", "chunk_size"?}, {"op":
 * "disk-list"}, {"op": "disk-delete", "name"}, {"op": "disk-stats", "name"}, {"op":
 * "disk-clone", "source", "name"}, {"op": "disk-checkpoint", "name", "checkpoint", "comment"?},
 * {"op": "disk-checkpoints", "name"}, {"op": "disk-restore", "name", "checkpoint", "force"?},
 * {"op": "checkpoint-delete", "name", "checkpoint"}, {"op": "gc", "dry_run"?, "grace"?
 * (a duration string or seconds; default gc-grace), "force"?}.  Answers:
 * {"ok": true, ...} or {"ok": false, "errno": N, "error": "message"}.  docs/storage.md has
 * the details. */
#ifndef WISP_CONTROL_H
#define WISP_CONTROL_H

#include "plugin.h"

int control_start(struct plugin_state *s, const char *path);
void control_stop(struct plugin_state *s);

#endif
