/* sprite_reconcile.h: at start-up, make the account databases and the storage server agree.
 *
 * A verb writes to both (the account's row, the storage server's disk or checkpoint), and a
 * wispd killed between the two writes leaves them apart.  Each verb orders its writes so that
 * what is left is a state this pass knows how to finish (sprite_reconcile.c says which). */
#ifndef WISP_SPRITE_RECONCILE_H
#define WISP_SPRITE_RECONCILE_H

#include <glib.h>
#include <stdbool.h>

struct sprite_reconcile_report {
    unsigned accounts, sprites;
    unsigned rows_dropped;        /* sprite rows whose disk never came to be */
    unsigned disks_adopted;       /* disks s_ACCOUNT_NAME that had no row */
    unsigned checkpoints_adopted; /* storage checkpoints that had no row */
};

/* Goes through every account under STATE/accounts/ and every disk of the storage server
 * (its control socket), before the API serves.  false with error if either cannot be read;
 * nothing is deleted from the storage server, ever. */
bool sprite_reconcile(const char *state_dir, const char *control_socket,
                      struct sprite_reconcile_report *out, GError **error);

#endif
