/* runas.c: QEMU as an unprivileged user (see runas.h). */
#include "runas.h"

#include "vm_config.h"

#include <errno.h>
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

bool vm_runas_grant_socket(const char *path, const char *user, GError **error)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    struct stat sb;

    if (getpwnam_r(user, &pw, buf, sizeof buf, &found) != 0 || !found) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "grant %s: no user '%s'", path, user);
        return false;
    }
    if (lstat(path, &sb) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "grant %s: %s", path, g_strerror(errno));
        return false;
    }
    if (!S_ISSOCK(sb.st_mode)) {
        g_set_error(error, VM_ERROR, VM_ERROR_CONFIG, "grant %s: not a unix socket", path);
        return false;
    }
    if (chown(path, (uid_t)-1, found->pw_gid) < 0 || chmod(path, 0660) < 0) {
        g_set_error(error, VM_ERROR, VM_ERROR_IO, "grant %s to group %u: %s", path,
                    (unsigned)found->pw_gid, g_strerror(errno));
        return false;
    }
    return true;
}
