/* sleep_fixture.h: what the sleep and crash tests share on top of vm_fixture.h: a sprite whose
 * RAM is in a file of its own (DIR/ram, share=on, as sleep.h requires), its disk attached at
 * launch, a counter service in the guest, and the agent reconnected after a wake. */
#ifndef WISP_TEST_SLEEP_FIXTURE_H
#define WISP_TEST_SLEEP_FIXTURE_H

#include "sleep.h"
#include "vm_fixture.h"

struct sleepf_sprite {
    char name[64];
    char dir[700], run_dir[700]; /* the local copy (RAM file), QEMU's run dir */
    struct vm_config cfg;        /* as launched (without the RAM file fields) */
    struct vmf_vm v;
};

/* Boots the sprite with RAM in DIR/ram and the disk d attached (d NULL: a placeholder and no
 * attach), waits for READY and attaches (hostname = name) when there is a disk. */
void sleepf_boot(struct sleepf_sprite *s, const struct vmf_image *img, const struct vmf_disk *d,
                 const char *name);
/* The same with the RAM a private (share=off) mapping of DIR/template-ram, as a pool clone's is
 * of the template's RAM file: cold sleep then needs sleep_cold_private. */
void sleepf_boot_private(struct sleepf_sprite *s, const struct vmf_image *img,
                         const struct vmf_disk *d, const char *name);
/* After a wake: the new vm, a new agent connection, READY. */
void sleepf_adopt(struct sleepf_sprite *s, struct vm *vm);
/* Starts the counter service: /tmp/counter holds "PID N", N counting up every 100 ms. */
void sleepf_counter_start(struct sleepf_sprite *s);
/* Reads it: *pid and *n. */
void sleepf_counter_read(struct sleepf_sprite *s, long *pid, long *n);

#endif
