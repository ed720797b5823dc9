/* lease.h: one writer per disk, fenced through the object store (DESIGN, storage invariant 11).
 *
 * A disk's lease is a series of objects leases/<disk>/<generation, 16 hex digits>, each made
 * with a conditional create, so two hosts can never both make generation N: the one whose
 * create succeeded holds the disk until a higher generation exists.  The holder rewrites its
 * own object to renew it (every ttl / 3); an object not renewed for ttl seconds has expired.
 * Another host takes an expired lease only when told to (steal): it creates generation N+1.
 * A holder that finds a higher generation (when renewing, or when checking before each
 * commit) is fenced: it must refuse every later commit.  Closing a disk marks its object
 * released, which the next opener may take over at once.
 *
 * A server restarted on the same metadata directory (after a crash, say) takes its own lease
 * back at once: the lease names its owner, an id kept in the metadata directory but not in its
 * replica, and the directory's lock proves the previous process is gone.  A new host restoring
 * the replica is a new owner: it waits for the lease to expire and steals it.
 *
 * Clocks: expiry compares the object's mtime (the store's clock) with this host's clock, so
 * they must agree to well within ttl.  Stores without conditional create (If-None-Match
 * answered 501 or ignored): lease_acquire still works, by listing then writing, but two hosts
 * racing within one request's time could both believe they hold it; it logs a warning once.
 *
 * A lease object is a GKeyFile: [lease] generation, holder (host, pid), instance, owner, ttl_ms,
 * state (held or released). */
#ifndef WISP_LEASE_H
#define WISP_LEASE_H

#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lease;

struct lease_info {
    bool found;          /* there is a lease object at all */
    uint64_t generation; /* the highest */
    char holder[192];    /* "host pid 1234" */
    char instance[40];   /* random, one per process */
    char owner[40];      /* random, one per metadata directory */
    double ttl;          /* seconds */
    double age;          /* seconds since it was last renewed */
    bool released;
};

/* This process's identity in leases: call once before any lease_acquire. */
void lease_set_identity(const char *holder, const char *instance, const char *owner);

/* Takes disk's lease.  -EBUSY if another holder has it (*who describes it, and the message is
 * logged), unless steal and the lease expired or was released.  Returns 0 and the lease. */
int lease_acquire(struct store *st, const char *disk, double ttl, bool steal, struct lease **out,
                  struct lease_info *who);
/* Rewrites the lease object (renewal).  -ESTALE if a higher generation exists: fenced. */
int lease_renew(struct lease *l);
/* -ESTALE if a higher generation exists (one LIST); 0 if this lease is still the latest. */
int lease_check(struct lease *l);
/* Whether it is time to renew (a third of the ttl passed since the last renewal). */
bool lease_renew_due(const struct lease *l);
uint64_t lease_generation(const struct lease *l);
/* Marks the lease released (best effort) and frees it. */
void lease_release(struct lease *l);
/* Describes disk's current lease without taking it. */
int lease_inspect(struct store *st, const char *disk, struct lease_info *out);

/* Parses a lease object (exposed for the fuzzer and its unit test).  -EBADMSG if it is not
 * one (or is longer than LEASE_OBJECT_MAX), -ENOMEM. */
#define LEASE_OBJECT_MAX 4096
int lease_parse(const void *data, size_t len, struct lease_info *out);

#endif
