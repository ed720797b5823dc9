/* accel.c: the KVM probe (see accel.h). */
#include "accel.h"

#include "log.h"
#include "proc.h"
#include "vm_config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define ACCEL_LOG            "accel"
#define ACCEL_IOCTL_DEADLINE 3000 /* ms; KVM_RUN of 3 instructions takes microseconds */
#define ACCEL_BOOT_DEADLINE  8000 /* ms; a KVM boot to the panic takes well under 1 s */

const char *vm_accel_to_string(enum vm_accel accel)
{
    switch (accel) {
    case VM_ACCEL_AUTO:
        return "auto";
    case VM_ACCEL_KVM:
        return "kvm";
    case VM_ACCEL_TCG:
        return "tcg";
    }
    return "?";
}

bool vm_accel_from_string(const char *s, enum vm_accel *out)
{
    for (int a = VM_ACCEL_AUTO; a <= VM_ACCEL_TCG; a++)
        if (g_ascii_strcasecmp(s, vm_accel_to_string(a)) == 0) {
            *out = a;
            return true;
        }
    return false;
}

/* ---- 1. the ioctls, in a child ------------------------------------------------------------ */

/* The child's exit codes, so that the parent can say which step failed. */
enum {
    KVM_OK = 0,
    KVM_NO_DEVICE = 10,
    KVM_BAD_API,
    KVM_NO_VM,
    KVM_NO_MEMORY,
    KVM_NO_VCPU,
    KVM_NO_REGS,
    KVM_RUN_FAILED,
    KVM_WRONG_EXIT,
};

static const char *kvm_step_to_string(int code)
{
    switch (code) {
    case KVM_NO_DEVICE:
        return "cannot open /dev/kvm";
    case KVM_BAD_API:
        return "KVM_GET_API_VERSION is not 12";
    case KVM_NO_VM:
        return "KVM_CREATE_VM failed";
    case KVM_NO_MEMORY:
        return "KVM_SET_USER_MEMORY_REGION failed";
    case KVM_NO_VCPU:
        return "KVM_CREATE_VCPU failed";
    case KVM_NO_REGS:
        return "setting the vCPU registers failed";
    case KVM_RUN_FAILED:
        return "KVM_RUN failed";
    case KVM_WRONG_EXIT:
        return "the test guest did not do its port write and HLT";
    }
    return "the probe process failed";
}

/* mov $0x42, %al; out %al, $0x10; hlt -- in real mode at 0x1000. */
static const uint8_t kvm_test_code[] = {0xb0, 0x42, 0xe6, 0x10, 0xf4};

static int kvm_probe_child(void)
{
    struct kvm_userspace_memory_region region = {0};
    struct kvm_sregs sregs;
    struct kvm_regs regs = {0};
    struct kvm_run *run;
    int kvm, vm, vcpu, run_size;
    uint8_t *mem;
    bool saw_io = false;

    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return KVM_NO_DEVICE;
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != 12)
        return KVM_BAD_API;
    vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
    if (vm < 0)
        return KVM_NO_VM;
    mem = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return KVM_NO_MEMORY;
    memcpy(mem + 0x1000, kvm_test_code, sizeof kvm_test_code);
    region.slot = 0;
    region.guest_phys_addr = 0;
    region.memory_size = 0x2000;
    region.userspace_addr = (uintptr_t)mem;
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return KVM_NO_MEMORY;
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
    if (vcpu < 0)
        return KVM_NO_VCPU;
    run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size <= 0)
        return KVM_NO_VCPU;
    run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        return KVM_NO_VCPU;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        return KVM_NO_REGS;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        return KVM_NO_REGS;
    regs.rip = 0x1000;
    regs.rflags = 0x2;
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        return KVM_NO_REGS;
    for (int i = 0; i < 16; i++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            return KVM_RUN_FAILED;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0x10 &&
                *((uint8_t *)run + run->io.data_offset) == 0x42)
                saw_io = true;
            break;
        case KVM_EXIT_HLT:
            return saw_io ? KVM_OK : KVM_WRONG_EXIT;
        default:
            return KVM_WRONG_EXIT;
        }
    }
    return KVM_WRONG_EXIT;
}

bool vm_accel_kvm_ioctl_probe(const char **detail)
{
    int status = 0, r;
    pid_t pid;

    if (access("/dev/kvm", R_OK | W_OK) < 0) {
        *detail = "/dev/kvm is missing or not accessible";
        return false;
    }
    /* A child, because a broken KVM can hang KVM_RUN or kill the process. */
    pid = fork();
    if (pid < 0) {
        *detail = "fork failed";
        return false;
    }
    if (pid == 0) {
        alarm(ACCEL_IOCTL_DEADLINE / 1000 + 1);
        _exit(kvm_probe_child());
    }
    r = proc_wait(pid, ACCEL_IOCTL_DEADLINE, &status);
    if (r == 0) {
        kill(pid, SIGKILL);
        proc_wait(pid, -1, &status);
        *detail = "KVM_RUN of the test guest hung";
        return false;
    }
    if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != KVM_OK) {
        *detail = r < 0 || !WIFEXITED(status) ? "the KVM probe process crashed"
                                              : kvm_step_to_string(WEXITSTATUS(status));
        return false;
    }
    *detail = "the test guest ran under KVM";
    return true;
}

/* ---- 2. a QEMU boot under KVM -------------------------------------------------------------- */

/* Returns NULL on success, else why (g_malloc'd). */
static char *kvm_qemu_boot_probe(const char *qemu, const char *kernel)
{
    g_autofree char *dir = g_dir_make_tmp("wisp-kvm-probe-XXXXXX", NULL);
    g_autofree char *serial = NULL, *log = NULL, *serial_text = NULL, *log_text = NULL;
    g_autofree char *append = NULL, *serial_opt = NULL;
    char *why = NULL;
    int status = 0, r;
    pid_t pid;

    if (!dir)
        return g_strdup("cannot make a temporary directory");
    serial = g_build_filename(dir, "serial.log", NULL);
    log = g_build_filename(dir, "qemu.log", NULL);
    append = g_strdup_printf("console=ttyS0 panic=-1 tsc_early_khz=%u rdinit=/wisp-no-init",
                             vm_host_cpu_khz());
    serial_opt = g_strdup_printf("file:%s", serial);
    /* No initramfs and no disk: the kernel boots, finds no root and panics, panic=-1 reboots
     * at once, -no-reboot makes QEMU exit 0.  That proves the whole boot ran under KVM. */
    const char *argv[] = {qemu,   "-M",      "microvm",     "-accel",          "kvm",
                          "-cpu", "host",    "-nodefaults", "-no-user-config", "-display",
                          "none", "-m",      "128",         "-no-reboot",      "-kernel",
                          kernel, "-append", append,        "-serial",         serial_opt,
                          NULL};
    gint64 t0 = g_get_monotonic_time();
    pid = proc_spawn(argv, log, true);
    if (pid < 0) {
        why = g_strdup_printf("cannot start %s: %s", qemu, g_strerror(-pid));
        goto out;
    }
    r = proc_wait(pid, ACCEL_BOOT_DEADLINE, &status);
    if (r == 0) {
        proc_kill_and_reap(pid);
        why = g_strdup_printf("a KVM boot did not finish in %d s (KVM crawls here)",
                              ACCEL_BOOT_DEADLINE / 1000);
        goto out;
    }
    g_file_get_contents(serial, &serial_text, NULL, NULL);
    g_file_get_contents(log, &log_text, NULL, NULL);
    if (r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_autofree char *first = g_strdup(log_text ? g_strstrip(log_text) : "");
        char *nl = strchr(first, '\n');
        if (nl)
            *nl = '\0';
        why = g_strdup_printf("QEMU with -accel kvm failed (%s): %s",
                              r < 0 ? g_strerror(-r) : proc_status_to_string(status), first);
        goto out;
    }
    if (!serial_text || !strstr(serial_text, "Kernel panic")) {
        why = g_strdup("QEMU with -accel kvm exited without the guest kernel running");
        goto out;
    }
    log_info(ACCEL_LOG, "KVM probe boot took %.0f ms",
             (double)(g_get_monotonic_time() - t0) / 1000.0);
out:
    unlink(serial);
    unlink(log);
    rmdir(dir);
    return why;
}

/* ---- the cache ----------------------------------------------------------------------------- */

static char *accel_cache_key(const char *qemu, const char *kernel)
{
    g_autofree char *boot_id = NULL;
    g_autofree char *qemu_path = g_find_program_in_path(qemu);
    struct stat st_q = {0}, st_k = {0};

    if (!g_file_get_contents("/proc/sys/kernel/random/boot_id", &boot_id, NULL, NULL))
        boot_id = g_strdup("?");
    g_strstrip(boot_id);
    if (qemu_path)
        stat(qemu_path, &st_q);
    /* The kernel only has to boot; its size tells a different kernel apart well enough, and
     * unlike its path or mtime it survives the image being copied or rebuilt. */
    if (kernel)
        stat(kernel, &st_k);
    return g_strdup_printf("%s %s:%lld kernel:%lld", boot_id, qemu_path ? qemu_path : qemu,
                           (long long)st_q.st_mtime, (long long)st_k.st_size);
}

static char *accel_cache_path(void)
{
    const char *p = getenv("WISP_ACCEL_CACHE");

    if (p && *p)
        return g_strdup(p);
    return g_strdup_printf("%s/wisp-accel-%u", g_get_tmp_dir(), (unsigned)getuid());
}

/* The cached answer for key, as "kvm"/"tcg" and the reason. */
static bool accel_cache_read(const char *key, enum vm_accel *accel, char **why)
{
    g_autofree char *path = accel_cache_path(), *text = NULL;
    g_auto(GStrv) lines = NULL;
    struct stat st;

    /* The default lives in a shared /tmp: trust only our own file. */
    if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022))
        return false;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return false;
    lines = g_strsplit(text, "\n", 3);
    if (!lines[0] || !lines[1] || strcmp(lines[0], key) != 0)
        return false;
    g_auto(GStrv) fields = g_strsplit(lines[1], " ", 2);
    if (!fields[0] || !vm_accel_from_string(fields[0], accel) || *accel == VM_ACCEL_AUTO)
        return false;
    *why = g_strdup_printf("cached: %s", fields[1] ? fields[1] : "");
    return true;
}

static void accel_cache_write(const char *key, enum vm_accel accel, const char *why)
{
    g_autofree char *path = accel_cache_path();
    g_autofree char *text = g_strdup_printf("%s\n%s %s\n", key, vm_accel_to_string(accel), why);
    GError *err = NULL;

    /* g_file_set_contents writes a temporary file and renames it: readers see all or nothing. */
    if (!g_file_set_contents(path, text, -1, &err)) {
        log_warn(ACCEL_LOG, "cannot cache the probe's answer: %s", err->message);
        g_error_free(err);
    }
}

static pthread_mutex_t accel_lock = PTHREAD_MUTEX_INITIALIZER;
static char *accel_cached_key;
static enum vm_accel accel_cached;
static char *accel_cached_why;

enum vm_accel vm_accel_resolve(enum vm_accel wanted, const char *qemu, const char *kernel,
                               const char **why)
{
    const char *env = getenv("WISP_ACCEL");
    enum vm_accel forced = VM_ACCEL_AUTO, result;
    g_autofree char *key = NULL;
    char *reason = NULL;
    const char *detail = NULL;

    if (wanted != VM_ACCEL_AUTO) {
        if (why)
            *why = "forced by the caller";
        return wanted;
    }
    if (env && *env && vm_accel_from_string(env, &forced) && forced != VM_ACCEL_AUTO) {
        if (why)
            *why = "forced by WISP_ACCEL";
        return forced;
    }
    if (!qemu)
        qemu = getenv("WISP_QEMU") ? getenv("WISP_QEMU") : "qemu-system-x86_64";
    key = accel_cache_key(qemu, kernel);

    pthread_mutex_lock(&accel_lock);
    if (accel_cached_key && strcmp(accel_cached_key, key) == 0) {
        result = accel_cached;
        goto done;
    }
    if (accel_cache_read(key, &result, &reason))
        goto remember;
    if (!vm_accel_kvm_ioctl_probe(&detail)) {
        result = VM_ACCEL_TCG;
        reason = g_strdup_printf("TCG: %s", detail);
    } else if (!kernel) {
        /* Without a kernel only the ioctls were tried; say so, and do not cache it. */
        result = VM_ACCEL_KVM;
        reason = g_strdup("KVM: the ioctl probe passed (no kernel given for a probe boot)");
    } else {
        char *boot_why = kvm_qemu_boot_probe(qemu, kernel);
        result = boot_why ? VM_ACCEL_TCG : VM_ACCEL_KVM;
        reason = boot_why ? g_strdup_printf("TCG: %s", boot_why)
                          : g_strdup("KVM: the ioctl probe and a probe boot passed");
        g_free(boot_why);
    }
    if (kernel)
        accel_cache_write(key, result, reason);
    log_info(ACCEL_LOG, "accelerator %s (%s)", vm_accel_to_string(result), reason);
remember:
    g_free(accel_cached_key);
    g_free(accel_cached_why);
    accel_cached_key = g_strdup(key);
    accel_cached = result;
    accel_cached_why = reason;
done:
    if (why)
        *why = accel_cached_why;
    pthread_mutex_unlock(&accel_lock);
    return result;
}
