/* gr_sha256: streaming SHA-256 over OpenSSL EVP, file hashing and id parsing. */
#include "gr_sha256.h"
#include "gr_err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HASH_CHUNK (1u << 20) /* read size when hashing files */

struct gr_sha256 {
    EVP_MD_CTX *md;
};

gr_sha256 *gr_sha256_new(void)
{
    gr_sha256 *h = calloc(1, sizeof *h);
    if (!h) goto fail;
    h->md = EVP_MD_CTX_new();
    if (!h->md) goto fail;
    if (EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) goto fail;
    return h;
fail:
    gr_sha256_destroy(&h);
    gr_seterr(GR_ENOMEM, "sha256: cannot create a digest context");
    return NULL;
}

void gr_sha256_destroy(gr_sha256 **h)
{
    if (!h || !*h) return;
    EVP_MD_CTX_free((*h)->md);
    free(*h);
    *h = NULL;
}

int gr_sha256_reset(gr_sha256 *h)
{
    if (EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1)
        return gr_seterr(GR_EIO, "sha256: digest init failed");
    return 0;
}

int gr_sha256_update(gr_sha256 *h, const void *p, size_t n)
{
    if (n && EVP_DigestUpdate(h->md, p, n) != 1)
        return gr_seterr(GR_EIO, "sha256: digest update failed");
    return 0;
}

int gr_sha256_final(gr_sha256 *h, uint8_t out[GR_SHA256_LEN])
{
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->md, out, &len) != 1 || len != GR_SHA256_LEN)
        return gr_seterr(GR_EIO, "sha256: digest final failed");
    return 0;
}

int gr_sha256_buf(const void *p, size_t n, uint8_t out[GR_SHA256_LEN])
{
    gr_sha256 *h = gr_sha256_new();
    if (!h) return GR_ENOMEM;
    int rc = gr_sha256_update(h, p, n);
    if (!rc) rc = gr_sha256_final(h, out);
    gr_sha256_destroy(&h);
    return rc;
}

static int hash_fd(int fd, uint8_t out[GR_SHA256_LEN], uint64_t *size, const char *what)
{
    int rc = GR_ENOMEM;
    uint64_t total = 0;
    gr_sha256 *h = gr_sha256_new();
    char *buf = malloc(HASH_CHUNK);
    if (!h || !buf) {
        gr_seterr(GR_ENOMEM, "%s: out of memory while hashing", what);
        goto fail;
    }
    for (;;) {
        ssize_t got = read(fd, buf, HASH_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            rc = gr_seterr(GR_EIO, "%s: read failed: %s", what, strerror(errno));
            goto fail;
        }
        if (got == 0) break;
        if ((rc = gr_sha256_update(h, buf, (size_t)got))) goto fail;
        total += (uint64_t)got;
    }
    if ((rc = gr_sha256_final(h, out))) goto fail;
    if (size) *size = total;
    rc = 0;
fail:
    free(buf);
    gr_sha256_destroy(&h);
    return rc;
}

int gr_sha256_fd(int fd, uint8_t out[GR_SHA256_LEN], uint64_t *size)
{
    return hash_fd(fd, out, size, "sha256");
}

int gr_sha256_file(const char *path, uint8_t out[GR_SHA256_LEN], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    int rc = hash_fd(fd, out, size, path);
    close(fd);
    return rc;
}

void gr_sha256_hex(const uint8_t d[GR_SHA256_LEN], char hex[GR_SHA256_HEXSZ])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < GR_SHA256_LEN; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * GR_SHA256_LEN] = 0;
}

void gr_sha256_id(const uint8_t d[GR_SHA256_LEN], char id[GR_ID_SZ])
{
    memcpy(id, GR_ID_PREFIX, GR_ID_PREFIX_LEN);
    gr_sha256_hex(d, id + GR_ID_PREFIX_LEN);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int gr_sha256_from_hex(const char *hex, size_t len, uint8_t out[GR_SHA256_LEN])
{
    if (len != 2 * GR_SHA256_LEN)
        return gr_seterr(GR_EINVAL, "sha256: '%.*s' is not 64 hex digits",
                         (int)(len > 80 ? 80 : len), hex);
    for (int i = 0; i < GR_SHA256_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return gr_seterr(GR_EINVAL, "sha256: '%.64s' is not 64 hex digits", hex);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int gr_id_parse(const char *s, char hex[GR_SHA256_HEXSZ])
{
    if (!s) return gr_seterr(GR_EINVAL, "artifact id missing");
    size_t n = strlen(s);
    int ok = n == GR_ID_SZ - 1 && !strncmp(s, GR_ID_PREFIX, GR_ID_PREFIX_LEN);
    for (size_t i = GR_ID_PREFIX_LEN; ok && i < n; i++)
        ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    if (!ok)
        return gr_seterr(
            GR_EINVAL, "'%.100s' is not an artifact id (want sha256: and 64 lowercase hex digits)",
            s);
    if (hex) memcpy(hex, s + GR_ID_PREFIX_LEN, GR_SHA256_HEXSZ);
    return 0;
}
