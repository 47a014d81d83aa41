/* gr_st: maps one safetensors file and validates it exactly as
 * reference/formats.md lists, then serves its tensors by index and name. */
#include "gr_st.h"
#include "gr_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_KEY "__metadata__"

/* One tensor as declared by the header, before data pointers exist. */
typedef struct {
    char *name;
    gr_dtype dtype;
    int ndim;
    int64_t shape[GR_ST_MAX_DIMS];
    uint64_t nelem, begin, end;
} st_entry;

typedef struct {
    st_entry *e;
    size_t n;
    char **mkey, **mval;
    size_t nmeta;
} st_header;

struct gr_st {
    char *path;
    void *map; /* mmap of the whole file; NULL for gr_st_open_mem */
    size_t map_len;
    st_header h;
    gr_tensor *t;   /* [h.n] by offset */
    size_t *byname; /* [h.n] indices into t, sorted by name */
};

static void header_free(st_header *h)
{
    for (size_t i = 0; i < h->n; i++) free(h->e[i].name);
    for (size_t i = 0; i < h->nmeta; i++) {
        free(h->mkey[i]);
        free(h->mval[i]);
    }
    free(h->e);
    free(h->mkey);
    free(h->mval);
    memset(h, 0, sizeof *h);
}

const char *gr_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

struct key_span {
    const char *p;
    size_t len;
};

static int cmp_span(const void *a, const void *b)
{
    const struct key_span *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->p, y->p, x->len);
}

/* gr_json rejects duplicate keys without saying which: find a repeated
 * top-level key (compared as raw text, escapes and all) to name the tensor.
 * Returns 0 and fills name when found. O(n log n): the header is hostile. */
static int find_dup_top_key(const char *s, size_t len, char *name, size_t cap)
{
    size_t nkeys = 0, kcap = 0;
    struct key_span *keys = NULL;
    int depth = 0, expect_key = 0, found = 0;
    /* a scan that tracks strings and nesting depth; the text already failed
     * to parse, so it only has to be safe, not strict */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
            if (j >= len) break;
            if (depth == 1 && expect_key) {
                if (nkeys == kcap) {
                    size_t nc = kcap ? 2 * kcap : 64;
                    struct key_span *nk = realloc(keys, nc * sizeof *nk);
                    if (!nk) break;
                    keys = nk;
                    kcap = nc;
                }
                keys[nkeys].p = s + i + 1;
                keys[nkeys].len = j - i - 1;
                nkeys++;
                expect_key = 0;
            }
            i = j;
        } else if (c == '{' || c == '[') {
            depth++;
            expect_key = depth == 1 && c == '{';
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = 1;
        }
    }
    if (nkeys > 1) qsort(keys, nkeys, sizeof *keys, cmp_span);
    for (size_t k = 1; k < nkeys && !found; k++)
        if (!cmp_span(&keys[k - 1], &keys[k])) {
            size_t n = keys[k].len < cap - 1 ? keys[k].len : cap - 1;
            memcpy(name, keys[k].p, n);
            name[n] = 0;
            found = 1;
        }
    free(keys);
    return found ? 0 : -1;
}

static int cmp_entry_offsets(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Reads one tensor entry (rule 4: dtype known, shape non-negative integers,
 * data_offsets a pair of non-negative integers). */
static int parse_entry(const char *what, const char *name, const gr_json *v, st_entry *e)
{
    if (v->type != GR_JSON_OBJ)
        return gr_seterr(GR_EFORMAT, "%s: tensor '%s': entry is a JSON %s, not an object", what,
                         name, gr_json_type_name(v->type));
    const gr_json *dt = gr_json_get(v, "dtype");
    const gr_json *sh = gr_json_get(v, "shape");
    const gr_json *off = gr_json_get(v, "data_offsets");
    if (!dt || !sh || !off)
        return gr_seterr(GR_EFORMAT, "%s: tensor '%s': missing \"%s\"", what, name,
                         !dt   ? "dtype"
                         : !sh ? "shape"
                               : "data_offsets");
    if (dt->type != GR_JSON_STR)
        return gr_seterr(GR_EFORMAT, "%s: tensor '%s': dtype is a JSON %s, not a string", what,
                         name, gr_json_type_name(dt->type));
    int d = gr_dtype_from_name(dt->str);
    if (d < 0 || strlen(dt->str) != dt->len)
        return gr_seterr(GR_EFORMAT, "%s: tensor '%s': unknown dtype \"%.40s\"", what, name,
                         dt->str);
    e->dtype = (gr_dtype)d;
    if (sh->type != GR_JSON_ARR)
        return gr_seterr(GR_EFORMAT, "%s: tensor '%s': shape is a JSON %s, not an array", what,
                         name, gr_json_type_name(sh->type));
    if (sh->len > GR_ST_MAX_DIMS)
        return gr_seterr(GR_EUNSUP,
                         "%s: tensor '%s': shape has %zu dimensions; graft reads at most %d", what,
                         name, sh->len, GR_ST_MAX_DIMS);
    e->ndim = (int)sh->len;
    for (size_t k = 0; k < sh->len; k++) {
        const gr_json *x = sh->items[k];
        if (x->type != GR_JSON_NUM || !x->is_int || x->i < 0)
            return gr_seterr(GR_EFORMAT,
                             "%s: tensor '%s': shape entry %zu is not a non-negative integer", what,
                             name, k);
        e->shape[k] = x->i;
    }
    if (off->type != GR_JSON_ARR || off->len != 2 || off->items[0]->type != GR_JSON_NUM ||
        off->items[1]->type != GR_JSON_NUM || !off->items[0]->is_int || !off->items[1]->is_int ||
        off->items[0]->i < 0 || off->items[1]->i < 0)
        return gr_seterr(GR_EFORMAT,
                         "%s: tensor '%s': data_offsets is not a pair [BEGIN, END] of non-negative "
                         "integers",
                         what, name);
    e->begin = (uint64_t)off->items[0]->i;
    e->end = (uint64_t)off->items[1]->i;
    return 0;
}

static int parse_metadata(const char *what, const gr_json *v, st_header *h)
{
    if (v->type == GR_JSON_NULL) return 0; /* the reference reads it as an absent Option */
    if (v->type != GR_JSON_OBJ)
        return gr_seterr(GR_EFORMAT, "%s: __metadata__ is a JSON %s, not an object of strings",
                         what, gr_json_type_name(v->type));
    if (v->len == 0) return 0;
    h->mkey = calloc(v->len, sizeof *h->mkey);
    h->mval = calloc(v->len, sizeof *h->mval);
    if (!h->mkey || !h->mval) return gr_seterr(GR_ENOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < v->len; i++) {
        const gr_json *x = v->items[i];
        if (x->type != GR_JSON_STR)
            return gr_seterr(GR_EFORMAT,
                             "%s: __metadata__ value of '%s' is a JSON %s, not a string", what,
                             v->keys[i], gr_json_type_name(x->type));
        if (strlen(v->keys[i]) != v->keylens[i] || strlen(x->str) != x->len)
            return gr_seterr(GR_EUNSUP, "%s: __metadata__ entry '%s' contains a NUL character",
                             what, v->keys[i]);
        h->mkey[i] = strdup(v->keys[i]);
        h->mval[i] = strdup(x->str);
        h->nmeta = i + 1;
        if (!h->mkey[i] || !h->mval[i]) return gr_seterr(GR_ENOMEM, "%s: out of memory", what);
    }
    return 0;
}

/* Rules 5-7 over the entries sorted by offset, in the reference's order:
 * per tensor the offsets first, then the byte size; then the total. */
static int check_layout(const char *what, st_entry *e, size_t n, uint64_t data_len)
{
    char sb[160];
    if (n > 1) qsort(e, n, sizeof *e, cmp_entry_offsets);
    uint64_t prev_end = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = e[i].name;
        if (e[i].end < e[i].begin)
            return gr_seterr(
                GR_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                what, name, (unsigned long long)e[i].begin, (unsigned long long)e[i].end);
        if (e[i].begin != prev_end) {
            if (i == 0)
                return gr_seterr(
                    GR_EFORMAT,
                    "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap: the first "
                    "tensor must begin at 0",
                    what, name, (unsigned long long)e[i].begin, (unsigned long long)e[i].end);
            return gr_seterr(
                GR_EFORMAT,
                "%s: tensor '%s': data_offsets [%llu, %llu] %s tensor '%s', which ends "
                "at %llu (tensors must be back to back)",
                what, name, (unsigned long long)e[i].begin, (unsigned long long)e[i].end,
                e[i].begin > prev_end ? "leave a gap after" : "overlap", e[i - 1].name,
                (unsigned long long)prev_end);
        }
        /* Rule 6 with checked arithmetic. Sub-byte dtypes (F4, F6_*): the
         * safetensors reference computes nelem * bits and rejects a count of
         * bits that is not a multiple of 8 (its MisalignedSlice error) rather
         * than rounding up; graft does the same, so for every accepted tensor
         * the byte size is exactly nelem * bits / 8. */
        uint64_t nelem = 1;
        int overflow = 0;
        for (int d = 0; d < e[i].ndim; d++)
            if (__builtin_mul_overflow(nelem, (uint64_t)e[i].shape[d], &nelem)) overflow = 1;
        uint64_t nbits;
        if (overflow || __builtin_mul_overflow(nelem, (uint64_t)gr_dtype_bits(e[i].dtype), &nbits))
            return gr_seterr(GR_EFORMAT,
                             "%s: tensor '%s': shape %s of %s overflows 64 bits when counting "
                             "elements or bytes",
                             what, name, gr_shape_str(sb, sizeof sb, e[i].ndim, e[i].shape),
                             gr_dtype_name(e[i].dtype));
        if (nbits % 8)
            return gr_seterr(GR_EFORMAT,
                             "%s: tensor '%s': shape %s of %s is %llu bits, not a whole number of "
                             "bytes",
                             what, name, gr_shape_str(sb, sizeof sb, e[i].ndim, e[i].shape),
                             gr_dtype_name(e[i].dtype), (unsigned long long)nbits);
        if (e[i].end - e[i].begin != nbits / 8)
            return gr_seterr(
                GR_EFORMAT,
                "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but shape %s "
                "of %s needs %llu",
                what, name, (unsigned long long)e[i].begin, (unsigned long long)e[i].end,
                (unsigned long long)(e[i].end - e[i].begin),
                gr_shape_str(sb, sizeof sb, e[i].ndim, e[i].shape), gr_dtype_name(e[i].dtype),
                (unsigned long long)(nbits / 8));
        e[i].nelem = nelem;
        prev_end = e[i].end;
    }
    if (prev_end != data_len)
        return gr_seterr(
            GR_EFORMAT,
            "%s: the tensors end at data offset %llu but the file holds %llu data bytes "
            "after the header (%s)",
            what, (unsigned long long)prev_end, (unsigned long long)data_len,
            prev_end < data_len ? "trailing bytes" : "file truncated");
    return 0;
}

/* Parses and validates a header (rules 4-7); fills h on success. */
static int parse_header(const char *what, const char *hdr, size_t hlen, uint64_t data_len,
                        st_header *h)
{
    int rc;
    char jwhat[1100];
    snprintf(jwhat, sizeof jwhat, "%s: header", what);
    memset(h, 0, sizeof *h);
    gr_json *root = gr_json_parse(hdr, hlen, jwhat);
    if (!root) {
        char dup[200];
        if (strstr(gr_errmsg(), "duplicate key") && !find_dup_top_key(hdr, hlen, dup, sizeof dup))
            return gr_seterr(GR_EFORMAT, "%s: tensor '%s': name appears twice in the header", what,
                             dup);
        return gr_errcode() == GR_ENOMEM ? GR_ENOMEM : GR_EFORMAT;
    }
    if (root->type != GR_JSON_OBJ) {
        rc = gr_seterr(GR_EFORMAT, "%s: header is a JSON %s, not an object", what,
                       gr_json_type_name(root->type));
        goto fail;
    }
    if (root->len && !(h->e = calloc(root->len, sizeof *h->e))) {
        rc = gr_seterr(GR_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    for (size_t i = 0; i < root->len; i++) {
        const char *key = root->keys[i];
        if (!strcmp(key, META_KEY) && root->keylens[i] == strlen(META_KEY)) {
            if ((rc = parse_metadata(what, root->items[i], h))) goto fail;
            continue;
        }
        if (strlen(key) != root->keylens[i]) {
            rc = gr_seterr(GR_EUNSUP, "%s: tensor '%s': name contains a NUL character", what, key);
            goto fail;
        }
        st_entry *e = &h->e[h->n];
        if ((rc = parse_entry(what, key, root->items[i], e))) goto fail;
        if (!(e->name = strdup(key))) {
            rc = gr_seterr(GR_ENOMEM, "%s: out of memory", what);
            goto fail;
        }
        h->n++;
    }
    if ((rc = check_layout(what, h->e, h->n, data_len))) goto fail;
    gr_json_free(root);
    return 0;
fail:
    gr_json_free(root);
    header_free(h);
    return rc;
}

int gr_st_check_header(const char *what, const char *hdr, size_t hlen, uint64_t data_len)
{
    st_header h;
    int rc = parse_header(what ? what : "safetensors", hdr, hlen, data_len, &h);
    if (!rc) header_free(&h);
    return rc;
}

static int cmp_byname(const void *a, const void *b, void *ctx)
{
    const gr_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Rules 1-3, then the header; builds st over the bytes base[0..size). */
static int open_bytes(gr_st *st, const unsigned char *base, uint64_t size)
{
    const char *what = st->path;
    if (size < 8)
        return gr_seterr(GR_EFORMAT,
                         "%s: file is %llu bytes, shorter than the 8-byte header length", what,
                         (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | base[i];
    if (n > GR_ST_MAX_HEADER)
        return gr_seterr(GR_EFORMAT, "%s: header length %llu exceeds the limit of %llu bytes", what,
                         (unsigned long long)n, (unsigned long long)GR_ST_MAX_HEADER);
    if (n > size - 8)
        return gr_seterr(GR_EFORMAT,
                         "%s: header length %llu runs past the end of the file (%llu bytes)", what,
                         (unsigned long long)n, (unsigned long long)size);
    int rc = parse_header(what, (const char *)base + 8, (size_t)n, size - 8 - n, &st->h);
    if (rc) return rc;
    const unsigned char *data = base + 8 + n;
    if (st->h.n) {
        st->t = calloc(st->h.n, sizeof *st->t);
        st->byname = malloc(st->h.n * sizeof *st->byname);
        if (!st->t || !st->byname) return gr_seterr(GR_ENOMEM, "%s: out of memory", what);
    }
    for (size_t i = 0; i < st->h.n; i++) {
        const st_entry *e = &st->h.e[i];
        gr_tensor *t = &st->t[i];
        t->name = e->name;
        t->dtype = e->dtype;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->nelem = e->nelem;
        t->nbytes = e->end - e->begin;
        t->data = data + e->begin;
        t->file = st->path;
        st->byname[i] = i;
    }
    if (st->h.n > 1) qsort_r(st->byname, st->h.n, sizeof *st->byname, cmp_byname, st->t);
    /* The JSON parser already refuses duplicate keys; this also holds when it
     * could not check (out of memory), since lookups assume unique names. */
    for (size_t i = 1; i < st->h.n; i++)
        if (!strcmp(st->t[st->byname[i - 1]].name, st->t[st->byname[i]].name))
            return gr_seterr(GR_EFORMAT, "%s: tensor '%s': name appears twice in the header", what,
                             st->t[st->byname[i]].name);
    return 0;
}

gr_st *gr_st_open(const char *path)
{
    gr_st *st = calloc(1, sizeof *st);
    int fd = -1;
    if (!st || !(st->path = strdup(path))) {
        gr_seterr(GR_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gr_seterr(errno == ENOENT ? GR_ENOTFOUND : GR_EIO, "%s: cannot open: %s", path,
                  strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        gr_seterr(GR_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        gr_seterr(GR_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size >= 8) {
        if (size > SIZE_MAX) {
            gr_seterr(GR_EUNSUP, "%s: file too large to map", path);
            goto fail;
        }
        st->map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (st->map == MAP_FAILED) {
            st->map = NULL;
            gr_seterr(GR_EIO, "%s: cannot map: %s", path, strerror(errno));
            goto fail;
        }
        st->map_len = (size_t)size;
    }
    close(fd);
    fd = -1;
    static const unsigned char empty[1];
    if (open_bytes(st, st->map ? st->map : empty, size)) goto fail;
    return st;
fail:
    if (fd >= 0) close(fd);
    gr_st_close(&st);
    return NULL;
}

gr_st *gr_st_open_mem(const char *what, const void *buf, size_t len)
{
    gr_st *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(what ? what : "(memory)"))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        free(st);
        return NULL;
    }
    static const unsigned char empty[1];
    if (open_bytes(st, buf ? buf : empty, buf ? len : 0)) {
        gr_st_close(&st);
        return NULL;
    }
    return st;
}

void gr_st_close(gr_st **pst)
{
    if (!pst || !*pst) return;
    gr_st *st = *pst;
    if (st->map) munmap(st->map, st->map_len);
    header_free(&st->h);
    free(st->t);
    free(st->byname);
    free(st->path);
    free(st);
    *pst = NULL;
}

size_t gr_st_count(const gr_st *st)
{
    return st->h.n;
}

const gr_tensor *gr_st_tensor(const gr_st *st, size_t i)
{
    return i < st->h.n ? &st->t[i] : NULL;
}

const gr_tensor *gr_st_find(const gr_st *st, const char *name)
{
    size_t lo = 0, hi = st->h.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[st->byname[mid]].name, name);
        if (c == 0) return &st->t[st->byname[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t gr_st_meta_count(const gr_st *st)
{
    return st->h.nmeta;
}

const char *gr_st_meta_key(const gr_st *st, size_t i)
{
    return i < st->h.nmeta ? st->h.mkey[i] : NULL;
}

const char *gr_st_meta_get(const gr_st *st, const char *key)
{
    for (size_t i = 0; i < st->h.nmeta; i++)
        if (!strcmp(st->h.mkey[i], key)) return st->h.mval[i];
    return NULL;
}

const char *gr_st_path(const gr_st *st)
{
    return st->path;
}

int gr_tensor_read_f32(const gr_tensor *t, uint64_t off, uint64_t n, float *dst)
{
    if (!gr_dtype_is_float(t->dtype))
        return gr_seterr(GR_EUNSUP, "%s: tensor '%s': dtype %s cannot be read as F32", t->file,
                         t->name, gr_dtype_name(t->dtype));
    if (off > t->nelem || n > t->nelem - off)
        return gr_seterr(GR_EINVAL,
                         "%s: tensor '%s': elements [%llu, %llu) are outside its %llu elements",
                         t->file, t->name, (unsigned long long)off, (unsigned long long)(off + n),
                         (unsigned long long)t->nelem);
    if (n > SIZE_MAX)
        return gr_seterr(GR_EUNSUP, "%s: tensor '%s': range too large", t->file, t->name);
    size_t esz = gr_dtype_bits(t->dtype) / 8;
    return gr_to_f32(t->dtype, (const unsigned char *)t->data + off * esz, dst, (size_t)n);
}
