/* gr_forward: the fp32 forward pass of a gr_model over whole windows of
 * tokens, and a plain per-token reference implementation of the same maths. */
#include "gr_forward.h"
#include "gr_err.h"

#include <cblas.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

/* The element-wise kernels below are written so that GCC vectorises them:
 * comparisons may be if-converted (graft never unmasks floating-point
 * traps), and the hot ones are also compiled for AVX2, picked at run time.
 * Neither changes what is computed. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#define VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VEC_CLONES
#endif

/* Queries per attention block: scores for a block only reach the keys up to
 * its last query, so the causal upper triangle is mostly skipped. */
#define QBLOCK 128
/* Bytes of logits computed at once (bounds memory for large vocabularies). A
 * streamed lm_head is converted once per chunk of rows, so the chunk is large
 * enough that a 128k vocabulary still takes 128 rows at a time. */
#define LOGIT_CHUNK_BYTES (64u << 20)
/* Vocabulary rows of lm_head multiplied at once, in both modes: a streamed
 * lm_head is converted a chunk at a time (its full fp32 matrix never
 * exists), and resident models use the same products so that both give
 * bit-identical logits. */
#define HEAD_CHUNK 4096

struct gr_fwd {
    const gr_model *m;
    const gr_model_cfg *c;
    int max_rows, max_t, threads;
    int C, H, KVH, hd, g, Q, KV, W, NI, U, V;
    float *x;   /* (N, C) residual stream */
    float *h;   /* (N, C) normalised */
    float *qkv; /* (N, W) q | k | v */
    float *att; /* (N, Q) attention output, heads side by side */
    float *mlp; /* (N, U) gate | up (llama) or fc (gpt2) */
    float *s;   /* (threads, QBLOCK, max_t) scores / probabilities per thread */
    float *lg;  /* (lg_rows, V) logits chunk */
    int lg_rows;
    float *cos_t, *sin_t; /* (max_t, hd/2) rotary tables */
    float *wl;            /* streaming: one layer's weights (gr_model_layer_floats) */
    float *wh;            /* streaming: (HEAD_CHUNK, C) rows of lm_head */
};

static float act_f(gr_act a, float x)
{
    switch (a) {
    case GR_ACT_SILU:
        return x / (1.0f + expf(-x));
    case GR_ACT_GELU_TANH: {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    case GR_ACT_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case GR_ACT_RELU:
        return x > 0 ? x : 0;
    }
    return x;
}

/* e^x in fp32 for the fast path, within about 2 ulp of expf (degree-6
 * polynomial on [-ln2/2, ln2/2] scaled by 2^n), 0 below -87.3, finite above
 * 88.7. Plain arithmetic without calls or branches, so `omp simd` loops over
 * it vectorise; the reference path keeps libm. */
static inline float exp_fast(float x)
{
    const float lo = -87.3f, hi = 88.7f;
    const float under = x < lo ? 0.0f : 1.0f;
    x = x < lo ? lo : x > hi ? hi : x;
    /* n = round(x / ln2) by the 1.5 * 2^23 trick (exact for |n| < 2^22) */
    const float shift = 12582912.0f;
    const float n = (x * 1.44269504088896341f + shift) - shift;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f; /* ln2 split: hi + lo */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } scale = {.u = (uint32_t)((int32_t)n + 127) << 23};
    return p * scale.f * under;
}

/* y = norm(x) for one row of n: RMSNorm (b == NULL) or LayerNorm. */
static void norm_row(const float *x, const float *w, const float *b, double eps, int n, float *y)
{
    if (!b) {
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / n + eps));
        for (int i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
        return;
    }
    double mu = 0, var = 0;
    for (int i = 0; i < n; i++) mu += x[i];
    mu /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mu) * (x[i] - mu);
    var /= n;
    float r = (float)(1.0 / sqrt(var + eps));
    for (int i = 0; i < n; i++) y[i] = (float)((x[i] - mu) * r) * w[i] + b[i];
}

/* Rotary embedding of one head vector v (hd) at a position, rotate-half
 * convention: (x1, x2) → (x1 cos − x2 sin, x2 cos + x1 sin). */
static void rope_vec(float *v, const float *cs, const float *sn, int hd)
{
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
    }
}

/* log p(target) from one row of logits (reference: libm in double). */
static double logp_row_ref(const float *l, int V, int target)
{
    double mx = l[0], s = 0;
    for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < V; i++) s += exp(l[i] - mx);
    return (double)l[target] - mx - log(s);
}

/* The same with exp_fast, summed in double. */
VEC_CLONES static double logp_row(const float *l, int V, int target)
{
    float mx = l[0];
    for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    double acc = 0;
#ifdef _OPENMP
#pragma omp simd reduction(+ : acc)
#endif
    for (int i = 0; i < V; i++) acc += exp_fast(l[i] - mx);
    return (double)l[target] - mx - log(acc);
}

/* x[0..n) = softmax(x[0..n)), n >= 1. */
VEC_CLONES static void softmax_vec(float *x, int n)
{
    float mx = x[0], acc = 0;
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
#ifdef _OPENMP
#pragma omp simd reduction(+ : acc)
#endif
    for (int i = 0; i < n; i++) acc += x[i] = exp_fast(x[i] - mx);
    const float inv = 1.0f / acc;
#ifdef _OPENMP
#pragma omp simd
#endif
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* g[i] = silu(g[i]) * u[i] (SwiGLU), with exp_fast. */
VEC_CLONES static void silu_mul_vec(float *g, const float *u, int n)
{
#ifdef _OPENMP
#pragma omp simd
#endif
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + exp_fast(-g[i])) * u[i];
}

static float attn_scale(const gr_model_cfg *c, int layer)
{
    double s = 1.0;
    if (c->family == GR_FAMILY_LLAMA || c->scale_attn) s = 1.0 / sqrt((double)c->head_dim);
    if (c->family == GR_FAMILY_GPT2 && c->scale_by_layer) s /= layer + 1;
    return (float)s;
}

static int layer_window(const gr_model_cfg *c, int layer)
{
    return c->sliding_window > 0 && layer >= c->sliding_from ? c->sliding_window : 0;
}

static int check_tokens(const gr_model_cfg *c, const int32_t *tok, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= c->vocab)
            return gr_seterr(GR_EINVAL,
                             "forward: token %lld at index %zu is outside the "
                             "vocabulary [0, %d)",
                             (long long)tok[i], i, c->vocab);
    return 0;
}

/* ---------------------------------------------------------------- fast path */

gr_fwd *gr_fwd_new(const gr_model *m, int max_rows, int threads)
{
    const gr_model_cfg *c = gr_model_config(m);
    if (max_rows < 1) {
        gr_seterr(GR_EINVAL, "forward: max_rows must be positive");
        return NULL;
    }
    gr_fwd *f = calloc(1, sizeof *f);
    if (!f) goto oom;
    f->m = m;
    f->c = c;
    f->max_rows = max_rows;
    f->max_t = max_rows < c->max_pos ? max_rows : c->max_pos;
    f->threads = threads > 0 ? threads : 1;
    f->C = c->hidden;
    f->H = c->heads;
    f->KVH = c->kv_heads;
    f->hd = c->head_dim;
    f->g = c->heads / c->kv_heads;
    f->Q = c->heads * c->head_dim;
    f->KV = c->kv_heads * c->head_dim;
    f->W = f->Q + 2 * f->KV;
    f->NI = c->inter;
    f->U = c->family == GR_FAMILY_LLAMA ? 2 * c->inter : c->inter;
    f->V = c->vocab;
    /* Every dimension is capped at 2^20 by gr_model_cfg_parse; row counts are
     * ints, so each product below fits in size_t on a 64-bit machine. */
    const size_t N = (size_t)max_rows;
    f->lg_rows = (int)(LOGIT_CHUNK_BYTES / sizeof(float) / (size_t)f->V);
    if (f->lg_rows < 1) f->lg_rows = 1;
    if (f->lg_rows > max_rows) f->lg_rows = max_rows;
    f->x = malloc(N * (size_t)f->C * sizeof(float));
    f->h = malloc(N * (size_t)f->C * sizeof(float));
    f->qkv = malloc(N * (size_t)f->W * sizeof(float));
    f->att = malloc(N * (size_t)f->Q * sizeof(float));
    f->mlp = malloc(N * (size_t)f->U * sizeof(float));
    f->s = malloc((size_t)f->threads * QBLOCK * (size_t)f->max_t * sizeof(float));
    f->lg = malloc((size_t)f->lg_rows * (size_t)f->V * sizeof(float));
    if (!f->x || !f->h || !f->qkv || !f->att || !f->mlp || !f->s || !f->lg) goto oom;
    if (gr_model_streaming(m)) {
        const int hc = f->V < HEAD_CHUNK ? f->V : HEAD_CHUNK;
        f->wl = malloc(gr_model_layer_floats(m) * sizeof(float));
        f->wh = malloc((size_t)hc * (size_t)f->C * sizeof(float));
        if (!f->wl || !f->wh) goto oom;
    }
    if (c->rope != GR_ROPE_NONE) {
        const int half = f->hd / 2;
        float *inv = malloc((size_t)half * sizeof *inv);
        f->cos_t = malloc((size_t)f->max_t * (size_t)half * sizeof(float));
        f->sin_t = malloc((size_t)f->max_t * (size_t)half * sizeof(float));
        if (!inv || !f->cos_t || !f->sin_t) {
            free(inv);
            goto oom;
        }
        gr_model_rope_inv_freq(c, inv);
        for (int t = 0; t < f->max_t; t++)
            for (int i = 0; i < half; i++) {
                /* the angle is rounded to fp32 as transformers does */
                float ang = (float)t * inv[i];
                f->cos_t[(size_t)t * half + i] = (float)cos((double)ang);
                f->sin_t[(size_t)t * half + i] = (float)sin((double)ang);
            }
        free(inv);
    }
    return f;
oom:
    gr_seterr(GR_ENOMEM, "forward: cannot allocate the workspace for %d positions", max_rows);
    gr_fwd_destroy(&f);
    return NULL;
}

void gr_fwd_destroy(gr_fwd **pf)
{
    if (!pf || !*pf) return;
    gr_fwd *f = *pf;
    free(f->x);
    free(f->h);
    free(f->qkv);
    free(f->att);
    free(f->mlp);
    free(f->s);
    free(f->lg);
    free(f->cos_t);
    free(f->sin_t);
    free(f->wl);
    free(f->wh);
    free(f);
    *pf = NULL;
}

/* Threads for a parallel region doing about `work` multiply-adds or element
 * operations: small regions run on the calling thread alone, since waking
 * the team costs more than they do. */
#define PAR_MIN_WORK 65536.0
static int team(const gr_fwd *f, double work)
{
    return work < PAR_MIN_WORK ? 1 : f->threads;
}

/* y (n, out; row stride ldy) = x (n, in; row stride ldx) · w (out, in)ᵀ + beta·y,
 * then + bias.
 * The product is split over graft's threads, each calling a single-threaded
 * sgemm: by rows when there are enough of them, else by output columns (in
 * multiples of 16, whole kernel tiles). Every element is still one dot
 * product over `in` in the same order, whatever the split. */
static void linear(gr_fwd *f, int n, const float *x, int ldx, const float *w, const float *bias,
                   int in, int out, float beta, float *y, int ldy)
{
    const int parts = team(f, (double)n * out * in), by_rows = n >= 32 * parts;
    const int step = ((out + parts - 1) / parts + 15) / 16 * 16;
#ifdef _OPENMP
#pragma omp parallel for num_threads(parts) schedule(static)
#endif
    for (int p = 0; p < parts; p++) {
        int r0 = 0, r1 = n, c0 = 0, c1 = out;
        if (by_rows) {
            r0 = (int)((int64_t)n * p / parts);
            r1 = (int)((int64_t)n * (p + 1) / parts);
        } else {
            c0 = p * step < out ? p * step : out;
            c1 = c0 + step < out ? c0 + step : out;
        }
        if (r0 >= r1 || c0 >= c1) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, c1 - c0, in, 1.0f,
                    x + (size_t)r0 * ldx, ldx, w + (size_t)c0 * in, in, beta,
                    y + (size_t)r0 * ldy + c0, ldy);
        if (bias)
            for (int r = r0; r < r1; r++) {
                float *yr = y + (size_t)r * ldy;
                for (int o = c0; o < c1; o++) yr[o] += bias[o];
            }
    }
}

static void norm_rows(gr_fwd *f, int n, const float *w, const float *b)
{
#ifdef _OPENMP
#pragma omp parallel for num_threads(team(f, 4.0 * n * f->C)) schedule(static)
#endif
    for (int r = 0; r < n; r++)
        norm_row(f->x + (size_t)r * f->C, w, b, f->c->norm_eps, f->C, f->h + (size_t)r * f->C);
}

/* Causal (optionally sliding-window) attention for all heads of B sequences:
 * qkv (B*T, W) → att (B*T, Q). One task per (sequence, head, block of
 * queries): S = scale·Q·Kᵀ (nq, nk) by sgemm straight from the strided q and
 * k columns, masked softmax by rows, O = P·V by sgemm straight into att. The
 * tasks share out graft's threads, each calling a single-threaded sgemm. */
static void attention(gr_fwd *f, int layer, int B, int T)
{
    const int hd = f->hd, W = f->W, g = f->g, Q = f->Q, H = f->H;
    const float scale = attn_scale(f->c, layer);
    const int window = layer_window(f->c, layer);
    const int nb = (T + QBLOCK - 1) / QBLOCK, ntask = B * H * nb;
#ifdef _OPENMP
#pragma omp parallel for num_threads(team(f, (double)B *H *T *T *hd)) schedule(dynamic, 1)
#endif
    for (int task = 0; task < ntask; task++) {
#ifdef _OPENMP
        float *s = f->s + (size_t)omp_get_thread_num() * QBLOCK * f->max_t;
#else
        float *s = f->s;
#endif
        /* the longest blocks (last queries) first, for balance */
        const int blk = nb - 1 - task % nb, hh = (task / nb) % H, b = task / (nb * H);
        const int kv = hh / g; /* grouped-query: heads share a KV head */
        const float *base = f->qkv + (size_t)b * T * W;
        const int q0 = blk * QBLOCK, nq = T - q0 < QBLOCK ? T - q0 : QBLOCK, kend = q0 + nq;
        const int klo = window && q0 - window + 1 > 0 ? q0 - window + 1 : 0, nk = kend - klo;
        const float *q = base + (size_t)q0 * W + (size_t)hh * hd;              /* (nq, hd) */
        const float *k = base + (size_t)klo * W + Q + (size_t)kv * hd;         /* (nk, hd) */
        const float *v = base + (size_t)klo * W + Q + f->KV + (size_t)kv * hd; /* (nk, hd) */
        float *o = f->att + ((size_t)b * T + q0) * Q + (size_t)hh * hd;        /* (nq, hd) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, q, W, k, W, 0.0f, s,
                    nk);
        for (int r = 0; r < nq; r++) {
            float *srow = s + (size_t)r * nk;
            const int t = q0 + r;
            const int lo = window && t - window + 1 > klo ? t - window + 1 : klo;
            /* keys [lo, t] are visible; the others get probability 0 */
            memset(srow, 0, (size_t)(lo - klo) * sizeof(float));
            softmax_vec(srow + (lo - klo), t - lo + 1);
            memset(srow + (t + 1 - klo), 0, (size_t)(kend - t - 1) * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, s, nk, v, W, 0.0f,
                    o, Q);
    }
}

int gr_fwd_run(gr_fwd *f, const int32_t *tokens, int B, int T, int first, float *logits,
               double *logp)
{
    const gr_model_cfg *c = f->c;
    const gr_model *m = f->m;
    if (B < 1 || T < 2 || (int64_t)B * T > f->max_rows || T > f->max_t)
        return gr_seterr(GR_EINVAL,
                         "forward: %d sequence(s) of %d tokens do not fit (need T >= 2, "
                         "T <= %d positions, B*T <= %d)",
                         B, T, f->max_t, f->max_rows);
    if (first < 0 || first >= T - 1 || (logits && first))
        return gr_seterr(GR_EINVAL, "forward: first position %d out of range", first);
    int rc = check_tokens(c, tokens, (size_t)B * T);
    if (rc) return rc;
    /* All parallel work runs on graft's (OpenMP) threads, OpenBLAS calls are
     * single-threaded: two pools of idle-spinning threads taking turns fight
     * over the cores (measured: 27x slower on a small model at 2 threads). */
    const int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    const int N = B * T, C = f->C, half = f->hd / 2;

    for (int r = 0; r < N && !rc; r++) { /* embeddings: (N, C); h holds a position row */
        float *x = f->x + (size_t)r * C, *pos = f->h + (size_t)r * C;
        if ((rc = gr_model_embed_row(m, tokens[r], x))) break;
        if (c->family == GR_FAMILY_GPT2 && !(rc = gr_model_pos_row(m, r % T, pos)))
            for (int i = 0; i < C; i++) x[i] += pos[i];
    }
    for (int l = 0; l < c->layers && !rc; l++) {
        /* streaming: this layer's weights converted just before its use */
        gr_layer_w lw;
        if ((rc = gr_model_layer(m, l, f->wl, f->threads, &lw))) break;
        const gr_layer_w *L = &lw;
        norm_rows(f, N, L->ln1_w, L->ln1_b);
        linear(f, N, f->h, C, L->wqkv, L->bqkv, C, f->W, 0.0f, f->qkv, f->W);
        if (c->rope != GR_ROPE_NONE) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(team(f, 3.0 * N * (f->Q + f->KV))) schedule(static)
#endif
            for (int r = 0; r < N; r++) {
                const float *cs = f->cos_t + (size_t)(r % T) * half;
                const float *sn = f->sin_t + (size_t)(r % T) * half;
                float *row = f->qkv + (size_t)r * f->W;
                for (int hh = 0; hh < f->H + f->KVH; hh++)
                    rope_vec(row + hh * f->hd, cs, sn, f->hd);
            }
        }
        attention(f, l, B, T);
        linear(f, N, f->att, f->Q, L->wo, L->bo, f->Q, C, 1.0f, f->x, C);
        norm_rows(f, N, L->ln2_w, L->ln2_b);
        linear(f, N, f->h, C, L->wup, L->bup, C, f->U, 0.0f, f->mlp, f->U);
        const int NI = f->NI, U = f->U, gated = c->family == GR_FAMILY_LLAMA;
        const gr_act act = c->act;
#ifdef _OPENMP
#pragma omp parallel for num_threads(team(f, 16.0 * N * NI)) schedule(static)
#endif
        for (int r = 0; r < N; r++) {
            float *row = f->mlp + (size_t)r * U;
            if (gated && act == GR_ACT_SILU)
                silu_mul_vec(row, row + NI, NI);
            else if (gated)
                for (int i = 0; i < NI; i++) row[i] = act_f(act, row[i]) * row[NI + i];
            else
                for (int i = 0; i < NI; i++) row[i] = act_f(act, row[i]);
        }
        linear(f, N, f->mlp, U, L->wdown, L->bdown, NI, C, 1.0f, f->x, C);
    }
    if (rc) {
        openblas_set_num_threads(blas_threads);
        return rc;
    }
    const gr_model_w *w = gr_model_weights(m);
    norm_rows(f, N, w->norm_w, w->norm_b);

    /* lm_head over the rows whose next token is scored (and all rows when
     * logits are wanted), a chunk of rows at a time, each against the
     * vocabulary HEAD_CHUNK rows at a time. */
    const int V = f->V, last = logits ? T : T - 1;
    for (int b = 0; b < B && !rc; b++) {
        for (int t0 = first; t0 < last && !rc; t0 += f->lg_rows) {
            const int n = last - t0 < f->lg_rows ? last - t0 : f->lg_rows;
            const size_t r0 = (size_t)b * T + t0;
            for (int v0 = 0; v0 < V; v0 += HEAD_CHUNK) {
                const int vn = V - v0 < HEAD_CHUNK ? V - v0 : HEAD_CHUNK;
                const float *wh = gr_model_head_rows(m, v0, vn, f->wh, f->threads);
                if (!wh) {
                    rc = gr_errcode();
                    break;
                }
                linear(f, n, f->h + r0 * C, C, wh, NULL, C, vn, 0.0f, f->lg + v0, V);
            }
            if (rc) break;
            if (logits) memcpy(logits + r0 * V, f->lg, (size_t)n * V * sizeof(float));
#ifdef _OPENMP
#pragma omp parallel for num_threads(team(f, 16.0 * n * V)) schedule(static)
#endif
            for (int i = 0; i < n; i++) {
                const int t = t0 + i;
                if (t < T - 1)
                    logp[(size_t)b * (T - 1) + t] =
                        logp_row(f->lg + (size_t)i * V, V, tokens[r0 + i + 1]);
            }
        }
    }
    openblas_set_num_threads(blas_threads);
    return rc;
}

/* ---------------------------------------------------------------- reference */

/* y (out) = W (out, in) · x (in) + b, accumulated in double. */
static void ref_matvec(const float *W, const float *b, const float *x, int in, int out, float *y)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++) s += (double)W[(size_t)o * in + i] * x[i];
        y[o] = (float)s;
    }
}

int gr_fwd_ref(const gr_model *m, const int32_t *tokens, int T, float *logits, double *logp)
{
    const gr_model_cfg *c = gr_model_config(m);
    const gr_model_w *w = gr_model_weights(m);
    const int stream = gr_model_streaming(m);
    if (T < 2 || T > c->max_pos)
        return gr_seterr(GR_EINVAL, "forward: %d tokens (need 2 to %d)", T, c->max_pos);
    int rc = check_tokens(c, tokens, (size_t)T);
    if (rc) return rc;
    const int C = c->hidden, hd = c->head_dim, H = c->heads, KVH = c->kv_heads;
    const int Q = H * hd, KV = KVH * hd, Wd = Q + 2 * KV, NI = c->inter, V = c->vocab;
    const int U = c->family == GR_FAMILY_LLAMA ? 2 * NI : NI, half = hd / 2;
    const size_t kvn = (size_t)c->layers * T * KV;
    float *kc = malloc(kvn * sizeof(float)), *vc = malloc(kvn * sizeof(float));
    float *x = malloc((size_t)C * sizeof(float)), *h = malloc((size_t)C * sizeof(float));
    float *qkv = malloc((size_t)Wd * sizeof(float)), *att = malloc((size_t)Q * sizeof(float));
    float *o = malloc((size_t)(C > U ? C : U) * sizeof(float));
    float *u = malloc((size_t)U * sizeof(float)), *lg = malloc((size_t)V * sizeof(float));
    double *p = malloc((size_t)T * sizeof(double));
    float *inv = malloc((size_t)(half ? half : 1) * sizeof(float));
    float *cs = malloc((size_t)(half ? half : 1) * sizeof(float));
    float *sn = malloc((size_t)(half ? half : 1) * sizeof(float));
    /* streaming: the weights of each layer (and lm_head rows) are converted
     * again for every position, which costs about what the plain
     * matrix-vector products over them do */
    const int hc = V < 4096 ? V : 4096;
    float *wl = stream ? malloc(gr_model_layer_floats(m) * sizeof(float)) : NULL;
    float *wh = stream ? malloc((size_t)hc * C * sizeof(float)) : NULL;
    rc = 0;
    if (!kc || !vc || !x || !h || !qkv || !att || !o || !u || !lg || !p || !inv || !cs || !sn ||
        (stream && (!wl || !wh))) {
        rc = gr_seterr(GR_ENOMEM, "forward: out of memory");
        goto done;
    }
    if (c->rope != GR_ROPE_NONE) gr_model_rope_inv_freq(c, inv);
    for (int t = 0; t < T && !rc; t++) {
        if ((rc = gr_model_embed_row(m, tokens[t], x))) break;
        if (c->family == GR_FAMILY_GPT2) {
            if ((rc = gr_model_pos_row(m, t, o))) break;
            for (int i = 0; i < C; i++) x[i] += o[i];
        }
        for (int i = 0; i < half; i++) {
            float ang = (float)t * inv[i];
            cs[i] = (float)cos((double)ang);
            sn[i] = (float)sin((double)ang);
        }
        for (int l = 0; l < c->layers && !rc; l++) {
            gr_layer_w lw;
            if ((rc = gr_model_layer(m, l, wl, 1, &lw))) break;
            const gr_layer_w *L = &lw;
            float *kl = kc + (size_t)l * T * KV, *vl = vc + (size_t)l * T * KV;
            norm_row(x, L->ln1_w, L->ln1_b, c->norm_eps, C, h);
            ref_matvec(L->wqkv, L->bqkv, h, C, Wd, qkv);
            if (c->rope != GR_ROPE_NONE)
                for (int hh = 0; hh < H + KVH; hh++) rope_vec(qkv + hh * hd, cs, sn, hd);
            memcpy(kl + (size_t)t * KV, qkv + Q, (size_t)KV * sizeof(float));
            memcpy(vl + (size_t)t * KV, qkv + Q + KV, (size_t)KV * sizeof(float));
            const int window = layer_window(c, l);
            const int lo = window && t - window + 1 > 0 ? t - window + 1 : 0;
            const double scale = attn_scale(c, l);
            for (int hh = 0; hh < H; hh++) {
                const int kvh = hh / (H / KVH); /* grouped-query: heads share a KV head */
                const float *q = qkv + hh * hd;
                double mx = -INFINITY;
                for (int s = lo; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += (double)q[i] * kl[(size_t)s * KV + kvh * hd + i];
                    p[s] = d * scale;
                    mx = p[s] > mx ? p[s] : mx;
                }
                double sum = 0;
                for (int s = lo; s <= t; s++) sum += p[s] = exp(p[s] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int s = lo; s <= t; s++)
                        a += p[s] / sum * vl[(size_t)s * KV + kvh * hd + i];
                    att[hh * hd + i] = (float)a;
                }
            }
            ref_matvec(L->wo, L->bo, att, Q, C, o);
            for (int i = 0; i < C; i++) x[i] += o[i];
            norm_row(x, L->ln2_w, L->ln2_b, c->norm_eps, C, h);
            ref_matvec(L->wup, L->bup, h, C, U, u);
            for (int i = 0; i < NI; i++)
                u[i] = c->family == GR_FAMILY_LLAMA ? act_f(c->act, u[i]) * u[NI + i]
                                                    : act_f(c->act, u[i]);
            ref_matvec(L->wdown, L->bdown, u, NI, C, o);
            for (int i = 0; i < C; i++) x[i] += o[i];
        }
        if (rc) break;
        norm_row(x, w->norm_w, w->norm_b, c->norm_eps, C, h);
        for (int v0 = 0; v0 < V; v0 += hc) {
            const int vn = V - v0 < hc ? V - v0 : hc;
            const float *wv = gr_model_head_rows(m, v0, vn, wh, 1);
            if (!wv) {
                rc = gr_errcode();
                break;
            }
            ref_matvec(wv, NULL, h, C, vn, lg + v0);
        }
        if (rc) break;
        if (logits) memcpy(logits + (size_t)t * V, lg, (size_t)V * sizeof(float));
        if (t < T - 1) logp[t] = logp_row_ref(lg, V, tokens[t + 1]);
    }
done:
    free(kc);
    free(vc);
    free(x);
    free(h);
    free(qkv);
    free(att);
    free(o);
    free(u);
    free(lg);
    free(p);
    free(inv);
    free(cs);
    free(sn);
    free(wl);
    free(wh);
    return rc;
}
