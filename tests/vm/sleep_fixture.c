/* sleep_fixture.c: see sleep_fixture.h. */
#include "sleep_fixture.h"

#include <stdio.h>
#include <string.h>

static void sleepf_boot_ram(struct sleepf_sprite *s, const struct vmf_image *img,
                            const struct vmf_disk *d, const char *name, bool private_ram)
{
    GError *err = NULL;

    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->dir, sizeof s->dir, "%s/sprite-%s", fx_tmpdir(), name);
    snprintf(s->run_dir, sizeof s->run_dir, "%s/run-%s", fx_tmpdir(), name);
    fx_mkdir(s->dir);
    s->cfg = (struct vm_config){
        .kernel = img->kernel,
        .initrd = img->initrd,
        .mem_mib = 256,
        .run_dir = s->run_dir,
        .disk = d ? VM_DISK_NBD : VM_DISK_PLACEHOLDER,
        .nbd_socket = d ? d->server.sock : NULL,
        .nbd_export = d ? d->name : NULL,
    };
    struct vm_config cfg = s->cfg;
    g_autofree char *ram =
        private_ram ? g_strdup_printf("%s/template-ram", s->dir) : sleep_ram_path(s->dir);
    cfg.mem_path = ram;
    cfg.mem_share = !private_ram;
    s->v.vm = vm_launch(&cfg, NULL, 30000, &err);
    FX_CHECK(s->v.vm, "launch %s: %s", name, err ? err->message : "?");
    s->v.agent = agent_client_connect(s->v.vm->ctl_path, 10000, &err);
    FX_CHECK(s->v.agent, "control socket: %s", err ? err->message : "?");
    if (!agent_client_wait_ready(s->v.agent, 120000, &s->v.ready, &err)) {
        g_autofree char *tail = vm_serial_tail(s->v.vm, 3000);
        fprintf(stderr, "serial console:\n%s\n", tail);
        FX_CHECK(false, "READY: %s", err->message);
    }
    fx_log("%s: ready %.0f ms after launch", name,
           (double)(g_get_monotonic_time() - s->v.vm->launched_us) / 1e3);
    if (d)
        FX_CHECK(agent_client_attach(s->v.agent, NULL, name, NULL, 120000, &err), "attach: %s",
                 err ? err->message : "?");
}

void sleepf_boot(struct sleepf_sprite *s, const struct vmf_image *img, const struct vmf_disk *d,
                 const char *name)
{
    sleepf_boot_ram(s, img, d, name, false);
}

void sleepf_boot_private(struct sleepf_sprite *s, const struct vmf_image *img,
                         const struct vmf_disk *d, const char *name)
{
    sleepf_boot_ram(s, img, d, name, true);
}

void sleepf_adopt(struct sleepf_sprite *s, struct vm *vm)
{
    GError *err = NULL;

    agent_client_free(s->v.agent);
    s->v.agent = NULL;
    s->v.vm = vm;
    s->v.agent = agent_client_connect(vm->ctl_path, 10000, &err);
    FX_CHECK(s->v.agent, "control socket after wake: %s", err ? err->message : "?");
    FX_CHECK(agent_client_wait_ready(s->v.agent, 30000, &s->v.ready, &err), "READY after wake: %s",
             err ? err->message : "?");
}

void sleepf_counter_start(struct sleepf_sprite *s)
{
    GError *err = NULL;
    const char *argv[] = {"/bin/sh", "-c",
                          "i=0; while :; do echo \"$$ $i\" > /tmp/counter.new;"
                          " mv /tmp/counter.new /tmp/counter; i=$((i+1)); sleep 0.1; done",
                          NULL};

    FX_CHECK(agent_client_service_start(s->v.agent, "counter", argv, NULL, NULL, WISP_RESTART_NEVER,
                                        0, 30000, &err),
             "counter service: %s", err ? err->message : "?");
    /* Until it has written once. */
    for (int i = 0; i < 100; i++) {
        char *out = NULL;
        if (vmf_sh(&s->v, &out, "cat /tmp/counter 2>/dev/null") == 0 && out && *out) {
            g_free(out);
            return;
        }
        g_free(out);
        fx_sleep(0.1);
    }
    FX_CHECK(false, "the counter never wrote /tmp/counter");
}

void sleepf_counter_read(struct sleepf_sprite *s, long *pid, long *n)
{
    g_autofree char *out = vmf_sh_ok(&s->v, "cat /tmp/counter");
    FX_CHECK(sscanf(out, "%ld %ld", pid, n) == 2, "counter says '%s'", out);
}
