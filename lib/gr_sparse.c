/* gr_sparse: sparse deltas (bitmask + kept values in safetensors) and the one
 * reader for dense or sparse deltas and checkpoints. */
#include "gr_sparse.h"
#include "gr_err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Elements per prefix-count block (a multiple of 64, so blocks start on a
 * whole mask word). */
#define BLOCK_ELEMS 4096u

enum { ROLE_DENSE, ROLE_SHAPE, ROLE_MASK, ROLE_VALUES };

typedef struct sp_tensor {
    gr_sparse_tensor pub;
    const gr_tensor *dense, *mask, *values;
    char *own_name;             /* the folded name of a sparse tensor */
    _Atomic(uint64_t *) prefix; /* prefix[b] = stored elements before block b */
    int bad;                    /* mask failed its check (message kept in err) */
    char *err;
    const char *lo; /* first data byte of its (values') file */
    size_t file;    /* index of that file in the checkpoint */
} sp_tensor;

struct gr_sparse {
    gr_ckpt *ck;
    sp_tensor *t;
    size_t n;
    int has_sparse, is_delta;
    pthread_mutex_t mu;
    size_t *order; /* indices of t in storage order */
};

typedef struct part {
    const char *base; /* points into the stored name (not NUL-terminated at blen) */
    size_t blen;
    int role;
    const gr_tensor *t;
} part;

static int part_cmp(const void *a, const void *b)
{
    const part *x = a, *y = b;
    size_t m = x->blen < y->blen ? x->blen : y->blen;
    int c = memcmp(x->base, y->base, m);
    if (c) return c;
    if (x->blen != y->blen) return x->blen < y->blen ? -1 : 1;
    return x->role - y->role;
}

static int tensor_cmp(const void *a, const void *b)
{
    return strcmp(((const sp_tensor *)a)->pub.name, ((const sp_tensor *)b)->pub.name);
}

uint64_t gr_sparse_mask_bytes(uint64_t n)
{
    return n / 8 + (n % 8 != 0);
}

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* The 64 mask bits for elements [e, e+64) (bits past the mask read as 0). */
static uint64_t bits_at(const uint8_t *mask, uint64_t mbytes, uint64_t e)
{
    uint64_t b = e >> 3;
    unsigned sh = (unsigned)(e & 7);
    uint8_t tmp[16] = {0};
    const uint8_t *p = mask + b;
    if (b + 9 > mbytes) {
        uint64_t avail = b < mbytes ? mbytes - b : 0;
        memcpy(tmp, p, avail > 9 ? 9 : (size_t)avail);
        p = tmp;
    }
    uint64_t w = load_u64(p) >> sh;
    if (sh) w |= (uint64_t)p[8] << (64 - sh);
    return w;
}

/* Stored elements among [a, b). */
static uint64_t count_bits(const uint8_t *mask, uint64_t mbytes, uint64_t a, uint64_t b)
{
    uint64_t c = 0;
    while (a < b) {
        uint64_t take = b - a < 64 ? b - a : 64;
        uint64_t w = bits_at(mask, mbytes, a);
        if (take < 64) w &= (UINT64_C(1) << take) - 1;
        c += (uint64_t)__builtin_popcountll(w);
        a += take;
    }
    return c;
}

static int fold_sparse(gr_sparse *s, sp_tensor *o, const part *p, size_t np, const char *file)
{
    const gr_tensor *sh = NULL, *mk = NULL, *vl = NULL;
    size_t blen = p[0].blen;
    char *name = malloc(blen + 1);
    if (!name) return gr_seterr(GR_ENOMEM, "out of memory");
    memcpy(name, p[0].base, blen);
    name[blen] = 0;
    o->own_name = name;
    o->pub.name = name;
    for (size_t i = 0; i < np; i++) {
        const gr_tensor **slot = p[i].role == ROLE_SHAPE ? &sh : p[i].role == ROLE_MASK ? &mk : &vl;
        if (p[i].role == ROLE_DENSE)
            return gr_seterr(GR_EFORMAT,
                             "%s: tensor '%s' is stored both dense and sparse (%s parts present)",
                             file, name, GR_SPARSE_SEP);
        *slot = p[i].t;
    }
    if (!sh || !mk || !vl)
        return gr_seterr(GR_EFORMAT, "%s: sparse tensor '%s' lacks its '%s' part", file, name,
                         !sh   ? GR_SPARSE_SHAPE_SFX
                         : !mk ? GR_SPARSE_MASK_SFX
                               : GR_SPARSE_VALUES_SFX);
    if (sh->dtype != GR_DT_I64 || sh->ndim != 1 || sh->shape[0] > GR_ST_MAX_DIMS)
        return gr_seterr(GR_EFORMAT,
                         "%s: sparse tensor '%s': '%s%s' must be I64 [ndim] with ndim <= %d", file,
                         name, name, GR_SPARSE_SHAPE_SFX, GR_ST_MAX_DIMS);
    o->pub.ndim = (int)sh->shape[0];
    uint64_t n = 1;
    for (int d = 0; d < o->pub.ndim; d++) {
        int64_t v;
        memcpy(&v, (const char *)sh->data + 8 * d, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = (int64_t)__builtin_bswap64((uint64_t)v);
#endif
        if (v < 0)
            return gr_seterr(GR_EFORMAT, "%s: sparse tensor '%s': negative dimension %lld", file,
                             name, (long long)v);
        if (v && n > UINT64_MAX / 64 / (uint64_t)v)
            return gr_seterr(GR_EFORMAT, "%s: sparse tensor '%s': element count overflows", file,
                             name);
        n *= (uint64_t)v;
        o->pub.shape[d] = v;
    }
    o->pub.nelem = n;
    if (mk->dtype != GR_DT_U8 || mk->ndim != 1 || (uint64_t)mk->shape[0] != gr_sparse_mask_bytes(n))
        return gr_seterr(GR_EFORMAT,
                         "%s: sparse tensor '%s': '%s%s' must be U8 [%llu] for %llu elements", file,
                         name, name, GR_SPARSE_MASK_SFX,
                         (unsigned long long)gr_sparse_mask_bytes(n), (unsigned long long)n);
    if (!gr_dtype_is_float(vl->dtype) || vl->ndim != 1 || (uint64_t)vl->shape[0] > n)
        return gr_seterr(GR_EFORMAT,
                         "%s: sparse tensor '%s': '%s%s' must be 1-D of a float dtype with at "
                         "most %llu elements",
                         file, name, name, GR_SPARSE_VALUES_SFX, (unsigned long long)n);
    o->pub.dtype = vl->dtype;
    o->pub.nnz = (uint64_t)vl->shape[0];
    o->pub.is_sparse = 1;
    o->pub.file = vl->file;
    o->mask = mk;
    o->values = vl;
    s->has_sparse = 1;
    return 0;
}

static int stored_cmp(const void *a, const void *b, void *ctx)
{
    const gr_sparse *s = ctx;
    const sp_tensor *x = &s->t[*(const size_t *)a], *y = &s->t[*(const size_t *)b];
    const gr_tensor *dx = x->dense ? x->dense : x->values, *dy = y->dense ? y->dense : y->values;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    uintptr_t px = (uintptr_t)dx->data, py = (uintptr_t)dy->data;
    return px < py ? -1 : px > py;
}

/* Files of the checkpoint and the first data byte of each, and the tensors
 * in the order their data are stored (reading in that order keeps the
 * kernel's fault-around from mapping pages already released). */
static int storage_order(gr_sparse *s)
{
    size_t nf = gr_ckpt_nfiles(s->ck);
    s->order = malloc((s->n ? s->n : 1) * sizeof *s->order);
    if (!s->order) return gr_seterr(GR_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n; i++) {
        sp_tensor *o = &s->t[i];
        const gr_tensor *d = o->dense ? o->dense : o->values;
        s->order[i] = i;
        for (size_t f = 0; f < nf; f++) {
            const gr_st *st = gr_ckpt_file(s->ck, f);
            if (strcmp(gr_st_path(st), d->file)) continue;
            o->file = f;
            o->lo = gr_st_count(st) ? gr_st_tensor(st, 0)->data : NULL;
            break;
        }
    }
    qsort_r(s->order, s->n, sizeof *s->order, stored_cmp, s);
    return 0;
}

const gr_sparse_tensor *gr_sparse_stored(const gr_sparse *s, size_t i)
{
    return i < s->n ? &s->t[s->order[i]].pub : NULL;
}

gr_sparse *gr_sparse_wrap(gr_ckpt *ck)
{
    gr_sparse *s = NULL;
    part *parts = NULL;
    if (!ck) return NULL;
    s = calloc(1, sizeof *s);
    size_t nt = gr_ckpt_count(ck);
    parts = calloc(nt ? nt : 1, sizeof *parts);
    if (!s || !parts) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->ck = ck;
    for (size_t i = 0; i < nt; i++) {
        const gr_tensor *t = gr_ckpt_tensor(ck, i);
        const char *sep = strstr(t->name, GR_SPARSE_SEP);
        parts[i].t = t;
        parts[i].base = t->name;
        if (!sep) {
            parts[i].blen = strlen(t->name);
            parts[i].role = ROLE_DENSE;
            continue;
        }
        parts[i].blen = (size_t)(sep - t->name);
        if (!strcmp(sep, GR_SPARSE_SHAPE_SFX))
            parts[i].role = ROLE_SHAPE;
        else if (!strcmp(sep, GR_SPARSE_MASK_SFX))
            parts[i].role = ROLE_MASK;
        else if (!strcmp(sep, GR_SPARSE_VALUES_SFX))
            parts[i].role = ROLE_VALUES;
        else {
            gr_seterr(GR_EFORMAT,
                      "%s: tensor '%s': unknown sparse part (names holding '%s' are reserved for "
                      "%s, %s and %s)",
                      t->file, t->name, GR_SPARSE_SEP, GR_SPARSE_SHAPE_SFX, GR_SPARSE_MASK_SFX,
                      GR_SPARSE_VALUES_SFX);
            goto fail;
        }
    }
    qsort(parts, nt, sizeof *parts, part_cmp);
    s->t = calloc(nt ? nt : 1, sizeof *s->t);
    if (!s->t) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nt;) {
        size_t j = i + 1;
        while (j < nt && parts[j].blen == parts[i].blen &&
               !memcmp(parts[j].base, parts[i].base, parts[i].blen))
            j++;
        sp_tensor *o = &s->t[s->n++];
        if (j == i + 1 && parts[i].role == ROLE_DENSE) {
            const gr_tensor *t = parts[i].t;
            o->dense = t;
            o->pub.name = t->name;
            o->pub.dtype = t->dtype;
            o->pub.ndim = t->ndim;
            memcpy(o->pub.shape, t->shape, sizeof o->pub.shape);
            o->pub.nelem = t->nelem;
            o->pub.nnz = t->nelem;
            o->pub.file = t->file;
        } else if (fold_sparse(s, o, parts + i, j - i, parts[i].t->file)) {
            goto fail;
        }
        i = j;
    }
    qsort(s->t, s->n, sizeof *s->t, tensor_cmp);
    if (storage_order(s)) goto fail;
    const char *kind = gr_ckpt_meta_get(ck, GR_SPARSE_META_KIND);
    s->is_delta =
        s->has_sparse ||
        (kind && (!strcmp(kind, GR_SPARSE_KIND_DELTA) || !strcmp(kind, GR_SPARSE_KIND_SPARSE)));
    free(parts);
    return s;
fail:
    free(parts);
    if (!s)
        gr_ckpt_close(&ck);
    else
        gr_sparse_close(&s);
    return NULL;
}

gr_sparse *gr_sparse_open(const char *path)
{
    gr_ckpt *ck = gr_ckpt_open(path);
    if (!ck) return NULL;
    return gr_sparse_wrap(ck);
}

void gr_sparse_close(gr_sparse **sp)
{
    if (!sp || !*sp) return;
    gr_sparse *s = *sp;
    for (size_t i = 0; i < s->n; i++) {
        free(s->t[i].own_name);
        free(atomic_load(&s->t[i].prefix));
        free(s->t[i].err);
    }
    free(s->t);
    free(s->order);
    gr_ckpt_close(&s->ck);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *sp = NULL;
}

const gr_ckpt *gr_sparse_ckpt(const gr_sparse *s)
{
    return s->ck;
}

size_t gr_sparse_count(const gr_sparse *s)
{
    return s->n;
}

const gr_sparse_tensor *gr_sparse_at(const gr_sparse *s, size_t i)
{
    return i < s->n ? &s->t[i].pub : NULL;
}

const gr_sparse_tensor *gr_sparse_find(const gr_sparse *s, const char *name)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->t[mid].pub.name);
        if (!c) return &s->t[mid].pub;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int gr_sparse_has_sparse(const gr_sparse *s)
{
    return s->has_sparse;
}

int gr_sparse_is_delta(const gr_sparse *s)
{
    return s->is_delta;
}

const gr_tensor *gr_sparse_dense(const gr_sparse *s, const gr_sparse_tensor *t)
{
    (void)s;
    return ((const sp_tensor *)t)->dense;
}

/* Builds the block prefix counts of a sparse tensor and checks the mask
 * against the values (popcount = nnz, padding bits zero). Called with mu held. */
static int build_prefix(sp_tensor *o)
{
    const uint8_t *mask = o->mask->data;
    uint64_t n = o->pub.nelem, mbytes = gr_sparse_mask_bytes(n);
    uint64_t nb = n / BLOCK_ELEMS + 1;
    uint64_t *pre = malloc((size_t)(nb + 1) * sizeof *pre);
    if (!pre) return gr_seterr(GR_ENOMEM, "out of memory");
    uint64_t c = 0;
    for (uint64_t b = 0; b <= nb; b++) {
        pre[b] = c;
        if (b == nb) break;
        uint64_t a = b * BLOCK_ELEMS, e = a + BLOCK_ELEMS;
        if (a > n) a = n;
        if (e > n) e = n;
        c += count_bits(mask, mbytes, a, e);
    }
    if (n % 8 && (mask[mbytes - 1] >> (n % 8))) {
        free(pre);
        return gr_seterr(GR_EFORMAT, "%s: sparse tensor '%s': padding bits of the mask are set",
                         o->mask->file, o->pub.name);
    }
    if (c != o->pub.nnz) {
        free(pre);
        return gr_seterr(GR_EFORMAT,
                         "%s: sparse tensor '%s': the mask marks %llu elements but %llu values "
                         "are stored",
                         o->mask->file, o->pub.name, (unsigned long long)c,
                         (unsigned long long)o->pub.nnz);
    }
    atomic_store(&o->prefix, pre);
    return 0;
}

static int ensure_prefix(gr_sparse *s, sp_tensor *o)
{
    if (atomic_load(&o->prefix)) return 0;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (o->bad)
        rc = gr_seterr(GR_EFORMAT, "%s", o->err ? o->err : "corrupt mask");
    else if (!atomic_load(&o->prefix)) {
        rc = build_prefix(o);
        if (rc == GR_EFORMAT) {
            o->bad = 1;
            o->err = strdup(gr_errmsg());
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int gr_sparse_read_f32(gr_sparse *s, const gr_sparse_tensor *t, uint64_t off, uint64_t n,
                       float *dst)
{
    sp_tensor *o = (sp_tensor *)t;
    if (off > t->nelem || n > t->nelem - off)
        return gr_seterr(GR_EINVAL, "%s: tensor '%s': elements [%llu, %llu) outside its %llu",
                         t->file, t->name, (unsigned long long)off, (unsigned long long)(off + n),
                         (unsigned long long)t->nelem);
    if (!n) return 0;
    if (o->dense) return gr_tensor_read_f32(o->dense, off, n, dst);
    int rc = ensure_prefix(s, o);
    if (rc) return rc;
    const uint8_t *mask = o->mask->data;
    uint64_t mbytes = gr_sparse_mask_bytes(t->nelem);
    uint64_t blk = off / BLOCK_ELEMS;
    uint64_t vi = atomic_load(&o->prefix)[blk] + count_bits(mask, mbytes, blk * BLOCK_ELEMS, off);
    uint64_t c = count_bits(mask, mbytes, off, off + n);
    /* Convert the c stored values into the tail of dst, then spread them
     * forward in place: the read position never falls behind the write
     * position because the elements left always outnumber the values left. */
    float *src = dst + (n - c);
    if (c && (rc = gr_tensor_read_f32(o->values, vi, c, src))) return rc;
    float *out = dst;
    for (uint64_t e = off, end = off + n; e < end;) {
        uint64_t take = end - e < 64 ? end - e : 64;
        uint64_t w = bits_at(mask, mbytes, e);
        if (take < 64) w &= (UINT64_C(1) << take) - 1;
        if (!w) {
            memset(out, 0, (size_t)take * sizeof *out);
        } else {
            for (uint64_t k = 0; k < take; k++) {
                float v = (w >> k) & 1 ? *src++ : 0.0f;
                out[k] = v;
            }
        }
        out += take;
        e += take;
    }
    return 0;
}

/* inner: only pages entirely inside [p, p+n) (neighbours may still be in
 * use by a concurrent reader of the next range); else every page touched. */
static void release_pages(const void *p, uint64_t n, int inner)
{
    if (!p || !n) return;
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p, e = a + n, m = (uintptr_t)pg - 1;
    if (inner) {
        a = (a + m) & ~m;
        e &= ~m;
        if (e <= a) return;
    } else {
        a &= ~m;
        e = (e + m) & ~m;
    }
    /* The data live in a read-only file mapping (gr_st maps files with
     * PROT_READ), so dropped pages are simply faulted back from the file. */
    (void)madvise((void *)a, e - a, MADV_DONTNEED);
}

void gr_sparse_release(gr_sparse *s, const gr_sparse_tensor *t)
{
    (void)s;
    const sp_tensor *o = (const sp_tensor *)t;
    /* everything of the file up to the tensor's end: pages of earlier
     * tensors that the kernel's fault-around mapped again go too */
    if (o->dense && o->lo && (const char *)o->dense->data >= o->lo)
        release_pages(o->lo, (uint64_t)((const char *)o->dense->data - o->lo) + o->dense->nbytes,
                      0);
    else if (o->dense)
        release_pages(o->dense->data, o->dense->nbytes, 0);
    if (o->mask) release_pages(o->mask->data, o->mask->nbytes, 0);
    if (o->values) release_pages(o->values->data, o->values->nbytes, 0);
}

void gr_sparse_release_range(gr_sparse *s, const gr_sparse_tensor *t, uint64_t off, uint64_t n)
{
    (void)s;
    const sp_tensor *o = (const sp_tensor *)t;
    if (!o->dense || off > t->nelem || n > t->nelem - off) return;
    uint64_t esz = o->dense->nelem ? o->dense->nbytes / o->dense->nelem : 0;
    release_pages((const char *)o->dense->data + off * esz, n * esz, 1);
}

int gr_sparse_declare(gr_stw *w, const char *name, gr_dtype dt, int ndim, const int64_t *shape,
                      uint64_t nnz)
{
    if (strstr(name, GR_SPARSE_SEP))
        return gr_seterr(GR_EINVAL, "tensor '%s': names holding '%s' are reserved", name,
                         GR_SPARSE_SEP);
    if (ndim < 0 || ndim > GR_ST_MAX_DIMS)
        return gr_seterr(GR_EINVAL, "tensor '%s': %d dimensions", name, ndim);
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] && n > UINT64_MAX / 64 / (uint64_t)shape[d]))
            return gr_seterr(GR_EINVAL, "tensor '%s': bad shape", name);
        n *= (uint64_t)shape[d];
    }
    if (nnz > n)
        return gr_seterr(GR_EINVAL, "tensor '%s': %llu values for %llu elements", name,
                         (unsigned long long)nnz, (unsigned long long)n);
    size_t len = strlen(name) + sizeof GR_SPARSE_VALUES_SFX + 8;
    char *buf = malloc(len);
    if (!buf) return gr_seterr(GR_ENOMEM, "out of memory");
    int64_t sdim = ndim, mlen = (int64_t)gr_sparse_mask_bytes(n), vlen = (int64_t)nnz;
    int rc;
    snprintf(buf, len, "%s%s", name, GR_SPARSE_SHAPE_SFX);
    if ((rc = gr_stw_add(w, buf, GR_DT_I64, 1, &sdim))) goto out;
    snprintf(buf, len, "%s%s", name, GR_SPARSE_MASK_SFX);
    if ((rc = gr_stw_add(w, buf, GR_DT_U8, 1, &mlen))) goto out;
    snprintf(buf, len, "%s%s", name, GR_SPARSE_VALUES_SFX);
    rc = gr_stw_add(w, buf, dt, 1, &vlen);
out:
    free(buf);
    return rc;
}

int gr_sparse_write_shape(gr_stw *w, int ndim, const int64_t *shape)
{
    uint8_t buf[8 * GR_ST_MAX_DIMS];
    if (ndim < 0 || ndim > GR_ST_MAX_DIMS) return gr_seterr(GR_EINVAL, "%d dimensions", ndim);
    for (int d = 0; d < ndim; d++) {
        uint64_t v = (uint64_t)shape[d];
        for (int k = 0; k < 8; k++) buf[8 * d + k] = (uint8_t)(v >> (8 * k));
    }
    return ndim ? gr_stw_write(w, buf, (size_t)ndim * 8) : 0;
}

uint64_t gr_sparse_compress(const float *x, uint64_t n, uint8_t *mask, float *vals)
{
    uint64_t k = 0;
    for (uint64_t i = 0; i < n; i += 8) {
        uint64_t m = n - i < 8 ? n - i : 8;
        uint8_t byte = 0;
        for (uint64_t j = 0; j < m; j++) {
            float v = x[i + j];
            if (v != 0.0f) {
                byte |= (uint8_t)(1u << j);
                vals[k++] = v;
            }
        }
        mask[i / 8] = byte;
    }
    return k;
}

void gr_sparse_expand(const uint8_t *mask, const float *vals, uint64_t n, float *dst)
{
    uint64_t k = 0;
    for (uint64_t i = 0; i < n; i++) dst[i] = (mask[i >> 3] >> (i & 7)) & 1 ? vals[k++] : 0.0f;
}
