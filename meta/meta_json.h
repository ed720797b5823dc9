/* meta_json.h: the JSON form of metadata records, shared by the control socket and the CLI so
 * that `wisp disk list --json` reads the same whether or not a server runs. */
#ifndef WISP_META_JSON_H
#define WISP_META_JSON_H

#include "meta.h"

#include <json-glib/json-glib.h>

/* {"name", "size", "chunk_size", "head", "flush_gen", "created"} */
void meta_json_add_disk(JsonBuilder *b, const struct meta_disk *d);

/* {"name", "root", "created", "comment"} */
void meta_json_add_checkpoint(JsonBuilder *b, const struct meta_checkpoint *c);

#endif
