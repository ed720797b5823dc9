/* vm_fixture.c: see vm_fixture.h. */
#include "vm_fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"

static bool vmf_find(char *out, size_t size, const char *dir, const char *const *names)
{
    for (int i = 0; names[i]; i++) {
        snprintf(out, size, "%s/%s", dir, names[i]);
        if (access(out, R_OK) == 0)
            return true;
    }
    return false;
}

static bool vmf_image_complete(struct vmf_image *img, const char *dir)
{
    static const char *const kernels[] = {"vmlinux", NULL};
    static const char *const initrds[] = {"initramfs.cpio.gz", "initramfs.cpio", "initramfs.img",
                                          "initrd.img", NULL};
    static const char *const rootfs[] = {"rootfs.ext4", "rootfs.img", NULL};

    return vmf_find(img->kernel, sizeof img->kernel, dir, kernels) &&
           vmf_find(img->initrd, sizeof img->initrd, dir, initrds) &&
           vmf_find(img->rootfs, sizeof img->rootfs, dir, rootfs);
}

void vmf_image_get(struct vmf_image *img, bool refresh)
{
    const char *dir = getenv("WISP_IMAGE_DIR");
    const char *builder = getenv("WISP_BUILD_IMAGE");
    char log[700];

    g_autofree char *qemu = g_find_program_in_path("qemu-system-x86_64");
    if (!qemu)
        fx_skip("qemu-system-x86_64 is not installed (scripts/deps installs qemu-system-x86)");
    if (!dir || !*dir)
        fx_skip("WISP_IMAGE_DIR is not set (meson sets it)");
    if (vmf_image_complete(img, dir) && !refresh)
        return;
    if ((!builder || access(builder, X_OK) != 0) && vmf_image_complete(img, dir))
        return;
    if (!builder || access(builder, X_OK) != 0)
        fx_skip("no image in %s and no image builder (%s) in this tree", dir,
                builder ? builder : "WISP_BUILD_IMAGE unset");
    snprintf(log, sizeof log, "%s/build-image.log", fx_tmpdir());
    fx_log("building the image: %s %s (log %s)", builder, dir, log);
    /* The wisp-init this build made (meson passes it), not whatever build/ holds. */
    const char *wisp_init = getenv("WISP_TEST_WISP_INIT");
    const char *argv[] = {builder, dir, wisp_init ? "--wisp-init" : NULL, wisp_init, NULL};
    pid_t pid = fx_spawn(argv, log, NULL);
    int status = fx_reap(pid, 0, 1200);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !vmf_image_complete(img, dir)) {
        g_autofree char *text = NULL;
        g_file_get_contents(log, &text, NULL, NULL);
        const char *tail = text && strlen(text) > 1500 ? text + strlen(text) - 1500 : text;
        fx_skip("the image cannot be built on this machine (%s exited with status 0x%x):\n%s",
                builder, status, tail ? tail : "");
    }
}

void vmf_disk_new(struct vmf_disk *d, const struct vmf_image *img, const char *name)
{
    const char *tmp = fx_tmpdir();
    const char *cli = fx_need_env("WISP_TEST_CLI");
    const char *plugin = fx_need_env("WISP_TEST_PLUGIN");
    char store_dir[700];

    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->store_url, sizeof d->store_url, "file://%s/store", tmp);
    snprintf(d->cache, sizeof d->cache, "%s/cache", tmp);
    snprintf(d->meta, sizeof d->meta, "%s/meta", tmp);
    snprintf(store_dir, sizeof store_dir, "%s/store", tmp);
    fx_mkdir(store_dir);
    fx_mkdir(d->cache);
    fx_mkdir(d->meta);
    /* As a host does it: the image's rootfs imported once as the disk `base`, and the
     * sprite's disk a clone of it (metadata only). */
    double t0 = fx_now();
    const char *import[] = {cli,       "disk",         "import", "base",  img->rootfs,
                            "--store", d->store_url,   "--meta", d->meta, "--plugin",
                            plugin,    "--chunk-size", "1M",     NULL};
    int rc = fx_run(import);
    FX_CHECK(rc == 0, "wisp disk import base exited %d (see %s/commands.log)", rc, tmp);
    const char *clone[] = {cli, "disk", "clone", "base", name, "--meta", d->meta, NULL};
    rc = fx_run(clone);
    FX_CHECK(rc == 0, "wisp disk clone base %s exited %d (see %s/commands.log)", name, rc, tmp);
    fx_log("disk %s: base rootfs imported and cloned in %.2f s", name, fx_now() - t0);
    fx_server_start(&d->server, "nbd", d->store_url, d->cache, d->meta, NULL);
}

void vmf_boot(struct vmf_vm *v, const struct vmf_image *img, const struct vmf_disk *d,
              const char *run, bool claim, const char *hostname)
{
    char run_dir[700];
    struct vm_config cfg = {
        .kernel = img->kernel,
        .initrd = img->initrd,
        .mem_mib = 256,
        .run_dir = run_dir,
        .disk = claim ? VM_DISK_PLACEHOLDER : VM_DISK_NBD,
        .nbd_socket = d->server.sock,
        .nbd_export = d->name,
        /* Smaller than the disk, so that the claim's block_resize is exercised too. */
        .placeholder_bytes = claim ? (uint64_t)1 << 30 : 0,
    };
    GError *err = NULL;

    memset(v, 0, sizeof *v);
    snprintf(run_dir, sizeof run_dir, "%s/%s", fx_tmpdir(), run);
    double t0;
    v->vm = vm_launch(&cfg, NULL, 30000, &err);
    FX_CHECK(v->vm, "launch: %s", err ? err->message : "?");
    v->agent = agent_client_connect(v->vm->ctl_path, 10000, &err);
    FX_CHECK(v->agent, "control socket: %s", err ? err->message : "?");
    if (!agent_client_wait_ready(v->agent, 120000, &v->ready, &err)) {
        g_autofree char *tail = vm_serial_tail(v->vm, 3000);
        fprintf(stderr, "serial console:\n%s\n", tail);
        FX_CHECK(false, "READY: %s", err->message);
    }
    /* From QEMU's start: the accelerator probe (once per host boot) is not the boot. */
    v->launch_to_ready_s = (double)(g_get_monotonic_time() - v->vm->launched_us) / 1e6;
    fx_log("%s: ready %.0f ms after launch (%s; %s; %s, guest uptime %llu ms)", run,
           v->launch_to_ready_s * 1000, vm_accel_to_string(v->vm->accel), v->vm->accel_why,
           v->ready.agent, (unsigned long long)v->ready.uptime_ms);
    if (claim) {
        t0 = fx_now();
        FX_CHECK(vm_attach_nbd(v->vm, d->server.sock, d->name, 10000, &err), "claim: %s",
                 err ? err->message : "?");
        fx_log("%s: disk swapped in over QMP in %.1f ms", run, (fx_now() - t0) * 1000);
    }
    if (hostname) {
        t0 = fx_now();
        if (!agent_client_attach(v->agent, NULL, hostname, NULL, 120000, &err)) {
            g_autofree char *tail = vm_serial_tail(v->vm, 3000);
            fprintf(stderr, "serial console:\n%s\n", tail);
            FX_CHECK(false, "attach: %s", err->message);
        }
        fx_log("%s: attached in %.0f ms", run, (fx_now() - t0) * 1000);
    }
}

void vmf_shutdown(struct vmf_vm *v)
{
    GError *err = NULL;

    FX_CHECK(agent_client_shutdown(v->agent, 60000, &err), "shutdown: %s",
             err ? err->message : "?");
    double t0 = fx_now();
    FX_CHECK(vm_wait_exit(v->vm, 60000, &err), "QEMU after shutdown: %s", err ? err->message : "?");
    fx_log("powered off %.0f ms after SHUTDOWN (QEMU %s)", (fx_now() - t0) * 1000,
           proc_status_to_string(v->vm->exit_status));
    vmf_destroy(v);
}

void vmf_destroy(struct vmf_vm *v)
{
    agent_client_free(v->agent);
    v->agent = NULL;
    vm_free(v->vm);
    v->vm = NULL;
}

int vmf_sh(struct vmf_vm *v, char **out, const char *script)
{
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    GError *err = NULL;
    char *errout = NULL;
    int status = agent_exec_run(v->agent, argv, NULL, 0, out, NULL, &errout, 120000, &err);

    FX_CHECK(status >= 0, "exec %s: %s", script, err ? err->message : "?");
    if (status != 0 && errout && *errout)
        fx_log("stderr of `%s`: %s", script, errout);
    g_free(errout);
    return status;
}

char *vmf_sh_ok(struct vmf_vm *v, const char *script)
{
    char *out = NULL;
    int status = vmf_sh(v, &out, script);

    FX_CHECK(status == 0, "`%s` exited %d: %s", script, status, out ? out : "");
    g_strchomp(out);
    return out;
}
