/* disk_import.h: copies a file's data into a Wisp disk through the real data path.
 *
 * The copy goes through a private nbdkit running the Wisp plugin with durability=remote on a
 * socketpair (nbdkit -s), driven by libnbd, so the chunks are hashed, deduplicated, uploaded
 * and committed exactly as a guest's writes are; the CLI never writes chunks or chunk maps
 * itself.  Holes of the file (SEEK_DATA/SEEK_HOLE) are skipped without being read, and a chunk
 * that reads as all zeros is not written, so neither costs a request or an object.  The disk
 * must exist and be at least as large as the file; the metadata directory must not be held by
 * a running server (nbdkit takes it, as the server would). */
#ifndef WISP_DISK_IMPORT_H
#define WISP_DISK_IMPORT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

struct disk_import_stats {
    uint64_t file_bytes;     /* the file's size */
    uint64_t data_bytes;     /* bytes in data extents (what is read); the progress total */
    uint64_t done_bytes;     /* of data_bytes, looked at so far */
    uint64_t written_bytes;  /* sent to the disk */
    uint64_t chunks_total;   /* chunks the file covers */
    uint64_t chunks_written; /* chunks with data, written */
    uint64_t chunks_zero;    /* chunks skipped: holes, or read as all zeros */
    double seconds;          /* since the start, nbdkit's start-up included */
};

struct disk_import_options {
    const char *plugin;    /* nbdkit-wisp-plugin.so, or a name nbdkit resolves ("wisp") */
    const char *store_url; /* store=, cache=, meta= of the plugin */
    const char *cache_dir;
    const char *meta_dir;
    const char *log_path; /* nbdkit's stderr is appended here */
    uint32_t chunk_size;  /* the disk's chunk size: the unit of reads and zero checks */
    /* Called after each chunk (and once at the end), from the calling thread. */
    void (*progress)(const struct disk_import_stats *st, void *opaque);
    void *opaque;
    /* If not NULL and set non-zero (by a signal handler), the copy stops with -ECANCELED. */
    volatile sig_atomic_t *cancel;
};

/* Copies fd (a regular file, read from offset 0) into the export `disk`.  Returns 0 once
 * everything is flushed (durability=remote: uploaded and committed) and nbdkit has exited
 * cleanly, else a negative errno with a sentence in why.  *st is filled in either case. */
int disk_import_run(int fd, const char *disk, const struct disk_import_options *o,
                    struct disk_import_stats *st, char *why, size_t why_len);

#endif
