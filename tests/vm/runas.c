/* runas.c (vm_runas): QEMU as an unprivileged user (runas.h), with the sandbox on, under TCG.
 *
 *   1. A VM launched with run_as = "nobody" and -sandbox on: every uid of QEMU in
 *      /proc/PID/status is nobody's, every gid nobody's primary group, each supplementary
 *      group one of nobody's, and seccomp is in filter mode (the sandbox is on).
 *      vm_runas_grant_socket refuses a socket not owned by root and a symlink to a socket.
 *   2. The claim's disk attach (blockdev-add of nbdkit's socket, opened by QEMU after it dropped
 *      root): with the socket root's only (0600), it fails; given to nobody's group with
 *      vm_runas_grant_socket (0660, never world-writable), it works.
 *   3. wisp-init answers: ATTACH mounts the disk, an exec writes and reads a file on it.
 *   4. The pool's way: a template built with run_as nobody, a clone claimed (its disk attached
 *      through the granted socket): QEMU is nobody, the clone reads what step 3 wrote.
 *   5. A user that does not exist: QEMU runs as the caller (root) and the VM says why.
 * Skips (77) when not root (QEMU cannot change user then) or without a user "nobody". */
#include "runas.h"
#include "pool.h"
#include "sprite.h"
#include "vm_fixture.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* "Uid:\tR\tE\tS\tF" and "Seccomp:\tN" of a process. */
static void proc_ids(pid_t pid, unsigned uids[4], int *seccomp)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    FX_CHECK(g_file_get_contents(path, &text, NULL, NULL), "read %s", path);
    const char *u = strstr(text, "\nUid:");
    const char *s = strstr(text, "\nSeccomp:");
    FX_CHECK(u && sscanf(u, "\nUid: %u %u %u %u", &uids[0], &uids[1], &uids[2], &uids[3]) == 4,
             "no Uid line in %s", path);
    FX_CHECK(s && sscanf(s, "\nSeccomp: %d", seccomp) == 1, "no Seccomp line in %s", path);
}

/* Every gid of the process ("Gid:" R E S F) is pw's primary group, and each supplementary group
 * ("Groups:") is one of pw's own (getgrouplist): none of root's left behind by the switch. */
static void check_gids(pid_t pid, const struct passwd *pw)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    unsigned g[4];
    gid_t allowed[256];
    int n_allowed = G_N_ELEMENTS(allowed);

    FX_CHECK(g_file_get_contents(path, &text, NULL, NULL), "read %s", path);
    const char *gl = strstr(text, "\nGid:");
    FX_CHECK(gl && sscanf(gl, "\nGid: %u %u %u %u", &g[0], &g[1], &g[2], &g[3]) == 4,
             "no Gid line in %s", path);
    for (int i = 0; i < 4; i++)
        FX_CHECK(g[i] == pw->pw_gid, "QEMU's gid %d is %u, not %s's %u", i, g[i], pw->pw_name,
                 (unsigned)pw->pw_gid);
    FX_CHECK(getgrouplist(pw->pw_name, pw->pw_gid, allowed, &n_allowed) >= 0, "getgrouplist %s",
             pw->pw_name);
    const char *groups = strstr(text, "\nGroups:");
    FX_CHECK(groups, "no Groups line in %s", path);
    groups += strlen("\nGroups:");
    unsigned count = 0;
    for (;;) {
        char *end;
        while (*groups == ' ' || *groups == '\t')
            groups++;
        if (*groups < '0' || *groups > '9')
            break;
        unsigned long gid = strtoul(groups, &end, 10);
        bool ok = false;
        for (int i = 0; i < n_allowed; i++)
            ok = ok || (unsigned long)allowed[i] == gid;
        FX_CHECK(ok, "QEMU keeps supplementary group %lu, not one of %s's", gid, pw->pw_name);
        count++;
        groups = end;
    }
    fx_log("QEMU %d: Gid %u %u %u %u, %u supplementary groups, all %s's", (int)pid, g[0], g[1],
           g[2], g[3], count, pw->pw_name);
}

/* vm_runas_grant_socket gives away only a root-owned socket, reached without a symlink. */
static void check_grant_refusals(const struct passwd *pw)
{
    g_autofree char *sock = g_strdup_printf("%s/not-ours.sock", fx_tmpdir());
    g_autofree char *link = g_strdup_printf("%s/link.sock", fx_tmpdir());
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *user = pw->pw_name;
    GError *err = NULL;
    struct stat sb;

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FX_CHECK(fd >= 0 && strlen(sock) < sizeof sa.sun_path, "socket");
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    FX_CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s", sock);
    FX_CHECK(chmod(sock, 0600) == 0 && chown(sock, pw->pw_uid, 0) == 0, "chown %s", sock);
    FX_CHECK(!vm_runas_grant_socket(sock, user, &err), "a socket of uid %u was granted",
             (unsigned)pw->pw_uid);
    FX_CHECK(err && strstr(err->message, "not root"), "unexpected error: %s",
             err ? err->message : "none");
    FX_CHECK(stat(sock, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_gid == 0,
             "the refused socket was changed: %o group %u", (unsigned)(sb.st_mode & 0777),
             (unsigned)sb.st_gid);
    g_clear_error(&err);
    FX_CHECK(chown(sock, 0, 0) == 0 && symlink(sock, link) == 0, "symlink %s", link);
    FX_CHECK(!vm_runas_grant_socket(link, user, &err) && strstr(err->message, "symbolic link"),
             "a symlink to a socket was granted");
    FX_CHECK(stat(sock, &sb) == 0 && (sb.st_mode & 0777) == 0600, "the link's target changed");
    fx_log("grant refused a socket of uid %u and a symlink (%s)", (unsigned)pw->pw_uid,
           err ? err->message : "?");
    g_clear_error(&err);
    close(fd);
    unlink(link);
    unlink(sock);
}

/* QEMU's user must be able to reach the socket: search permission on each directory from the
 * test's own down to the socket's (the test directory is 0700). */
static void open_dirs_to(const char *sock)
{
    g_autofree char *dir = g_path_get_dirname(sock);
    size_t base = strlen(fx_tmpdir());
    FX_CHECK(strncmp(dir, fx_tmpdir(), base) == 0, "socket %s outside the test dir", sock);
    for (;;) {
        struct stat sb;
        FX_CHECK(stat(dir, &sb) == 0 && chmod(dir, (sb.st_mode & 07777) | S_IXOTH) == 0,
                 "chmod o+x %s", dir);
        if (strlen(dir) <= base)
            break;
        char *parent = g_path_get_dirname(dir);
        g_free(dir);
        dir = parent;
    }
}

static struct vm *launch(const struct vmf_image *img, const char *run, const char *user)
{
    g_autofree char *run_dir = g_strdup_printf("%s/%s", fx_tmpdir(), run);
    struct vm_config cfg = {.kernel = img->kernel,
                            .initrd = img->initrd,
                            .mem_mib = 256,
                            .run_dir = run_dir,
                            .disk = VM_DISK_PLACEHOLDER,
                            .sandbox = true,
                            .run_as = user};
    GError *err = NULL;
    struct vm *vm = vm_launch(&cfg, NULL, 30000, &err);
    FX_CHECK(vm, "launch as %s: %s", user, err ? err->message : "?");
    return vm;
}

int main(void)
{
    struct vmf_image img;
    struct vmf_disk disk;
    GError *err = NULL;

    if (geteuid() != 0)
        fx_skip("not root: QEMU cannot change user");
    struct passwd *pw = getpwnam("nobody");
    if (!pw)
        fx_skip("no user 'nobody' on this host");
    uid_t nobody = pw->pw_uid;
    fx_setup("vm-runas");
    vmf_image_get(&img, false);
    vmf_disk_new(&disk, &img, "runas");

    /* 1. */
    struct vmf_vm v = {.vm = launch(&img, "run", "nobody")};
    v.agent = agent_client_connect(v.vm->ctl_path, 10000, &err);
    FX_CHECK(v.agent, "control socket: %s", err ? err->message : "?");
    FX_CHECK(agent_client_wait_ready(v.agent, 120000, &v.ready, &err), "READY: %s",
             err ? err->message : "?");
    unsigned uids[4];
    int seccomp = -1;
    proc_ids(v.vm->pid, uids, &seccomp);
    fx_log("QEMU %d: Uid %u %u %u %u, Seccomp %d (nobody is %u)", (int)v.vm->pid, uids[0], uids[1],
           uids[2], uids[3], seccomp, (unsigned)nobody);
    for (int i = 0; i < 4; i++)
        FX_CHECK(uids[i] == nobody, "QEMU's uid %d is %u, not nobody's %u", i, uids[i],
                 (unsigned)nobody);
    FX_CHECK(v.vm->run_as_uid == nobody, "the VM records uid %u", (unsigned)v.vm->run_as_uid);
    FX_CHECK(seccomp == 2, "QEMU's seccomp mode is %d: the sandbox is off", seccomp);
    check_gids(v.vm->pid, pw);
    check_grant_refusals(pw);

    /* 2. */
    open_dirs_to(disk.server.sock);
    FX_CHECK(chmod(disk.server.sock, 0600) == 0, "chmod 0600 %s", disk.server.sock);
    FX_CHECK(!vm_attach_nbd(v.vm, disk.server.sock, disk.name, 30000, &err),
             "QEMU as nobody attached a socket only root may use");
    fx_log("attach with the socket 0600 root: %s", err ? err->message : "?");
    FX_CHECK(err && strstr(err->message, "ermission denied"), "unexpected error: %s",
             err ? err->message : "none");
    g_clear_error(&err);
    FX_CHECK(vm_runas_grant_socket(disk.server.sock, "nobody", &err), "grant: %s",
             err ? err->message : "?");
    struct stat sb;
    FX_CHECK(stat(disk.server.sock, &sb) == 0 && (sb.st_mode & 0777) == 0660 &&
                 sb.st_gid == pw->pw_gid,
             "the socket is %o group %u", (unsigned)(sb.st_mode & 0777), (unsigned)sb.st_gid);
    FX_CHECK(vm_attach_nbd(v.vm, disk.server.sock, disk.name, 30000, &err),
             "attach with the socket granted: %s", err ? err->message : "?");

    /* 3. */
    FX_CHECK(agent_client_attach(v.agent, NULL, "runas", NULL, 120000, &err), "ATTACH: %s",
             err ? err->message : "?");
    g_autofree char *out =
        vmf_sh_ok(&v, "echo written-as-nobody > /root/runas && sync && cat /root/runas && id -u");
    FX_CHECK(strcmp(out, "written-as-nobody\n0") == 0, "the guest says '%s'", out);
    vmf_shutdown(&v);

    /* 4. The pool's way: a template and its clones as nobody, claimed through the socket. */
    {
        g_autofree char *image_dir = g_path_get_dirname(img.kernel);
        g_autofree char *key = vm_template_image_key(image_dir, &err);
        FX_CHECK(key, "image key: %s", err ? err->message : "?");
        g_autofree char *state = g_strdup_printf("%s/state", fx_tmpdir());
        g_autofree char *runs = g_strdup_printf("%s/runs", fx_tmpdir());
        struct vm_template_config tc = {.state_dir = state,
                                        .key = key,
                                        .kernel = img.kernel,
                                        .initrd = img.initrd,
                                        .sandbox = true,
                                        .run_as = "nobody"};
        struct vm_template *tpl = vm_template_ensure(&tc, &err);
        FX_CHECK(tpl, "template as nobody: %s", err ? err->message : "?");
        struct vm_pool_config pc = {.tpl = tpl, .size = 1, .run_root = runs};
        vm_pool *pool = vm_pool_new(&pc, &err);
        FX_CHECK(pool && vm_pool_wait_full(pool, 120000), "pool as nobody: %s",
                 err ? err->message : "not full");
        struct sprite_claim_request req = {.nbd_socket = disk.server.sock,
                                           .export_name = disk.name,
                                           .hostname = "runas-clone",
                                           .take_timeout_ms = 60000};
        struct sprite *sp = sprite_claim(pool, &req, NULL, &err);
        FX_CHECK(sp, "claim as nobody: %s", err ? err->message : "?");
        proc_ids(sp->vm->pid, uids, &seccomp);
        FX_CHECK(uids[0] == nobody && uids[1] == nobody && seccomp == 2,
                 "the claimed clone's QEMU: uid %u, seccomp %d", uids[0], seccomp);
        check_gids(sp->vm->pid, pw);
        struct vmf_vm cv = {.vm = sp->vm, .agent = sp->agent};
        g_autofree char *clone_out = vmf_sh_ok(&cv, "cat /root/runas; hostname");
        FX_CHECK(strcmp(clone_out, "written-as-nobody\nrunas-clone") == 0, "the clone says '%s'",
                 clone_out);
        fx_log("a pool clone as nobody: claimed, its disk read (uid %u, seccomp %d)", uids[0],
               seccomp);
        sprite_destroy(sp, false, NULL, NULL, NULL);
        vm_pool_free(pool);
        vm_template_free(tpl);
    }

    /* 5. */
    struct vm *root_vm = launch(&img, "run2", "no-such-user-wisp");
    proc_ids(root_vm->pid, uids, &seccomp);
    fx_log("with a missing user: QEMU uid %u, because: %s", uids[0], root_vm->run_as_why);
    FX_CHECK(uids[0] == 0 && root_vm->run_as_uid == 0 && strstr(root_vm->run_as_why, "no user"),
             "a missing user: uid %u, why '%s'", uids[0], root_vm->run_as_why);
    FX_CHECK(seccomp == 2, "without runas the sandbox must stay on: seccomp mode %d", seccomp);
    vm_free(root_vm);

    fx_server_stop(&disk.server);
    return 0;
}
