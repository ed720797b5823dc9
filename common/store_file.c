/* store_file.c: the embedded default store, objects as files under one directory.
 *
 * Object "a/b/c" is the file ROOT/a/b/c.  Writes are atomic and durable: the data goes to a
 * temporary file in ROOT/.tmp, is fsynced, renamed into place (renameat2 RENAME_NOREPLACE for
 * conditional create), and the directory that now names it is fsynced.  A reader therefore sees
 * either the old object or the new one, whole, and a crash never leaves a partial object
 * under its key.
 *
 * Limitation: one key cannot be both an object and a prefix of another ("a" and "a/b"), since a
 * path cannot be both a file and a directory.  Such a put fails with -ENOTSUP.  Wisp's own key
 * layout never does this. */
#include "hash.h"
#include "log.h"
#include "store_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_store {
    char *root;
    int root_fd;
    int tmp_fd; /* ROOT/.tmp */
};

static struct file_store *file_store_of(struct store *st)
{
    return st->backend;
}

static int file_store_fsync_dir_at(struct store *st, int dirfd, const char *path)
{
    int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return store_fail(st, -errno, "open directory %s: %m", path);
    if (fsync(fd) < 0) {
        int err = -errno;
        close(fd);
        return store_fail(st, err, "fsync directory %s: %s", path, strerror(-err));
    }
    close(fd);
    return 0;
}

/* Creates the directories leading to key, fsyncing each parent that gained an entry. */
static int file_store_make_parents(struct store *st, const char *key)
{
    struct file_store *fs = file_store_of(st);
    char path[PATH_MAX];

    snprintf(path, sizeof path, "%s", key);
    for (char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdirat(fs->root_fd, path, 0755) == 0) {
            char *parent_end = strrchr(path, '/');
            int r;
            if (parent_end) {
                *parent_end = '\0';
                r = file_store_fsync_dir_at(st, fs->root_fd, path);
                *parent_end = '/';
            } else {
                r = file_store_fsync_dir_at(st, fs->root_fd, ".");
            }
            if (r < 0)
                return r;
        } else if (errno != EEXIST) {
            int err = -errno;
            if (err == -ENOTDIR || err == -EEXIST)
                break;
            return store_fail(st, err, "mkdir %s/%s: %s", fs->root, path, strerror(-err));
        }
        *slash = '/';
    }
    return 0;
}

static int file_store_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int file_store_put(struct store *st, const char *key, const void *data, size_t len,
                          const uint8_t *sha256, bool if_absent)
{
    struct file_store *fs = file_store_of(st);
    char tmp_name[] = "put-XXXXXX";
    char parent[PATH_MAX];
    int fd, r;

    (void)sha256; /* nothing here to sign or check with it */
    store_count(&st->stats.requests, 1);
    for (int tries = 0;; tries++) {
        uint32_t rnd;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
            rnd = (uint32_t)tries * 2654435761u ^ (uint32_t)getpid();
        snprintf(tmp_name, sizeof tmp_name, "put-%06x", (unsigned)(rnd & 0xffffff));
        fd = openat(fs->tmp_fd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0)
            break;
        if (errno != EEXIST || tries > 100)
            return store_fail(st, -errno, "create %s/.tmp/%s: %m", fs->root, tmp_name);
    }
    r = file_store_write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r < 0) {
        unlinkat(fs->tmp_fd, tmp_name, 0);
        return store_fail(st, r, "write %s/.tmp/%s: %s", fs->root, tmp_name, strerror(-r));
    }

    /* A concurrent delete may remove an empty parent between mkdir and rename: retry. */
    for (int tries = 0; tries < 8; tries++) {
        r = file_store_make_parents(st, key);
        if (r < 0)
            break;
        if (if_absent)
            r = renameat2(fs->tmp_fd, tmp_name, fs->root_fd, key, RENAME_NOREPLACE);
        else
            r = renameat(fs->tmp_fd, tmp_name, fs->root_fd, key);
        r = r < 0 ? -errno : 0;
        if (r != -ENOENT)
            break;
    }
    if (r < 0) {
        unlinkat(fs->tmp_fd, tmp_name, 0);
        if (r == -EEXIST && if_absent)
            return store_fail(st, -EEXIST, "put %s/%s: the object exists", fs->root, key);
        if (r == -ENOTDIR || r == -EISDIR || r == -EEXIST)
            return store_fail(st, -ENOTSUP,
                              "put %s/%s: a file store cannot hold a key that is also a prefix of "
                              "another key",
                              fs->root, key);
        return store_fail(st, r, "rename into %s/%s: %s", fs->root, key, strerror(-r));
    }
    store_count(&st->stats.bytes_sent, len);

    snprintf(parent, sizeof parent, "%s", key);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(parent, sizeof parent, ".");
    return file_store_fsync_dir_at(st, fs->root_fd, parent);
}

static int file_store_open_object(struct store *st, const char *key, struct stat *sb)
{
    struct file_store *fs = file_store_of(st);
    int fd = openat(fs->root_fd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0) {
        int err = -errno;
        if (err == -ENOENT || err == -ENOTDIR || err == -ELOOP)
            return store_fail(st, -ENOENT, "%s/%s: no such object", fs->root, key);
        return store_fail(st, err, "open %s/%s: %s", fs->root, key, strerror(-err));
    }
    if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
        close(fd);
        return store_fail(st, -ENOENT, "%s/%s: no such object", fs->root, key);
    }
    return fd;
}

static int file_store_pread_all(int fd, void *buf, size_t len, uint64_t offset, size_t *got)
{
    char *p = buf;

    *got = 0;
    while (*got < len) {
        ssize_t n = pread(fd, p + *got, len - *got, (off_t)(offset + *got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        *got += (size_t)n;
    }
    return 0;
}

static int file_store_get(struct store *st, const char *key, void **data, size_t *len,
                          uint8_t *sha256)
{
    struct file_store *fs = file_store_of(st);
    struct stat sb;
    size_t got;
    char *buf;
    int fd, r;

    store_count(&st->stats.requests, 1);
    fd = file_store_open_object(st, key, &sb);
    if (fd < 0)
        return fd;
    buf = malloc(sb.st_size > 0 ? (size_t)sb.st_size : 1);
    if (!buf) {
        close(fd);
        return store_fail(st, -ENOMEM, "get %s/%s: out of memory for %jd bytes", fs->root, key,
                          (intmax_t)sb.st_size);
    }
    r = file_store_pread_all(fd, buf, (size_t)sb.st_size, 0, &got);
    close(fd);
    if (r == 0 && got != (size_t)sb.st_size)
        r = -EIO; /* the file shrank under us: objects are immutable, so this is damage */
    if (r < 0) {
        free(buf);
        return store_fail(st, r, "read %s/%s: %s", fs->root, key, strerror(-r));
    }
    if (sha256 && hash_sha256(buf, got, sha256) < 0) {
        free(buf);
        return store_fail(st, -ENOMEM, "get %s/%s: out of memory while hashing", fs->root, key);
    }
    store_count(&st->stats.bytes_received, got);
    *data = buf;
    *len = got;
    return 0;
}

static int file_store_get_range(struct store *st, const char *key, uint64_t offset, void *buf,
                                size_t len, size_t *got)
{
    struct file_store *fs = file_store_of(st);
    struct stat sb;
    int fd, r;

    store_count(&st->stats.requests, 1);
    fd = file_store_open_object(st, key, &sb);
    if (fd < 0)
        return fd;
    r = file_store_pread_all(fd, buf, len, offset, got);
    close(fd);
    if (r < 0)
        return store_fail(st, r, "read %s/%s: %s", fs->root, key, strerror(-r));
    store_count(&st->stats.bytes_received, *got);
    return 0;
}

static int file_store_head(struct store *st, const char *key, struct store_stat *out)
{
    struct stat sb;
    int fd;

    store_count(&st->stats.requests, 1);
    fd = file_store_open_object(st, key, &sb);
    if (fd < 0)
        return fd;
    close(fd);
    out->size = (uint64_t)sb.st_size;
    out->mtime = sb.st_mtime;
    return 0;
}

static int file_store_delete(struct store *st, const char *key)
{
    struct file_store *fs = file_store_of(st);
    char path[PATH_MAX];

    store_count(&st->stats.requests, 1);
    if (unlinkat(fs->root_fd, key, 0) < 0) {
        int err = -errno;
        if (err == -ENOENT || err == -ENOTDIR)
            return 0;
        if (err == -EISDIR)
            return 0; /* a prefix, not an object */
        return store_fail(st, err, "delete %s/%s: %s", fs->root, key, strerror(-err));
    }
    /* Remove parents left empty, so listing stays fast; a failure here is harmless. */
    snprintf(path, sizeof path, "%s", key);
    for (char *slash = strrchr(path, '/'); slash; slash = strrchr(path, '/')) {
        *slash = '\0';
        if (unlinkat(fs->root_fd, path, AT_REMOVEDIR) < 0)
            break;
    }
    return 0;
}

/* Listing walks the tree depth first, each directory's entries sorted by name with '/'
 * appended to directories: that order is exactly the byte order of the full keys, which is
 * S3's order. */
struct file_store_entry {
    char *name; /* with a trailing '/' for directories */
    bool is_dir;
};

static int file_store_entry_compare(const void *a, const void *b)
{
    const struct file_store_entry *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static int file_store_list_dir(struct store *st, int dirfd, char *path, size_t path_len,
                               const char *prefix, store_list_fn fn, void *opaque)
{
    struct file_store_entry *entries = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int r = 0;
    int fd = dup(dirfd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;

    if (!dir) {
        if (fd >= 0)
            close(fd);
        return store_fail(st, -errno, "list %s: %m", path_len ? path : ".");
    }
    rewinddir(dir);
    while ((de = readdir(dir))) {
        struct stat sb;
        if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..") ||
                                     (path_len == 0 && !strcmp(de->d_name, ".tmp"))))
            continue;
        if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* deleted meanwhile */
        if (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode))
            continue;
        bool is_dir = S_ISDIR(sb.st_mode);
        /* Prune: the key built so far must agree with the prefix over their common length. */
        size_t name_len = strlen(de->d_name);
        if (path_len + name_len + 2 > PATH_MAX)
            continue;
        memcpy(path + path_len, de->d_name, name_len);
        path[path_len + name_len] = is_dir ? '/' : '\0';
        path[path_len + name_len + (is_dir ? 1 : 0)] = '\0';
        size_t full = path_len + name_len + (is_dir ? 1 : 0);
        size_t plen = strlen(prefix);
        size_t common = full < plen ? full : plen;
        if (memcmp(path, prefix, common) != 0)
            continue;
        if (!is_dir && full < plen)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            void *p = realloc(entries, ncap * sizeof *entries);
            if (!p) {
                r = store_fail(st, -ENOMEM, "list: out of memory");
                goto out;
            }
            entries = p;
            cap = ncap;
        }
        entries[n].name = strdup(path + path_len);
        entries[n].is_dir = is_dir;
        if (!entries[n].name) {
            r = store_fail(st, -ENOMEM, "list: out of memory");
            goto out;
        }
        n++;
    }
    if (n > 1)
        qsort(entries, n, sizeof *entries, file_store_entry_compare);

    for (size_t i = 0; i < n && r == 0; i++) {
        size_t name_len = strlen(entries[i].name);
        memcpy(path + path_len, entries[i].name, name_len + 1);
        if (entries[i].is_dir) {
            path[path_len + name_len - 1] = '\0';
            int sub = openat(dirfd, path + path_len, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            path[path_len + name_len - 1] = '/';
            if (sub < 0)
                continue; /* removed meanwhile */
            r = file_store_list_dir(st, sub, path, path_len + name_len, prefix, fn, opaque);
            close(sub);
        } else {
            struct stat sb;
            if (fstatat(dirfd, entries[i].name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            r = fn(path, (uint64_t)sb.st_size, sb.st_mtime, opaque);
        }
    }
out:
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
    closedir(dir);
    path[path_len] = '\0';
    return r;
}

static int file_store_list(struct store *st, const char *prefix, store_list_fn fn, void *opaque)
{
    struct file_store *fs = file_store_of(st);
    char path[PATH_MAX];

    store_count(&st->stats.requests, 1);
    path[0] = '\0';
    return file_store_list_dir(st, fs->root_fd, path, 0, prefix, fn, opaque);
}

static void file_store_close(struct store *st)
{
    struct file_store *fs = file_store_of(st);

    if (!fs)
        return;
    if (fs->root_fd >= 0)
        close(fs->root_fd);
    if (fs->tmp_fd >= 0)
        close(fs->tmp_fd);
    free(fs->root);
    free(fs);
}

static const struct store_backend_ops file_store_ops = {
    .name = "file",
    .put = file_store_put,
    .get = file_store_get,
    .get_range = file_store_get_range,
    .head = file_store_head,
    .delete = file_store_delete,
    .list = file_store_list,
    .close = file_store_close,
};

int store_file_open(struct store *st, const struct store_url *url)
{
    struct file_store *fs = calloc(1, sizeof *fs);

    if (!fs)
        return store_fail(st, -ENOMEM, "file store: out of memory");
    fs->root_fd = fs->tmp_fd = -1;
    st->ops = &file_store_ops;
    st->backend = fs;
    fs->root = strdup(url->path);
    if (asprintf(&st->description, "file://%s", url->path) < 0)
        st->description = NULL;
    if (!fs->root || !st->description) {
        file_store_close(st);
        return store_fail(st, -ENOMEM, "file store: out of memory");
    }

    /* The store's own directory is created on first use, but its parent must exist, so that a
     * mistyped path is an error rather than a new empty store. */
    if (mkdir(fs->root, 0755) < 0 && errno != EEXIST) {
        int err = -errno;
        file_store_close(st);
        return store_fail(NULL, err, "file store %s: cannot create the directory: %s", url->path,
                          strerror(-err));
    }
    fs->root_fd = open(fs->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs->root_fd < 0) {
        int err = -errno;
        file_store_close(st);
        return store_fail(NULL, err, "file store %s: %s", url->path, strerror(-err));
    }
    if (mkdirat(fs->root_fd, ".tmp", 0700) < 0 && errno != EEXIST) {
        int err = -errno;
        file_store_close(st);
        return store_fail(NULL, err, "file store %s: cannot create .tmp: %s", url->path,
                          strerror(-err));
    }
    fs->tmp_fd = openat(fs->root_fd, ".tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs->tmp_fd < 0) {
        int err = -errno;
        file_store_close(st);
        return store_fail(NULL, err, "file store %s/.tmp: %s", url->path, strerror(-err));
    }
    return 0;
}
