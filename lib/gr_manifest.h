/* gr_manifest: the canonical tree manifest of the content-addressed store.
 *
 * A tree (a directory of files) is described by one JSON document, stored as
 * a blob; the tree's id is the sha256 of exactly these bytes:
 *
 *   {"graft_tree":1,"entries":[{"path":"a/b.json","id":"sha256:<hex>","size":12},...]}
 *
 * Canonical form (the only form accepted when reading, so that one tree has
 * one id): no whitespace; keys in exactly this order; entries sorted by path
 * comparing bytes (strcmp); strings escaped as gr_buf_json_str writes them;
 * sizes as plain decimal integers. Rules for paths, checked when building and
 * when reading (a manifest from disk is hostile):
 *   - relative, '/'-separated, UTF-8, 1..4096 bytes, components of 1..255
 *     bytes, no control characters (< 0x20, 0x7f) and no backslash;
 *   - no empty, "." or ".." components (so no leading, trailing or double '/');
 *   - no duplicates, and no path that is also a directory of another
 *     ("a" and "a/b" cannot both be entries);
 *   - at most GR_MANIFEST_MAX_ENTRIES entries.
 * Only regular files are recorded: no symlinks, no modes, no empty
 * directories. Schema documentation: schemas/manifest.md. */
#ifndef GR_MANIFEST_H
#define GR_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "gr_buf.h"
#include "gr_sha256.h"

#define GR_MANIFEST_MAGIC       "{\"graft_tree\":1,"
#define GR_MANIFEST_MAX_ENTRIES 1000000
#define GR_MANIFEST_MAX_PATH    4096
#define GR_MANIFEST_MAX_COMP    255
#define GR_MANIFEST_MAX_BYTES   (64u << 20) /* largest manifest read */

typedef struct gr_manifest_entry {
    char *path;        /* owned by the manifest */
    char id[GR_ID_SZ]; /* "sha256:<hex>" of the file's contents */
    uint64_t size;     /* bytes */
} gr_manifest_entry;

typedef struct gr_manifest gr_manifest;

gr_manifest *gr_manifest_new(void);
void gr_manifest_destroy(gr_manifest **m);
/* Adds an entry (path and id are copied). Checks the path rules above and the
 * id form (GR_EINVAL naming the path); duplicates and file/directory clashes
 * are found by gr_manifest_encode. */
int gr_manifest_add(gr_manifest *m, const char *path, const char *id, uint64_t size);
/* Sorts the entries, checks the whole-tree rules and appends the canonical
 * bytes to out. */
int gr_manifest_encode(gr_manifest *m, gr_buf *out);
/* Parses and fully validates a manifest; what names it in messages (e.g. the
 * id or a file name). Non-canonical input is rejected. Returns NULL with
 * gr_errmsg() set (GR_EFORMAT). */
gr_manifest *gr_manifest_parse(const char *data, size_t len, const char *what);
/* Whether data starts like a manifest (the magic prefix); cheap sniffing. */
int gr_manifest_sniff(const void *data, size_t len);
/* Checks one path against the rules; GR_EINVAL with a message naming it. */
int gr_manifest_check_path(const char *path);

/* Entries, sorted by path once encoded or parsed. Borrowed. */
size_t gr_manifest_count(const gr_manifest *m);
const gr_manifest_entry *gr_manifest_entry_at(const gr_manifest *m, size_t i);
/* Entry with this path (after encode/parse), or NULL. */
const gr_manifest_entry *gr_manifest_find(const gr_manifest *m, const char *path);
/* Sum of sizes. */
uint64_t gr_manifest_total_size(const gr_manifest *m);

#endif
