/* gr_fs: file-system helpers shared by the store, the writers and the ops:
 * mkdir -p, crash-safe file replacement (temp + fsync + rename + fsync dir),
 * rm -rf, copy, whole-file reads. */
#ifndef GR_FS_H
#define GR_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* All functions return 0 or a negative GR_E* code with gr_errmsg() naming
 * the path and the system error. */

/* "a" + "/" + "b" in a new string (caller frees), or NULL on ENOMEM. */
char *gr_fs_join(const char *a, const char *b);
/* Creates dir and any missing parents (mode for new ones). Existing
 * directories are fine; an existing non-directory is GR_EIO. When sync is
 * set, each newly created directory's parent is fsynced so the new entry
 * survives a crash. */
int gr_fs_mkdirs(const char *dir, mode_t mode, int sync);
/* fsyncs a directory (to persist renames and creations inside it). */
int gr_fs_fsync_dir(const char *dir);
/* fsyncs the directory containing path. */
int gr_fs_fsync_parent(const char *path);
/* Writes all n bytes (retrying on EINTR and short writes). what names the
 * file in error messages. */
int gr_fs_write_all(int fd, const void *p, size_t n, const char *what);
/* Reads the whole file (at most max bytes, else GR_EINVAL "larger than");
 * *data is NUL-terminated, caller frees. GR_ENOTFOUND when missing. */
int gr_fs_read_file(const char *path, size_t max, char **data, size_t *len);
/* Removes path recursively (files, symlinks, directories, without following
 * symlinks). A missing path is not an error. */
int gr_fs_rmrf(const char *path);
/* 1 if path exists (lstat), 0 if not. */
int gr_fs_exists(const char *path);
/* 1 if path is a directory (following symlinks), 0 if not. */
int gr_fs_is_dir(const char *path);
/* Copies src's contents to a new file dst (must not exist) with mode; uses
 * copy_file_range where possible. dst is fsynced but not its directory. */
int gr_fs_copy_file(const char *src, const char *dst, mode_t mode);
/* Makes a fresh directory "<parent>/<prefix>XXXXXX"; *out (caller frees)
 * receives its path. */
int gr_fs_mkdtemp(const char *parent, const char *prefix, char **out);

/* Crash-safe creation or replacement of one file: data goes to a temporary
 * file beside dest ("<dest>.tmp.XXXXXX"); commit fsyncs it, renames it onto
 * dest and fsyncs the directory; abort (or commit failing) unlinks it. So
 * dest either keeps its old contents or has all the new ones, never part.
 * Usage: gr_fs_atomic a; gr_fs_atomic_open(&a, dest, 0644); write(a.fd, ...);
 * gr_fs_atomic_commit(&a) or gr_fs_atomic_abort(&a). */
typedef struct gr_fs_atomic {
    int fd;     /* write here; -1 when closed */
    char *tmp;  /* temporary path (owned) */
    char *dest; /* final path (owned) */
} gr_fs_atomic;
int gr_fs_atomic_open(gr_fs_atomic *a, const char *dest, mode_t mode);
int gr_fs_atomic_commit(gr_fs_atomic *a);
/* Safe to call after commit or on a zeroed / failed-open struct. */
void gr_fs_atomic_abort(gr_fs_atomic *a);
/* Writes a whole file atomically (open + write + commit). */
int gr_fs_write_atomic(const char *dest, const void *data, size_t len, mode_t mode);

#endif
