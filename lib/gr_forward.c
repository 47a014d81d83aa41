/* gr_forward: the fp32 forward pass of a gr_model over whole windows of
 * tokens, and a plain per-token reference implementation of the same maths. */
#include "gr_forward.h"
#include "gr_err.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Queries per attention block: scores for a block only reach the keys up to
 * its last query, so the causal upper triangle is mostly skipped. */
#define QBLOCK 128
/* Bytes of logits computed at once (bounds memory for large vocabularies). */
#define LOGIT_CHUNK_BYTES (16u << 20)

struct gr_fwd {
    const gr_model *m;
    const gr_model_cfg *c;
    const gr_model_w *w;
    int max_rows, max_t, threads;
    int C, H, KVH, hd, g, Q, KV, W, NI, U, V;
    float *x;   /* (N, C) residual stream */
    float *h;   /* (N, C) normalised */
    float *qkv; /* (N, W) q | k | v */
    float *att; /* (N, Q) attention output, heads side by side */
    float *mlp; /* (N, U) gate | up (llama) or fc (gpt2) */
    float *qg;  /* (g*QBLOCK, hd) queries of one head group */
    float *s;   /* (g*QBLOCK, max_t) scores / probabilities */
    float *og;  /* (g*QBLOCK, hd) attention output of one head group */
    float *lg;  /* (lg_rows, V) logits chunk */
    int lg_rows;
    float *cos_t, *sin_t; /* (max_t, hd/2) rotary tables */
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

/* log p(target) from one row of logits; max and sum of exponentials in double. */
static double logp_row(const float *l, int V, int target)
{
    float mx = l[0];
    for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    double s = 0;
    for (int i = 0; i < V; i++) s += expf(l[i] - mx);
    return (double)l[target] - mx - log(s);
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
    f->w = gr_model_weights(m);
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
    const size_t N = (size_t)max_rows, gq = (size_t)f->g * QBLOCK;
    f->lg_rows = (int)(LOGIT_CHUNK_BYTES / sizeof(float) / (size_t)f->V);
    if (f->lg_rows < 1) f->lg_rows = 1;
    if (f->lg_rows > max_rows) f->lg_rows = max_rows;
    f->x = malloc(N * (size_t)f->C * sizeof(float));
    f->h = malloc(N * (size_t)f->C * sizeof(float));
    f->qkv = malloc(N * (size_t)f->W * sizeof(float));
    f->att = malloc(N * (size_t)f->Q * sizeof(float));
    f->mlp = malloc(N * (size_t)f->U * sizeof(float));
    f->qg = malloc(gq * (size_t)f->hd * sizeof(float));
    f->s = malloc(gq * (size_t)f->max_t * sizeof(float));
    f->og = malloc(gq * (size_t)f->hd * sizeof(float));
    f->lg = malloc((size_t)f->lg_rows * (size_t)f->V * sizeof(float));
    if (!f->x || !f->h || !f->qkv || !f->att || !f->mlp || !f->qg || !f->s || !f->og || !f->lg)
        goto oom;
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
    free(f->qg);
    free(f->s);
    free(f->og);
    free(f->lg);
    free(f->cos_t);
    free(f->sin_t);
    free(f);
    *pf = NULL;
}

/* y (n, out) = x (n, in; row stride ldx) · w (out, in)ᵀ + beta·y, then + bias. */
static void linear(gr_fwd *f, int n, const float *x, int ldx, const float *w, const float *bias,
                   int in, int out, float beta, float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, ldx, w, in, beta, y,
                out);
    if (!bias) return;
#ifdef _OPENMP
#pragma omp parallel for num_threads(f->threads) schedule(static)
#endif
    for (int r = 0; r < n; r++) {
        float *yr = y + (size_t)r * out;
        for (int o = 0; o < out; o++) yr[o] += bias[o];
    }
}

static void norm_rows(gr_fwd *f, int n, const float *w, const float *b)
{
#ifdef _OPENMP
#pragma omp parallel for num_threads(f->threads) schedule(static)
#endif
    for (int r = 0; r < n; r++)
        norm_row(f->x + (size_t)r * f->C, w, b, f->c->norm_eps, f->C, f->h + (size_t)r * f->C);
}

/* Causal (optionally sliding-window) attention for all heads of B sequences:
 * qkv (B*T, W) → att (B*T, Q). Per sequence, KV head and block of queries:
 * S = scale·Qg·Kᵀ (g*nq, nk) by sgemm, masked softmax by rows, O = P·V by sgemm. */
static void attention(gr_fwd *f, int layer, int B, int T)
{
    const int hd = f->hd, W = f->W, g = f->g, Q = f->Q;
    const float scale = attn_scale(f->c, layer);
    const int window = layer_window(f->c, layer);
    for (int b = 0; b < B; b++) {
        const float *base = f->qkv + (size_t)b * T * W;
        float *out = f->att + (size_t)b * T * Q;
        for (int kv = 0; kv < f->KVH; kv++) {
            const float *K = base + Q + kv * hd;          /* (T, hd), row stride W */
            const float *Vv = base + Q + f->KV + kv * hd; /* (T, hd), row stride W */
            for (int q0 = 0; q0 < T; q0 += QBLOCK) {
                const int nq = T - q0 < QBLOCK ? T - q0 : QBLOCK;
                const int kend = q0 + nq;
                const int klo = window && q0 - window + 1 > 0 ? q0 - window + 1 : 0;
                const int nk = kend - klo, rows = g * nq;
                for (int j = 0; j < g; j++) /* gather the group's queries: (g*nq, hd) */
                    for (int i = 0; i < nq; i++)
                        memcpy(f->qg + ((size_t)j * nq + i) * hd,
                               base + (size_t)(q0 + i) * W + (size_t)(kv * g + j) * hd,
                               (size_t)hd * sizeof(float));
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, hd, scale, f->qg, hd,
                            K + (size_t)klo * W, W, 0.0f, f->s, nk);
#ifdef _OPENMP
#pragma omp parallel for num_threads(f->threads) schedule(static)
#endif
                for (int r = 0; r < rows; r++) {
                    float *srow = f->s + (size_t)r * nk;
                    const int t = q0 + r % nq;
                    const int lo = window && t - window + 1 > klo ? t - window + 1 : klo;
                    float mx = srow[lo - klo];
                    for (int u = lo; u <= t; u++) mx = srow[u - klo] > mx ? srow[u - klo] : mx;
                    float sum = 0;
                    for (int u = lo; u <= t; u++) sum += srow[u - klo] = expf(srow[u - klo] - mx);
                    const float inv = 1.0f / sum;
                    for (int u = klo; u < lo; u++) srow[u - klo] = 0;
                    for (int u = lo; u <= t; u++) srow[u - klo] *= inv;
                    for (int u = t + 1; u < kend; u++) srow[u - klo] = 0;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, nk, 1.0f, f->s, nk,
                            Vv + (size_t)klo * W, W, 0.0f, f->og, hd);
                for (int j = 0; j < g; j++) /* scatter back to (T, Q) */
                    for (int i = 0; i < nq; i++)
                        memcpy(out + (size_t)(q0 + i) * Q + (size_t)(kv * g + j) * hd,
                               f->og + ((size_t)j * nq + i) * hd, (size_t)hd * sizeof(float));
            }
        }
    }
}

int gr_fwd_run(gr_fwd *f, const int32_t *tokens, int B, int T, int first, float *logits,
               double *logp)
{
    const gr_model_cfg *c = f->c;
    const gr_model_w *w = f->w;
    if (B < 1 || T < 2 || (int64_t)B * T > f->max_rows || T > f->max_t)
        return gr_seterr(GR_EINVAL,
                         "forward: %d sequence(s) of %d tokens do not fit (need T >= 2, "
                         "T <= %d positions, B*T <= %d)",
                         B, T, f->max_t, f->max_rows);
    if (first < 0 || first >= T - 1 || (logits && first))
        return gr_seterr(GR_EINVAL, "forward: first position %d out of range", first);
    int rc = check_tokens(c, tokens, (size_t)B * T);
    if (rc) return rc;
    openblas_set_num_threads(f->threads);
    const int N = B * T, C = f->C, half = f->hd / 2;

    for (int r = 0; r < N; r++) { /* embeddings: (N, C) */
        memcpy(f->x + (size_t)r * C, w->embed + (size_t)tokens[r] * C, (size_t)C * sizeof(float));
        if (w->pos)
            for (int i = 0; i < C; i++) f->x[(size_t)r * C + i] += w->pos[(size_t)(r % T) * C + i];
    }
    for (int l = 0; l < c->layers; l++) {
        const gr_layer_w *L = &w->layer[l];
        norm_rows(f, N, L->ln1_w, L->ln1_b);
        linear(f, N, f->h, C, L->wqkv, L->bqkv, C, f->W, 0.0f, f->qkv);
        if (c->rope != GR_ROPE_NONE) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(f->threads) schedule(static)
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
        linear(f, N, f->att, f->Q, L->wo, L->bo, f->Q, C, 1.0f, f->x);
        norm_rows(f, N, L->ln2_w, L->ln2_b);
        linear(f, N, f->h, C, L->wup, L->bup, C, f->U, 0.0f, f->mlp);
        const int NI = f->NI, U = f->U, gated = c->family == GR_FAMILY_LLAMA;
        const gr_act act = c->act;
#ifdef _OPENMP
#pragma omp parallel for num_threads(f->threads) schedule(static)
#endif
        for (int r = 0; r < N; r++) {
            float *row = f->mlp + (size_t)r * U;
            if (gated)
                for (int i = 0; i < NI; i++) row[i] = act_f(act, row[i]) * row[NI + i];
            else
                for (int i = 0; i < NI; i++) row[i] = act_f(act, row[i]);
        }
        linear(f, N, f->mlp, U, L->wdown, L->bdown, NI, C, 1.0f, f->x);
    }
    norm_rows(f, N, w->norm_w, w->norm_b);

    /* lm_head over the rows whose next token is scored (and all rows when
     * logits are wanted), a chunk of rows at a time. */
    const int V = f->V, last = logits ? T : T - 1;
    for (int b = 0; b < B; b++) {
        for (int t0 = first; t0 < last; t0 += f->lg_rows) {
            const int n = last - t0 < f->lg_rows ? last - t0 : f->lg_rows;
            const size_t r0 = (size_t)b * T + t0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, f->h + r0 * C, C,
                        w->lm_head, C, 0.0f, f->lg, V);
            if (logits) memcpy(logits + r0 * V, f->lg, (size_t)n * V * sizeof(float));
#ifdef _OPENMP
#pragma omp parallel for num_threads(f->threads) schedule(static)
#endif
            for (int i = 0; i < n; i++) {
                const int t = t0 + i;
                if (t < T - 1)
                    logp[(size_t)b * (T - 1) + t] =
                        logp_row(f->lg + (size_t)i * V, V, tokens[r0 + i + 1]);
            }
        }
    }
    return 0;
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
    rc = 0;
    if (!kc || !vc || !x || !h || !qkv || !att || !o || !u || !lg || !p || !inv || !cs || !sn) {
        rc = gr_seterr(GR_ENOMEM, "forward: out of memory");
        goto done;
    }
    if (c->rope != GR_ROPE_NONE) gr_model_rope_inv_freq(c, inv);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < C; i++)
            x[i] = w->embed[(size_t)tokens[t] * C + i] + (w->pos ? w->pos[(size_t)t * C + i] : 0);
        for (int i = 0; i < half; i++) {
            float ang = (float)t * inv[i];
            cs[i] = (float)cos((double)ang);
            sn[i] = (float)sin((double)ang);
        }
        for (int l = 0; l < c->layers; l++) {
            const gr_layer_w *L = &w->layer[l];
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
        norm_row(x, w->norm_w, w->norm_b, c->norm_eps, C, h);
        ref_matvec(w->lm_head, NULL, h, C, V, lg);
        if (logits) memcpy(logits + (size_t)t * V, lg, (size_t)V * sizeof(float));
        if (t < T - 1) logp[t] = logp_row(lg, V, tokens[t + 1]);
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
    return rc;
}
