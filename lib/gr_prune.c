/* gr_prune: delta sparsifiers on fp32 tensors; random choices from the
 * counter-based generator so masks do not depend on threads or chunking. */
#include "gr_prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gr_err.h"
#include "gr_rng.h"
#include "gr_select.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* `omp simd` asks for vectorisation; unoptimised (sanitizer) builds cannot
 * honour it, which clang reports as a warning. */
#ifdef __clang__
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

/* Elements per block of the element-wise loops: a multiple of 4 so every
 * block starts on a Philox boundary; also the unit of the deterministic
 * reductions (partial sums per block, added in block order). */
#define BLK           2048
#define L1_EPS        1e-7 /* mergekit: no rescale when either L1 norm is below this */
#define DELLA_MAXROW  0xffffffffu
#define INSERTION_MAX 48 /* della rows up to this length use insertion sort */

static const char *const method_names[] = {"none",      "dare",        "darex", "drop",
                                           "magnitude", "breadcrumbs", "della"};
static const char *const rescale_names[] = {"none", "inverse", "l1"};

int gr_prune_method_parse(const char *name, gr_prune_method *out)
{
    for (size_t i = 0; i < sizeof method_names / sizeof *method_names; i++)
        if (name && !strcmp(name, method_names[i])) {
            *out = (gr_prune_method)i;
            return 0;
        }
    return gr_seterr(GR_EINVAL,
                     "prune: method '%s' unknown (expected dare, darex, drop, magnitude, "
                     "breadcrumbs, della or none)",
                     name ? name : "(null)");
}

const char *gr_prune_method_name(gr_prune_method m)
{
    return (unsigned)m < sizeof method_names / sizeof *method_names ? method_names[m] : "?";
}

int gr_rescale_parse(const char *name, gr_rescale *out)
{
    for (size_t i = 0; i < sizeof rescale_names / sizeof *rescale_names; i++)
        if (name && !strcmp(name, rescale_names[i])) {
            *out = (gr_rescale)i;
            return 0;
        }
    return gr_seterr(GR_EINVAL, "prune: rescale '%s' unknown (expected none, inverse or l1)",
                     name ? name : "(null)");
}

const char *gr_rescale_name(gr_rescale r)
{
    if (r == GR_RESCALE_DEFAULT) return "default";
    return (unsigned)r < sizeof rescale_names / sizeof *rescale_names ? rescale_names[r] : "?";
}

void gr_prune_params_init(gr_prune_params *p, gr_prune_method m)
{
    memset(p, 0, sizeof *p);
    p->method = m;
    p->density = 1.0;
    p->gamma = 0.01;
    p->epsilon = 0.15;
    p->q = 0.0;
    p->rescale = GR_RESCALE_DEFAULT;
}

gr_rescale gr_prune_rescale_of(const gr_prune_params *p)
{
    if (p->rescale != GR_RESCALE_DEFAULT) return p->rescale;
    return (p->method == GR_PRUNE_DARE || p->method == GR_PRUNE_DELLA) ? GR_RESCALE_INVERSE
                                                                       : GR_RESCALE_NONE;
}

int gr_prune_check(const gr_prune_params *p, const char *what)
{
    const char *w = what ? what : "prune";
    const char *mn = gr_prune_method_name(p->method);
    if ((unsigned)p->method > GR_PRUNE_DELLA)
        return gr_seterr(GR_EINVAL, "%s: method %d unknown", w, (int)p->method);
    if (p->method == GR_PRUNE_NONE) return 0;
    if (!(p->density > 0.0 && p->density <= 1.0))
        return gr_seterr(GR_EINVAL, "%s: %s: density = %g must be in (0, 1]", w, mn, p->density);
    gr_rescale rs = gr_prune_rescale_of(p);
    if ((unsigned)rs > GR_RESCALE_L1)
        return gr_seterr(GR_EINVAL, "%s: rescale %d unknown", w, (int)rs);
    switch (p->method) {
    case GR_PRUNE_MAGNITUDE:
    case GR_PRUNE_BREADCRUMBS:
        if (rs == GR_RESCALE_INVERSE)
            return gr_seterr(
                GR_EINVAL, "%s: %s: rescale 'inverse' is for random drops; use none or l1", w, mn);
        if (p->method == GR_PRUNE_BREADCRUMBS && !(p->gamma >= 0.0 && p->gamma < 1.0))
            return gr_seterr(GR_EINVAL, "%s: breadcrumbs: gamma = %g must be in [0, 1)", w,
                             p->gamma);
        break;
    case GR_PRUNE_DROP:
        if (rs != GR_RESCALE_NONE)
            return gr_seterr(GR_EINVAL, "%s: drop never rescales (rescale must be none)", w);
        break;
    case GR_PRUNE_DAREX:
        if (p->rescale != GR_RESCALE_DEFAULT && p->rescale != GR_RESCALE_INVERSE)
            return gr_seterr(GR_EINVAL,
                             "%s: darex divides kept entries by q; rescale must be "
                             "inverse (or unset)",
                             w);
        if (p->density < 1.0 && !(p->q >= p->density && p->q < 1.0))
            return gr_seterr(GR_EINVAL, "%s: darex: q = %g must be in [density, 1) = [%g, 1)", w,
                             p->q, p->density);
        break;
    case GR_PRUNE_DELLA:
        if (!(p->epsilon >= 0.0))
            return gr_seterr(GR_EINVAL, "%s: della: epsilon = %g must be >= 0", w, p->epsilon);
        if (p->density < 1.0 && !(p->density - p->epsilon > 0.0))
            return gr_seterr(GR_EINVAL,
                             "%s: della: density - epsilon = %g - %g must be > 0 (keep "
                             "probabilities in (0, 1))",
                             w, p->density, p->epsilon);
        if (p->density < 1.0 && !(p->density + p->epsilon < 1.0))
            return gr_seterr(GR_EINVAL,
                             "%s: della: density + epsilon = %g + %g must be < 1 (keep "
                             "probabilities in (0, 1))",
                             w, p->density, p->epsilon);
        break;
    default:
        break;
    }
    return 0;
}

void gr_prune_stats_add(gr_prune_stats *acc, const gr_prune_stats *s)
{
    acc->n += s->n;
    acc->kept += s->kept;
    acc->l1_before += s->l1_before;
    acc->l1_after += s->l1_after;
    /* L2 norms add in quadrature. */
    acc->l2_before = sqrt(acc->l2_before * acc->l2_before + s->l2_before * s->l2_before);
    acc->l2_after = sqrt(acc->l2_after * acc->l2_after + s->l2_after * s->l2_after);
}

static int nthreads(int threads, size_t n)
{
    if (threads < 1) threads = 1;
    size_t blocks = (n + BLK - 1) / BLK;
    if (blocks < 1) blocks = 1;
    return (size_t)threads > blocks ? (int)blocks : threads;
}

/* Sum |x|, sum x^2 and the nonzero count over x[0..n), reduced per block
 * of BLK elements and then in block order: the same bits for any thread
 * count. */
static int norms(const float *x, size_t n, int threads, double *l1, double *l2sq, uint64_t *nnz)
{
    size_t nb = (n + BLK - 1) / BLK;
    double *part = malloc((nb ? nb : 1) * 3 * sizeof *part);
    if (!part) return gr_seterr(GR_ENOMEM, "prune: out of memory");
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * BLK, hi = lo + BLK < n ? lo + BLK : n;
        double a = 0, q = 0, z = 0;
        for (size_t i = lo; i < hi; i++) {
            double v = x[i];
            a += fabs(v);
            q += v * v;
            z += x[i] != 0.0f;
        }
        part[3 * b] = a, part[3 * b + 1] = q, part[3 * b + 2] = z;
    }
    double a = 0, q = 0, z = 0;
    for (size_t b = 0; b < nb; b++) a += part[3 * b], q += part[3 * b + 1], z += part[3 * b + 2];
    free(part);
    if (l1) *l1 = a;
    if (l2sq) *l2sq = q;
    if (nnz) *nnz = (uint64_t)z;
    return 0;
}

/* The same sums the plain way (reference). */
static void norms_ref(const float *x, size_t n, double *l1, double *l2sq, uint64_t *nnz)
{
    double a = 0, q = 0;
    uint64_t z = 0;
    for (size_t i = 0; i < n; i++) {
        a += fabs((double)x[i]);
        q += (double)x[i] * x[i];
        z += x[i] != 0.0f;
    }
    *l1 = a, *l2sq = q, *nnz = z;
}

/* ---- element-wise kernels (fast) ---- */

/* keep ? x : +0, by masking the bits (branch-free: vectorises even under
 * -ftrapping-math). */
static inline float keep_or_zero(float x, int keep)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    b &= 0u - (uint32_t)keep;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* In-block tie limit for the "index < tie_end" test, as a 32-bit bound. */
static inline int block_ties(size_t tie_end, size_t lo, size_t len)
{
    return tie_end <= lo ? 0 : tie_end - lo >= len ? (int)len : (int)(tie_end - lo);
}

/* Uniforms are multiples of 2^-24, so u < d (in double) holds exactly when
 * u < ceil(d 2^24) 2^-24, a float: the hot loops compare floats only. */
static float keep_threshold(double d)
{
    return (float)(ceil(d * 16777216.0) / 16777216.0);
}

static void random_block(float *restrict xb, const float *restrict u, int m, float thr, float scale)
{
#pragma omp simd
    for (int j = 0; j < m; j++) xb[j] = keep_or_zero(xb[j] * scale, u[j] < thr);
}

/* Keeps x[i] with probability d (u < d), multiplying kept values by scale. */
static int apply_random(float *x, size_t n, uint64_t first, double d, float scale, uint64_t key,
                        int threads)
{
    size_t nb = (n + BLK - 1) / BLK;
    int nt = nthreads(threads, n);
    const float thr = keep_threshold(d);
    float *ubuf = malloc((size_t)nt * BLK * sizeof *ubuf);
    if (!ubuf) return gr_seterr(GR_ENOMEM, "prune: out of memory");
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t b = 0; b < nb; b++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *u = ubuf + (size_t)t * BLK;
        size_t lo = b * BLK, len = lo + BLK < n ? BLK : n - lo;
        gr_rng_fill_uniform(key, first + lo, u, len);
        random_block(x + lo, u, (int)len, thr, scale);
    }
    free(ubuf);
    return 0;
}

static void window_block(float *restrict xb, int m, uint32_t hk, int ht, uint32_t lk, int lt)
{
#pragma omp simd
    for (int j = 0; j < m; j++) {
        uint32_t a = gr_sel_abskey(xb[j]);
        int in_lo = (a > lk) | ((a == lk) & (j < lt));
        int in_hi = (a > hk) | ((a == hk) & (j < ht));
        xb[j] = keep_or_zero(xb[j], in_lo & (in_hi ^ 1));
    }
}

/* Keeps the elements selected by lo and not by hi (top-k windows). */
static void apply_window(float *x, size_t n, const gr_topk *hi, const gr_topk *lo, int threads)
{
    size_t nb = (n + BLK - 1) / BLK;
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t a = b * BLK, len = a + BLK < n ? BLK : n - a;
        window_block(x + a, (int)len, hi->key, block_ties(hi->tie_end, a, len), lo->key,
                     block_ties(lo->tie_end, a, len));
    }
}

static void scale_all(float *x, size_t n, float f, int threads)
{
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= f;
}

/* Stable ascending sort of (key, index) pairs: LSD radix on 31-bit keys, or
 * insertion sort for short rows. k, ix: input; k2, ix2: scratch of m. Sorted
 * output ends in ix. */
static void sort_pairs(uint32_t *k, uint32_t *ix, uint32_t *k2, uint32_t *ix2, size_t m)
{
    if (m <= INSERTION_MAX) {
        for (size_t a = 1; a < m; a++) {
            uint32_t kv = k[a], iv = ix[a];
            size_t b = a;
            while (b > 0 && k[b - 1] > kv) {
                k[b] = k[b - 1], ix[b] = ix[b - 1];
                b--;
            }
            k[b] = kv, ix[b] = iv;
        }
        return;
    }
    static const int shifts[3] = {0, 11, 22};
    size_t cnt[2048];
    for (int p = 0; p < 3; p++) {
        const int sh = shifts[p];
        memset(cnt, 0, sizeof cnt);
        for (size_t a = 0; a < m; a++) cnt[(k[a] >> sh) & 2047]++;
        size_t sum = 0;
        for (size_t c = 0; c < 2048; c++) {
            size_t t = cnt[c];
            cnt[c] = sum;
            sum += t;
        }
        for (size_t a = 0; a < m; a++) {
            size_t dst = cnt[(k[a] >> sh) & 2047]++;
            k2[dst] = k[a], ix2[dst] = ix[a];
        }
        uint32_t *t = k;
        k = k2, k2 = t;
        t = ix, ix = ix2, ix2 = t;
    }
    /* Three passes: the result sits in the buffers passed as k2/ix2; copy back. */
    memcpy(k2, k, m * sizeof *k);
    memcpy(ix2, ix, m * sizeof *ix);
}

/* Keep probability of the element at descending position pos in a row of
 * m: p = (d - eps) + 2 eps r, r = (m-1-pos)/(m-1); r = 1/2 for a row of one
 * (no rank to speak of: p = d). */
static inline double della_p(double d, double eps, size_t pos, size_t m)
{
    double r = m > 1 ? (double)(m - 1 - pos) / (double)(m - 1) : 0.5;
    return (d - eps) + 2.0 * eps * r;
}

static int apply_della(float *x, size_t n, size_t row_len, double d, double eps, int inverse,
                       uint64_t key, int threads)
{
    const size_t rows = n / row_len, m = row_len;
    int nt = threads < 1 ? 1 : threads;
    if ((size_t)nt > rows) nt = (int)rows;
    if (nt < 1) nt = 1;
    /* Per-thread scratch, allocated up front: keys and indices (twice, for
     * the radix sort) and the row's uniforms. */
    uint32_t *kbuf = malloc((size_t)nt * m * 4 * sizeof *kbuf);
    float *ubuf = malloc((size_t)nt * m * sizeof *ubuf);
    if (!kbuf || !ubuf) {
        free(kbuf), free(ubuf);
        return gr_seterr(GR_ENOMEM, "prune: della: out of memory for rows of %zu", row_len);
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (size_t r = 0; r < rows; r++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        uint32_t *k = kbuf + (size_t)t * m * 4, *k2 = k + m, *ix = k2 + m, *ix2 = ix + m;
        float *u = ubuf + (size_t)t * m;
        float *xr = x + r * m;
        for (size_t j = 0; j < m; j++) {
            k[j] = 0x7fffffffu - gr_sel_abskey(xr[j]); /* ascending = |x| descending */
            ix[j] = (uint32_t)j;
        }
        sort_pairs(k, ix, k2, ix2, m);
        gr_rng_fill_uniform(key, r * m, u, m);
        for (size_t pos = 0; pos < m; pos++) {
            uint32_t j = ix[pos];
            double p = della_p(d, eps, pos, m);
            float v = xr[j];
            xr[j] = (double)u[j] < p ? (inverse ? (float)((double)v / p) : v) : 0.0f;
        }
    }
    free(kbuf);
    free(ubuf);
    return 0;
}

/* Breadcrumbs counts: keep the n_keep entries just below the n_top largest. */
static void breadcrumb_counts(double d, double gamma, uint64_t n, uint64_t *n_top, uint64_t *n_keep)
{
    uint64_t keep = (uint64_t)floor(d * (double)n);
    uint64_t top = (uint64_t)floor(gamma * (double)n);
    if (keep > n) keep = n;
    if (top > n - keep) top = n - keep; /* n_bottom would be negative */
    *n_top = top;
    *n_keep = keep;
}

static int check_shape(const gr_prune_params *p, const char *name, size_t n, size_t row_len)
{
    if (p->method == GR_PRUNE_DELLA && n > 0) {
        if (row_len == 0 || n % row_len)
            return gr_seterr(GR_EINVAL, "prune: tensor '%s': row length %zu does not divide %zu",
                             name ? name : "?", row_len, n);
        if (row_len > DELLA_MAXROW)
            return gr_seterr(GR_EINVAL,
                             "prune: tensor '%s': della rows of %zu elements exceed 2^32",
                             name ? name : "?", row_len);
    }
    return 0;
}

/* Parameter and shape checks, messages naming the tensor. */
static int check_tensor(const gr_prune_params *p, const char *name, size_t n, size_t row_len)
{
    char what[256];
    snprintf(what, sizeof what, "prune: tensor '%s'", name ? name : "?");
    int rc = gr_prune_check(p, what);
    return rc ? rc : check_shape(p, name, n, row_len);
}

static void fill_stats(gr_prune_stats *st, size_t n, double l1b, double l2b, double l1a, double l2a,
                       uint64_t nnz)
{
    st->n = n;
    st->kept = nnz;
    st->l1_before = l1b, st->l2_before = sqrt(l2b);
    st->l1_after = l1a, st->l2_after = sqrt(l2a);
}

/* L1 rescale factor, or 0 when mergekit would leave the tensor as masked. */
static float l1_factor(double before, double after)
{
    if (before < L1_EPS || after < L1_EPS) return 0.0f;
    return (float)(before / after);
}

/* Factor applied to the kept entries of dare / darex / drop. */
static float random_scale(const gr_prune_params *p)
{
    if (p->method == GR_PRUNE_DAREX) return (float)(1.0 / p->q);
    if (p->method == GR_PRUNE_DARE && gr_prune_rescale_of(p) == GR_RESCALE_INVERSE)
        return (float)(1.0 / p->density);
    return 1.0f;
}

int gr_prune_chunk(const gr_prune_params *p, const char *name, float *x, size_t n, uint64_t first,
                   uint64_t rng_key, int threads)
{
    int rc = check_tensor(p, name, n, n);
    if (rc) return rc;
    if (p->method == GR_PRUNE_NONE || p->density >= 1.0 || n == 0) return 0;
    if ((p->method != GR_PRUNE_DARE && p->method != GR_PRUNE_DAREX && p->method != GR_PRUNE_DROP) ||
        gr_prune_rescale_of(p) == GR_RESCALE_L1)
        return gr_seterr(GR_EINVAL, "prune: tensor '%s': %s%s needs the whole tensor, not a chunk",
                         name ? name : "?", gr_prune_method_name(p->method),
                         gr_prune_rescale_of(p) == GR_RESCALE_L1 ? " with rescale l1" : "");
    return apply_random(x, n, first, p->density, random_scale(p), rng_key, threads);
}

int gr_prune_tensor(const gr_prune_params *p, const char *name, float *x, size_t n, size_t row_len,
                    uint64_t rng_key, int threads, gr_prune_stats *stats)
{
    int rc = check_tensor(p, name, n, row_len);
    if (rc) return rc;
    gr_rescale rs = gr_prune_rescale_of(p);
    double l1b = 0, l2b = 0, l1a, l2a;
    uint64_t nnz;
    if ((stats || rs == GR_RESCALE_L1) && (rc = norms(x, n, threads, &l1b, &l2b, NULL))) return rc;
    int active = p->method != GR_PRUNE_NONE && p->density < 1.0 && n > 0;
    if (active) {
        switch (p->method) {
        case GR_PRUNE_DARE:
        case GR_PRUNE_DROP:
        case GR_PRUNE_DAREX:
            if ((rc = apply_random(x, n, 0, p->density, random_scale(p), rng_key, threads)))
                return rc;
            break;
        case GR_PRUNE_MAGNITUDE: {
            gr_topk lo, hi = {UINT32_MAX, 0, 0};
            size_t k = (size_t)floor(p->density * (double)n);
            if ((rc = gr_select_topk(x, n, k, threads, &lo))) return rc;
            apply_window(x, n, &hi, &lo, threads);
            break;
        }
        case GR_PRUNE_BREADCRUMBS: {
            uint64_t top, keep;
            gr_topk lo, hi;
            breadcrumb_counts(p->density, p->gamma, n, &top, &keep);
            if ((rc = gr_select_topk(x, n, (size_t)top, threads, &hi))) return rc;
            if ((rc = gr_select_topk(x, n, (size_t)(top + keep), threads, &lo))) return rc;
            apply_window(x, n, &hi, &lo, threads);
            break;
        }
        case GR_PRUNE_DELLA:
            rc = apply_della(x, n, row_len, p->density, p->epsilon, rs == GR_RESCALE_INVERSE,
                             rng_key, threads);
            if (rc) return rc;
            break;
        default:
            break;
        }
    }
    if (active && rs == GR_RESCALE_L1) {
        if ((rc = norms(x, n, threads, &l1a, NULL, NULL))) return rc;
        float f = l1_factor(l1b, l1a);
        if (f != 0.0f) scale_all(x, n, f, threads);
    }
    if (stats) {
        if ((rc = norms(x, n, threads, &l1a, &l2a, &nnz))) return rc;
        fill_stats(stats, n, l1b, l2b, l1a, l2a, nnz);
    }
    return 0;
}

/* ---- reference: one plain loop per method ---- */

typedef struct pos_idx {
    uint32_t key;
    size_t i;
} pos_idx;

static int cmp_mag_desc(const void *a, const void *b)
{
    const pos_idx *p = a, *q = b;
    if (p->key != q->key) return p->key > q->key ? -1 : 1;
    return p->i < q->i ? -1 : p->i > q->i;
}

int gr_prune_tensor_ref(const gr_prune_params *p, const char *name, float *x, size_t n,
                        size_t row_len, uint64_t rng_key, gr_prune_stats *stats)
{
    int rc = check_tensor(p, name, n, row_len);
    if (rc) return rc;
    gr_rescale rs = gr_prune_rescale_of(p);
    double l1b, l2b, l1a, l2a;
    uint64_t nnz;
    norms_ref(x, n, &l1b, &l2b, &nnz);
    int active = p->method != GR_PRUNE_NONE && p->density < 1.0 && n > 0;
    if (active) {
        if (p->method == GR_PRUNE_DARE || p->method == GR_PRUNE_DROP ||
            p->method == GR_PRUNE_DAREX) {
            float scale = p->method == GR_PRUNE_DAREX ? (float)(1.0 / p->q)
                          : rs == GR_RESCALE_INVERSE  ? (float)(1.0 / p->density)
                                                      : 1.0f;
            for (size_t i = 0; i < n; i++) {
                float u = gr_rng_uniform(rng_key, i);
                x[i] = (double)u < p->density ? x[i] * scale : 0.0f;
            }
        } else if (p->method == GR_PRUNE_MAGNITUDE || p->method == GR_PRUNE_BREADCRUMBS) {
            uint64_t top = 0, keep = (uint64_t)floor(p->density * (double)n);
            if (p->method == GR_PRUNE_BREADCRUMBS)
                breadcrumb_counts(p->density, p->gamma, n, &top, &keep);
            /* Rank every element by (|x| desc, index asc) with a full sort. */
            pos_idx *v = malloc(n * sizeof *v);
            if (!v) return gr_seterr(GR_ENOMEM, "prune: out of memory");
            for (size_t i = 0; i < n; i++) v[i] = (pos_idx){gr_sel_abskey(x[i]), i};
            qsort(v, n, sizeof *v, cmp_mag_desc);
            for (size_t r = 0; r < n; r++)
                if (r < top || r >= top + keep) x[v[r].i] = 0.0f;
            free(v);
        } else if (p->method == GR_PRUNE_DELLA) {
            size_t m = row_len;
            pos_idx *v = malloc(m * sizeof *v);
            if (!v) return gr_seterr(GR_ENOMEM, "prune: out of memory");
            for (size_t r0 = 0; r0 < n; r0 += m) {
                for (size_t j = 0; j < m; j++) v[j] = (pos_idx){gr_sel_abskey(x[r0 + j]), j};
                qsort(v, m, sizeof *v, cmp_mag_desc);
                for (size_t pos = 0; pos < m; pos++) {
                    size_t i = r0 + v[pos].i;
                    double pk = della_p(p->density, p->epsilon, pos, m);
                    float u = gr_rng_uniform(rng_key, i);
                    if ((double)u < pk) {
                        if (rs == GR_RESCALE_INVERSE) x[i] = (float)((double)x[i] / pk);
                    } else
                        x[i] = 0.0f;
                }
            }
            free(v);
        }
        if (rs == GR_RESCALE_L1) {
            norms_ref(x, n, &l1a, &l2a, &nnz);
            float f = l1_factor(l1b, l1a);
            if (f != 0.0f)
                for (size_t i = 0; i < n; i++) x[i] *= f;
        }
    }
    norms_ref(x, n, &l1a, &l2a, &nnz);
    if (stats) fill_stats(stats, n, l1b, l2b, l1a, l2a, nnz);
    return 0;
}

/* ---- scope: global ---- */

enum { G_COUNT, G_SELECT, G_L1, G_READY };

struct gr_prune_global {
    gr_prune_params p;
    gr_rescale rs;
    int threads;
    int stage;
    gr_gsel *sel;
    uint64_t total, top, keep;
    int r_hi, r_lo;        /* rank slots in sel, or -1 */
    gr_gtopk hi, lo;       /* consumed by apply */
    gr_gtopk hi_l1, lo_l1; /* consumed by the L1 pass */
    double l1_before, l1_after;
    float factor; /* 0: no L1 rescale */
    int unchanged;
};

gr_prune_global *gr_prune_global_new(const gr_prune_params *p, int threads)
{
    if (gr_prune_check(p, "prune (scope global)")) return NULL;
    if (p->method != GR_PRUNE_MAGNITUDE && p->method != GR_PRUNE_BREADCRUMBS &&
        p->method != GR_PRUNE_NONE) {
        gr_seterr(GR_EINVAL,
                  "prune: scope global applies to magnitude and breadcrumbs, not %s (its "
                  "choices are per element or per row)",
                  gr_prune_method_name(p->method));
        return NULL;
    }
    gr_prune_global *g = calloc(1, sizeof *g);
    if (!g) {
        gr_seterr(GR_ENOMEM, "prune: out of memory");
        return NULL;
    }
    g->p = *p;
    g->rs = gr_prune_rescale_of(p);
    g->threads = threads < 1 ? 1 : threads;
    g->sel = gr_gsel_new(GR_SEL_ABS, g->threads);
    if (!g->sel) {
        free(g);
        return NULL;
    }
    g->stage = G_COUNT;
    g->r_hi = g->r_lo = -1;
    gr_gtopk_none(&g->hi);
    gr_gtopk_all(&g->lo);
    return g;
}

void gr_prune_global_destroy(gr_prune_global **g)
{
    if (!g || !*g) return;
    gr_gsel_destroy(&(*g)->sel);
    free(*g);
    *g = NULL;
}

uint64_t gr_prune_global_total(const gr_prune_global *g)
{
    return g->total;
}

uint64_t gr_prune_global_keep(const gr_prune_global *g)
{
    return g->unchanged ? g->total : g->keep;
}

/* Kept-L1 of one tensor under the window (hi, lo), consuming their ties. */
static int window_l1(gr_gtopk *hi, gr_gtopk *lo, const float *x, size_t n, int threads, double *out)
{
    gr_topk th, tl;
    int rc = gr_gtopk_local(hi, x, n, threads, &th);
    if (!rc) rc = gr_gtopk_local(lo, x, n, threads, &tl);
    if (rc) return rc;
    size_t nb = (n + BLK - 1) / BLK;
    double *part = malloc((nb ? nb : 1) * sizeof *part);
    if (!part) return gr_seterr(GR_ENOMEM, "prune: out of memory");
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t a0 = b * BLK, a1 = a0 + BLK < n ? a0 + BLK : n;
        double s = 0;
        for (size_t i = a0; i < a1; i++) {
            uint32_t a = gr_sel_abskey(x[i]);
            int in_lo = (a > tl.key) | ((a == tl.key) & (i < tl.tie_end));
            int in_hi = (a > th.key) | ((a == th.key) & (i < th.tie_end));
            s += (in_lo & !in_hi) ? fabs((double)x[i]) : 0.0;
        }
        part[b] = s;
    }
    double s = 0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    free(part);
    *out = s;
    return 0;
}

int gr_prune_global_feed(gr_prune_global *g, const float *x, size_t n)
{
    int rc = 0;
    double s = 0;
    switch (g->stage) {
    case G_COUNT:
        if ((rc = norms(x, n, g->threads, &s, NULL, NULL))) return rc;
        g->l1_before += s;
        return gr_gsel_feed(g->sel, x, n);
    case G_SELECT:
        return gr_gsel_feed(g->sel, x, n);
    case G_L1:
        if ((rc = window_l1(&g->hi_l1, &g->lo_l1, x, n, g->threads, &s))) return rc;
        g->l1_after += s;
        return 0;
    default:
        return gr_seterr(GR_ESTATE, "prune: feed after the last pass");
    }
}

int gr_prune_global_end_pass(gr_prune_global *g)
{
    int rc;
    if (g->stage == G_COUNT) {
        g->total = gr_gsel_total(g->sel);
        if (g->p.method == GR_PRUNE_NONE || g->p.density >= 1.0 || g->total == 0) {
            g->unchanged = 1;
            g->stage = G_READY;
            return 0;
        }
        g->top = 0;
        g->keep = (uint64_t)floor(g->p.density * (double)g->total);
        if (g->p.method == GR_PRUNE_BREADCRUMBS)
            breadcrumb_counts(g->p.density, g->p.gamma, g->total, &g->top, &g->keep);
        uint64_t ranks[2];
        int m = 0;
        if (g->top > 0) g->r_hi = m, ranks[m++] = g->top - 1;
        if (g->top + g->keep > 0) g->r_lo = m, ranks[m++] = g->top + g->keep - 1;
        if (g->r_lo < 0) gr_gtopk_none(&g->lo);
        if (m == 0) {
            g->stage = G_READY;
            return 0;
        }
        if ((rc = gr_gsel_set_ranks(g->sel, ranks, m))) return rc;
        rc = gr_gsel_end_pass(g->sel);
        if (rc < 0) return rc;
        g->stage = G_SELECT;
        if (rc > 0) return 1;
    } else if (g->stage == G_SELECT) {
        rc = gr_gsel_end_pass(g->sel);
        if (rc < 0) return rc;
        if (rc > 0) return 1;
    } else if (g->stage == G_L1) {
        g->factor = l1_factor(g->l1_before, g->l1_after);
        g->stage = G_READY;
        return 0;
    } else
        return 0;
    /* Selection finished. */
    if (g->r_hi >= 0 && (rc = gr_gsel_topk(g->sel, g->r_hi, &g->hi))) return rc;
    if (g->r_lo >= 0 && (rc = gr_gsel_topk(g->sel, g->r_lo, &g->lo))) return rc;
    if (g->rs == GR_RESCALE_L1) {
        g->hi_l1 = g->hi, g->lo_l1 = g->lo;
        g->stage = G_L1;
        return 1;
    }
    g->stage = G_READY;
    return 0;
}

int gr_prune_global_apply(gr_prune_global *g, float *x, size_t n, gr_prune_stats *stats)
{
    if (g->stage != G_READY)
        return gr_seterr(GR_ESTATE, "prune: apply before the global passes finished");
    int rc;
    double l1b = 0, l2b = 0, l1a, l2a;
    uint64_t nnz;
    if (stats && (rc = norms(x, n, g->threads, &l1b, &l2b, NULL))) return rc;
    if (!g->unchanged) {
        gr_topk th, tl;
        if ((rc = gr_gtopk_local(&g->hi, x, n, g->threads, &th))) return rc;
        if ((rc = gr_gtopk_local(&g->lo, x, n, g->threads, &tl))) return rc;
        apply_window(x, n, &th, &tl, g->threads);
        if (g->factor != 0.0f) scale_all(x, n, g->factor, g->threads);
    }
    if (stats) {
        if ((rc = norms(x, n, g->threads, &l1a, &l2a, &nnz))) return rc;
        fill_stats(stats, n, l1b, l2b, l1a, l2a, nnz);
    }
    return 0;
}
