/* gr_cas: the local content-addressed store — atomic puts, trees, export,
 * materialisation and verification. Layout and guarantees: gr_cas.h. */
#include "gr_cas.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIR_MODE        0755
#define BLOB_MODE       0444
#define IO_CHUNK        (1u << 20)
#define STALE_ON_OPEN_S 3600 /* dead temporaries swept by gr_cas_open */
#define STALE_ON_GC_S   60   /* ... and by verify --gc */
#define MAX_TREE_DEPTH  256

struct gr_cas {
    char *root;
    char *tmp; /* <root>/tmp */
};

struct gr_cas_writer {
    gr_cas *c;
    int fd;
    char *tmp; /* temporary path in <root>/tmp, NULL once placed */
    gr_sha256 *h;
    uint64_t size;
    int failed;
};

static atomic_uint name_counter;

/* "<prefix><pid>-<counter>-<ns>": unique among live processes sharing a
 * directory; callers still create with O_EXCL / NOREPLACE and retry. */
static char *unique_name(const char *prefix)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned k = atomic_fetch_add(&name_counter, 1);
    size_t n = strlen(prefix) + 64;
    char *s = malloc(n);
    if (!s) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(s, n, "%s%ld-%u-%ld", prefix, (long)getpid(), k, (long)ts.tv_nsec);
    return s;
}

/* rename that never replaces dst (link+unlink for files where the file
 * system lacks RENAME_NOREPLACE). Returns 0 or -1 with errno. */
static int rename_noreplace(const char *src, const char *dst)
{
    if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    struct stat st;
    if (lstat(src, &st)) return -1;
    if (S_ISDIR(st.st_mode)) {
        if (lstat(dst, &st) == 0) return errno = EEXIST, -1;
        return rename(src, dst);
    }
    if (link(src, dst)) return -1;
    unlink(src);
    return 0;
}

static char *blob_path_hex(const gr_cas *c, const char *hex)
{
    size_t n = strlen(c->root) + 80;
    char *p = malloc(n);
    if (!p) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(p, n, "%s/sha256/%.2s/%.2s/%s", c->root, hex, hex + 2, hex);
    return p;
}

/* ---- temporaries and their liveness locks ---- */

/* Removes entries of <root>/tmp whose writer is gone (their flock can be
 * taken) and that were last modified more than min_age seconds ago. */
static int sweep_tmp(gr_cas *c, int min_age, uint64_t *removed)
{
    DIR *d = opendir(c->tmp);
    if (!d) return gr_seterr(GR_EIO, "%s: cannot list: %s", c->tmp, strerror(errno));
    time_t now = time(NULL);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW)) continue;
        if (now - st.st_mtime < min_age) continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB)) {
            close(fd); /* a live writer holds it */
            continue;
        }
        char *p = gr_fs_join(c->tmp, e->d_name);
        if (!p) {
            if (fd >= 0) close(fd);
            rc = GR_ENOMEM;
            break;
        }
        if (!gr_fs_rmrf(p)) {
            GR_DEBUG("cas", "removed dead temporary %s", p);
            if (removed) (*removed)++;
        }
        free(p);
        if (fd >= 0) close(fd);
    }
    closedir(d);
    return rc;
}

char *gr_cas_default_root(const char *opt)
{
    const char *s = opt && *opt ? opt : getenv("GRAFT_STORE");
    if (s && *s) {
        char *r = strdup(s);
        if (!r) gr_seterr(GR_ENOMEM, "out of memory");
        return r;
    }
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    const char *base = xdg && *xdg ? xdg : home && *home ? home : NULL;
    if (!base) {
        gr_seterr(GR_EINVAL, "no store given: use --store DIR or set GRAFT_STORE (HOME is unset)");
        return NULL;
    }
    const char *suffix = xdg && *xdg ? "/graft/store" : "/.local/share/graft/store";
    size_t n = strlen(base) + strlen(suffix) + 1;
    char *r = malloc(n);
    if (!r) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(r, n, "%s%s", base, suffix);
    return r;
}

gr_cas *gr_cas_open(const char *root)
{
    static const char *const subdirs[] = {"sha256", "tmp", "trees", "index"};
    char *p = NULL;
    gr_cas *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    if (!root || !*root) {
        gr_seterr(GR_EINVAL, "store root is empty");
        goto fail;
    }
    if (gr_fs_mkdirs(root, DIR_MODE, 1)) {
        gr_adderr(GR_EIO, "store");
        goto fail;
    }
    /* Absolute, so paths handed out stay valid whatever the working directory. */
    if (!(c->root = realpath(root, NULL))) {
        gr_seterr(GR_EIO, "store %s: %s", root, strerror(errno));
        goto fail;
    }
    for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++) {
        if (!(p = gr_fs_join(c->root, subdirs[i]))) goto fail;
        if (gr_fs_mkdirs(p, DIR_MODE, 1)) {
            gr_adderr(GR_EIO, "store %s", c->root);
            goto fail;
        }
        if (i == 1) c->tmp = p, p = NULL;
        free(p);
        p = NULL;
    }
    sweep_tmp(c, STALE_ON_OPEN_S, NULL);
    gr_clearerr();
    return c;
oom:
    gr_seterr(GR_ENOMEM, "out of memory");
fail:
    free(p);
    gr_cas_destroy(&c);
    return NULL;
}

void gr_cas_destroy(gr_cas **c)
{
    if (!c || !*c) return;
    free((*c)->root);
    free((*c)->tmp);
    free(*c);
    *c = NULL;
}

const char *gr_cas_root(const gr_cas *c)
{
    return c->root;
}

/* Creates a locked temporary file in <root>/tmp. */
static int tmp_file(gr_cas *c, const char *tag, int *fd, char **path)
{
    *fd = -1;
    *path = NULL;
    size_t n = strlen(c->tmp) + strlen(tag) + 10;
    char *p = malloc(n);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    snprintf(p, n, "%s/%sXXXXXX", c->tmp, tag);
    int f = mkostemp(p, O_CLOEXEC);
    if (f < 0) {
        int rc =
            gr_seterr(GR_EIO, "%s: cannot create a temporary file: %s", c->tmp, strerror(errno));
        free(p);
        return rc;
    }
    if (flock(f, LOCK_EX)) {
        int rc = gr_seterr(GR_EIO, "%s: flock failed: %s", p, strerror(errno));
        close(f);
        unlink(p);
        free(p);
        return rc;
    }
    *fd = f;
    *path = p;
    return 0;
}

/* Moves the finished, fsynced temporary file tmp (size bytes, content hex)
 * to its final name and fsyncs the directory. An existing blob of the right
 * size is kept and tmp removed; a wrong-sized one (damaged) is replaced. */
static int place(gr_cas *c, const char *tmp, const char *hex, uint64_t size)
{
    int rc = 0;
    char *final = blob_path_hex(c, hex);
    if (!final) return GR_ENOMEM;
    char *dir = strndup(final, strlen(final) - 65);
    if (!dir) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    struct stat st;
    if (lstat(final, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size) {
        unlink(tmp); /* identical content already stored */
        goto done;
    }
    if ((rc = gr_fs_mkdirs(dir, DIR_MODE, 1))) goto done;
    if (rename(tmp, final)) {
        rc = gr_seterr(GR_EIO, "sha256:%s: cannot rename into %s: %s", hex, dir, strerror(errno));
        goto done;
    }
    rc = gr_fs_fsync_dir(dir);
done:
    free(dir);
    free(final);
    return rc;
}

/* ---- streaming writer ---- */

gr_cas_writer *gr_cas_writer_new(gr_cas *c)
{
    gr_cas_writer *w = calloc(1, sizeof *w);
    if (!w) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    w->c = c;
    w->fd = -1;
    if (!(w->h = gr_sha256_new()) || tmp_file(c, "put-", &w->fd, &w->tmp)) {
        gr_cas_writer_destroy(&w);
        return NULL;
    }
    return w;
}

int gr_cas_writer_write(gr_cas_writer *w, const void *p, size_t n)
{
    if (w->failed || !w->tmp) return gr_seterr(GR_ESTATE, "store writer: already failed or done");
    int rc = gr_sha256_update(w->h, p, n);
    if (!rc) rc = gr_fs_write_all(w->fd, p, n, w->tmp);
    if (rc) {
        w->failed = 1;
        return rc;
    }
    w->size += n;
    return 0;
}

uint64_t gr_cas_writer_size(const gr_cas_writer *w)
{
    return w->size;
}

int gr_cas_writer_commit(gr_cas_writer *w, const char *expect, char id[GR_ID_SZ])
{
    uint8_t d[GR_SHA256_LEN];
    char got[GR_ID_SZ];
    int rc;
    if (w->failed || !w->tmp) return gr_seterr(GR_ESTATE, "store writer: already failed or done");
    w->failed = 1; /* one commit only */
    if ((rc = gr_sha256_final(w->h, d))) return rc;
    gr_sha256_id(d, got);
    if (expect && strcmp(expect, got))
        return gr_seterr(GR_EFORMAT, "content is %s, expected %s", got, expect);
    if (fchmod(w->fd, BLOB_MODE) || fsync(w->fd))
        return gr_seterr(GR_EIO, "%s: fsync failed: %s", w->tmp, strerror(errno));
    if ((rc = place(w->c, w->tmp, got + GR_ID_PREFIX_LEN, w->size))) return rc;
    free(w->tmp);
    w->tmp = NULL; /* placed: nothing to unlink */
    memcpy(id, got, GR_ID_SZ);
    return 0;
}

void gr_cas_writer_destroy(gr_cas_writer **w)
{
    if (!w || !*w) return;
    gr_cas_writer *x = *w;
    if (x->tmp) unlink(x->tmp); /* before close: the lock guards it until gone */
    if (x->fd >= 0) close(x->fd);
    free(x->tmp);
    gr_sha256_destroy(&x->h);
    free(x);
    *w = NULL;
}

/* ---- putting blobs ---- */

int gr_cas_put_buf(gr_cas *c, const void *p, size_t n, char id[GR_ID_SZ])
{
    uint8_t d[GR_SHA256_LEN];
    char got[GR_ID_SZ];
    int rc = gr_sha256_buf(p, n, d);
    if (rc) return rc;
    gr_sha256_id(d, got);
    if (gr_cas_has(c, got) == 1) {
        memcpy(id, got, GR_ID_SZ);
        return 0;
    }
    gr_cas_writer *w = gr_cas_writer_new(c);
    if (!w) return gr_errcode() ? gr_errcode() : GR_EIO;
    rc = gr_cas_writer_write(w, p, n);
    if (!rc) rc = gr_cas_writer_commit(w, got, id);
    gr_cas_writer_destroy(&w);
    return rc;
}

/* The writer's messages name its temporary file (gone once it fails), so
 * failures to store are prefixed with what was being stored. */
static int put_fd_what(gr_cas *c, int fd, const char *what, char id[GR_ID_SZ], uint64_t *size)
{
    int rc = 0;
    char *buf = malloc(IO_CHUNK);
    gr_cas_writer *w = buf ? gr_cas_writer_new(c) : NULL;
    if (!buf)
        rc = gr_seterr(GR_ENOMEM, "out of memory");
    else if (!w)
        rc =
            gr_adderr(gr_errcode() ? gr_errcode() : GR_EIO, "%s: cannot copy into the store", what);
    while (!rc) {
        ssize_t got = read(fd, buf, IO_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            rc = gr_seterr(GR_EIO, "%s: read failed: %s", what, strerror(errno));
        else if (got == 0)
            break;
        else if ((rc = gr_cas_writer_write(w, buf, (size_t)got)))
            gr_adderr(rc, "%s: cannot copy into the store", what);
    }
    if (!rc) {
        uint64_t n = w->size;
        if ((rc = gr_cas_writer_commit(w, NULL, id)))
            gr_adderr(rc, "%s: cannot copy into the store", what);
        else if (size)
            *size = n;
    }
    gr_cas_writer_destroy(&w);
    free(buf);
    return rc;
}

int gr_cas_put_fd(gr_cas *c, int fd, char id[GR_ID_SZ], uint64_t *size)
{
    return put_fd_what(c, fd, "input", id, size);
}

int gr_cas_put_file(gr_cas *c, const char *path, char id[GR_ID_SZ], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat st;
    int rc;
    if (fstat(fd, &st))
        rc = gr_seterr(GR_EIO, "%s: stat failed: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = gr_seterr(GR_EINVAL, "%s: not a regular file", path);
    else
        rc = put_fd_what(c, fd, path, id, size);
    close(fd);
    return rc;
}

/* Hashes fd from offset 0. */
static int hash_from_start(int fd, const char *what, char id[GR_ID_SZ], uint64_t *size)
{
    uint8_t d[GR_SHA256_LEN];
    if (lseek(fd, 0, SEEK_SET) < 0)
        return gr_seterr(GR_EIO, "%s: seek failed: %s", what, strerror(errno));
    int rc = gr_sha256_fd(fd, d, size);
    if (rc) return gr_adderr(rc, "%s", what);
    gr_sha256_id(d, id);
    return 0;
}

int gr_cas_ingest_file(gr_cas *c, const char *path, char id[GR_ID_SZ], uint64_t *size)
{
    int rc = 0;
    char *name = NULL, *tmp = NULL;
    char got[GR_ID_SZ];
    uint64_t n = 0;
    struct stat st;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                         errno == ELOOP ? "is a symbolic link" : strerror(errno));
    if (fstat(fd, &st)) {
        rc = gr_seterr(GR_EIO, "%s: stat failed: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = gr_seterr(GR_EINVAL, "%s: not a regular file", path);
        goto done;
    }
    if (st.st_nlink > 1) {
        /* Other names share this inode (e.g. an op hardlinked its input):
         * moving it would let them change a blob. Copy unless present. */
        if ((rc = hash_from_start(fd, path, got, &n))) goto done;
        if (gr_cas_has(c, got) != 1) {
            if (lseek(fd, 0, SEEK_SET) < 0) {
                rc = gr_seterr(GR_EIO, "%s: seek failed: %s", path, strerror(errno));
                goto done;
            }
            if ((rc = put_fd_what(c, fd, path, got, &n))) goto done;
        }
        unlink(path);
        goto ok;
    }
    /* Lock first, then move it into tmp/: the sweeper never sees it unlocked. */
    if (flock(fd, LOCK_EX)) {
        rc = gr_seterr(GR_EIO, "%s: flock failed: %s", path, strerror(errno));
        goto done;
    }
    if (!(name = unique_name("ingest-")) || !(tmp = gr_fs_join(c->tmp, name))) {
        rc = GR_ENOMEM;
        goto done;
    }
    if (rename_noreplace(path, tmp)) {
        if (errno != EXDEV) {
            rc = gr_seterr(GR_EIO, "%s: cannot move into the store: %s", path, strerror(errno));
            goto done;
        }
        /* Another file system: copy, then drop the original. */
        free(tmp);
        tmp = NULL;
        if ((rc = put_fd_what(c, fd, path, got, &n))) goto done;
        unlink(path);
        goto ok;
    }
    if ((rc = hash_from_start(fd, path, got, &n))) goto done;
    if (fchmod(fd, BLOB_MODE) || fsync(fd)) {
        rc = gr_seterr(GR_EIO, "%s: fsync failed: %s", path, strerror(errno));
        goto done;
    }
    if ((rc = place(c, tmp, got + GR_ID_PREFIX_LEN, n))) goto done;
    free(tmp);
    tmp = NULL;
ok:
    memcpy(id, got, GR_ID_SZ);
    if (size) *size = n;
done:
    if (tmp && rc) {
        /* Failed after the move: give the file back rather than lose it. */
        if (rename_noreplace(tmp, path)) unlink(tmp);
    }
    free(tmp);
    free(name);
    close(fd);
    return rc;
}

/* ---- trees ---- */

typedef struct walk_item {
    char *rel;  /* path inside the tree */
    char *abs;  /* path to read (a symlink's target for symlinks) */
    char *link; /* the symlink's own path, or NULL: copied, never moved */
} walk_item;

typedef struct walk {
    walk_item *it;
    size_t n, cap;
    const char *top; /* directory given by the caller */
    char *top_real;  /* its realpath */
} walk;

static void walk_free(walk *w)
{
    for (size_t i = 0; i < w->n; i++) free(w->it[i].rel), free(w->it[i].abs), free(w->it[i].link);
    free(w->it);
    free(w->top_real);
}

static int walk_push(walk *w, char *rel, char *abs, char *link)
{
    if (w->n >= GR_MANIFEST_MAX_ENTRIES) {
        free(rel);
        free(abs);
        free(link);
        return gr_seterr(GR_EINVAL, "%s: more than %d files", w->top, GR_MANIFEST_MAX_ENTRIES);
    }
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 32;
        walk_item *ni = realloc(w->it, nc * sizeof *ni);
        if (!ni) {
            free(rel);
            free(abs);
            free(link);
            return gr_seterr(GR_ENOMEM, "out of memory");
        }
        w->it = ni;
        w->cap = nc;
    }
    w->it[w->n++] = (walk_item){rel, abs, link};
    return 0;
}

/* A symlink is accepted only when it resolves to a regular file inside the
 * tree; *target receives the resolved path. */
static int check_link(walk *w, const char *abs, const char *rel, char **target)
{
    *target = realpath(abs, NULL);
    if (!*target)
        return gr_seterr(GR_EINVAL, "%s: symbolic link '%s' is dangling or unreadable: %s", w->top,
                         rel, strerror(errno));
    size_t tl = strlen(w->top_real);
    int inside = !strncmp(*target, w->top_real, tl) && (*target)[tl] == '/';
    struct stat st;
    int rc = 0;
    if (!inside)
        rc = gr_seterr(GR_EINVAL, "%s: symbolic link '%s' points outside the tree (to %s)", w->top,
                       rel, *target);
    else if (stat(*target, &st) || !S_ISREG(st.st_mode))
        rc = gr_seterr(GR_EINVAL,
                       "%s: symbolic link '%s' does not point to a regular file (only files are "
                       "stored)",
                       w->top, rel);
    if (rc) {
        free(*target);
        *target = NULL;
    }
    return rc;
}

static int walk_dir(walk *w, const char *abs, const char *rel, int depth)
{
    if (depth > MAX_TREE_DEPTH)
        return gr_seterr(GR_EINVAL, "%s: directories nested deeper than %d", w->top,
                         MAX_TREE_DEPTH);
    int dfd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (depth ? O_NOFOLLOW : 0));
    if (dfd < 0)
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open directory: %s",
                         abs, strerror(errno));
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return gr_seterr(GR_EIO, "%s: cannot list: %s", abs, strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    while (!rc && (errno = 0, e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *cabs = gr_fs_join(abs, e->d_name);
        char *crel = *rel ? gr_fs_join(rel, e->d_name) : strdup(e->d_name);
        struct stat st;
        if (!cabs || !crel) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
        } else if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
            rc = gr_seterr(GR_EIO, "%s: stat failed: %s", cabs, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk_dir(w, cabs, crel, depth + 1);
        } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
            char *target = NULL;
            int is_link = S_ISLNK(st.st_mode);
            if ((rc = gr_manifest_check_path(crel)))
                gr_adderr(GR_EINVAL, "%s", w->top);
            else if (is_link)
                rc = check_link(w, cabs, crel, &target);
            if (!rc) {
                if (is_link)
                    rc = walk_push(w, crel, target, cabs);
                else
                    rc = walk_push(w, crel, cabs, NULL);
                crel = cabs = NULL; /* taken */
            }
        } else {
            rc = gr_seterr(GR_EINVAL, "%s: '%s' is not a regular file, directory or symlink",
                           w->top, crel);
        }
        free(cabs);
        free(crel);
    }
    if (!rc && errno) rc = gr_seterr(GR_EIO, "%s: listing failed: %s", abs, strerror(errno));
    closedir(d);
    return rc;
}

static int put_tree_mode(gr_cas *c, const char *dir, int move, char id[GR_ID_SZ])
{
    walk w = {.top = dir};
    gr_manifest *m = NULL;
    gr_buf b = {0};
    int rc;
    if (!(w.top_real = realpath(dir, NULL))) {
        rc = gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: %s", dir, strerror(errno));
        goto done;
    }
    if ((rc = walk_dir(&w, dir, "", 0))) goto done;
    if (!(m = gr_manifest_new())) {
        rc = GR_ENOMEM;
        goto done;
    }
    /* Links first: in move mode their targets are about to disappear. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < w.n; i++) {
            walk_item *it = &w.it[i];
            if ((it->link != NULL) != (pass == 0)) continue;
            char fid[GR_ID_SZ];
            uint64_t size = 0;
            if (move && !it->link)
                rc = gr_cas_ingest_file(c, it->abs, fid, &size);
            else
                rc = gr_cas_put_file(c, it->abs, fid, &size);
            if (rc) goto done;
            if (move && it->link) unlink(it->link);
            if ((rc = gr_manifest_add(m, it->rel, fid, size))) goto done;
        }
    }
    if ((rc = gr_manifest_encode(m, &b))) {
        gr_adderr(rc, "%s", dir);
        goto done;
    }
    if ((rc = gr_cas_put_buf(c, b.data, b.len, id))) gr_adderr(rc, "%s: tree manifest", dir);
done:
    gr_buf_free(&b);
    gr_manifest_destroy(&m);
    walk_free(&w);
    return rc;
}

int gr_cas_put_tree(gr_cas *c, const char *dir, char id[GR_ID_SZ])
{
    return put_tree_mode(c, dir, 0, id);
}

int gr_cas_ingest_tree(gr_cas *c, const char *dir, char id[GR_ID_SZ])
{
    return put_tree_mode(c, dir, 1, id);
}

int gr_cas_put_path(gr_cas *c, const char *path, char id[GR_ID_SZ])
{
    struct stat st;
    if (stat(path, &st))
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return gr_cas_put_tree(c, path, id);
    return gr_cas_put_file(c, path, id, NULL);
}

int gr_cas_put_manifest(gr_cas *c, gr_manifest *m, char id[GR_ID_SZ])
{
    gr_buf b = {0};
    int rc = gr_manifest_encode(m, &b);
    for (size_t i = 0; !rc && i < gr_manifest_count(m); i++) {
        const gr_manifest_entry *e = gr_manifest_entry_at(m, i);
        uint64_t size;
        char *p = NULL;
        if ((rc = gr_cas_blob_path(c, e->id, &p, &size))) {
            gr_adderr(rc, "tree path '%s'", e->path);
        } else if (size != e->size) {
            rc = gr_seterr(GR_EINVAL, "tree path '%s': %s has %llu bytes, the entry says %llu",
                           e->path, e->id, (unsigned long long)size, (unsigned long long)e->size);
        }
        free(p);
    }
    if (!rc) rc = gr_cas_put_buf(c, b.data, b.len, id);
    gr_buf_free(&b);
    return rc;
}

/* ---- reading ---- */

int gr_cas_has(gr_cas *c, const char *id)
{
    char hex[GR_SHA256_HEXSZ];
    int rc = gr_id_parse(id, hex);
    if (rc) return rc;
    char *p = blob_path_hex(c, hex);
    if (!p) return GR_ENOMEM;
    struct stat st;
    int present = lstat(p, &st) == 0 && S_ISREG(st.st_mode);
    free(p);
    return present;
}

int gr_cas_blob_path(gr_cas *c, const char *id, char **path, uint64_t *size)
{
    char hex[GR_SHA256_HEXSZ];
    *path = NULL;
    int rc = gr_id_parse(id, hex);
    if (rc) return rc;
    char *p = blob_path_hex(c, hex);
    if (!p) return GR_ENOMEM;
    struct stat st;
    if (lstat(p, &st) || !S_ISREG(st.st_mode)) {
        free(p);
        return gr_seterr(GR_ENOTFOUND, "%s: not in the store at %s", id, c->root);
    }
    if (size) *size = (uint64_t)st.st_size;
    *path = p;
    return 0;
}

int gr_cas_open_blob(gr_cas *c, const char *id, int *fd, uint64_t *size)
{
    char *p = NULL;
    *fd = -1;
    int rc = gr_cas_blob_path(c, id, &p, NULL);
    if (rc) return rc;
    int f = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (f < 0 || fstat(f, &st)) {
        rc = gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open %s: %s", id, p,
                       strerror(errno));
        if (f >= 0) close(f);
    } else {
        *fd = f;
        if (size) *size = (uint64_t)st.st_size;
    }
    free(p);
    return rc;
}

int gr_cas_read_blob(gr_cas *c, const char *id, size_t max, char **data, size_t *len)
{
    char *p = NULL;
    *data = NULL;
    int rc = gr_cas_blob_path(c, id, &p, NULL);
    if (rc) return rc;
    rc = gr_fs_read_file(p, max, data, len);
    if (rc) gr_adderr(rc, "%s", id);
    free(p);
    return rc;
}

int gr_cas_kind(gr_cas *c, const char *id, int *kind)
{
    int fd;
    uint64_t size;
    char head[sizeof GR_MANIFEST_MAGIC];
    int rc = gr_cas_open_blob(c, id, &fd, &size);
    if (rc) return rc;
    ssize_t got = pread(fd, head, sizeof head - 1, 0);
    close(fd);
    if (got < 0) return gr_seterr(GR_EIO, "%s: read failed: %s", id, strerror(errno));
    if (!gr_manifest_sniff(head, (size_t)got)) {
        *kind = GR_CAS_BLOB;
        return 0;
    }
    gr_manifest *m = NULL;
    if ((rc = gr_cas_load_tree(c, id, &m))) return rc;
    gr_manifest_destroy(&m);
    *kind = GR_CAS_TREE;
    return 0;
}

int gr_cas_load_tree(gr_cas *c, const char *id, gr_manifest **m)
{
    char *data = NULL;
    size_t len = 0;
    *m = NULL;
    int rc = gr_cas_read_blob(c, id, GR_MANIFEST_MAX_BYTES, &data, &len);
    if (rc) {
        if (rc == GR_EINVAL) rc = gr_adderr(GR_EFORMAT, "not a tree");
        return rc;
    }
    *m = gr_manifest_parse(data, len, id);
    free(data);
    return *m ? 0 : GR_EFORMAT;
}

/* ---- exporting ---- */

/* Puts blob hex at path (must not exist): hardlink unless copy is set or the
 * file system refuses, else a read-only copy. */
static int link_or_copy(gr_cas *c, const char *id, const char *path, uint64_t want, int copy)
{
    char *src = NULL;
    uint64_t size;
    int rc = gr_cas_blob_path(c, id, &src, &size);
    if (rc) return rc;
    if (want != UINT64_MAX && size != want) {
        rc = gr_seterr(GR_EFORMAT, "%s: stored blob has %llu bytes, the manifest says %llu", id,
                       (unsigned long long)size, (unsigned long long)want);
    } else if (copy || link(src, path)) {
        if (!copy && errno != EXDEV && errno != EPERM && errno != EMLINK && errno != ENOTSUP)
            rc = gr_seterr(GR_EIO, "%s: cannot link %s: %s", path, src, strerror(errno));
        else
            rc = gr_fs_copy_file(src, path, BLOB_MODE);
    }
    free(src);
    return rc;
}

/* Builds tree m inside the empty directory top. */
static int build_tree(gr_cas *c, const gr_manifest *m, const char *top, int copy)
{
    int rc = 0;
    char *last_dir = NULL;
    for (size_t i = 0; !rc && i < gr_manifest_count(m); i++) {
        const gr_manifest_entry *e = gr_manifest_entry_at(m, i);
        char *dst = gr_fs_join(top, e->path);
        if (!dst) return GR_ENOMEM;
        char *slash = strrchr(dst, '/');
        *slash = 0;
        if (!last_dir || strcmp(last_dir, dst)) {
            if (last_dir && (rc = gr_fs_fsync_dir(last_dir))) goto next;
            free(last_dir);
            if (!(last_dir = strdup(dst)))
                rc = gr_seterr(GR_ENOMEM, "out of memory");
            else
                rc = gr_fs_mkdirs(dst, DIR_MODE, 1);
            if (rc) goto next;
        }
        *slash = '/';
        if ((rc = link_or_copy(c, e->id, dst, e->size, copy)))
            gr_adderr(rc, "tree path '%s'", e->path);
    next:
        free(dst);
    }
    if (!rc && last_dir) rc = gr_fs_fsync_dir(last_dir);
    if (!rc) rc = gr_fs_fsync_dir(top);
    free(last_dir);
    return rc;
}

int gr_cas_export(gr_cas *c, const char *id, const char *dest, int flags)
{
    int kind = GR_CAS_BLOB, rc;
    char *tmp = NULL, *parent = NULL;
    gr_manifest *m = NULL;
    if (!(flags & GR_CAS_RAW) && (rc = gr_cas_kind(c, id, &kind))) return rc;
    if (gr_cas_has(c, id) != 1)
        return gr_seterr(GR_ENOTFOUND, "%s: not in the store at %s", id, c->root);
    int exists = gr_fs_exists(dest);
    if (exists && !(flags & GR_CAS_FORCE))
        return gr_seterr(GR_EINVAL, "%s: already exists (use --force to replace it)", dest);
    /* The temporary sits beside dest so the final rename stays on one file system. */
    if (!(parent = strdup(dest))) return gr_seterr(GR_ENOMEM, "out of memory");
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        if ((rc = gr_fs_mkdirs(parent, DIR_MODE, 1))) goto done;
    }
    if (kind == GR_CAS_TREE) {
        if ((rc = gr_cas_load_tree(c, id, &m))) goto done;
        size_t n = strlen(dest) + 16;
        if (!(tmp = malloc(n))) {
            rc = gr_seterr(GR_ENOMEM, "out of memory");
            goto done;
        }
        snprintf(tmp, n, "%s.tmp.XXXXXX", dest);
        if (!mkdtemp(tmp)) {
            rc = gr_seterr(GR_EIO, "%s: cannot make a temporary directory: %s", dest,
                           strerror(errno));
            free(tmp);
            tmp = NULL;
            goto done;
        }
        chmod(tmp, DIR_MODE);
        if ((rc = build_tree(c, m, tmp, flags & GR_CAS_COPY))) goto done;
    } else {
        for (int tries = 0;; tries++) {
            char *base = malloc(strlen(dest) + 6);
            if (!base) {
                rc = gr_seterr(GR_ENOMEM, "out of memory");
                goto done;
            }
            sprintf(base, "%s.tmp.", dest);
            tmp = unique_name(base);
            free(base);
            if (!tmp) {
                rc = GR_ENOMEM;
                goto done;
            }
            rc = link_or_copy(c, id, tmp, UINT64_MAX, flags & GR_CAS_COPY);
            if (!rc || !gr_fs_exists(tmp) || tries > 8) break;
            free(tmp); /* name taken by someone else: try another */
            tmp = NULL;
        }
        if (rc) {
            free(tmp);
            tmp = NULL;
            goto done;
        }
    }
    if (exists) {
        /* Swap atomically, then remove the old contents. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_EXCHANGE) == 0) {
            rc = gr_fs_rmrf(tmp);
        } else if (kind != GR_CAS_TREE && !gr_fs_is_dir(dest) && rename(tmp, dest) == 0) {
            free(tmp);
            tmp = NULL;
        } else {
            rc = gr_seterr(GR_EIO, "%s: cannot replace: %s", dest, strerror(errno));
            goto done;
        }
    } else if (rename_noreplace(tmp, dest)) {
        rc = gr_seterr(errno == EEXIST || errno == ENOTEMPTY ? GR_EINVAL : GR_EIO,
                       "%s: cannot move into place: %s", dest, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    if (!rc) rc = gr_fs_fsync_parent(dest);
done:
    if (tmp) gr_fs_rmrf(tmp);
    free(tmp);
    free(parent);
    gr_manifest_destroy(&m);
    return rc;
}

/* Makes every directory of a materialised tree read-only. */
static void seal_dirs(const char *dir, int depth)
{
    DIR *d = depth < MAX_TREE_DEPTH ? opendir(dir) : NULL;
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISDIR(st.st_mode))
            continue;
        char *p = gr_fs_join(dir, e->d_name);
        if (p) seal_dirs(p, depth + 1);
        free(p);
    }
    closedir(d);
    chmod(dir, 0555);
}

int gr_cas_materialize(gr_cas *c, const char *id, char **path)
{
    int kind, rc, lockfd = -1;
    char *final = NULL, *tmp = NULL;
    gr_manifest *m = NULL;
    *path = NULL;
    if ((rc = gr_cas_kind(c, id, &kind))) return rc;
    if (kind == GR_CAS_BLOB) return gr_cas_blob_path(c, id, path, NULL);
    if (!(final = malloc(strlen(c->root) + 80))) return gr_seterr(GR_ENOMEM, "out of memory");
    sprintf(final, "%s/trees/%s", c->root, id + GR_ID_PREFIX_LEN);
    if (gr_fs_is_dir(final)) goto ok;
    if ((rc = gr_cas_load_tree(c, id, &m))) goto done;
    if ((rc = gr_fs_mkdtemp(c->tmp, "tree-", &tmp))) goto done;
    /* Hold a lock on the temporary directory so no sweeper removes it. */
    lockfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lockfd < 0 || flock(lockfd, LOCK_EX)) {
        rc = gr_seterr(GR_EIO, "%s: cannot lock: %s", tmp, strerror(errno));
        goto done;
    }
    chmod(tmp, DIR_MODE);
    if ((rc = build_tree(c, m, tmp, 0))) goto done;
    if (rename_noreplace(tmp, final)) {
        if (errno != EEXIST && errno != ENOTEMPTY) {
            rc = gr_seterr(GR_EIO, "%s: cannot move into place: %s", final, strerror(errno));
            goto done;
        }
        goto done; /* another process made it first: use theirs */
    }
    free(tmp);
    tmp = NULL;
    if ((rc = gr_fs_fsync_parent(final))) goto done;
    seal_dirs(final, 0);
ok:
    *path = final;
    final = NULL;
done:
    if (tmp) gr_fs_rmrf(tmp);
    if (lockfd >= 0) close(lockfd);
    if (!rc && !*path) {
        *path = final;
        final = NULL;
    }
    free(tmp);
    free(final);
    gr_manifest_destroy(&m);
    return rc;
}

/* ---- verification ---- */

typedef struct vctx {
    gr_cas *c;
    int flags;
    gr_cas_report *r;
    void (*cb)(void *, const char *);
    void *ud;
    char **trees; /* hex of every valid manifest seen */
    size_t ntrees, cap;
    char **bad; /* hex of corrupt blobs */
    size_t nbad, badcap;
} vctx;

static void problem(vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(vctx *v, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (v->cb) v->cb(v->ud, line);
}

static int remember(char ***list, size_t *n, size_t *cap, const char *hex)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        char **nl = realloc(*list, nc * sizeof *nl);
        if (!nl) return gr_seterr(GR_ENOMEM, "out of memory");
        *list = nl;
        *cap = nc;
    }
    if (!((*list)[*n] = strdup(hex))) return gr_seterr(GR_ENOMEM, "out of memory");
    (*n)++;
    return 0;
}

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static int verify_blob(vctx *v, const char *path, const char *hex)
{
    char id[GR_ID_SZ], got[GR_ID_SZ];
    uint64_t size = 0;
    uint8_t d[GR_SHA256_LEN];
    snprintf(id, sizeof id, GR_ID_PREFIX "%.64s", hex);
    int rc = gr_sha256_file(path, d, &size);
    if (rc) {
        problem(v, "%s: cannot read: %s", id, gr_errmsg());
        v->r->corrupt++;
        return remember(&v->bad, &v->nbad, &v->badcap, hex);
    }
    v->r->blobs++;
    v->r->bytes += size;
    gr_sha256_id(d, got);
    if (strcmp(got, id)) {
        v->r->corrupt++;
        problem(v, "%s: corrupt: its %llu bytes hash to %s", id, (unsigned long long)size, got);
        if ((rc = remember(&v->bad, &v->nbad, &v->badcap, hex))) return rc;
        if (v->flags & GR_CAS_VERIFY_QUARANTINE) {
            char *q = gr_fs_join(v->c->root, "quarantine"), *qp = NULL;
            if (!q) return GR_ENOMEM;
            if (!gr_fs_mkdirs(q, DIR_MODE, 1) && (qp = gr_fs_join(q, hex)) && !rename(path, qp)) {
                v->r->quarantined++;
                problem(v, "%s: moved to %s", id, qp);
            }
            free(qp);
            free(q);
        }
        return 0;
    }
    char head[sizeof GR_MANIFEST_MAGIC];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got_n = fd >= 0 ? pread(fd, head, sizeof head - 1, 0) : -1;
    if (fd >= 0) close(fd);
    if (got_n > 0 && gr_manifest_sniff(head, (size_t)got_n)) {
        char *data = NULL;
        size_t len;
        gr_manifest *m = NULL;
        if (!gr_fs_read_file(path, GR_MANIFEST_MAX_BYTES, &data, &len))
            m = gr_manifest_parse(data, len, id);
        free(data);
        if (!m) {
            v->r->bad_trees++;
            problem(v, "%s: looks like a tree but is not a valid manifest: %s", id, gr_errmsg());
            return 0;
        }
        gr_manifest_destroy(&m);
        v->r->trees++;
        return remember(&v->trees, &v->ntrees, &v->cap, hex);
    }
    return 0;
}

static int listed(char **list, size_t n, const char *hex)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], hex)) return 1;
    return 0;
}

/* Every entry of every tree is present with the right size; materialised
 * trees are complete; damaged ones are removed when fixing. */
static int verify_trees(vctx *v)
{
    gr_cas *c = v->c;
    for (size_t t = 0; t < v->ntrees; t++) {
        char id[GR_ID_SZ];
        snprintf(id, sizeof id, GR_ID_PREFIX "%s", v->trees[t]);
        gr_manifest *m = NULL;
        if (gr_cas_load_tree(c, id, &m)) continue; /* quarantined meanwhile */
        for (size_t i = 0; i < gr_manifest_count(m); i++) {
            const gr_manifest_entry *e = gr_manifest_entry_at(m, i);
            char *p = NULL;
            uint64_t size;
            if (gr_cas_blob_path(c, e->id, &p, &size) ||
                listed(v->bad, v->nbad, e->id + GR_ID_PREFIX_LEN)) {
                v->r->missing++;
                problem(v, "%s: '%s' needs %s, which is %s", id, e->path, e->id,
                        p ? "corrupt" : "missing");
            } else if (size != e->size) {
                v->r->missing++;
                problem(v, "%s: '%s' needs %s of %llu bytes, the blob has %llu", id, e->path, e->id,
                        (unsigned long long)e->size, (unsigned long long)size);
            }
            free(p);
        }
        gr_manifest_destroy(&m);
    }
    /* Materialised trees. */
    char *tdir = gr_fs_join(c->root, "trees");
    if (!tdir) return GR_ENOMEM;
    DIR *d = opendir(tdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char id[GR_ID_SZ];
        int broken = 0;
        gr_manifest *m = NULL;
        snprintf(id, sizeof id, GR_ID_PREFIX "%.64s", e->d_name);
        if (!is_hex(e->d_name, 64) || listed(v->bad, v->nbad, e->d_name) ||
            gr_cas_load_tree(c, id, &m)) {
            broken = 1;
        } else {
            for (size_t i = 0; !broken && i < gr_manifest_count(m); i++) {
                const gr_manifest_entry *me = gr_manifest_entry_at(m, i);
                char *p = malloc(strlen(tdir) + strlen(e->d_name) + strlen(me->path) + 3);
                struct stat st;
                if (!p) break;
                sprintf(p, "%s/%s/%s", tdir, e->d_name, me->path);
                broken = lstat(p, &st) || !S_ISREG(st.st_mode) ||
                         (uint64_t)st.st_size != me->size ||
                         listed(v->bad, v->nbad, me->id + GR_ID_PREFIX_LEN);
                free(p);
            }
        }
        gr_manifest_destroy(&m);
        if (!broken) continue;
        problem(v, "trees/%s: materialised tree is damaged or refers to a bad blob", e->d_name);
        if (v->flags & (GR_CAS_VERIFY_QUARANTINE | GR_CAS_VERIFY_GC)) {
            char *p = gr_fs_join(tdir, e->d_name);
            if (p && !gr_fs_rmrf(p)) v->r->trees_removed++;
            free(p);
        }
    }
    if (d) closedir(d);
    free(tdir);
    return 0;
}

int gr_cas_verify(gr_cas *c, int flags, gr_cas_report *r, void (*cb)(void *ud, const char *problem),
                  void *ud)
{
    gr_cas_report dummy;
    if (!r) r = &dummy;
    memset(r, 0, sizeof *r);
    vctx v = {c, flags, r, cb, ud, NULL, 0, 0, NULL, 0, 0};
    int rc = 0;
    char *top = gr_fs_join(c->root, "sha256");
    if (!top) return GR_ENOMEM;
    DIR *d1 = opendir(top);
    if (!d1) {
        rc = gr_seterr(GR_EIO, "%s: cannot list: %s", top, strerror(errno));
        goto done;
    }
    struct dirent *e1;
    while (!rc && (e1 = readdir(d1))) {
        if (!strcmp(e1->d_name, ".") || !strcmp(e1->d_name, "..")) continue;
        char *p1 = gr_fs_join(top, e1->d_name);
        DIR *d2 = p1 && is_hex(e1->d_name, 2) ? opendir(p1) : NULL;
        if (!d2) {
            r->stray++;
            problem(&v, "sha256/%s: not part of the store layout", e1->d_name);
        }
        struct dirent *e2;
        while (!rc && d2 && (e2 = readdir(d2))) {
            if (!strcmp(e2->d_name, ".") || !strcmp(e2->d_name, "..")) continue;
            char *p2 = gr_fs_join(p1, e2->d_name);
            DIR *d3 = p2 && is_hex(e2->d_name, 2) ? opendir(p2) : NULL;
            if (!d3) {
                r->stray++;
                problem(&v, "sha256/%s/%s: not part of the store layout", e1->d_name, e2->d_name);
            }
            struct dirent *e3;
            while (!rc && d3 && (e3 = readdir(d3))) {
                if (!strcmp(e3->d_name, ".") || !strcmp(e3->d_name, "..")) continue;
                char *p3 = gr_fs_join(p2, e3->d_name);
                struct stat st;
                if (!p3)
                    rc = GR_ENOMEM;
                else if (!is_hex(e3->d_name, 64) || strncmp(e3->d_name, e1->d_name, 2) ||
                         strncmp(e3->d_name + 2, e2->d_name, 2) || lstat(p3, &st) ||
                         !S_ISREG(st.st_mode)) {
                    r->stray++;
                    problem(&v, "sha256/%s/%s/%s: not a blob of this store", e1->d_name, e2->d_name,
                            e3->d_name);
                } else {
                    rc = verify_blob(&v, p3, e3->d_name);
                }
                free(p3);
            }
            if (d3) closedir(d3);
            free(p2);
        }
        if (d2) closedir(d2);
        free(p1);
    }
    closedir(d1);
    if (!rc) rc = verify_trees(&v);
    if (!rc && (flags & GR_CAS_VERIFY_GC)) rc = sweep_tmp(c, STALE_ON_GC_S, &r->tmp_removed);
done:
    for (size_t i = 0; i < v.ntrees; i++) free(v.trees[i]);
    for (size_t i = 0; i < v.nbad; i++) free(v.bad[i]);
    free(v.trees);
    free(v.bad);
    free(top);
    return rc;
}
