/* gr_cas: the local content-addressed artifact store (DESIGN.md §5).
 *
 * Layout under the root directory:
 *   sha256/ab/cd/<hex>   blobs, read-only (0444), named by the sha256 of
 *                        their bytes ("ab", "cd": the first two hex pairs)
 *   tmp/                 files and directories being written; each is held
 *                        under flock() by its writer, so a lock that can be
 *                        taken means the writer died (swept on open when
 *                        older than an hour, by verify --gc after a minute)
 *   trees/<hex>/         trees materialised once as hardlinks (inputs of ops)
 *   quarantine/<hex>     corrupt blobs moved away by verify
 *   index/               small side indexes (e.g. the fetch op's url→id map)
 *
 * An artifact is a blob (one file) or a tree (a directory): a tree is stored
 * as its canonical manifest blob (gr_manifest.h) and its id is that blob's id.
 * A blob whose bytes are a valid manifest is a tree.
 *
 * Writes go to a temporary file in tmp/ while hashing, are fsynced, renamed
 * into place and the directory fsynced: a crash never leaves a partial blob
 * under a final name, and two processes putting the same bytes both succeed
 * and leave one blob. All functions return 0 or a negative GR_E* code with
 * gr_errmsg() naming the id or path and the rule broken. A gr_cas handle may
 * be used from one thread at a time; any number of processes may share a
 * root. */
#ifndef GR_CAS_H
#define GR_CAS_H

#include <stddef.h>
#include <stdint.h>

#include "gr_manifest.h"
#include "gr_sha256.h"

typedef struct gr_cas gr_cas;

/* Store root to use: opt if not NULL/empty (--store), else $GRAFT_STORE, else
 * $XDG_DATA_HOME/graft/store, else $HOME/.local/share/graft/store. Returns a
 * new string (caller frees) or NULL (GR_EINVAL when nothing applies). */
char *gr_cas_default_root(const char *opt);
/* Opens (creating the layout if missing) the store at root. Sweeps stale
 * temporaries older than an hour. NULL with gr_errmsg() set on failure. */
gr_cas *gr_cas_open(const char *root);
void gr_cas_destroy(gr_cas **c);
const char *gr_cas_root(const gr_cas *c);

/* ---- putting blobs ---- (id: a GR_ID_SZ buffer receiving "sha256:<hex>") */
int gr_cas_put_buf(gr_cas *c, const void *p, size_t n, char id[GR_ID_SZ]);
/* Copies everything readable from fd (to EOF) into the store while hashing;
 * *size (may be NULL) gets the byte count. */
int gr_cas_put_fd(gr_cas *c, int fd, char id[GR_ID_SZ], uint64_t *size);
/* Copies a regular file into the store. */
int gr_cas_put_file(gr_cas *c, const char *path, char id[GR_ID_SZ], uint64_t *size);
/* Moves a regular file into the store without copying its bytes: renamed
 * into tmp/, hashed, made read-only, fsynced and renamed into place (copied
 * and unlinked only when path is on another file system). On success path
 * no longer exists. For multi-GB op outputs. */
int gr_cas_ingest_file(gr_cas *c, const char *path, char id[GR_ID_SZ], uint64_t *size);

/* Streaming writer for producers that push bytes (downloads, generated
 * files). commit hashes and names the blob; when expect is not NULL (an id)
 * and the bytes differ, nothing is stored and GR_EFORMAT says which
 * ("content is sha256:X, expected sha256:Y"). destroy without commit
 * discards the temporary file. */
typedef struct gr_cas_writer gr_cas_writer;
gr_cas_writer *gr_cas_writer_new(gr_cas *c);
int gr_cas_writer_write(gr_cas_writer *w, const void *p, size_t n);
uint64_t gr_cas_writer_size(const gr_cas_writer *w);
int gr_cas_writer_commit(gr_cas_writer *w, const char *expect, char id[GR_ID_SZ]);
void gr_cas_writer_destroy(gr_cas_writer **w);

/* ---- putting trees ---- */
/* Puts every regular file under dir (recursively) and then the manifest.
 * Symlinks are followed only to regular files inside dir; one pointing
 * outside dir, to a directory, or dangling is GR_EINVAL naming it; sockets,
 * fifos and devices too. Empty directories are not recorded. */
int gr_cas_put_tree(gr_cas *c, const char *dir, char id[GR_ID_SZ]);
/* Like put_tree but moves the files into the store (gr_cas_ingest_file);
 * afterwards dir holds only (now empty) directories. */
int gr_cas_ingest_tree(gr_cas *c, const char *dir, char id[GR_ID_SZ]);
/* Puts a file or a directory (put_file or put_tree). */
int gr_cas_put_path(gr_cas *c, const char *path, char id[GR_ID_SZ]);
/* Stores a manifest built by the caller (every entry's blob must be present:
 * GR_ENOTFOUND otherwise). */
int gr_cas_put_manifest(gr_cas *c, gr_manifest *m, char id[GR_ID_SZ]);

/* ---- reading ---- */
enum { GR_CAS_BLOB = 1, GR_CAS_TREE = 2 };
/* 1 if the blob is present, 0 if not, GR_EINVAL for a malformed id. */
int gr_cas_has(gr_cas *c, const char *id);
/* Path of the blob's file (caller frees) and its size; GR_ENOTFOUND
 * ("sha256:...: not in the store at ROOT") when absent. */
int gr_cas_blob_path(gr_cas *c, const char *id, char **path, uint64_t *size);
/* Opens the blob read-only (caller closes fd). */
int gr_cas_open_blob(gr_cas *c, const char *id, int *fd, uint64_t *size);
/* Reads a whole blob of at most max bytes (caller frees *data, which is
 * NUL-terminated). */
int gr_cas_read_blob(gr_cas *c, const char *id, size_t max, char **data, size_t *len);
/* GR_CAS_TREE if the blob is a manifest, else GR_CAS_BLOB. A blob that starts
 * like a manifest but is not a valid one is GR_EFORMAT. */
int gr_cas_kind(gr_cas *c, const char *id, int *kind);
/* Loads and validates a tree's manifest (caller destroys). */
int gr_cas_load_tree(gr_cas *c, const char *id, gr_manifest **m);

/* ---- exporting ---- */
enum {
    GR_CAS_FORCE = 1, /* replace an existing dest */
    GR_CAS_COPY = 2,  /* always copy, never hardlink */
    GR_CAS_RAW = 4,   /* export a tree's manifest bytes as a file */
};
/* Exports a blob to a file, or a tree to a directory, at dest: built under a
 * temporary name beside dest (hardlinks to the blobs when on the same file
 * system, else copies; files read-only) and renamed into place. An existing
 * dest is GR_EINVAL unless GR_CAS_FORCE. Every blob a tree names must be
 * present (GR_ENOTFOUND naming the path and id). */
int gr_cas_export(gr_cas *c, const char *id, const char *dest, int flags);
/* Path where the artifact can be read in place (caller frees): for a blob its
 * file in sha256/; for a tree <root>/trees/<hex>/, made once (hardlinks, or
 * copies across file systems) and then reused. Do not write into it. */
int gr_cas_materialize(gr_cas *c, const char *id, char **path);

/* ---- checking ---- */
enum {
    GR_CAS_VERIFY_QUARANTINE = 1, /* move corrupt blobs to quarantine/ */
    GR_CAS_VERIFY_GC = 2,         /* remove dead temporaries (unlocked, > 1 min) */
};
typedef struct gr_cas_report {
    uint64_t blobs, bytes, trees; /* seen */
    uint64_t corrupt;             /* content does not match the name */
    uint64_t bad_trees;           /* invalid manifests (they look like one) */
    uint64_t missing;             /* tree entries whose blob is absent or of the wrong size */
    uint64_t stray;               /* files in sha256/ that are not blobs */
    uint64_t quarantined, tmp_removed, trees_removed;
} gr_cas_report;
/* Re-hashes every blob, checks every manifest and that what it names is
 * present. Each problem is passed to cb (may be NULL) as one line. Returns 0
 * when the walk completed (problems are in the report), <0 on I/O failure. */
int gr_cas_verify(gr_cas *c, int flags, gr_cas_report *r, void (*cb)(void *ud, const char *problem),
                  void *ud);

#endif
