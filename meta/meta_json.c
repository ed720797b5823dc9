/* meta_json.c: JSON form of metadata records. */
#include "meta_json.h"

#include <string.h>

void meta_json_member_int(JsonBuilder *b, const char *name, gint64 value)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, value);
}

void meta_json_member_string(JsonBuilder *b, const char *name, const char *value)
{
    json_builder_set_member_name(b, name);
    json_builder_add_string_value(b, value);
}

void meta_json_member_bool(JsonBuilder *b, const char *name, bool value)
{
    json_builder_set_member_name(b, name);
    json_builder_add_boolean_value(b, value);
}

void meta_json_member_double(JsonBuilder *b, const char *name, double value)
{
    json_builder_set_member_name(b, name);
    json_builder_add_double_value(b, value);
}

void meta_json_add_disk(JsonBuilder *b, const struct meta_disk *d)
{
    char root[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(&d->head_root, root);
    json_builder_begin_object(b);
    meta_json_member_string(b, "name", d->name);
    meta_json_member_int(b, "size", (gint64)d->size);
    meta_json_member_int(b, "chunk_size", d->chunk_size);
    meta_json_member_string(b, "head", root);
    meta_json_member_int(b, "flush_gen", (gint64)d->flush_gen);
    meta_json_member_int(b, "created", (gint64)d->created);
    json_builder_end_object(b);
}

void meta_json_add_checkpoint(JsonBuilder *b, const struct meta_checkpoint *c)
{
    char root[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(&c->root, root);
    json_builder_begin_object(b);
    meta_json_member_string(b, "name", c->name);
    meta_json_member_string(b, "root", root);
    meta_json_member_int(b, "created", (gint64)c->created);
    meta_json_member_string(b, "comment", c->comment);
    json_builder_end_object(b);
}

/* The report's counters, by name, for both directions. */
#define META_JSON_GC_COUNTS(X)                                                                     \
    X(disks)                                                                                       \
    X(versions)                                                                                    \
    X(pages)                                                                                       \
    X(pages_shared)                                                                                \
    X(replicas)                                                                                    \
    X(replicas_incomplete)                                                                         \
    X(referenced)                                                                                  \
    X(objects)                                                                                     \
    X(object_bytes)                                                                                \
    X(missing)                                                                                     \
    X(unreferenced)                                                                                \
    X(deleted)                                                                                     \
    X(deleted_bytes)                                                                               \
    X(kept_young)                                                                                  \
    X(kept_young_bytes)                                                                            \
    X(already_gone)                                                                                \
    X(failed)                                                                                      \
    X(foreign)

void meta_json_add_gc_report(JsonBuilder *b, const struct chunk_gc_report *r)
{
    json_builder_begin_object(b);
    meta_json_member_bool(b, "dry_run", r->dry_run);
    meta_json_member_int(b, "grace", (gint64)r->grace_s);
    meta_json_member_int(b, "store_time", (gint64)r->store_time);
#define META_JSON_GC_ADD(name) meta_json_member_int(b, #name, (gint64)r->name);
    META_JSON_GC_COUNTS(META_JSON_GC_ADD)
#undef META_JSON_GC_ADD
    meta_json_member_double(b, "seconds", r->seconds);
    json_builder_end_object(b);
}

void meta_json_get_gc_report(JsonObject *o, struct chunk_gc_report *r)
{
    memset(r, 0, sizeof *r);
    r->dry_run = json_object_get_boolean_member_with_default(o, "dry_run", FALSE);
    r->grace_s = (uint64_t)json_object_get_int_member_with_default(o, "grace", 0);
    r->store_time = (time_t)json_object_get_int_member_with_default(o, "store_time", 0);
#define META_JSON_GC_GET(name)                                                                     \
    r->name = (uint64_t)json_object_get_int_member_with_default(o, #name, 0);
    META_JSON_GC_COUNTS(META_JSON_GC_GET)
#undef META_JSON_GC_GET
    r->seconds = json_object_get_double_member_with_default(o, "seconds", 0);
}
