/* gr_sha256: streaming SHA-256 (OpenSSL EVP) and the `sha256:<hex>` ids built on it. */
#ifndef GR_SHA256_H
#define GR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define GR_SHA256_LEN    32 /* digest bytes */
#define GR_SHA256_HEXSZ  65 /* 64 lowercase hex digits + NUL */
#define GR_ID_PREFIX     "sha256:"
#define GR_ID_PREFIX_LEN 7
#define GR_ID_SZ         72 /* "sha256:" + 64 hex + NUL: size of an id buffer */

typedef struct gr_sha256 gr_sha256;

/* A fresh hashing context, or NULL (GR_ENOMEM set). */
gr_sha256 *gr_sha256_new(void);
/* Frees *h (NULL allowed) and sets *h = NULL. */
void gr_sha256_destroy(gr_sha256 **h);
/* Starts over (as if just created). */
int gr_sha256_reset(gr_sha256 *h);
int gr_sha256_update(gr_sha256 *h, const void *p, size_t n);
/* Writes the digest of everything updated so far; the context must then be
 * reset before further use. */
int gr_sha256_final(gr_sha256 *h, uint8_t out[GR_SHA256_LEN]);

/* One-shot digest of a buffer. */
int gr_sha256_buf(const void *p, size_t n, uint8_t out[GR_SHA256_LEN]);
/* Digest of everything readable from fd (from its current offset to EOF);
 * *size (may be NULL) receives the number of bytes hashed. */
int gr_sha256_fd(int fd, uint8_t out[GR_SHA256_LEN], uint64_t *size);
/* Digest of a file's contents; errors name the path. */
int gr_sha256_file(const char *path, uint8_t out[GR_SHA256_LEN], uint64_t *size);

/* Digest → 64 lowercase hex digits + NUL. */
void gr_sha256_hex(const uint8_t d[GR_SHA256_LEN], char hex[GR_SHA256_HEXSZ]);
/* Digest → "sha256:<hex>" + NUL. */
void gr_sha256_id(const uint8_t d[GR_SHA256_LEN], char id[GR_ID_SZ]);
/* Parses exactly 64 hex digits (either case) into a digest; GR_EINVAL otherwise. */
int gr_sha256_from_hex(const char *hex, size_t len, uint8_t out[GR_SHA256_LEN]);
/* Checks that s is exactly "sha256:" + 64 lowercase hex digits; when hex is
 * not NULL copies the hex part there. GR_EINVAL naming s otherwise. */
int gr_id_parse(const char *s, char hex[GR_SHA256_HEXSZ]);

#endif
