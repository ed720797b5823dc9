/* vm_fixture.h: what the VM tests share, on top of tests/crash/fixture.h.
 *
 * The image: $WISP_IMAGE_DIR holds vmlinux, the initramfs and rootfs.ext4; when they are
 * missing, $WISP_BUILD_IMAGE (vm-images/build-image) builds them there.  A test skips (77) only
 * when the image cannot be built on this machine, with the builder's last lines as the reason.
 *
 * The disk: `wisp disk import base rootfs.ext4` into a file:// store in the test's directory,
 * then `wisp disk clone base NAME`, served by nbdkit with the Wisp plugin.
 *
 * The VM: libwisp-vm (qmp-manager/) launches it, and an agent_client waits for READY. */
#ifndef WISP_TEST_VM_FIXTURE_H
#define WISP_TEST_VM_FIXTURE_H

#include "agent_client.h"
#include "fixture.h"
#include "vm.h"

struct vmf_image {
    char kernel[600], initrd[600], rootfs[600];
};

struct vmf_disk {
    struct fx_server server;
    char name[64];
    char store_url[700], cache[600], meta[600];
};

struct vmf_vm {
    struct vm *vm;
    agent_client *agent;
    double launch_to_ready_s;
    struct agent_ready ready;
};

/* Finds or builds the image; skips the test if that is impossible here.  refresh: run the
 * builder even if the directory is complete (it is cached by input hash, so this is cheap
 * unless an input such as wisp-init changed). */
void vmf_image_get(struct vmf_image *img, bool refresh);
/* Imports the base rootfs, clones it as `name`, starts nbdkit. */
void vmf_disk_new(struct vmf_disk *d, const struct vmf_image *img, const char *name);
/* Boots: disk attached at launch (claim = false) or a placeholder swapped to the export once
 * wisp-init is ready (claim = true, the QMP manager's path).  Then waits for READY, and if
 * hostname is not NULL sends ATTACH.  run: the VM's run directory name inside the test dir. */
void vmf_boot(struct vmf_vm *v, const struct vmf_image *img, const struct vmf_disk *d,
              const char *run, bool claim, const char *hostname);
/* SHUTDOWN through wisp-init, then QEMU must exit by itself within 60 s. */
void vmf_shutdown(struct vmf_vm *v);
/* Kills whatever is left. */
void vmf_destroy(struct vmf_vm *v);

/* Runs `sh -c script` in the container; returns the shell-style status; *out gets stdout
 * (g_free it; may be NULL to discard). */
int vmf_sh(struct vmf_vm *v, char **out, const char *script);
/* The same, and fails the test unless the status is 0.  Returns stdout with the trailing
 * newline removed (g_free it). */
char *vmf_sh_ok(struct vmf_vm *v, const char *script);

#endif
