/* gr_stw: streaming safetensors writer — declared tensors, data written as it
 * is produced, shards by size with an index, temp files renamed into place. */
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_st.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME  "model.safetensors.index.json"
#define META_KEY    "__metadata__"
#define WBUF_BYTES  ((size_t)1 << 20) /* write buffer: large writes bypass it */
#define F32_BOUNCE  ((size_t)1 << 14) /* elements converted per step by write_f32 */

enum { ST_DECLARE, ST_WRITING, ST_FINISHED, ST_FAILED };

typedef struct {
    char *name;
    gr_dtype dtype;
    int ndim;
    int64_t shape[GR_ST_MAX_DIMS];
    uint64_t nbytes;
    size_t shard;
    uint64_t begin; /* offset in its shard's data buffer */
} stw_tensor;

typedef struct {
    char *final;       /* destination path */
    char *tmp;         /* temporary path while it exists, else NULL */
    size_t first, end; /* tensors [first, end) */
} stw_shard;

struct gr_stw {
    char *dest;      /* as given */
    char *dir;       /* directory receiving the files */
    int single_file; /* dest names one .safetensors file */
    uint64_t max_shard;
    stw_tensor *t;
    size_t n, cap;
    char **mkey, **mval;
    size_t nmeta;
    stw_shard *sh;
    size_t nsh;
    int state;
    size_t cur;        /* tensor receiving bytes */
    uint64_t cur_done; /* bytes of it written so far */
    uint64_t total, written;
    size_t open_shard; /* shard whose file is open (fd >= 0) */
    int fd;
    unsigned char *wbuf;
    size_t wlen;
    unsigned char *bounce;
};

static int fail(gr_stw *w, int code)
{
    w->state = ST_FAILED;
    return code;
}

static int full_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static int mkdirs(const char *path)
{
    char *p = strdup(path);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return gr_seterr(GR_EIO, "%s: cannot create directory: %s", path, strerror(e));
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    struct stat sb;
    if (stat(path, &sb) < 0 || !S_ISDIR(sb.st_mode))
        return gr_seterr(GR_EINVAL, "%s: not a directory", path);
    return 0;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return gr_seterr(GR_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(fd) < 0 && errno != EINVAL ? -1 : 0;
    int e = errno;
    close(fd);
    return rc ? gr_seterr(GR_EIO, "%s: fsync: %s", dir, strerror(e)) : 0;
}

gr_stw *gr_stw_new(const char *dest, uint64_t max_shard_bytes)
{
    if (!dest || !*dest) {
        gr_seterr(GR_EINVAL, "safetensors writer: empty destination path");
        return NULL;
    }
    gr_stw *w = calloc(1, sizeof *w);
    if (!w || !(w->dest = strdup(dest))) goto oom;
    w->fd = -1;
    w->max_shard = max_shard_bytes ? max_shard_bytes : GR_ST_DEFAULT_SHARD;
    static const char ext[] = ".safetensors";
    size_t n = strlen(dest);
    if (n > sizeof ext - 1 && !strcmp(dest + n - (sizeof ext - 1), ext)) {
        w->single_file = 1;
        const char *slash = strrchr(dest, '/');
        w->dir = slash ? strndup(dest, slash == dest ? 1 : (size_t)(slash - dest)) : strdup(".");
    } else {
        while (n > 1 && dest[n - 1] == '/') n--;
        w->dir = strndup(dest, n);
    }
    if (!w->dir) goto oom;
    return w;
oom:
    gr_seterr(GR_ENOMEM, "%s: out of memory", dest);
    gr_stw_destroy(&w);
    return NULL;
}

int gr_stw_add(gr_stw *w, const char *name, gr_dtype dt, int ndim, const int64_t *shape)
{
    if (w->state != ST_DECLARE)
        return gr_seterr(GR_ESTATE, "%s: tensor '%s' added after begin", w->dest, name);
    if (!strcmp(name, META_KEY))
        return gr_seterr(GR_EINVAL, "%s: '%s' is reserved and cannot name a tensor", w->dest, name);
    if ((unsigned)dt >= GR_DT_COUNT)
        return gr_seterr(GR_EINVAL, "%s: tensor '%s': invalid dtype %d", w->dest, name, (int)dt);
    if (ndim < 0 || ndim > GR_ST_MAX_DIMS || (ndim && !shape))
        return gr_seterr(GR_EINVAL, "%s: tensor '%s': %d dimensions (0 to %d allowed)", w->dest,
                         name, ndim, GR_ST_MAX_DIMS);
    uint64_t nelem = 1, nbits;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return gr_seterr(GR_EINVAL, "%s: tensor '%s': negative dimension %lld", w->dest, name,
                             (long long)shape[d]);
        if (__builtin_mul_overflow(nelem, (uint64_t)shape[d], &nelem))
            return gr_seterr(GR_EINVAL, "%s: tensor '%s': element count overflows", w->dest, name);
    }
    if (__builtin_mul_overflow(nelem, (uint64_t)gr_dtype_bits(dt), &nbits))
        return gr_seterr(GR_EINVAL, "%s: tensor '%s': byte size overflows", w->dest, name);
    /* as the reader (and the safetensors reference) demand */
    if (nbits % 8)
        return gr_seterr(GR_EINVAL,
                         "%s: tensor '%s': %llu elements of %s are not a whole number of "
                         "bytes",
                         w->dest, name, (unsigned long long)nelem, gr_dtype_name(dt));
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        stw_tensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest);
        w->t = nt;
        w->cap = nc;
    }
    stw_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest);
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = nbits / 8;
    if (__builtin_add_overflow(w->total, t->nbytes, &w->total)) {
        free(t->name);
        return gr_seterr(GR_EINVAL, "%s: total size overflows", w->dest);
    }
    w->n++;
    return 0;
}

/* Setting a key twice keeps the last value. */
int gr_stw_meta(gr_stw *w, const char *key, const char *value)
{
    if (w->state != ST_DECLARE)
        return gr_seterr(GR_ESTATE, "%s: metadata '%s' set after begin", w->dest, key);
    for (size_t i = 0; i < w->nmeta; i++)
        if (!strcmp(w->mkey[i], key)) {
            char *v = strdup(value);
            if (!v) return gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest);
            free(w->mval[i]);
            w->mval[i] = v;
            return 0;
        }
    char **nk = realloc(w->mkey, (w->nmeta + 1) * sizeof *nk);
    if (nk) w->mkey = nk;
    char **nv = realloc(w->mval, (w->nmeta + 1) * sizeof *nv);
    if (nv) w->mval = nv;
    if (!nk || !nv) return gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest);
    w->mkey[w->nmeta] = strdup(key);
    w->mval[w->nmeta] = strdup(value);
    if (!w->mkey[w->nmeta] || !w->mval[w->nmeta]) {
        free(w->mkey[w->nmeta]);
        free(w->mval[w->nmeta]);
        return gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest);
    }
    w->nmeta++;
    return 0;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
    const stw_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Indices of the tensors sorted by name (caller frees). */
static size_t *sorted_names(gr_stw *w)
{
    size_t *idx = malloc((w->n ? w->n : 1) * sizeof *idx);
    if (!idx) return NULL;
    for (size_t i = 0; i < w->n; i++) idx[i] = i;
    if (w->n > 1) qsort_r(idx, w->n, sizeof *idx, cmp_name_idx, w->t);
    return idx;
}

/* Greedy, in declaration order (so data can stream): a shard takes tensors
 * until the next would push it past the limit; a tensor larger than the limit
 * gets a shard of its own. */
static int plan_shards(gr_stw *w)
{
    size_t k = 0;
    uint64_t size = 0;
    int nonempty = 0;
    for (size_t i = 0; i < w->n; i++) {
        stw_tensor *t = &w->t[i];
        if (!w->single_file && nonempty &&
            (t->nbytes > w->max_shard || size + t->nbytes > w->max_shard)) {
            k++;
            size = 0;
        }
        t->shard = k;
        t->begin = size;
        size += t->nbytes;
        nonempty = 1;
    }
    w->nsh = k + 1;
    if (!(w->sh = calloc(w->nsh, sizeof *w->sh))) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < w->n; i++) {
        stw_shard *s = &w->sh[w->t[i].shard];
        if (!s->end) s->first = i;
        s->end = i + 1;
    }
    for (size_t s = 0; s < w->nsh; s++) {
        char name[64];
        if (w->single_file) {
            w->sh[s].final = strdup(w->dest);
        } else {
            if (w->nsh == 1)
                snprintf(name, sizeof name, SINGLE_NAME);
            else
                snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, w->nsh);
            w->sh[s].final = path_join(w->dir, name);
        }
        if (!w->sh[s].final) return gr_seterr(GR_ENOMEM, "out of memory");
    }
    return 0;
}

static int build_header(gr_stw *w, size_t s, gr_buf *b)
{
    gr_buf_putc(b, '{');
    int first = 1;
    if (w->nmeta) {
        gr_buf_puts(b, "\"" META_KEY "\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) gr_buf_putc(b, ',');
            gr_buf_json_str(b, w->mkey[i], strlen(w->mkey[i]));
            gr_buf_putc(b, ':');
            gr_buf_json_str(b, w->mval[i], strlen(w->mval[i]));
        }
        gr_buf_putc(b, '}');
        first = 0;
    }
    for (size_t i = w->sh[s].first; i < w->sh[s].end; i++) {
        const stw_tensor *t = &w->t[i];
        if (!first) gr_buf_putc(b, ',');
        first = 0;
        gr_buf_json_str(b, t->name, strlen(t->name));
        gr_buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", gr_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            gr_buf_printf(b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        gr_buf_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->begin,
                      (unsigned long long)(t->begin + t->nbytes));
    }
    gr_buf_putc(b, '}');
    /* spaces so that the data start (8 + N) is a multiple of 8 */
    while (!b->oom && b->len % 8) gr_buf_putc(b, ' ');
    if (b->oom) return gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest);
    if (b->len > GR_ST_MAX_HEADER)
        return gr_seterr(GR_EINVAL, "%s: header of %zu bytes exceeds the %llu-byte limit",
                         w->sh[s].final, b->len, (unsigned long long)GR_ST_MAX_HEADER);
    return 0;
}

/* Creates a hidden temporary beside path (mode 0644); returns the fd. */
static int make_temp(const char *dir, const char *final, char **tmp_out)
{
    const char *base = strrchr(final, '/');
    base = base ? base + 1 : final;
    size_t n = strlen(dir) + strlen(base) + 32;
    char *tmp = malloc(n);
    if (!tmp) return gr_seterr(GR_ENOMEM, "out of memory");
    snprintf(tmp, n, "%s/.%s.tmp.XXXXXX", dir, base);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return gr_seterr(GR_EIO, "%s: cannot create a temporary file in %s: %s", final, dir,
                         strerror(e));
    }
    if (fchmod(fd, 0644) < 0) { /* mkstemp makes 0600; checkpoints are shared */
        int e = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return gr_seterr(GR_EIO, "%s: chmod: %s", final, strerror(e));
    }
    *tmp_out = tmp;
    return fd;
}

static int flush_buf(gr_stw *w)
{
    if (w->wlen && full_write(w->fd, w->wbuf, w->wlen) < 0)
        return gr_seterr(GR_EIO, "%s: write: %s", w->sh[w->open_shard].final, strerror(errno));
    w->wlen = 0;
    return 0;
}

static int put_bytes(gr_stw *w, const void *p, size_t n)
{
    if (w->wlen + n <= WBUF_BYTES) {
        memcpy(w->wbuf + w->wlen, p, n);
        w->wlen += n;
        return 0;
    }
    if (flush_buf(w)) return GR_EIO;
    if (n >= WBUF_BYTES / 2) {
        if (full_write(w->fd, p, n) < 0)
            return gr_seterr(GR_EIO, "%s: write: %s", w->sh[w->open_shard].final, strerror(errno));
        return 0;
    }
    memcpy(w->wbuf, p, n);
    w->wlen = n;
    return 0;
}

static int open_shard(gr_stw *w, size_t s)
{
    gr_buf hdr = {0};
    int rc = build_header(w, s, &hdr);
    if (rc) goto done;
    int fd = make_temp(w->dir, w->sh[s].final, &w->sh[s].tmp);
    if (fd < 0) {
        rc = fd;
        goto done;
    }
    w->fd = fd;
    w->open_shard = s;
    unsigned char len8[8];
    uint64_t n = hdr.len;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(n >> (8 * i));
    if ((rc = put_bytes(w, len8, 8)) || (rc = put_bytes(w, hdr.data, hdr.len))) goto done;
done:
    gr_buf_free(&hdr);
    return rc;
}

static int close_shard(gr_stw *w)
{
    const char *final = w->sh[w->open_shard].final;
    if (flush_buf(w)) return GR_EIO;
    if (fsync(w->fd) < 0) return gr_seterr(GR_EIO, "%s: fsync: %s", final, strerror(errno));
    int rc = close(w->fd);
    w->fd = -1;
    if (rc < 0) return gr_seterr(GR_EIO, "%s: close: %s", final, strerror(errno));
    return 0;
}

/* Moves past finished (and empty) tensors, closing each shard once all its
 * tensors are complete and opening the next. */
static int advance(gr_stw *w)
{
    while (w->cur < w->n && w->cur_done == w->t[w->cur].nbytes) {
        w->cur++;
        w->cur_done = 0;
    }
    size_t want = w->cur < w->n ? w->t[w->cur].shard : w->nsh;
    while (w->fd >= 0 && w->open_shard < want) {
        size_t next = w->open_shard + 1;
        int rc = close_shard(w);
        if (!rc && next < w->nsh && next <= want) rc = open_shard(w, next);
        if (rc) return rc;
    }
    return 0;
}

int gr_stw_begin(gr_stw *w)
{
    if (w->state != ST_DECLARE) return gr_seterr(GR_ESTATE, "%s: begin called twice", w->dest);
    size_t *idx = sorted_names(w);
    if (!idx) return fail(w, gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest));
    for (size_t i = 1; i < w->n; i++)
        if (!strcmp(w->t[idx[i]].name, w->t[idx[i - 1]].name)) {
            int rc =
                gr_seterr(GR_EINVAL, "%s: tensor '%s' declared twice", w->dest, w->t[idx[i]].name);
            free(idx);
            return fail(w, rc);
        }
    free(idx);
    int rc = mkdirs(w->dir);
    if (rc) return fail(w, rc);
    if (!(w->wbuf = malloc(WBUF_BYTES)) || !(w->bounce = malloc(F32_BOUNCE * sizeof(double))))
        return fail(w, gr_seterr(GR_ENOMEM, "%s: out of memory", w->dest));
    if ((rc = plan_shards(w)) || (rc = open_shard(w, 0))) return fail(w, rc);
    w->state = ST_WRITING;
    if ((rc = advance(w))) return fail(w, rc);
    return 0;
}

static int check_writing(gr_stw *w)
{
    if (w->state == ST_WRITING) return 0;
    if (w->state == ST_FAILED)
        return gr_seterr(GR_ESTATE, "%s: writer already failed; destroy it", w->dest);
    return gr_seterr(GR_ESTATE, "%s: write %s", w->dest,
                     w->state == ST_DECLARE ? "before begin" : "after finish");
}

static int write_raw(gr_stw *w, const unsigned char *p, size_t n)
{
    while (n) {
        stw_tensor *t = &w->t[w->cur];
        uint64_t left = t->nbytes - w->cur_done;
        size_t k = left < n ? (size_t)left : n;
        int rc = put_bytes(w, p, k);
        if (rc) return rc;
        w->cur_done += k;
        w->written += k;
        p += k;
        n -= k;
        if ((rc = advance(w))) return rc;
    }
    return 0;
}

int gr_stw_write(gr_stw *w, const void *bytes, size_t n)
{
    int rc = check_writing(w);
    if (rc) return rc;
    if (n > w->total - w->written)
        return fail(w, gr_seterr(GR_EINVAL,
                                 "%s: %zu bytes written but only %llu of the declared %llu remain",
                                 w->dest, n, (unsigned long long)(w->total - w->written),
                                 (unsigned long long)w->total));
    if ((rc = write_raw(w, bytes, n))) return fail(w, rc);
    return 0;
}

int gr_stw_write_f32(gr_stw *w, const float *src, size_t n)
{
    int rc = check_writing(w);
    if (rc) return rc;
    while (n) {
        if (w->cur >= w->n)
            return fail(w, gr_seterr(GR_EINVAL,
                                     "%s: %zu values written past the end of the declared tensors",
                                     w->dest, n));
        const stw_tensor *t = &w->t[w->cur];
        if (!gr_dtype_is_float(t->dtype))
            return fail(w, gr_seterr(GR_EINVAL,
                                     "%s: tensor '%s' is %s; float values can only be written to "
                                     "F32, F16, BF16 or F64 tensors",
                                     w->dest, t->name, gr_dtype_name(t->dtype)));
        size_t esz = gr_dtype_bits(t->dtype) / 8;
        if (w->cur_done % esz)
            return fail(w, gr_seterr(GR_EINVAL,
                                     "%s: tensor '%s': float values written at byte %llu, inside "
                                     "an element",
                                     w->dest, t->name, (unsigned long long)w->cur_done));
        uint64_t left = (t->nbytes - w->cur_done) / esz;
        size_t k = left < n ? (size_t)left : n;
        if (k > F32_BOUNCE) k = F32_BOUNCE;
        if (t->dtype == GR_DT_F32)
            rc = write_raw(w, (const unsigned char *)src, k * esz);
        else if (!(rc = gr_from_f32(t->dtype, src, w->bounce, k)))
            rc = write_raw(w, w->bounce, k * esz);
        if (rc) return fail(w, rc);
        src += k;
        n -= k;
    }
    return 0;
}

static int write_index(gr_stw *w, char **tmp_out)
{
    gr_buf b = {0};
    char *final = NULL;
    int rc = 0, fd = -1;
    size_t *idx = sorted_names(w);
    if (!idx || !(final = path_join(w->dir, INDEX_NAME))) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    gr_buf_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                  (unsigned long long)w->total);
    for (size_t i = 0; i < w->n; i++) {
        const stw_tensor *t = &w->t[idx[i]];
        const char *base = strrchr(w->sh[t->shard].final, '/') + 1;
        gr_buf_puts(&b, i ? ",\n    " : "\n    ");
        gr_buf_json_str(&b, t->name, strlen(t->name));
        gr_buf_puts(&b, ": ");
        gr_buf_json_str(&b, base, strlen(base));
    }
    gr_buf_puts(&b, "\n  }\n}\n");
    if (b.oom) {
        rc = gr_seterr(GR_ENOMEM, "out of memory");
        goto done;
    }
    if ((fd = make_temp(w->dir, final, tmp_out)) < 0) {
        rc = fd;
        goto done;
    }
    if (full_write(fd, b.data, b.len) < 0 || fsync(fd) < 0)
        rc = gr_seterr(GR_EIO, "%s: write: %s", final, strerror(errno));
    if (close(fd) < 0 && !rc) rc = gr_seterr(GR_EIO, "%s: close: %s", final, strerror(errno));
done:
    free(idx);
    free(final);
    gr_buf_free(&b);
    return rc;
}

/* Removes path if present (a stale single file or index that would shadow
 * or contradict what was just written). */
static int remove_stale(const char *dir, const char *name)
{
    char *p = path_join(dir, name);
    if (!p) return gr_seterr(GR_ENOMEM, "out of memory");
    int rc = 0;
    if (unlink(p) < 0 && errno != ENOENT)
        rc = gr_seterr(GR_EIO, "%s: cannot remove stale file: %s", p, strerror(errno));
    free(p);
    return rc;
}

int gr_stw_finish(gr_stw *w)
{
    int rc = check_writing(w);
    if (rc) return rc;
    if (w->written != w->total) {
        const stw_tensor *t = &w->t[w->cur];
        return fail(w, gr_seterr(GR_EINVAL,
                                 "%s: finished after %llu of the declared %llu bytes (tensor '%s' "
                                 "has %llu of %llu)",
                                 w->dest, (unsigned long long)w->written,
                                 (unsigned long long)w->total, t->name,
                                 (unsigned long long)w->cur_done, (unsigned long long)t->nbytes));
    }
    char *index_tmp = NULL;
    if (!w->single_file && w->nsh > 1 && (rc = write_index(w, &index_tmp))) {
        if (index_tmp) unlink(index_tmp);
        free(index_tmp);
        return fail(w, rc);
    }
    for (size_t s = 0; s < w->nsh && !rc; s++) {
        if (rename(w->sh[s].tmp, w->sh[s].final) < 0) {
            rc = gr_seterr(GR_EIO, "%s: rename: %s", w->sh[s].final, strerror(errno));
            break;
        }
        free(w->sh[s].tmp);
        w->sh[s].tmp = NULL;
    }
    if (!rc && !w->single_file) {
        if (index_tmp) {
            /* a model.safetensors left from an earlier write would win over the index */
            if (!(rc = remove_stale(w->dir, SINGLE_NAME))) {
                char *final = path_join(w->dir, INDEX_NAME);
                if (!final)
                    rc = gr_seterr(GR_ENOMEM, "out of memory");
                else if (rename(index_tmp, final) < 0)
                    rc = gr_seterr(GR_EIO, "%s: rename: %s", final, strerror(errno));
                free(final);
            }
        } else {
            rc = remove_stale(w->dir, INDEX_NAME);
        }
    }
    if (index_tmp) {
        if (rc) unlink(index_tmp);
        free(index_tmp);
    }
    if (!rc) rc = fsync_dir(w->dir);
    if (rc) return fail(w, rc);
    w->state = ST_FINISHED;
    return 0;
}

void gr_stw_destroy(gr_stw **pw)
{
    if (!pw || !*pw) return;
    gr_stw *w = *pw;
    if (w->fd >= 0) close(w->fd);
    for (size_t s = 0; s < w->nsh; s++) {
        if (w->sh[s].tmp) unlink(w->sh[s].tmp);
        free(w->sh[s].tmp);
        free(w->sh[s].final);
    }
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w->sh);
    free(w->wbuf);
    free(w->bounce);
    free(w->dir);
    free(w->dest);
    free(w);
    *pw = NULL;
}
