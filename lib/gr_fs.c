/* gr_fs: file-system helpers (mkdir -p, atomic replace, rm -rf, copy, reads). */
#include "gr_fs.h"
#include "gr_err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (1u << 20)

static int sys_err(int err)
{
    if (err == ENOENT || err == ENOTDIR) return GR_ENOTFOUND;
    if (err == ENOMEM) return GR_ENOMEM;
    return GR_EIO;
}

char *gr_fs_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) {
        gr_seterr(GR_ENOMEM, "out of memory joining paths");
        return NULL;
    }
    memcpy(s, a, la);
    size_t k = la;
    if (la && a[la - 1] != '/') s[k++] = '/';
    memcpy(s + k, b, lb + 1);
    return s;
}

int gr_fs_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return gr_seterr(sys_err(errno), "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = 0;
    if (fsync(fd) && errno != EINVAL && errno != EROFS)
        rc = gr_seterr(GR_EIO, "%s: fsync of directory failed: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

int gr_fs_fsync_parent(const char *path)
{
    char *dup = strdup(path);
    if (!dup) return gr_seterr(GR_ENOMEM, "out of memory");
    char *slash = strrchr(dup, '/');
    int rc;
    if (!slash)
        rc = gr_fs_fsync_dir(".");
    else if (slash == dup)
        rc = gr_fs_fsync_dir("/");
    else {
        *slash = 0;
        rc = gr_fs_fsync_dir(dup);
    }
    free(dup);
    return rc;
}

int gr_fs_mkdirs(const char *dir, mode_t mode, int sync)
{
    size_t n = strlen(dir);
    if (n == 0) return gr_seterr(GR_EINVAL, "empty directory name");
    char *p = strdup(dir);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    int rc = 0;
    /* Walk every prefix ending before a '/' and the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p[i] != '/') continue;
        if (i < n && p[i - 1] == '/') continue; /* "a//b" */
        char saved = p[i];
        p[i] = 0;
        if (mkdir(p, mode) == 0) {
            if (sync && (rc = gr_fs_fsync_parent(p))) goto done;
        } else if (errno == EEXIST) {
            struct stat st;
            if (stat(p, &st) || !S_ISDIR(st.st_mode)) {
                rc = gr_seterr(GR_EIO, "%s: exists and is not a directory", p);
                goto done;
            }
        } else {
            rc = gr_seterr(GR_EIO, "%s: cannot create directory: %s", p, strerror(errno));
            goto done;
        }
        p[i] = saved;
    }
done:
    free(p);
    return rc;
}

int gr_fs_write_all(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            return gr_seterr(GR_EIO, "%s: write failed: %s", what, strerror(errno));
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int gr_fs_read_file(const char *path, size_t max, char **data, size_t *len)
{
    *data = NULL;
    if (len) *len = 0;
    int rc = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return gr_seterr(sys_err(errno), "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        rc = gr_seterr(GR_EIO, "%s: stat failed: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = gr_seterr(GR_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > max) {
        rc = gr_seterr(GR_EINVAL, "%s: larger than %zu bytes", path, max);
        goto fail;
    }
    size_t cap = (size_t)st.st_size + 1, have = 0;
    buf = malloc(cap);
    if (!buf) {
        rc = gr_seterr(GR_ENOMEM, "%s: out of memory reading %zu bytes", path, cap);
        goto fail;
    }
    for (;;) {
        if (have + 1 == cap) { /* file grew: allow up to max */
            if (cap - 1 >= max) {
                char probe;
                ssize_t g = read(fd, &probe, 1);
                if (g == 0) break;
                rc = gr_seterr(GR_EINVAL, "%s: larger than %zu bytes", path, max);
                goto fail;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = gr_seterr(GR_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t got = read(fd, buf + have, cap - 1 - have);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            rc = gr_seterr(GR_EIO, "%s: read failed: %s", path, strerror(errno));
            goto fail;
        }
        if (got == 0) break;
        have += (size_t)got;
    }
    buf[have] = 0;
    *data = buf;
    buf = NULL;
    if (len) *len = have;
fail:
    free(buf);
    close(fd);
    return rc;
}

static int rmrf_at(int parent, const char *name, const char *shown, int depth)
{
    if (depth > 4096) return gr_seterr(GR_EIO, "%s: directory tree too deep to remove", shown);
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR && errno != EPERM) {
        return gr_seterr(GR_EIO, "%s: cannot remove: %s", shown, strerror(errno));
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return gr_seterr(GR_EIO, "%s: cannot remove: %s", shown, strerror(errno));
    }
    (void)fchmod(fd, 0700); /* read-only directories (exported trees) */
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return gr_seterr(GR_EIO, "%s: cannot list: %s", shown, strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if ((rc = rmrf_at(dirfd(d), e->d_name, shown, depth + 1))) break;
    }
    closedir(d);
    if (!rc && unlinkat(parent, name, AT_REMOVEDIR) && errno != ENOENT)
        rc = gr_seterr(GR_EIO, "%s: cannot remove directory: %s", shown, strerror(errno));
    return rc;
}

int gr_fs_rmrf(const char *path)
{
    return rmrf_at(AT_FDCWD, path, path, 0);
}

int gr_fs_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int gr_fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int gr_fs_copy_file(const char *src, const char *dst, mode_t mode)
{
    int rc = 0, in = -1, out = -1;
    char *buf = NULL;
    in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return gr_seterr(sys_err(errno), "%s: cannot open: %s", src, strerror(errno));
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (out < 0) {
        rc = gr_seterr(GR_EIO, "%s: cannot create: %s", dst, strerror(errno));
        goto fail;
    }
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1u << 30, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) break;
        if (n > 0) continue;
        if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP) {
            rc = gr_seterr(GR_EIO, "%s: copy to %s failed: %s", src, dst, strerror(errno));
            goto fail;
        }
        /* Fall back to read/write from where copy_file_range stopped. */
        buf = malloc(COPY_CHUNK);
        if (!buf) {
            rc = gr_seterr(GR_ENOMEM, "out of memory copying %s", src);
            goto fail;
        }
        for (;;) {
            ssize_t got = read(in, buf, COPY_CHUNK);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                rc = gr_seterr(GR_EIO, "%s: read failed: %s", src, strerror(errno));
                goto fail;
            }
            if (got == 0) break;
            if ((rc = gr_fs_write_all(out, buf, (size_t)got, dst))) goto fail;
        }
        break;
    }
    if (fsync(out)) {
        rc = gr_seterr(GR_EIO, "%s: fsync failed: %s", dst, strerror(errno));
        goto fail;
    }
fail:
    free(buf);
    if (in >= 0) close(in);
    if (out >= 0 && close(out) && !rc)
        rc = gr_seterr(GR_EIO, "%s: close failed: %s", dst, strerror(errno));
    if (rc && out >= 0) unlink(dst);
    return rc;
}

int gr_fs_mkdtemp(const char *parent, const char *prefix, char **out)
{
    *out = NULL;
    size_t n = strlen(parent) + strlen(prefix) + 9;
    char *p = malloc(n);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    snprintf(p, n, "%s/%sXXXXXX", parent, prefix);
    if (!mkdtemp(p)) {
        int rc =
            gr_seterr(GR_EIO, "%s: cannot make a temporary directory: %s", parent, strerror(errno));
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int gr_fs_atomic_open(gr_fs_atomic *a, const char *dest, mode_t mode)
{
    a->fd = -1;
    a->tmp = a->dest = NULL;
    size_t n = strlen(dest) + 12;
    a->dest = strdup(dest);
    a->tmp = malloc(n);
    if (!a->dest || !a->tmp) {
        gr_fs_atomic_abort(a);
        return gr_seterr(GR_ENOMEM, "out of memory");
    }
    snprintf(a->tmp, n, "%s.tmp.XXXXXX", dest);
    a->fd = mkostemp(a->tmp, O_CLOEXEC);
    if (a->fd < 0) {
        int rc = gr_seterr(GR_EIO, "%s: cannot create a temporary file: %s", dest, strerror(errno));
        free(a->tmp);
        a->tmp = NULL; /* nothing to unlink */
        gr_fs_atomic_abort(a);
        return rc;
    }
    if (fchmod(a->fd, mode)) {
        int rc = gr_seterr(GR_EIO, "%s: chmod failed: %s", a->tmp, strerror(errno));
        gr_fs_atomic_abort(a);
        return rc;
    }
    return 0;
}

int gr_fs_atomic_commit(gr_fs_atomic *a)
{
    int rc = 0;
    if (!a->tmp || a->fd < 0) return gr_seterr(GR_ESTATE, "atomic write: not open");
    if (fsync(a->fd)) {
        rc = gr_seterr(GR_EIO, "%s: fsync failed: %s", a->dest, strerror(errno));
        goto fail;
    }
    int fd = a->fd;
    a->fd = -1;
    if (close(fd)) {
        rc = gr_seterr(GR_EIO, "%s: close failed: %s", a->dest, strerror(errno));
        goto fail;
    }
    if (rename(a->tmp, a->dest)) {
        rc = gr_seterr(GR_EIO, "%s: rename into place failed: %s", a->dest, strerror(errno));
        goto fail;
    }
    free(a->tmp);
    a->tmp = NULL;
    rc = gr_fs_fsync_parent(a->dest);
fail:
    gr_fs_atomic_abort(a);
    return rc;
}

void gr_fs_atomic_abort(gr_fs_atomic *a)
{
    if (!a) return;
    if (a->tmp) {
        if (a->fd >= 0) close(a->fd);
        unlink(a->tmp);
    }
    a->fd = -1;
    free(a->tmp);
    free(a->dest);
    a->tmp = a->dest = NULL;
}

int gr_fs_write_atomic(const char *dest, const void *data, size_t len, mode_t mode)
{
    gr_fs_atomic a;
    int rc = gr_fs_atomic_open(&a, dest, mode);
    if (rc) return rc;
    if ((rc = gr_fs_write_all(a.fd, data, len, dest))) {
        gr_fs_atomic_abort(&a);
        return rc;
    }
    return gr_fs_atomic_commit(&a);
}
