/* runas.c: QEMU as an unprivileged user (see runas.h). */
#include "runas.h"

#include "vm_config.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool vm_runas_resolve(const char *user, uid_t *uid, gid_t *gid, const char **why)
{
    struct passwd pw, *found = NULL;
    char buf[4096];

    if (!user || !*user) {
        *why = "not asked";
        return false;
    }
    if (geteuid() != 0) {
        *why = "not root (only root can change QEMU's user)";
        return false;
    }
    int r = getpwnam_r(user, &pw, buf, sizeof buf, &found);
    if (r != 0 || !found) {
        /* Kept for the process: the reason outlives this call (one string per user name). */
        static GHashTable *reasons;
        static GMutex lock;
        g_mutex_lock(&lock);
        if (!reasons)
            reasons = g_hash_table_new(g_str_hash, g_str_equal);
        const char *text = g_hash_table_lookup(reasons, user);
        if (!text) {
            text = g_strdup_printf("no user '%s' on this host%s%s", user, r ? ": " : "",
                                   r ? g_strerror(r) : "");
            g_hash_table_insert(reasons, g_strdup(user), (gpointer)text);
        }
        g_mutex_unlock(&lock);
        *why = text;
        return false;
    }
    if (found->pw_uid == 0) {
        *why = "the user is root";
        return false;
    }
    *uid = found->pw_uid;
    *gid = found->pw_gid;
    *why = "";
    return true;
}

/* The socket is changed through an O_PATH|O_NOFOLLOW descriptor of the inode we checked, never
 * by path again: between a check and a chown(path) someone who can write the directory could
 * swap a symlink in, and chown/chmod follow symlinks (root would then hand any file, e.g.
 * /etc/shadow, to the group).  Only a socket owned by root (nbdkit's, as root) is granted: a
 * socket some other user made is not ours to give away. */
bool vm_runas_grant_socket(const char *path, const char *user, GError **error)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    struct stat sb;
    g_autofree char *self = NULL;
    bool ok = false;

    if (getpwnam_r(user, &pw, buf, sizeof buf, &found) != 0 || !found) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "grant %s: no user '%s'", path, user);
        return false;
    }
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "grant %s: %s", path,
                    errno == ELOOP ? "a symbolic link" : g_strerror(errno));
        return false;
    }
    if (fstat(fd, &sb) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "grant %s: fstat: %s", path, g_strerror(errno));
        goto out;
    }
    if (!S_ISSOCK(sb.st_mode)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "grant %s: %s", path,
                    S_ISLNK(sb.st_mode) ? "a symbolic link" : "not a unix socket");
        goto out;
    }
    if (sb.st_uid != 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG,
                    "grant %s: owned by uid %u, not root: not a socket of ours", path,
                    (unsigned)sb.st_uid);
        goto out;
    }
    /* fchmodat has no AT_EMPTY_PATH before Linux 6.6; /proc/self/fd/N names this very inode
     * (the magic link is resolved to the open file, not to a path). */
    self = g_strdup_printf("/proc/self/fd/%d", fd);
    if (fchownat(fd, "", (uid_t)-1, found->pw_gid, AT_EMPTY_PATH) < 0 || chmod(self, 0660) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "grant %s to group %u: %s", path,
                    (unsigned)found->pw_gid, g_strerror(errno));
        goto out;
    }
    ok = true;
out:
    close(fd);
    return ok;
}
