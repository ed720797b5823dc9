/* meta_json.h: the JSON form of metadata records, shared by the control socket and the CLI so
 * that `wisp disk list --json` reads the same whether or not a server runs. */
#ifndef WISP_META_JSON_H
#define WISP_META_JSON_H

#include "chunk_gc.h"
#include "meta.h"

#include <json-glib/json-glib.h>
#include <stdbool.h>

/* One member of the object being built: its name, then its value. */
void meta_json_member_int(JsonBuilder *b, const char *name, gint64 value);
void meta_json_member_string(JsonBuilder *b, const char *name, const char *value);
void meta_json_member_bool(JsonBuilder *b, const char *name, bool value);
void meta_json_member_double(JsonBuilder *b, const char *name, double value);

/* {"name", "size", "chunk_size", "head", "flush_gen", "created"} */
void meta_json_add_disk(JsonBuilder *b, const struct meta_disk *d);

/* {"name", "root", "created", "comment"} */
void meta_json_add_checkpoint(JsonBuilder *b, const struct meta_checkpoint *c);

/* A garbage collection's report (chunk_gc.h), one member per count: {"dry_run", "grace",
 * "store_time", "disks", "versions", "pages", "pages_shared", "referenced", "objects",
 * "object_bytes", "missing", "unreferenced", "deleted", "deleted_bytes", "kept_young",
 * "kept_young_bytes", "already_gone", "failed", "foreign", "seconds"}; grace in seconds. */
void meta_json_add_gc_report(JsonBuilder *b, const struct chunk_gc_report *r);
/* The reverse, for a report that came over the control socket: absent members read as 0. */
void meta_json_get_gc_report(JsonObject *o, struct chunk_gc_report *r);

#endif
