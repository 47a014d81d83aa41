/* gr_mlp: MLP classifier — forward/backward on sgemm and by plain loops,
 * SGD/Adam training, safetensors checkpoints (see gr_mlp.h). */
#include "gr_mlp.h"
#include "gr_buf.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_rng.h"
#include "gr_sparse.h"
#include "gr_st.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREDICT_BATCH 256 /* rows per forward pass in gr_mlp_predict */

struct gr_mlp {
    int L;
    int64_t size[GR_MLP_MAX_LAYERS + 1];
    gr_act act;
    double in_off, in_scale;
    uint64_t np;
    float *params, *grads; /* (np) each: per layer the weight then the bias */
    uint64_t woff[GR_MLP_MAX_LAYERS], boff[GR_MLP_MAX_LAYERS];
    int64_t maxw; /* widest layer (inputs included) */
    /* workspace for batches of up to cap rows */
    size_t cap;
    float *A[GR_MLP_MAX_LAYERS]; /* A[0] (B, size[0]) normalised input; A[l] = act(Z[l-1]) */
    float *Z[GR_MLP_MAX_LAYERS]; /* Z[l] (B, size[l+1]) pre-activation; Z[L-1] = logits */
    float *d0, *d1;              /* (B, maxw) gradients flowing backwards */
};

static const char *const act_names[] = {"relu", "tanh", "gelu"};

int gr_act_parse(const char *s, gr_act *out)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, act_names[i])) return *out = (gr_act)i, 0;
    return gr_seterr(GR_EINVAL, "activation '%.40s': want relu, tanh or gelu", s);
}

const char *gr_act_name(gr_act a)
{
    return (unsigned)a < 3 ? act_names[a] : "?";
}

int gr_opt_parse(const char *s, gr_opt *out)
{
    if (!strcmp(s, "sgd"))
        *out = GR_OPT_SGD;
    else if (!strcmp(s, "adam"))
        *out = GR_OPT_ADAM;
    else
        return gr_seterr(GR_EINVAL, "optimizer '%.40s': want sgd or adam", s);
    return 0;
}

const char *gr_opt_name(gr_opt o)
{
    return o == GR_OPT_SGD ? "sgd" : "adam";
}

gr_mlp *gr_mlp_new(const int64_t *sizes, int nlayers, gr_act act)
{
    if (nlayers < 1 || nlayers > GR_MLP_MAX_LAYERS) {
        gr_seterr(GR_EINVAL, "mlp: %d layers (want 1 to %d)", nlayers, GR_MLP_MAX_LAYERS);
        return NULL;
    }
    if ((unsigned)act > GR_ACT_GELU) {
        gr_seterr(GR_EINVAL, "mlp: unknown activation %d", (int)act);
        return NULL;
    }
    uint64_t np = 0;
    int64_t maxw = 0;
    for (int i = 0; i <= nlayers; i++) {
        if (sizes[i] < 1 || sizes[i] > GR_MLP_MAX_WIDTH) {
            gr_seterr(GR_EINVAL, "mlp: layer size %lld at position %d (want 1 to %d)",
                      (long long)sizes[i], i, GR_MLP_MAX_WIDTH);
            return NULL;
        }
        if (sizes[i] > maxw) maxw = sizes[i];
    }
    if (sizes[nlayers] < 2) {
        gr_seterr(GR_EINVAL, "mlp: %lld output class; a classifier needs at least 2",
                  (long long)sizes[nlayers]);
        return NULL;
    }
    gr_mlp *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->L = nlayers;
    m->act = act;
    m->in_scale = 1;
    for (int l = 0; l <= nlayers; l++) m->size[l] = sizes[l];
    for (int l = 0; l < nlayers; l++) {
        /* widths are <= 2^20, so one layer is < 2^41 + 2^20: no overflow */
        m->woff[l] = np;
        np += (uint64_t)sizes[l + 1] * (uint64_t)sizes[l];
        m->boff[l] = np;
        np += (uint64_t)sizes[l + 1];
        if (np > GR_MLP_MAX_PARAMS) {
            gr_seterr(GR_EINVAL, "mlp: more than %llu parameters",
                      (unsigned long long)GR_MLP_MAX_PARAMS);
            gr_mlp_destroy(&m);
            return NULL;
        }
    }
    m->np = np;
    m->maxw = maxw;
    if (!(m->params = calloc(np, sizeof *m->params)) || !(m->grads = calloc(np, sizeof *m->grads)))
        goto oom;
    return m;
oom:
    gr_mlp_destroy(&m);
    gr_seterr(GR_ENOMEM, "mlp: out of memory");
    return NULL;
}

static void free_work(gr_mlp *m)
{
    for (int l = 0; l < m->L; l++) {
        free(m->A[l]);
        free(m->Z[l]);
        m->A[l] = m->Z[l] = NULL;
    }
    free(m->d0);
    free(m->d1);
    m->d0 = m->d1 = NULL;
    m->cap = 0;
}

void gr_mlp_destroy(gr_mlp **m)
{
    if (!m || !*m) return;
    free_work(*m);
    free((*m)->params);
    free((*m)->grads);
    free(*m);
    *m = NULL;
}

/* Makes room for batches of B rows. */
static int reserve(gr_mlp *m, size_t B)
{
    if (B <= m->cap) return 0;
    free_work(m);
    for (int l = 0; l < m->L; l++) {
        m->A[l] = malloc(B * (size_t)m->size[l] * sizeof(float));
        m->Z[l] = malloc(B * (size_t)m->size[l + 1] * sizeof(float));
        if (!m->A[l] || !m->Z[l]) goto oom;
    }
    m->d0 = malloc(B * (size_t)m->maxw * sizeof(float));
    m->d1 = malloc(B * (size_t)m->maxw * sizeof(float));
    if (!m->d0 || !m->d1) goto oom;
    m->cap = B;
    return 0;
oom:
    free_work(m);
    return gr_seterr(GR_ENOMEM, "mlp: out of memory for a batch of %zu rows", B);
}

int gr_mlp_nlayers(const gr_mlp *m)
{
    return m->L;
}
int64_t gr_mlp_size(const gr_mlp *m, int i)
{
    return i >= 0 && i <= m->L ? m->size[i] : 0;
}
gr_act gr_mlp_act(const gr_mlp *m)
{
    return m->act;
}
uint64_t gr_mlp_nparams(const gr_mlp *m)
{
    return m->np;
}
void gr_mlp_set_input_norm(gr_mlp *m, double offset, double scale)
{
    m->in_off = offset;
    m->in_scale = scale;
}
double gr_mlp_input_offset(const gr_mlp *m)
{
    return m->in_off;
}
double gr_mlp_input_scale(const gr_mlp *m)
{
    return m->in_scale;
}
float *gr_mlp_weight(gr_mlp *m, int l)
{
    return m->params + m->woff[l];
}
float *gr_mlp_bias(gr_mlp *m, int l)
{
    return m->params + m->boff[l];
}
const float *gr_mlp_grad_weight(const gr_mlp *m, int l)
{
    return m->grads + m->woff[l];
}
const float *gr_mlp_grad_bias(const gr_mlp *m, int l)
{
    return m->grads + m->boff[l];
}

void gr_mlp_init(gr_mlp *m, uint64_t seed)
{
    char name[64];
    for (int l = 0; l < m->L; l++) {
        const double a = 1.0 / sqrt((double)m->size[l]);
        const uint64_t nw = (uint64_t)m->size[l + 1] * (uint64_t)m->size[l];
        snprintf(name, sizeof name, "layers.%d.weight", l);
        uint64_t key = gr_rng_key(seed, name, 0);
        float *w = gr_mlp_weight(m, l), *b = gr_mlp_bias(m, l);
        for (uint64_t i = 0; i < nw; i++) w[i] = (float)(a * (2 * gr_rng_uniform_d(key, i) - 1));
        snprintf(name, sizeof name, "layers.%d.bias", l);
        key = gr_rng_key(seed, name, 0);
        for (int64_t i = 0; i < m->size[l + 1]; i++)
            b[i] = (float)(a * (2 * gr_rng_uniform_d(key, (uint64_t)i) - 1));
    }
}

/* ---------------------------------------------------------------- activations */

static inline double act_f(gr_act a, double z)
{
    switch (a) {
    case GR_ACT_RELU:
        return z > 0 ? z : 0;
    case GR_ACT_TANH:
        return tanh(z);
    default:
        return 0.5 * z * (1 + erf(z * M_SQRT1_2));
    }
}

/* d act / d z at z (a = act(z), for tanh) */
static inline double act_df(gr_act a, double z, double y)
{
    switch (a) {
    case GR_ACT_RELU:
        return z > 0 ? 1 : 0;
    case GR_ACT_TANH:
        return 1 - y * y;
    default:
        return 0.5 * (1 + erf(z * M_SQRT1_2)) +
               z * exp(-0.5 * z * z) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
    }
}

/* Softmax cross-entropy of one row of logits z (k) against label y; writes
 * dz = (softmax - onehot) * scale when dz is not NULL. */
static double xent_row(const float *z, int64_t k, int32_t y, float *dz, double scale)
{
    double mx = z[0];
    for (int64_t j = 1; j < k; j++)
        if (z[j] > mx) mx = z[j];
    double s = 0;
    for (int64_t j = 0; j < k; j++) s += exp((double)z[j] - mx);
    const double lse = mx + log(s);
    if (dz)
        for (int64_t j = 0; j < k; j++)
            dz[j] = (float)((exp((double)z[j] - lse) - (j == y)) * scale);
    return lse - (double)z[y];
}

static int check_labels(const gr_mlp *m, const int32_t *y, size_t B)
{
    for (size_t i = 0; i < B; i++)
        if (y[i] < 0 || y[i] >= m->size[m->L])
            return gr_seterr(GR_EINVAL, "mlp: label %d of row %zu is outside [0, %lld)", (int)y[i],
                             i, (long long)m->size[m->L]);
    return 0;
}

/* ---------------------------------------------------------------- sgemm pass */

static void normalise_input(gr_mlp *m, const float *x, size_t B)
{
    const size_t n = B * (size_t)m->size[0];
    const float off = (float)m->in_off, sc = (float)m->in_scale;
    for (size_t i = 0; i < n; i++) m->A[0][i] = (x[i] - off) * sc;
}

int gr_mlp_forward(gr_mlp *m, const float *x, size_t B, float *logits)
{
    int rc = reserve(m, B);
    if (rc) return rc;
    if (!B) return 0;
    normalise_input(m, x, B);
    for (int l = 0; l < m->L; l++) {
        const int in = (int)m->size[l], out = (int)m->size[l + 1];
        float *Z = m->Z[l]; /* (B, out) */
        const float *b = gr_mlp_bias(m, l);
        for (size_t r = 0; r < B; r++) memcpy(Z + r * (size_t)out, b, (size_t)out * sizeof *Z);
        /* Z += A (B, in) · W^T (in, out) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, out, in, 1.0f, m->A[l], in,
                    gr_mlp_weight(m, l), in, 1.0f, Z, out);
        if (l + 1 < m->L) {
            float *A = m->A[l + 1];
            for (size_t i = 0; i < B * (size_t)out; i++) A[i] = (float)act_f(m->act, Z[i]);
        }
    }
    if (logits) memcpy(logits, m->Z[m->L - 1], B * (size_t)m->size[m->L] * sizeof *logits);
    return 0;
}

int gr_mlp_backward(gr_mlp *m, const float *x, const int32_t *y, size_t B, double *loss)
{
    if (!B) return gr_seterr(GR_EINVAL, "mlp: empty batch");
    int rc = check_labels(m, y, B);
    if (!rc) rc = gr_mlp_forward(m, x, B, NULL);
    if (rc) return rc;
    const int64_t K = m->size[m->L];
    double total = 0;
    float *dz = m->d0; /* (B, out) of the current layer */
    for (size_t r = 0; r < B; r++)
        total += xent_row(m->Z[m->L - 1] + r * (size_t)K, K, y[r], dz + r * (size_t)K, 1.0 / B);
    *loss = total / (double)B;
    for (int l = m->L - 1; l >= 0; l--) {
        const int in = (int)m->size[l], out = (int)m->size[l + 1];
        float *gw = m->grads + m->woff[l], *gb = m->grads + m->boff[l];
        /* dW (out, in) = dZ^T (out, B) · A (B, in) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, (int)B, 1.0f, dz, out,
                    m->A[l], in, 0.0f, gw, in);
        for (int j = 0; j < out; j++) gb[j] = 0;
        for (size_t r = 0; r < B; r++)
            for (int j = 0; j < out; j++) gb[j] += dz[r * (size_t)out + j];
        if (l == 0) break;
        /* dA (B, in) = dZ (B, out) · W (out, in), then through the activation */
        float *da = dz == m->d0 ? m->d1 : m->d0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, in, out, 1.0f, dz, out,
                    gr_mlp_weight(m, l), in, 0.0f, da, in);
        const float *Zp = m->Z[l - 1], *Ap = m->A[l];
        for (size_t i = 0; i < B * (size_t)in; i++)
            da[i] = (float)(da[i] * act_df(m->act, Zp[i], Ap[i]));
        dz = da;
    }
    return 0;
}

/* ---------------------------------------------------------------- reference */

int gr_mlp_forward_ref(gr_mlp *m, const float *x, size_t B, float *logits)
{
    int rc = reserve(m, B);
    if (rc) return rc;
    if (!B) return 0;
    normalise_input(m, x, B);
    for (int l = 0; l < m->L; l++) {
        const int64_t in = m->size[l], out = m->size[l + 1];
        const float *W = gr_mlp_weight(m, l), *b = gr_mlp_bias(m, l);
        for (size_t r = 0; r < B; r++)
            for (int64_t j = 0; j < out; j++) {
                double s = b[j];
                for (int64_t k = 0; k < in; k++)
                    s += (double)m->A[l][r * (size_t)in + (size_t)k] * W[j * in + k];
                m->Z[l][r * (size_t)out + (size_t)j] = (float)s;
                if (l + 1 < m->L)
                    m->A[l + 1][r * (size_t)out + (size_t)j] = (float)act_f(m->act, (float)s);
            }
    }
    if (logits) memcpy(logits, m->Z[m->L - 1], B * (size_t)m->size[m->L] * sizeof *logits);
    return 0;
}

int gr_mlp_backward_ref(gr_mlp *m, const float *x, const int32_t *y, size_t B, double *loss)
{
    if (!B) return gr_seterr(GR_EINVAL, "mlp: empty batch");
    int rc = check_labels(m, y, B);
    if (!rc) rc = gr_mlp_forward_ref(m, x, B, NULL);
    if (rc) return rc;
    const int64_t K = m->size[m->L];
    double total = 0;
    float *dz = m->d0;
    for (size_t r = 0; r < B; r++)
        total += xent_row(m->Z[m->L - 1] + r * (size_t)K, K, y[r], dz + r * (size_t)K, 1.0 / B);
    *loss = total / (double)B;
    for (int l = m->L - 1; l >= 0; l--) {
        const int64_t in = m->size[l], out = m->size[l + 1];
        float *gw = m->grads + m->woff[l], *gb = m->grads + m->boff[l];
        const float *W = gr_mlp_weight(m, l);
        for (int64_t j = 0; j < out; j++) {
            double sb = 0;
            for (size_t r = 0; r < B; r++) sb += dz[r * (size_t)out + (size_t)j];
            gb[j] = (float)sb;
            for (int64_t k = 0; k < in; k++) {
                double s = 0;
                for (size_t r = 0; r < B; r++)
                    s += (double)dz[r * (size_t)out + (size_t)j] *
                         m->A[l][r * (size_t)in + (size_t)k];
                gw[j * in + k] = (float)s;
            }
        }
        if (l == 0) break;
        float *da = dz == m->d0 ? m->d1 : m->d0;
        for (size_t r = 0; r < B; r++)
            for (int64_t k = 0; k < in; k++) {
                double s = 0;
                for (int64_t j = 0; j < out; j++)
                    s += (double)dz[r * (size_t)out + (size_t)j] * W[j * in + k];
                const size_t i = r * (size_t)in + (size_t)k;
                da[i] = (float)(s * act_df(m->act, m->Z[l - 1][i], m->A[l][i]));
            }
        dz = da;
    }
    return 0;
}

/* ---------------------------------------------------------------- predict */

int gr_mlp_predict(gr_mlp *m, const float *x, const int32_t *y, size_t n, double *loss,
                   int32_t *pred)
{
    const int64_t K = m->size[m->L], F = m->size[0];
    int rc = 0;
    if (loss && (rc = check_labels(m, y, n))) return rc;
    for (size_t at = 0; at < n; at += PREDICT_BATCH) {
        const size_t B = n - at < PREDICT_BATCH ? n - at : PREDICT_BATCH;
        if ((rc = gr_mlp_forward(m, x + at * (size_t)F, B, NULL))) return rc;
        const float *Z = m->Z[m->L - 1];
        for (size_t r = 0; r < B; r++) {
            const float *z = Z + r * (size_t)K;
            if (loss) loss[at + r] = xent_row(z, K, y[at + r], NULL, 0);
            if (pred) {
                int32_t best = 0;
                for (int64_t j = 1; j < K; j++)
                    if (z[j] > z[best]) best = (int32_t)j;
                pred[at + r] = best;
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- training */

int gr_mlp_train(gr_mlp *m, const float *x, const int32_t *y, size_t n, const gr_mlp_train_opts *o)
{
    if (!(o->lr > 0) || !isfinite(o->lr))
        return gr_seterr(GR_EINVAL, "train: learning rate %g must be finite and > 0", o->lr);
    if (o->epochs < 0) return gr_seterr(GR_EINVAL, "train: epochs %d must be >= 0", o->epochs);
    if (o->batch < 1) return gr_seterr(GR_EINVAL, "train: batch size must be >= 1");
    if (!(o->momentum >= 0 && o->momentum < 1))
        return gr_seterr(GR_EINVAL, "train: momentum %g must be in [0, 1)", o->momentum);
    if (!(o->weight_decay >= 0) || !isfinite(o->weight_decay))
        return gr_seterr(GR_EINVAL, "train: weight decay %g must be finite and >= 0",
                         o->weight_decay);
    if (!n) return gr_seterr(GR_EINVAL, "train: no training rows");
    int rc = check_labels(m, y, n);
    if (rc) return rc;
    const double b1 = o->beta1 > 0 ? o->beta1 : 0.9, b2 = o->beta2 > 0 ? o->beta2 : 0.999,
                 eps = o->eps > 0 ? o->eps : 1e-8;
    if (b1 >= 1 || b2 >= 1) return gr_seterr(GR_EINVAL, "train: adam betas must be < 1");
    const size_t F = (size_t)m->size[0], K = (size_t)m->size[m->L];
    const size_t bmax = o->batch < n ? o->batch : n;
    size_t *perm = malloc(n * sizeof *perm);
    float *xb = malloc(bmax * F * sizeof *xb), *s1 = calloc(m->np, sizeof *s1), *s2 = NULL;
    int32_t *yb = malloc(bmax * sizeof *yb);
    if (o->opt == GR_OPT_ADAM) s2 = calloc(m->np, sizeof *s2);
    if (!perm || !xb || !s1 || !yb || (o->opt == GR_OPT_ADAM && !s2)) {
        rc = gr_seterr(GR_ENOMEM, "train: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) perm[i] = i;
    uint64_t step = 0;
    for (int e = 0; e < o->epochs; e++) {
        /* Fisher-Yates over the previous order, keyed by (seed, epoch) */
        const uint64_t key = gr_rng_key(o->seed, "graft.mlp.shuffle", (uint64_t)e);
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = (size_t)(gr_rng_uniform_d(key, i) * (double)(i + 1));
            if (j > i) j = i;
            size_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        double eloss = 0;
        size_t correct = 0;
        for (size_t at = 0; at < n; at += bmax) {
            const size_t B = n - at < bmax ? n - at : bmax;
            for (size_t r = 0; r < B; r++) {
                memcpy(xb + r * F, x + perm[at + r] * F, F * sizeof *xb);
                yb[r] = y[perm[at + r]];
            }
            double bl;
            if ((rc = gr_mlp_backward(m, xb, yb, B, &bl))) goto done;
            if (!isfinite(bl)) {
                rc = gr_seterr(GR_EINVAL,
                               "train: loss became %g in epoch %d (learning rate %g too large?)",
                               bl, e + 1, o->lr);
                goto done;
            }
            eloss += bl * (double)B;
            const float *Z = m->Z[m->L - 1];
            for (size_t r = 0; r < B; r++) {
                size_t best = 0;
                for (size_t j = 1; j < K; j++)
                    if (Z[r * K + j] > Z[r * K + best]) best = j;
                correct += (int32_t)best == yb[r];
            }
            step++;
            const float lr = (float)o->lr, wd = (float)o->weight_decay;
            float *p = m->params;
            const float *g = m->grads;
            if (o->opt == GR_OPT_SGD) {
                const float mu = (float)o->momentum;
                for (uint64_t i = 0; i < m->np; i++) {
                    s1[i] = mu * s1[i] + g[i];
                    p[i] -= lr * (s1[i] + wd * p[i]);
                }
            } else {
                const double c1 = 1 - pow(b1, (double)step), c2 = 1 - pow(b2, (double)step);
                const float fb1 = (float)b1, fb2 = (float)b2;
                const float a = (float)(o->lr / c1), ic2 = (float)(1 / c2), fe = (float)eps;
                for (uint64_t i = 0; i < m->np; i++) {
                    s1[i] = fb1 * s1[i] + (1 - fb1) * g[i];
                    s2[i] = fb2 * s2[i] + (1 - fb2) * g[i] * g[i];
                    p[i] -= a * s1[i] / (sqrtf(s2[i] * ic2) + fe) + lr * wd * p[i];
                }
            }
        }
        if (o->epoch_cb &&
            (rc = o->epoch_cb(o->ud, e + 1, eloss / (double)n, (double)correct / (double)n)))
            goto done;
    }
done:
    free(perm);
    free(xb);
    free(yb);
    free(s1);
    free(s2);
    return rc;
}

/* ---------------------------------------------------------------- checkpoints */

int gr_mlp_save(const gr_mlp *m, const char *dir, gr_dtype dt, const char *extra_json)
{
    if (dt != GR_DT_F32 && dt != GR_DT_F16 && dt != GR_DT_BF16)
        return gr_seterr(GR_EINVAL, "mlp: cannot save weights as %s (want F32, F16 or BF16)",
                         gr_dtype_name(dt));
    int rc = gr_fs_mkdirs(dir, 0755, 0);
    if (rc) return rc;
    gr_stw *w = gr_stw_new(dir, 0);
    gr_buf cfg = {0};
    char *path = NULL;
    char name[64];
    if (!w) return gr_errcode();
    for (int l = 0; l < m->L && !rc; l++) {
        int64_t ws[2] = {m->size[l + 1], m->size[l]}, bs[1] = {m->size[l + 1]};
        snprintf(name, sizeof name, "layers.%d.bias", l);
        if (!(rc = gr_stw_add(w, name, dt, 1, bs))) {
            snprintf(name, sizeof name, "layers.%d.weight", l);
            rc = gr_stw_add(w, name, dt, 2, ws);
        }
    }
    if (!rc) rc = gr_stw_meta(w, "format", "pt");
    if (!rc) rc = gr_stw_begin(w);
    for (int l = 0; l < m->L && !rc; l++) {
        const uint64_t out = (uint64_t)m->size[l + 1], in = (uint64_t)m->size[l];
        if (!(rc = gr_stw_write_f32(w, m->params + m->boff[l], out)))
            rc = gr_stw_write_f32(w, m->params + m->woff[l], out * in);
    }
    if (!rc) rc = gr_stw_finish(w);
    gr_stw_destroy(&w);
    if (rc) return rc;
    gr_buf_printf(&cfg, "{\n  \"model_type\": \"%s\",\n  \"layer_sizes\": [", GR_MLP_MODEL_TYPE);
    for (int l = 0; l <= m->L; l++)
        gr_buf_printf(&cfg, "%s%lld", l ? ", " : "", (long long)m->size[l]);
    gr_buf_printf(&cfg, "],\n  \"activation\": \"%s\",\n  \"num_labels\": %lld,\n",
                  gr_act_name(m->act), (long long)m->size[m->L]);
    gr_buf_puts(&cfg, "  \"input_offset\": ");
    gr_buf_json_num(&cfg, m->in_off);
    gr_buf_puts(&cfg, ",\n  \"input_scale\": ");
    gr_buf_json_num(&cfg, m->in_scale);
    gr_buf_printf(&cfg, ",\n  \"torch_dtype\": \"%s\"",
                  dt == GR_DT_F32   ? "float32"
                  : dt == GR_DT_F16 ? "float16"
                                    : "bfloat16");
    if (extra_json && *extra_json) gr_buf_printf(&cfg, ",\n  %s", extra_json);
    gr_buf_puts(&cfg, "\n}\n");
    if (cfg.oom || !(path = gr_fs_join(dir, "config.json")))
        rc = gr_seterr(GR_ENOMEM, "out of memory");
    else
        rc = gr_fs_write_atomic(path, cfg.data, cfg.len, 0644);
    free(path);
    gr_buf_free(&cfg);
    return rc;
}

/* Parses "layers.<l>.weight" / "layers.<l>.bias": returns l and sets *is_w,
 * or -1 for any other name. */
static int tensor_layer(const char *name, int *is_w)
{
    if (strncmp(name, "layers.", 7)) return -1;
    const char *p = name + 7;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return -1;
    int l = 0;
    while (*p >= '0' && *p <= '9' && l < 1000) l = l * 10 + (*p++ - '0');
    if (!strcmp(p, ".weight"))
        *is_w = 1;
    else if (!strcmp(p, ".bias"))
        *is_w = 0;
    else
        return -1;
    return l;
}

gr_mlp *gr_mlp_load(const char *dir)
{
    gr_ckpt *c = gr_ckpt_open(dir);
    gr_mlp *m = NULL;
    int rc = 0;
    if (!c) return NULL;
    const gr_json *cfg = gr_ckpt_config(c);
    const char *kind = gr_ckpt_meta_get(c, GR_SPARSE_META_KIND);
    if (kind) {
        gr_seterr(GR_EINVAL,
                  "%s: is a %s (safetensors metadata %s), not a model; apply it to its base "
                  "first (op apply)",
                  dir, kind, GR_SPARSE_META_KIND);
        goto fail;
    }
    if (!cfg) {
        gr_seterr(GR_EINVAL, "%s: no config.json beside the weights", dir);
        goto fail;
    }
    const char *mt = gr_json_get_str(cfg, "model_type", NULL);
    if (!mt || strcmp(mt, GR_MLP_MODEL_TYPE)) {
        gr_seterr(GR_EINVAL, "%s: config.json: model_type is '%s', want '%s'", dir,
                  mt ? mt : "(missing)", GR_MLP_MODEL_TYPE);
        goto fail;
    }
    const gr_json *ls = gr_json_get(cfg, "layer_sizes");
    if (!ls || ls->type != GR_JSON_ARR || ls->len < 2 || ls->len > GR_MLP_MAX_LAYERS + 1) {
        gr_seterr(GR_EINVAL, "%s: config.json: layer_sizes must be a list of 2 to %d sizes", dir,
                  GR_MLP_MAX_LAYERS + 1);
        goto fail;
    }
    int64_t sizes[GR_MLP_MAX_LAYERS + 1];
    for (size_t i = 0; i < ls->len; i++) {
        const gr_json *v = ls->items[i];
        if (v->type != GR_JSON_NUM || !v->is_int || v->i < 1 || v->i > GR_MLP_MAX_WIDTH) {
            gr_seterr(GR_EINVAL, "%s: config.json: layer_sizes[%zu] must be an integer in [1, %d]",
                      dir, i, GR_MLP_MAX_WIDTH);
            goto fail;
        }
        sizes[i] = v->i;
    }
    const int L = (int)ls->len - 1;
    gr_act act;
    const char *an = gr_json_get_str(cfg, "activation", NULL);
    if (!an) {
        gr_seterr(GR_EINVAL, "%s: config.json: activation missing", dir);
        goto fail;
    }
    if (gr_act_parse(an, &act)) {
        gr_adderr(GR_EINVAL, "%s: config.json", dir);
        goto fail;
    }
    const gr_json *nl = gr_json_get(cfg, "num_labels");
    if (nl && (nl->type != GR_JSON_NUM || !nl->is_int || nl->i != sizes[L])) {
        gr_seterr(GR_EINVAL, "%s: config.json: num_labels disagrees with layer_sizes (%lld)", dir,
                  (long long)sizes[L]);
        goto fail;
    }
    double off = 0, sc = 1;
    const gr_json *jo = gr_json_get(cfg, "input_offset"), *js = gr_json_get(cfg, "input_scale");
    if ((jo && jo->type != GR_JSON_NUM) || (js && js->type != GR_JSON_NUM)) {
        gr_seterr(GR_EINVAL, "%s: config.json: input_offset and input_scale must be numbers", dir);
        goto fail;
    }
    if (jo) off = jo->num;
    if (js) sc = js->num;
    if (!isfinite(off) || !isfinite(sc) || sc == 0) {
        gr_seterr(GR_EINVAL,
                  "%s: config.json: input_offset must be finite, input_scale finite "
                  "and non-zero",
                  dir);
        goto fail;
    }
    if (!(m = gr_mlp_new(sizes, L, act))) {
        gr_adderr(gr_errcode(), "%s: config.json", dir);
        goto fail;
    }
    gr_mlp_set_input_norm(m, off, sc);
    for (size_t i = 0; i < gr_ckpt_count(c); i++) {
        const gr_tensor *t = gr_ckpt_tensor(c, i);
        int is_w, l = tensor_layer(t->name, &is_w);
        if (l < 0 || l >= L) {
            gr_seterr(GR_EINVAL, "%s: tensor '%s' is not part of a %d-layer %s", t->file, t->name,
                      L, GR_MLP_MODEL_TYPE);
            goto fail;
        }
    }
    char name[64];
    for (int l = 0; l < L; l++)
        for (int is_w = 1; is_w >= 0; is_w--) {
            snprintf(name, sizeof name, "layers.%d.%s", l, is_w ? "weight" : "bias");
            const gr_tensor *t = gr_ckpt_find(c, name);
            if (!t) {
                gr_seterr(GR_ENOTFOUND, "%s: tensor '%s' missing", dir, name);
                goto fail;
            }
            const int nd = is_w ? 2 : 1;
            if (t->ndim != nd || t->shape[0] != sizes[l + 1] || (is_w && t->shape[1] != sizes[l])) {
                if (is_w)
                    gr_seterr(GR_EINVAL,
                              "%s: tensor '%s' must have shape [%lld, %lld] (layer_sizes)", t->file,
                              name, (long long)sizes[l + 1], (long long)sizes[l]);
                else
                    gr_seterr(GR_EINVAL, "%s: tensor '%s' must have shape [%lld] (layer_sizes)",
                              t->file, name, (long long)sizes[l + 1]);
                goto fail;
            }
            float *dst = is_w ? gr_mlp_weight(m, l) : gr_mlp_bias(m, l);
            if ((rc = gr_tensor_read_f32(t, 0, t->nelem, dst))) {
                gr_adderr(rc, "%s: tensor '%s'", t->file, name);
                goto fail;
            }
            for (uint64_t k = 0; k < t->nelem; k++)
                if (!isfinite(dst[k])) {
                    gr_seterr(GR_EINVAL, "%s: tensor '%s' holds a non-finite value at element %llu",
                              t->file, name, (unsigned long long)k);
                    goto fail;
                }
        }
    gr_ckpt_close(&c);
    return m;
fail:
    gr_mlp_destroy(&m);
    gr_ckpt_close(&c);
    return NULL;
}
