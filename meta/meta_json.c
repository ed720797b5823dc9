/* meta_json.c: JSON form of metadata records. */
#include "meta_json.h"

void meta_json_add_disk(JsonBuilder *b, const struct meta_disk *d)
{
    char root[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(&d->head_root, root);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, d->name);
    json_builder_set_member_name(b, "size");
    json_builder_add_int_value(b, (gint64)d->size);
    json_builder_set_member_name(b, "chunk_size");
    json_builder_add_int_value(b, d->chunk_size);
    json_builder_set_member_name(b, "head");
    json_builder_add_string_value(b, root);
    json_builder_set_member_name(b, "flush_gen");
    json_builder_add_int_value(b, (gint64)d->flush_gen);
    json_builder_set_member_name(b, "created");
    json_builder_add_int_value(b, (gint64)d->created);
    json_builder_end_object(b);
}

void meta_json_add_checkpoint(JsonBuilder *b, const struct meta_checkpoint *c)
{
    char root[2 * CHUNK_HASH_LEN + 1];

    chunk_hash_to_hex(&c->root, root);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, c->name);
    json_builder_set_member_name(b, "root");
    json_builder_add_string_value(b, root);
    json_builder_set_member_name(b, "created");
    json_builder_add_int_value(b, (gint64)c->created);
    json_builder_set_member_name(b, "comment");
    json_builder_add_string_value(b, c->comment);
    json_builder_end_object(b);
}
