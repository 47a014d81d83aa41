/* gr_merge: per-tensor merge kernels. The task-vector family runs as one
 * fused, blocked pass over the k deltas (mask, weight, sign election, sum)
 * after O(n) top-k selection; reductions are blocked so results do not
 * depend on the thread count. */
#include "gr_merge.h"

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

#define BLK            2048 /* reduction block; multiple of 4 (Philox boundary) */
#define CB             512  /* combine block: k + 4 rows of CB floats stay in L1/L2 */
#define SLERP_DOT_MAX  0.9995
#define SLERP_NORM_EPS 1e-8
#define TA_DIV_EPS     1e-8 /* |sum w| below this: no normalisation (mergekit) */
#define STOCK_NORM_MIN 1e-6 /* model_stock: clamp of |d_i| |d_j| (mergekit) */
/* model_stock: 1 + (N-1) cos is >= 0 for N unit vectors and 0 when they
 * cancel (mergekit's norm clamp can push it below 0 for tiny deltas, which
 * is kept as mergekit computes it); within this of 0, t = N cos / (1 +
 * (N-1) cos) explodes and the merge fails instead. */
#define STOCK_DEN_MIN  1e-6
#define PCB_CLIP_RATIO 0.0001 /* PCB: |T| clipped at these quantiles (paper code) */
#define PCB_DEN_MIN    1e-12
#define PCB_CHUNK      ((size_t)1 << 20)
#define PCB_SMALL_N    ((size_t)1 << 20) /* per-tensor PCB below this: small selectors */

static const char *const method_names[GR_MERGE_COUNT] = {
    "linear",      "task_arithmetic",  "ties",  "dare_ties",    "dare_linear",
    "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "slerp",
    "pcb",         "model_stock"};

int gr_merge_method_parse(const char *name, gr_merge_method *out)
{
    for (int i = 0; i < GR_MERGE_COUNT; i++)
        if (name && !strcmp(name, method_names[i])) {
            *out = (gr_merge_method)i;
            return 0;
        }
    return gr_seterr(GR_EINVAL,
                     "merge: merge_method '%s' unknown (expected linear, task_arithmetic, ties, "
                     "dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, "
                     "della_linear, slerp, pcb or model_stock)",
                     name ? name : "(null)");
}

const char *gr_merge_method_name(gr_merge_method m)
{
    return (unsigned)m < GR_MERGE_COUNT ? method_names[m] : "?";
}

int gr_consensus_parse(const char *name, gr_consensus *out)
{
    if (name && !strcmp(name, "sum"))
        *out = GR_CONSENSUS_SUM;
    else if (name && !strcmp(name, "count"))
        *out = GR_CONSENSUS_COUNT;
    else
        return gr_seterr(GR_EINVAL, "merge: consensus '%s' unknown (expected sum or count)",
                         name ? name : "(null)");
    return 0;
}

int gr_merge_needs_base(gr_merge_method m)
{
    return m != GR_MERGE_LINEAR;
}

int gr_merge_is_random(gr_merge_method m)
{
    return m == GR_MERGE_DARE_TIES || m == GR_MERGE_DARE_LINEAR || m == GR_MERGE_DELLA ||
           m == GR_MERGE_DELLA_LINEAR;
}

int gr_merge_opts_init(gr_merge_opts *o, const char *method)
{
    gr_merge_method m;
    int rc = gr_merge_method_parse(method, &m);
    if (rc) return rc;
    memset(o, 0, sizeof *o);
    o->method = m;
    o->sparsify = GR_PRUNE_NONE;
    o->consensus = GR_CONSENSUS_NONE;
    o->rescale = GR_RESCALE_DEFAULT;
    o->lambda = 1.0;
    o->t = NAN; /* slerp: required */
    o->pcb_ratio = 0.1;
    o->threads = 1;
    switch (m) {
    case GR_MERGE_LINEAR:
        o->normalize = 1;
        break;
    case GR_MERGE_TIES:
        o->sparsify = GR_PRUNE_MAGNITUDE, o->consensus = GR_CONSENSUS_SUM, o->normalize = 1;
        break;
    case GR_MERGE_DARE_TIES:
        o->sparsify = GR_PRUNE_DARE, o->consensus = GR_CONSENSUS_SUM;
        break;
    case GR_MERGE_DARE_LINEAR:
        o->sparsify = GR_PRUNE_DARE;
        break;
    case GR_MERGE_BREADCRUMBS:
        o->sparsify = GR_PRUNE_BREADCRUMBS;
        break;
    case GR_MERGE_BREADCRUMBS_TIES:
        o->sparsify = GR_PRUNE_BREADCRUMBS, o->consensus = GR_CONSENSUS_SUM;
        break;
    case GR_MERGE_DELLA:
        o->sparsify = GR_PRUNE_DELLA, o->consensus = GR_CONSENSUS_SUM, o->normalize = 1;
        break;
    case GR_MERGE_DELLA_LINEAR:
        o->sparsify = GR_PRUNE_DELLA;
        break;
    default:
        break;
    }
    return 0;
}

static int is_task_vector(gr_merge_method m)
{
    return m >= GR_MERGE_TASK_ARITHMETIC && m <= GR_MERGE_DELLA_LINEAR;
}

static int is_ties_family(gr_merge_method m)
{
    return m == GR_MERGE_TIES || m == GR_MERGE_DARE_TIES || m == GR_MERGE_BREADCRUMBS_TIES ||
           m == GR_MERGE_DELLA;
}

int gr_merge_opts_check(const gr_merge_opts *o)
{
    if ((unsigned)o->method >= GR_MERGE_COUNT)
        return gr_seterr(GR_EINVAL, "merge: merge_method %d unknown", (int)o->method);
    const char *mn = method_names[o->method];
    if (!isfinite(o->lambda))
        return gr_seterr(GR_EINVAL, "merge: %s: lambda = %g is not finite", mn, o->lambda);
    if (o->method == GR_MERGE_SLERP && !(o->t >= 0.0 && o->t <= 1.0))
        return gr_seterr(GR_EINVAL, "merge: slerp: t = %g must be a number in [0, 1] (required)",
                         o->t);
    if (o->method == GR_MERGE_PCB && !(o->pcb_ratio > 0.0 && o->pcb_ratio <= 1.0))
        return gr_seterr(GR_EINVAL, "merge: pcb: ratio = %g must be in (0, 1]", o->pcb_ratio);
    if (is_ties_family(o->method) && o->consensus != GR_CONSENSUS_SUM &&
        o->consensus != GR_CONSENSUS_COUNT)
        return gr_seterr(GR_EINVAL, "merge: %s: consensus must be sum or count", mn);
    if (!is_ties_family(o->method) && o->consensus != GR_CONSENSUS_NONE)
        return gr_seterr(GR_EINVAL,
                         "merge: %s: has no sign election (consensus applies to ties, "
                         "dare_ties, breadcrumbs_ties and della)",
                         mn);
    if (o->sparsify != GR_PRUNE_NONE && !is_task_vector(o->method))
        return gr_seterr(GR_EINVAL, "merge: %s: does not sparsify deltas", mn);
    return 0;
}

void gr_merge_model_init(gr_merge_model *m, uint64_t rng_index)
{
    m->weight = 1.0;
    m->density = 1.0;
    m->gamma = 0.01;
    m->epsilon = 0.15;
    m->rng_index = rng_index;
}

static gr_prune_params params_of(const gr_merge_opts *o, const gr_merge_model *m)
{
    gr_prune_params p;
    gr_prune_params_init(&p, o->sparsify);
    p.density = m->density;
    p.gamma = m->gamma;
    p.epsilon = m->epsilon;
    p.rescale = o->rescale;
    return p;
}

static int validate(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                    float *const *in, int in_kind, const gr_merge_model *models, size_t k)
{
    int rc = gr_merge_opts_check(o);
    if (rc) return rc;
    const char *name = t->name ? t->name : "?", *mn = method_names[o->method];
    if (k < 1) return gr_seterr(GR_EINVAL, "merge: %s: tensor '%s': no models to merge", mn, name);
    if (!base && (o->method != GR_MERGE_LINEAR || in_kind == GR_MERGE_IN_DELTAS))
        return gr_seterr(GR_EINVAL, "merge: %s: tensor '%s': the base model's tensor is needed", mn,
                         name);
    if (o->method == GR_MERGE_SLERP && k != 1)
        return gr_seterr(GR_EINVAL,
                         "merge: slerp: tensor '%s': slerp takes exactly two models, the base and "
                         "one other (got %zu others)",
                         name, k);
    if (o->method == GR_MERGE_MODEL_STOCK && k < 2)
        return gr_seterr(GR_EINVAL,
                         "merge: model_stock: tensor '%s': needs at least two fine-tuned models "
                         "besides the base (got %zu)",
                         name, k);
    for (size_t i = 0; i < k; i++) {
        if (!in[i])
            return gr_seterr(GR_EINVAL, "merge: %s: tensor '%s': model %zu has no data", mn, name,
                             i);
        if (!isfinite(models[i].weight))
            return gr_seterr(GR_EINVAL,
                             "merge: %s: tensor '%s': model %zu: weight = %g is not "
                             "finite",
                             mn, name, i, models[i].weight);
        if (o->sparsify != GR_PRUNE_NONE) {
            char what[256];
            snprintf(what, sizeof what, "merge: tensor '%s': model %zu", name, i);
            gr_prune_params p = params_of(o, &models[i]);
            if ((rc = gr_prune_check(&p, what))) return rc;
        }
    }
    if (o->sparsify == GR_PRUNE_DELLA && t->n > 0 && (t->row_len == 0 || t->n % t->row_len))
        return gr_seterr(GR_EINVAL, "merge: %s: tensor '%s': row length %zu does not divide %zu",
                         mn, name, t->row_len, t->n);
    return 0;
}

static int nthreads(int threads, size_t n)
{
    if (threads < 1) threads = 1;
    size_t blocks = (n + BLK - 1) / BLK;
    if (blocks < 1) blocks = 1;
    return (size_t)threads > blocks ? (int)blocks : threads;
}

static void to_deltas(const float *base, float *const *in, size_t k, size_t n, int threads)
{
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
    for (size_t i = 0; i < k; i++) {
        float *d = in[i];
#pragma omp parallel for num_threads(nt) schedule(static)
        for (size_t j = 0; j < n; j++) d[j] -= base[j];
    }
}

static void to_models(const float *base, float *x, size_t n, int threads)
{
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t j = 0; j < n; j++) x[j] += base[j];
}

/* ---- the task-vector family ---- */

enum { MV_ALL, MV_WINDOW, MV_RAND };

/* How to read model i's delta in the combine pass. */
typedef struct mview {
    int kind;
    float w;        /* weight */
    gr_topk hi, lo; /* MV_WINDOW: keep selected by lo and not by hi */
    double d;       /* MV_RAND: keep iff u < d */
    float scale;    /* MV_RAND: kept * scale */
    uint64_t key;   /* MV_RAND */
} mview;

/* Divisor of the linear family (no election): sum of weights, or 1. */
static float linear_divisor(const mview *mv, size_t k)
{
    float s = 0.0f;
    for (size_t i = 0; i < k; i++) s += mv[i].w;
    return fabsf(s) < TA_DIV_EPS ? 1.0f : s;
}

/* x where keep is 1, +0 where it is 0, by masking the bits: the same
 * result as keep ? x : 0.0f, but branch-free, so the loops vectorise even
 * under -ftrapping-math. */
static inline float keep_or_zero(float x, int keep)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    b &= 0u - (uint32_t)keep;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* In-block tie limit: elements j of the block [lo, lo + len) with j < the
 * result pass the "index < tie_end" test (32-bit, so the loops vectorise). */
static inline int block_ties(size_t tie_end, size_t lo, size_t len)
{
    return tie_end <= lo ? 0 : tie_end - lo >= len ? (int)len : (int)(tie_end - lo);
}

/* Computes u = w * pruned(delta) for one block of one model. */
static void block_u(const mview *v, const float *restrict d, size_t lo, size_t len,
                    float *restrict u, float *restrict tmp)
{
    const float w = v->w;
    const int n = (int)len;
    switch (v->kind) {
    case MV_ALL:
#pragma omp simd
        for (int j = 0; j < n; j++) u[j] = w * d[j];
        break;
    case MV_WINDOW: {
        const uint32_t hk = v->hi.key, lk = v->lo.key;
        const int ht = block_ties(v->hi.tie_end, lo, len), lt = block_ties(v->lo.tie_end, lo, len);
#pragma omp simd
        for (int j = 0; j < n; j++) {
            uint32_t a = gr_sel_abskey(d[j]);
            int in_lo = (a > lk) | ((a == lk) & (j < lt));
            int in_hi = (a > hk) | ((a == hk) & (j < ht));
            u[j] = keep_or_zero(w * d[j], in_lo & !in_hi);
        }
        break;
    }
    case MV_RAND: {
        const float sc = v->scale;
        /* Uniforms are multiples of 2^-24: u < d (in double) holds exactly
         * when u < ceil(d 2^24) 2^-24, which is a float. */
        const float thr = (float)(ceil(v->d * 16777216.0) / 16777216.0);
        gr_rng_fill_uniform(v->key, lo, tmp, len);
#pragma omp simd
        for (int j = 0; j < n; j++) u[j] = keep_or_zero(w * (d[j] * sc), tmp[j] < thr);
        break;
    }
    }
}

/* out = base + lambda * mix(u_0..u_{k-1}) over blocks of CB elements. Each
 * element's sums run over the models in order, so vectorising over elements
 * leaves every result bit unchanged. */
static int combine(const gr_merge_opts *o, const float *base, float *const *in, const mview *mv,
                   size_t k, size_t n, float *out)
{
    const size_t nb = (n + CB - 1) / CB;
    int nt = nthreads(o->threads, n);
    const size_t per = (k + 4) * CB;
    float *scratch = malloc((size_t)nt * per * sizeof *scratch);
    if (!scratch) return gr_seterr(GR_ENOMEM, "merge: out of memory");
    const int cons = o->consensus, norm = o->normalize;
    const float lam = (float)o->lambda, ldiv = linear_divisor(mv, k);
    const int use_lam = o->lambda != 1.0;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t b = 0; b < nb; b++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *u = scratch + (size_t)t * per;
        float *restrict s = u + k * CB, *restrict mixed = s + CB, *restrict div = mixed + CB;
        float *tmp = div + CB;
        const size_t lo = b * CB, len = lo + CB < n ? CB : n - lo;
        const int m = (int)len;
        for (size_t i = 0; i < k; i++) block_u(&mv[i], in[i] + lo, lo, len, u + i * CB, tmp);
        if (cons != GR_CONSENSUS_NONE) {
            /* Elected sign per element: + when the sum (or sign count) is >= 0. */
#pragma omp simd
            for (int j = 0; j < m; j++) s[j] = 0.0f, mixed[j] = 0.0f, div[j] = 0.0f;
            for (size_t i = 0; i < k; i++) {
                const float *restrict ui = u + i * CB;
                if (cons == GR_CONSENSUS_SUM) {
#pragma omp simd
                    for (int j = 0; j < m; j++) s[j] += ui[j];
                } else {
#pragma omp simd
                    for (int j = 0; j < m; j++) s[j] += (float)((ui[j] > 0.0f) - (ui[j] < 0.0f));
                }
            }
            for (size_t i = 0; i < k; i++) {
                const float *restrict ui = u + i * CB;
                const float wi = mv[i].w;
#pragma omp simd
                for (int j = 0; j < m; j++) {
                    float x = ui[j];
                    int pos = s[j] >= 0.0f, gt = x > 0.0f, lt = x < 0.0f;
                    int keep = (pos & gt) | ((pos ^ 1) & lt);
                    mixed[j] += keep_or_zero(x, keep);
                    div[j] += keep_or_zero(wi, keep);
                }
            }
            if (norm) {
#pragma omp simd
                for (int j = 0; j < m; j++) {
                    mixed[j] /= div[j] + (float)(div[j] == 0.0f); /* 0 -> 1 */
                }
            }
        } else {
#pragma omp simd
            for (int j = 0; j < m; j++) mixed[j] = 0.0f;
            for (size_t i = 0; i < k; i++) {
                const float *restrict ui = u + i * CB;
#pragma omp simd
                for (int j = 0; j < m; j++) mixed[j] += ui[j];
            }
            if (norm) {
#pragma omp simd
                for (int j = 0; j < m; j++) mixed[j] /= ldiv;
            }
        }
        if (use_lam) {
#pragma omp simd
            for (int j = 0; j < m; j++) mixed[j] *= lam;
        }
        const float *restrict bb = base + lo;
        float *ob = out + lo;
#pragma omp simd
        for (int j = 0; j < m; j++) ob[j] = bb[j] + mixed[j];
    }
    free(scratch);
    return 0;
}

static int task_vector_merge(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                             float *const *in, const gr_merge_model *models, size_t k, float *out)
{
    const size_t n = t->n;
    mview *mv = calloc(k, sizeof *mv);
    if (!mv) return gr_seterr(GR_ENOMEM, "merge: out of memory");
    int rc = 0;
    for (size_t i = 0; i < k && !rc; i++) {
        mview *v = &mv[i];
        v->kind = MV_ALL;
        v->w = (float)models[i].weight;
        gr_prune_params p = params_of(o, &models[i]);
        gr_rescale rs = gr_prune_rescale_of(&p);
        uint64_t key = gr_rng_key(o->seed, t->name, models[i].rng_index);
        if (p.method == GR_PRUNE_NONE || p.density >= 1.0 || n == 0) continue;
        if (p.method == GR_PRUNE_DELLA || rs == GR_RESCALE_L1) {
            /* Needs whole-tensor information: prune in place first. */
            rc = gr_prune_tensor(&p, t->name, in[i], n, t->row_len, key, o->threads, NULL);
        } else if (p.method == GR_PRUNE_MAGNITUDE) {
            v->kind = MV_WINDOW;
            v->hi = (gr_topk){UINT32_MAX, 0, 0};
            rc = gr_select_topk(in[i], n, (size_t)floor(p.density * (double)n), o->threads, &v->lo);
        } else if (p.method == GR_PRUNE_BREADCRUMBS) {
            uint64_t keep = (uint64_t)floor(p.density * (double)n);
            uint64_t top = (uint64_t)floor(p.gamma * (double)n);
            if (keep > n) keep = n;
            if (top > n - keep) top = n - keep;
            v->kind = MV_WINDOW;
            rc = gr_select_topk(in[i], n, (size_t)top, o->threads, &v->hi);
            if (!rc) rc = gr_select_topk(in[i], n, (size_t)(top + keep), o->threads, &v->lo);
        } else { /* dare */
            v->kind = MV_RAND;
            v->d = p.density;
            v->scale = rs == GR_RESCALE_INVERSE ? (float)(1.0 / p.density) : 1.0f;
            v->key = key;
        }
    }
    if (!rc) rc = combine(o, base, in, mv, k, n, out);
    free(mv);
    return rc;
}

/* ---- linear ---- */

static int linear_merge(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *const *th,
                        const gr_merge_model *models, size_t k, float *out)
{
    float sw = 0.0f;
    for (size_t i = 0; i < k; i++) sw += (float)models[i].weight;
    if (o->normalize && sw == 0.0f)
        return gr_seterr(GR_EINVAL,
                         "merge: linear: tensor '%s': the weights sum to 0, cannot normalize "
                         "(set normalize: false or change the weights)",
                         t->name ? t->name : "?");
    const size_t n = t->n;
    int nt = nthreads(o->threads, n);
    (void)nt; /* unused when built without OpenMP */
    enum { MAXK = 64 };
    float wbuf[MAXK], *w = k <= MAXK ? wbuf : malloc(k * sizeof *w);
    if (!w) return gr_seterr(GR_ENOMEM, "merge: out of memory");
    for (size_t i = 0; i < k; i++) w[i] = (float)models[i].weight;
    const int norm = o->normalize;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t j = 0; j < n; j++) {
        float acc = 0.0f;
        for (size_t i = 0; i < k; i++) acc += w[i] * th[i][j];
        out[j] = norm ? acc / sw : acc;
    }
    if (w != wbuf) free(w);
    return 0;
}

/* ---- blocked dot products (deterministic for any thread count) ---- */

/* For arrays a[0..m): out[p] for each pair p = (i, j), i <= j, of the
 * sums a_i . a_j, in the order (0,0), (0,1), ..., (0,m-1), (1,1), ... */
static int gram(const float *const *a, size_t m, size_t n, int threads, double *out)
{
    const size_t np = m * (m + 1) / 2, nb = (n + BLK - 1) / BLK;
    double *part = calloc((nb ? nb : 1) * np, sizeof *part);
    if (!part) return gr_seterr(GR_ENOMEM, "merge: out of memory");
    int nt = nthreads(threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * BLK, hi = lo + BLK < n ? lo + BLK : n;
        double *pb = part + b * np;
        size_t p = 0;
        for (size_t i = 0; i < m; i++)
            for (size_t j = i; j < m; j++, p++) {
                double s = 0;
                for (size_t e = lo; e < hi; e++) s += (double)a[i][e] * a[j][e];
                pb[p] = s;
            }
    }
    for (size_t p = 0; p < np; p++) out[p] = 0;
    for (size_t b = 0; b < nb; b++)
        for (size_t p = 0; p < np; p++) out[p] += part[b * np + p];
    free(part);
    return 0;
}

static void gram_ref(const float *const *a, size_t m, size_t n, double *out)
{
    size_t p = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t j = i; j < m; j++, p++) {
            double s = 0;
            for (size_t e = 0; e < n; e++) s += (double)a[i][e] * a[j][e];
            out[p] = s;
        }
}

static size_t pair_index(size_t m, size_t i, size_t j)
{
    /* rows 0..i-1 hold m, m-1, ..., m-i+1 pairs */
    return i * m - i * (i - 1) / 2 + (j - i);
}

/* ---- slerp ---- */

/* Coefficients (s0, s1) from the Gram sums of v0 and v1. */
static void slerp_coef(double t, const double g[3], double *s0, double *s1)
{
    double n0 = sqrt(g[0]), n1 = sqrt(g[2]);
    double a = n0 > SLERP_NORM_EPS ? n0 : 1.0, b = n1 > SLERP_NORM_EPS ? n1 : 1.0;
    double dot = g[1] / (a * b);
    if (fabs(dot) > SLERP_DOT_MAX) { /* nearly colinear: lerp the originals */
        *s0 = 1.0 - t;
        *s1 = t;
        return;
    }
    double th = acos(dot), s = sin(th);
    *s0 = sin(th - th * t) / s;
    *s1 = sin(th * t) / s;
}

static int slerp_merge(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                       const float *v1, float *out, int ref)
{
    const size_t n = t->n;
    const float *v[2] = {base, v1};
    double g[3] = {0, 0, 0}, s0, s1;
    if (ref)
        gram_ref(v, 2, n, g);
    else {
        int rc = gram(v, 2, n, o->threads, g);
        if (rc) return rc;
    }
    slerp_coef(o->t, g, &s0, &s1);
    int nt = ref ? 1 : nthreads(o->threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t j = 0; j < n; j++) out[j] = (float)(s0 * base[j] + s1 * v1[j]);
    return 0;
}

/* ---- model stock ---- */

static int stock_t(const gr_merge_tinfo *t, const double *g, size_t k, double *tt)
{
    double cs = 0;
    size_t pairs = 0;
    for (size_t i = 0; i < k; i++)
        for (size_t j = i + 1; j < k; j++, pairs++) {
            double np = sqrt(g[pair_index(k, i, i)]) * sqrt(g[pair_index(k, j, j)]);
            double c = g[pair_index(k, i, j)] / (np > STOCK_NORM_MIN ? np : STOCK_NORM_MIN);
            cs += c < -1.0 ? -1.0 : c > 1.0 ? 1.0 : c;
        }
    double c = cs / (double)pairs, N = (double)k;
    double den = 1.0 + (N - 1.0) * c;
    if (!(fabs(den) >= STOCK_DEN_MIN))
        return gr_seterr(GR_EINVAL,
                         "merge: model_stock: tensor '%s': mean cosine %g of the deltas makes "
                         "|1 + (N-1) cos| = %g < %g (the deltas cancel)",
                         t->name ? t->name : "?", c, fabs(den), STOCK_DEN_MIN);
    *tt = N * c / den;
    return 0;
}

static int stock_merge(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                       float *const *d, size_t k, float *out, int ref)
{
    const size_t n = t->n, np = k * (k + 1) / 2;
    double *g = malloc(np * sizeof *g), tt = 0;
    if (!g) return gr_seterr(GR_ENOMEM, "merge: out of memory");
    int rc = 0;
    if (ref)
        gram_ref((const float *const *)d, k, n, g);
    else
        rc = gram((const float *const *)d, k, n, o->threads, g);
    if (!rc) rc = stock_t(t, g, k, &tt);
    free(g);
    if (rc) return rc;
    int nt = ref ? 1 : nthreads(o->threads, n);
    (void)nt; /* unused when built without OpenMP */
    const double scale = tt / (double)k;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t j = 0; j < n; j++) {
        double s = 0;
        for (size_t i = 0; i < k; i++) s += d[i][j];
        out[j] = (float)(base[j] + scale * s);
    }
    return 0;
}

/* ---- PCB ---- */

enum { P_ABS0, P_ABS1, P_BETA0, P_BETA1, P_READY };

struct gr_pcb_global {
    size_t k;
    double ratio;
    int threads;
    int stage;
    uint64_t D;
    gr_gsel **sa, **sb;
    float *lo, *hi, *q, *bmax;
    float *fbuf;
    double *sbuf;
};

/* Balance score of one entry: intra = exp(k * norm(clip|d|)^2), inter =
 * tanh(d * sum_j d_j), rounded once to fp32 (the value that is selected). */
static inline float pcb_beta(float d, double sum, float lo, float hi, double kk)
{
    float a = fabsf(d), c = a < lo ? lo : a > hi ? hi : a;
    double s = hi > lo ? ((double)c - lo) / ((double)hi - lo) : 0.0;
    return (float)(exp(kk * s * s) * tanh((double)d * sum));
}

static gr_pcb_global *pcb_new(size_t k, double ratio, int threads, int small)
{
    if (k < 1 || !(ratio > 0.0 && ratio <= 1.0)) {
        gr_seterr(GR_EINVAL, "merge: pcb: ratio = %g must be in (0, 1] and at least one model",
                  ratio);
        return NULL;
    }
    gr_pcb_global *g = calloc(1, sizeof *g);
    if (!g) goto nomem;
    g->k = k;
    g->ratio = ratio;
    g->threads = threads < 1 ? 1 : threads;
    g->sa = calloc(k, sizeof *g->sa);
    g->sb = calloc(k, sizeof *g->sb);
    g->lo = calloc(4 * k, sizeof *g->lo);
    if (!g->sa || !g->sb || !g->lo) goto nomem;
    g->hi = g->lo + k, g->q = g->hi + k, g->bmax = g->q + k;
    for (size_t i = 0; i < k; i++) {
        g->sa[i] =
            small ? gr_gsel_new_small(GR_SEL_ABS, g->threads) : gr_gsel_new(GR_SEL_ABS, g->threads);
        g->sb[i] = small ? gr_gsel_new_small(GR_SEL_SIGNED, g->threads)
                         : gr_gsel_new(GR_SEL_SIGNED, g->threads);
        if (!g->sa[i] || !g->sb[i]) goto nomem;
        g->bmax[i] = -INFINITY;
    }
    return g;
nomem:
    gr_pcb_global_destroy(&g);
    gr_seterr(GR_ENOMEM, "merge: pcb: out of memory");
    return NULL;
}

gr_pcb_global *gr_pcb_global_new(size_t k, double ratio, int threads)
{
    return pcb_new(k, ratio, threads, 0);
}

void gr_pcb_global_destroy(gr_pcb_global **gp)
{
    if (!gp || !*gp) return;
    gr_pcb_global *g = *gp;
    for (size_t i = 0; g->sa && i < g->k; i++) gr_gsel_destroy(&g->sa[i]);
    for (size_t i = 0; g->sb && i < g->k; i++) gr_gsel_destroy(&g->sb[i]);
    free(g->sa);
    free(g->sb);
    free(g->lo);
    free(g->fbuf);
    free(g->sbuf);
    free(g);
    *gp = NULL;
}

static void pcb_sums(const float *const *d, size_t k, size_t lo, size_t len, double *s, int nt)
{
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t j = 0; j < len; j++) {
        double a = 0;
        for (size_t i = 0; i < k; i++) a += d[i][lo + j];
        s[j] = a;
    }
}

int gr_pcb_global_feed(gr_pcb_global *g, const float *const *d, size_t n)
{
    int rc;
    if (g->stage == P_ABS0 || g->stage == P_ABS1) {
        for (size_t i = 0; i < g->k; i++)
            if ((rc = gr_gsel_feed(g->sa[i], d[i], n))) return rc;
        return 0;
    }
    if (g->stage == P_READY) return gr_seterr(GR_ESTATE, "merge: pcb: feed after the last pass");
    if (!g->fbuf) {
        g->fbuf = malloc(PCB_CHUNK * sizeof *g->fbuf);
        g->sbuf = malloc(PCB_CHUNK * sizeof *g->sbuf);
        if (!g->fbuf || !g->sbuf) return gr_seterr(GR_ENOMEM, "merge: pcb: out of memory");
    }
    const double kk = (double)g->k;
    for (size_t lo = 0; lo < n; lo += PCB_CHUNK) {
        size_t len = n - lo < PCB_CHUNK ? n - lo : PCB_CHUNK;
        int nt = nthreads(g->threads, len);
        pcb_sums(d, g->k, lo, len, g->sbuf, nt);
        for (size_t i = 0; i < g->k; i++) {
            const float *di = d[i] + lo, l = g->lo[i], h = g->hi[i];
            float *f = g->fbuf;
            const double *s = g->sbuf;
            float mx = -INFINITY;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(max : mx)
            for (size_t j = 0; j < len; j++) {
                f[j] = pcb_beta(di[j], s[j], l, h, kk);
                mx = f[j] > mx ? f[j] : mx;
            }
            if (mx > g->bmax[i]) g->bmax[i] = mx;
            if ((rc = gr_gsel_feed(g->sb[i], f, len))) return rc;
        }
    }
    return 0;
}

/* int(x) of Python for the paper's index expressions (truncation toward
 * zero), clamped into [0, D). */
static uint64_t py_index(double x, uint64_t D)
{
    int64_t v = (int64_t)x;
    if (v < 0) v = 0;
    if ((uint64_t)v >= D) v = (int64_t)D - 1;
    return (uint64_t)v;
}

int gr_pcb_global_end_pass(gr_pcb_global *g)
{
    int rc;
    const size_t k = g->k;
    switch (g->stage) {
    case P_ABS0: {
        g->D = gr_gsel_total(g->sa[0]);
        for (size_t i = 1; i < k; i++)
            if (gr_gsel_total(g->sa[i]) != g->D)
                return gr_seterr(GR_EINVAL, "merge: pcb: model %zu fed %llu elements, model 0 %llu",
                                 i, (unsigned long long)gr_gsel_total(g->sa[i]),
                                 (unsigned long long)g->D);
        if (g->D == 0) {
            g->stage = P_READY;
            return 0;
        }
        const uint64_t D = g->D;
        uint64_t jlo = py_index((double)D * PCB_CLIP_RATIO, D);
        uint64_t jhi = py_index((double)D * (1.0 - PCB_CLIP_RATIO) - 1.0, D);
        uint64_t ranks[2] = {D - 1 - jlo, D - 1 - jhi};
        for (size_t i = 0; i < k; i++) {
            if ((rc = gr_gsel_set_ranks(g->sa[i], ranks, 2))) return rc;
            if ((rc = gr_gsel_end_pass(g->sa[i])) < 0) return rc;
        }
        g->stage = P_ABS1;
        return 1;
    }
    case P_ABS1: {
        int more = 0; /* the selectors share one digit schedule: all agree */
        for (size_t i = 0; i < k; i++) {
            if ((rc = gr_gsel_end_pass(g->sa[i])) < 0) return rc;
            more |= rc;
        }
        if (more) return 1;
        for (size_t i = 0; i < k; i++) {
            if ((rc = gr_gsel_value(g->sa[i], 0, &g->lo[i]))) return rc;
            if ((rc = gr_gsel_value(g->sa[i], 1, &g->hi[i]))) return rc;
            gr_gsel_destroy(&g->sa[i]);
        }
        g->stage = P_BETA0;
        return 1;
    }
    case P_BETA0: {
        const uint64_t D = g->D;
        uint64_t jq = py_index((double)D * (1.0 - g->ratio), D);
        uint64_t rank = D - 1 - jq;
        for (size_t i = 0; i < k; i++) {
            if ((rc = gr_gsel_set_ranks(g->sb[i], &rank, 1))) return rc;
            if ((rc = gr_gsel_end_pass(g->sb[i])) < 0) return rc;
        }
        g->stage = P_BETA1;
        return 1;
    }
    case P_BETA1: {
        int more = 0;
        for (size_t i = 0; i < k; i++) {
            if ((rc = gr_gsel_end_pass(g->sb[i])) < 0) return rc;
            more |= rc;
        }
        if (more) return 1;
        for (size_t i = 0; i < k; i++) {
            if ((rc = gr_gsel_value(g->sb[i], 0, &g->q[i]))) return rc;
            gr_gsel_destroy(&g->sb[i]);
        }
        free(g->fbuf), free(g->sbuf);
        g->fbuf = NULL, g->sbuf = NULL;
        g->stage = P_READY;
        return 0;
    }
    default:
        return 0;
    }
}

/* The merged PCB delta of one entry j. */
static inline double pcb_entry(const gr_pcb_global *g, const float *const *d, size_t j)
{
    const size_t k = g->k;
    const double kk = (double)k;
    double sum = 0, num = 0, den = 0;
    for (size_t i = 0; i < k; i++) sum += d[i][j];
    for (size_t i = 0; i < k; i++) {
        float x = d[i][j], lo = g->lo[i], hi = g->hi[i];
        float b = pcb_beta(x, sum, lo, hi, kk);
        double S = b > g->q[i] ? ((double)b - g->q[i]) / ((double)g->bmax[i] - g->q[i]) : 0.0;
        float a = fabsf(x), c = a < lo ? lo : a > hi ? hi : a;
        double sg = (x > 0.0f) - (x < 0.0f);
        num += sg * c * S;
        den += S;
    }
    return num / (den > PCB_DEN_MIN ? den : PCB_DEN_MIN);
}

int gr_pcb_global_apply(gr_pcb_global *g, const float *base, const float *const *d, size_t n,
                        double lambda, float *out)
{
    if (g->stage != P_READY)
        return gr_seterr(GR_ESTATE, "merge: pcb: apply before the global passes finished");
    int nt = nthreads(g->threads, n);
    (void)nt; /* unused when built without OpenMP */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t j = 0; j < n; j++) out[j] = (float)(base[j] + lambda * pcb_entry(g, d, j));
    return 0;
}

static int pcb_merge(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                     float *const *d, size_t k, float *out)
{
    gr_pcb_global *g = pcb_new(k, o->pcb_ratio, o->threads, t->n < PCB_SMALL_N);
    if (!g) return gr_errcode();
    int rc;
    do {
        if ((rc = gr_pcb_global_feed(g, (const float *const *)d, t->n))) break;
    } while ((rc = gr_pcb_global_end_pass(g)) > 0);
    if (!rc) rc = gr_pcb_global_apply(g, base, (const float *const *)d, t->n, o->lambda, out);
    gr_pcb_global_destroy(&g);
    return rc;
}

/* Plain PCB with explicit score arrays and full sorts (reference). */
static int pcb_merge_ref(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                         float *const *d, size_t k, float *out)
{
    const size_t n = t->n;
    if (n == 0) return 0;
    gr_pcb_global g = {.k = k, .ratio = o->pcb_ratio, .stage = P_READY, .D = n};
    float *st = malloc(4 * k * sizeof *st), *beta = malloc(n * sizeof *beta);
    double *sum = malloc(n * sizeof *sum);
    int rc = 0;
    if (!st || !beta || !sum) {
        rc = gr_seterr(GR_ENOMEM, "merge: out of memory");
        goto done;
    }
    g.lo = st, g.hi = st + k, g.q = st + 2 * k, g.bmax = st + 3 * k;
    for (size_t j = 0; j < n; j++) {
        double s = 0;
        for (size_t i = 0; i < k; i++) s += d[i][j];
        sum[j] = s;
    }
    for (size_t i = 0; i < k && !rc; i++) {
        uint64_t jlo = py_index((double)n * PCB_CLIP_RATIO, n);
        uint64_t jhi = py_index((double)n * (1.0 - PCB_CLIP_RATIO) - 1.0, n);
        rc = gr_select_kth_ref(d[i], n, jlo, GR_SEL_ABS, &g.lo[i]);
        if (!rc) rc = gr_select_kth_ref(d[i], n, jhi, GR_SEL_ABS, &g.hi[i]);
        if (rc) break;
        g.bmax[i] = -INFINITY;
        for (size_t j = 0; j < n; j++) {
            beta[j] = pcb_beta(d[i][j], sum[j], g.lo[i], g.hi[i], (double)k);
            if (beta[j] > g.bmax[i]) g.bmax[i] = beta[j];
        }
        rc = gr_select_kth_ref(beta, n, py_index((double)n * (1.0 - o->pcb_ratio), n),
                               GR_SEL_SIGNED, &g.q[i]);
    }
    if (!rc)
        for (size_t j = 0; j < n; j++)
            out[j] = (float)(base[j] + o->lambda * pcb_entry(&g, (const float *const *)d, j));
done:
    free(st), free(beta), free(sum);
    return rc;
}

/* ---- entry points ---- */

int gr_merge_tensor(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                    float *const *in, int in_kind, const gr_merge_model *models, size_t k,
                    float *out)
{
    int rc = validate(o, t, base, in, in_kind, models, k);
    if (rc) return rc;
    const size_t n = t->n;
    switch (o->method) {
    case GR_MERGE_LINEAR:
        if (in_kind == GR_MERGE_IN_DELTAS)
            for (size_t i = 0; i < k; i++) to_models(base, in[i], n, o->threads);
        return linear_merge(o, t, (const float *const *)in, models, k, out);
    case GR_MERGE_SLERP:
        if (in_kind == GR_MERGE_IN_DELTAS) to_models(base, in[0], n, o->threads);
        return slerp_merge(o, t, base, in[0], out, 0);
    default:
        break;
    }
    if (in_kind == GR_MERGE_IN_MODELS) to_deltas(base, in, k, n, o->threads);
    if (o->method == GR_MERGE_MODEL_STOCK) return stock_merge(o, t, base, in, k, out, 0);
    if (o->method == GR_MERGE_PCB) return pcb_merge(o, t, base, in, k, out);
    return task_vector_merge(o, t, base, in, models, k, out);
}

/* Reference: the formulas of merge-methods.md as plain loops, one thread,
 * sparsifiers through gr_prune_tensor_ref (full sorts). */
int gr_merge_tensor_ref(const gr_merge_opts *o, const gr_merge_tinfo *t, const float *base,
                        float *const *in, int in_kind, const gr_merge_model *models, size_t k,
                        float *out)
{
    int rc = validate(o, t, base, in, in_kind, models, k);
    if (rc) return rc;
    const size_t n = t->n;
    if (o->method == GR_MERGE_LINEAR || o->method == GR_MERGE_SLERP) {
        if (in_kind == GR_MERGE_IN_DELTAS)
            for (size_t i = 0; i < k; i++)
                for (size_t j = 0; j < n; j++) in[i][j] += base[j];
        if (o->method == GR_MERGE_SLERP) return slerp_merge(o, t, base, in[0], out, 1);
        float sw = 0.0f;
        for (size_t i = 0; i < k; i++) sw += (float)models[i].weight;
        if (o->normalize && sw == 0.0f)
            return gr_seterr(GR_EINVAL,
                             "merge: linear: tensor '%s': the weights sum to 0, cannot "
                             "normalize (set normalize: false or change the weights)",
                             t->name ? t->name : "?");
        for (size_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (size_t i = 0; i < k; i++) acc += (float)models[i].weight * in[i][j];
            out[j] = o->normalize ? acc / sw : acc;
        }
        return 0;
    }
    if (in_kind == GR_MERGE_IN_MODELS)
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < n; j++) in[i][j] -= base[j];
    if (o->method == GR_MERGE_MODEL_STOCK) return stock_merge(o, t, base, in, k, out, 1);
    if (o->method == GR_MERGE_PCB) return pcb_merge_ref(o, t, base, in, k, out);
    /* Task-vector family: sparsify each delta, weight, elect, sum. */
    for (size_t i = 0; i < k; i++) {
        gr_prune_params p = params_of(o, &models[i]);
        uint64_t key = gr_rng_key(o->seed, t->name, models[i].rng_index);
        if ((rc = gr_prune_tensor_ref(&p, t->name, in[i], n, t->row_len, key, NULL))) return rc;
    }
    float ldiv = 0.0f;
    for (size_t i = 0; i < k; i++) ldiv += (float)models[i].weight;
    if (fabsf(ldiv) < TA_DIV_EPS) ldiv = 1.0f;
    for (size_t j = 0; j < n; j++) {
        float mixed = 0.0f, div = 0.0f;
        if (o->consensus != GR_CONSENSUS_NONE) {
            float s = 0.0f;
            for (size_t i = 0; i < k; i++) {
                float u = (float)models[i].weight * in[i][j];
                s += o->consensus == GR_CONSENSUS_SUM ? u : (float)((u > 0.0f) - (u < 0.0f));
            }
            for (size_t i = 0; i < k; i++) {
                float u = (float)models[i].weight * in[i][j];
                if ((s >= 0.0f && u > 0.0f) || (s < 0.0f && u < 0.0f)) {
                    mixed += u;
                    div += (float)models[i].weight;
                }
            }
            if (o->normalize) mixed /= div == 0.0f ? 1.0f : div;
        } else {
            for (size_t i = 0; i < k; i++) mixed += (float)models[i].weight * in[i][j];
            if (o->normalize) mixed /= ldiv;
        }
        if (o->lambda != 1.0) mixed *= (float)o->lambda;
        out[j] = base[j] + mixed;
    }
    return 0;
}
