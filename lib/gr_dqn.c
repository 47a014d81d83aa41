/* gr_dqn: a deep Q-network agent (Mnih et al. 2015, in the form of the
 * PyTorch DQN tutorial): an MLP Q-network with a repeated shared hidden
 * layer, hand-written backprop on OpenBLAS, AdamW, Huber loss, replay
 * buffer, soft-updated target network and an epsilon-greedy schedule. */
#include "gr_dqn.h"
#include "gr_err.h"
#include "gr_rng.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QNET_MAX_BATCH   65536
#define QNET_MAX_ACT_MEM (1ULL << 31) /* bytes of activations for one batch */

enum { T_IN_W, T_IN_B, T_HID_W, T_HID_B, T_OUT_W, T_OUT_B };

struct gr_qnet {
    gr_qnet_shape s;
    size_t np;
    float *p, *g; /* parameters and gradients, np each */
    size_t off[GR_QNET_NTENSORS + 1];
    /* Activations of the last forward pass: h is (repeat+1) blocks of
     * (B, hidden) post-ReLU outputs, d the matching gradients; x a copy of
     * the input (B, inputs). Sized for cap_b rows. */
    int cap_b, last_b;
    float *h, *d, *x;
};

int gr_qnet_shape_check(const gr_qnet_shape *s)
{
    struct {
        const char *name;
        int v, lo, hi;
    } f[] = {{"inputs", s->inputs, 1, GR_QNET_MAX_WIDTH},
             {"hidden", s->hidden, 1, GR_QNET_MAX_WIDTH},
             {"repeat", s->repeat, 0, GR_QNET_MAX_REPEAT},
             {"outputs", s->outputs, 1, GR_QNET_MAX_WIDTH}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < f[i].lo || f[i].v > f[i].hi)
            return gr_seterr(GR_EINVAL, "qnet: %s = %d outside %d..%d", f[i].name, f[i].v, f[i].lo,
                             f[i].hi);
    return 0;
}

static void tensor_layout(gr_qnet *q)
{
    size_t NI = (size_t)q->s.inputs, H = (size_t)q->s.hidden, O = (size_t)q->s.outputs;
    size_t count[GR_QNET_NTENSORS] = {H * NI, H, H * H, H, O * H, O};
    q->off[0] = 0;
    for (int i = 0; i < GR_QNET_NTENSORS; i++) q->off[i + 1] = q->off[i] + count[i];
    q->np = q->off[GR_QNET_NTENSORS];
}

gr_qnet_tensor gr_qnet_shape_tensor(const gr_qnet_shape *s, int i)
{
    static const char *names[GR_QNET_NTENSORS] = {"in.weight",   "in.bias",    "hidden.weight",
                                                  "hidden.bias", "out.weight", "out.bias"};
    gr_qnet_tensor t = {0};
    if (i < 0 || i >= GR_QNET_NTENSORS) return t;
    int64_t NI = s->inputs, H = s->hidden, O = s->outputs;
    int64_t rows[GR_QNET_NTENSORS] = {H, H, H, H, O, O};
    int64_t cols[GR_QNET_NTENSORS] = {NI, 0, H, 0, H, 0};
    t.name = names[i];
    t.ndim = cols[i] ? 2 : 1;
    t.shape[0] = rows[i];
    t.shape[1] = cols[i];
    t.count = (size_t)(rows[i] * (cols[i] ? cols[i] : 1));
    for (int k = 0; k < i; k++) t.offset += (size_t)(rows[k] * (cols[k] ? cols[k] : 1));
    return t;
}

gr_qnet_tensor gr_qnet_tensor_info(const gr_qnet *q, int i)
{
    return gr_qnet_shape_tensor(&q->s, i);
}

gr_qnet *gr_qnet_new(const gr_qnet_shape *s, uint64_t seed)
{
    if (gr_qnet_shape_check(s)) return NULL;
    gr_qnet *q = calloc(1, sizeof *q);
    if (!q) goto oom;
    q->s = *s;
    tensor_layout(q);
    q->p = malloc(q->np * sizeof *q->p);
    q->g = calloc(q->np, sizeof *q->g);
    if (!q->p || !q->g) goto oom;
    /* torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias */
    gr_rng_stream rs;
    gr_rng_stream_init(&rs, seed, "qnet.init");
    int fan_in[GR_QNET_NTENSORS] = {s->inputs, s->inputs, s->hidden,
                                    s->hidden, s->hidden, s->hidden};
    for (int t = 0; t < GR_QNET_NTENSORS; t++) {
        double b = 1.0 / sqrt((double)fan_in[t]);
        for (size_t i = q->off[t]; i < q->off[t + 1]; i++)
            q->p[i] = (float)((2 * gr_rng_next_double(&rs) - 1) * b);
    }
    return q;
oom:
    gr_qnet_destroy(&q);
    gr_seterr(GR_ENOMEM, "qnet: out of memory");
    return NULL;
}

void gr_qnet_destroy(gr_qnet **pq)
{
    if (!pq || !*pq) return;
    gr_qnet *q = *pq;
    free(q->p);
    free(q->g);
    free(q->h);
    free(q->d);
    free(q->x);
    free(q);
    *pq = NULL;
}

gr_qnet_shape gr_qnet_get_shape(const gr_qnet *q)
{
    return q->s;
}

size_t gr_qnet_nparams(const gr_qnet *q)
{
    return q->np;
}

float *gr_qnet_params(gr_qnet *q)
{
    return q->p;
}

const float *gr_qnet_params_c(const gr_qnet *q)
{
    return q->p;
}

float *gr_qnet_grads(gr_qnet *q)
{
    return q->g;
}

void gr_qnet_zero_grads(gr_qnet *q)
{
    memset(q->g, 0, q->np * sizeof *q->g);
}

static int same_shape(const gr_qnet *a, const gr_qnet *b)
{
    return a->s.inputs == b->s.inputs && a->s.hidden == b->s.hidden && a->s.repeat == b->s.repeat &&
           a->s.outputs == b->s.outputs;
}

int gr_qnet_copy(gr_qnet *dst, const gr_qnet *src)
{
    if (!same_shape(dst, src)) return gr_seterr(GR_EINVAL, "qnet: copy between different shapes");
    memcpy(dst->p, src->p, src->np * sizeof *src->p);
    return 0;
}

int gr_qnet_soft_update(gr_qnet *dst, const gr_qnet *src, float tau)
{
    if (!same_shape(dst, src))
        return gr_seterr(GR_EINVAL, "qnet: soft update between different shapes");
    for (size_t i = 0; i < dst->np; i++) dst->p[i] = tau * src->p[i] + (1 - tau) * dst->p[i];
    return 0;
}

/* Makes room for B rows of activations. */
static int reserve(gr_qnet *q, int B)
{
    if (B < 1 || B > QNET_MAX_BATCH)
        return gr_seterr(GR_EINVAL, "qnet: batch %d outside 1..%d", B, QNET_MAX_BATCH);
    if (B <= q->cap_b) return 0;
    size_t H = (size_t)q->s.hidden, blocks = (size_t)q->s.repeat + 1;
    size_t n = blocks * (size_t)B * H;
    if (n * sizeof(float) > QNET_MAX_ACT_MEM)
        return gr_seterr(GR_EINVAL, "qnet: batch %d needs %zu activations (too many)", B, n);
    float *h = malloc(n * sizeof *h), *d = malloc(n * sizeof *d);
    float *x = malloc((size_t)B * (size_t)q->s.inputs * sizeof *x);
    if (!h || !d || !x) {
        free(h);
        free(d);
        free(x);
        return gr_seterr(GR_ENOMEM, "qnet: out of memory for batch %d", B);
    }
    free(q->h);
    free(q->d);
    free(q->x);
    q->h = h, q->d = d, q->x = x;
    q->cap_b = B;
    return 0;
}

/* y (B, n) += bias (n) per row, then ReLU when relu is set. */
static void bias_act(float *y, const float *bias, int B, int n, int relu)
{
    for (int r = 0; r < B; r++) {
        float *row = y + (size_t)r * n;
        for (int c = 0; c < n; c++) {
            float v = row[c] + bias[c];
            row[c] = relu && v < 0 ? 0 : v;
        }
    }
}

int gr_qnet_forward(gr_qnet *q, const float *in, int B, float *out)
{
    int rc = reserve(q, B);
    if (rc) return rc;
    const int NI = q->s.inputs, H = q->s.hidden, R = q->s.repeat, O = q->s.outputs;
    const float *P = q->p;
    memcpy(q->x, in, (size_t)B * NI * sizeof *in);
    size_t blk = (size_t)B * H;
    /* h0 (B, H) = relu(x (B, NI) . W_in^T (NI, H) + b_in) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, NI, 1.0f, q->x, NI,
                P + q->off[T_IN_W], NI, 0.0f, q->h, H);
    bias_act(q->h, P + q->off[T_IN_B], B, H, 1);
    /* hk (B, H) = relu(h(k-1) . W_hid^T + b_hid), k = 1..R, one shared W_hid */
    for (int k = 1; k <= R; k++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, H, 1.0f, q->h + (k - 1) * blk, H,
                    P + q->off[T_HID_W], H, 0.0f, q->h + k * blk, H);
        bias_act(q->h + k * blk, P + q->off[T_HID_B], B, H, 1);
    }
    /* out (B, O) = hR . W_out^T + b_out */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, O, H, 1.0f, q->h + R * blk, H,
                P + q->off[T_OUT_W], H, 0.0f, out, O);
    bias_act(out, P + q->off[T_OUT_B], B, O, 0);
    q->last_b = B;
    return 0;
}

void gr_qnet_forward_ref(const gr_qnet *q, const float *in, int B, double *out)
{
    const int NI = q->s.inputs, H = q->s.hidden, R = q->s.repeat, O = q->s.outputs;
    const float *P = q->p;
    double *a = malloc((size_t)H * sizeof *a), *b = malloc((size_t)H * sizeof *b);
    if (!a || !b) {
        for (size_t i = 0; i < (size_t)B * O; i++) out[i] = NAN;
        goto done;
    }
    for (int r = 0; r < B; r++) {
        const float *x = in + (size_t)r * NI;
        for (int o = 0; o < H; o++) {
            double s = P[q->off[T_IN_B] + o];
            for (int i = 0; i < NI; i++) s += (double)P[q->off[T_IN_W] + (size_t)o * NI + i] * x[i];
            a[o] = s > 0 ? s : 0;
        }
        for (int k = 0; k < R; k++) {
            for (int o = 0; o < H; o++) {
                double s = P[q->off[T_HID_B] + o];
                for (int i = 0; i < H; i++)
                    s += (double)P[q->off[T_HID_W] + (size_t)o * H + i] * a[i];
                b[o] = s > 0 ? s : 0;
            }
            double *t = a;
            a = b, b = t;
        }
        for (int o = 0; o < O; o++) {
            double s = P[q->off[T_OUT_B] + o];
            for (int i = 0; i < H; i++) s += (double)P[q->off[T_OUT_W] + (size_t)o * H + i] * a[i];
            out[(size_t)r * O + o] = s;
        }
    }
done:
    free(a);
    free(b);
}

/* g (n) += column sums of m (B, n). */
static void colsum_add(float *g, const float *m, size_t B, int n)
{
    for (size_t r = 0; r < B; r++)
        for (int c = 0; c < n; c++) g[c] += m[r * n + c];
}

int gr_qnet_backward(gr_qnet *q, const float *dout)
{
    const int B = q->last_b;
    if (B < 1) return gr_seterr(GR_ESTATE, "qnet: backward without a forward pass");
    const int NI = q->s.inputs, H = q->s.hidden, R = q->s.repeat, O = q->s.outputs;
    const float *P = q->p;
    float *G = q->g;
    size_t blk = (size_t)B * H;
    float *hR = q->h + R * blk, *dR = q->d + R * blk;
    /* dW_out (O, H) += dout^T (O, B) . hR (B, H); db_out += colsum(dout) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, H, B, 1.0f, dout, O, hR, H, 1.0f,
                G + q->off[T_OUT_W], H);
    colsum_add(G + q->off[T_OUT_B], dout, (size_t)B, O);
    /* dhR (B, H) = dout (B, O) . W_out (O, H) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, O, 1.0f, dout, O,
                P + q->off[T_OUT_W], H, 0.0f, dR, H);
    /* Through the shared layer, k = R..1: dz_k = dh_k * [h_k > 0] (kept in
     * d_k), dh_(k-1) = dz_k . W_hid. */
    for (int k = R; k >= 0; k--) {
        float *hk = q->h + k * blk, *dk = q->d + k * blk;
        for (size_t i = 0; i < blk; i++)
            if (!(hk[i] > 0)) dk[i] = 0;
        if (k > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, H, 1.0f, dk, H,
                        P + q->off[T_HID_W], H, 0.0f, dk - blk, H);
    }
    if (R > 0) {
        /* dW_hid (H, H) += sum_k dz_k^T . h_(k-1): one product over the R
         * stacked blocks (R*B, H) of dz_1..R and h_0..R-1. */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, H, R * B, 1.0f, q->d + blk, H, q->h,
                    H, 1.0f, G + q->off[T_HID_W], H);
        colsum_add(G + q->off[T_HID_B], q->d + blk, (size_t)R * B, H);
    }
    /* dW_in (H, NI) += dz_0^T (H, B) . x (B, NI) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, NI, B, 1.0f, q->d, H, q->x, NI, 1.0f,
                G + q->off[T_IN_W], NI);
    colsum_add(G + q->off[T_IN_B], q->d, (size_t)B, H);
    return 0;
}

static double huber(double d, double delta)
{
    double a = fabs(d);
    return a <= delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
}

static int check_actions(const gr_qnet *q, const int *actions, int B)
{
    for (int r = 0; r < B; r++)
        if (actions[r] < 0 || actions[r] >= q->s.outputs)
            return gr_seterr(GR_EINVAL, "qnet: action %d of sample %d outside 0..%d", actions[r], r,
                             q->s.outputs - 1);
    return 0;
}

int gr_qnet_huber_step(gr_qnet *q, const float *in, int B, const int *actions, const float *targets,
                       float delta, double *loss)
{
    int rc = check_actions(q, actions, B);
    if (rc) return rc;
    const int O = q->s.outputs;
    float *out = malloc((size_t)B * O * sizeof *out), *dout = calloc((size_t)B * O, sizeof *dout);
    if (!out || !dout) {
        rc = gr_seterr(GR_ENOMEM, "qnet: out of memory");
        goto done;
    }
    if ((rc = gr_qnet_forward(q, in, B, out))) goto done;
    double sum = 0;
    for (int r = 0; r < B; r++) {
        double d = (double)out[(size_t)r * O + actions[r]] - targets[r];
        sum += huber(d, delta);
        double g = d > delta ? delta : d < -delta ? -delta : d;
        dout[(size_t)r * O + actions[r]] = (float)(g / B);
    }
    *loss = sum / B;
    rc = gr_qnet_backward(q, dout);
done:
    free(out);
    free(dout);
    return rc;
}

double gr_qnet_huber_ref(const gr_qnet *q, const float *in, int B, const int *actions,
                         const float *targets, float delta)
{
    if (check_actions(q, actions, B)) return NAN;
    const int O = q->s.outputs;
    double *out = malloc((size_t)B * O * sizeof *out);
    if (!out) return NAN;
    gr_qnet_forward_ref(q, in, B, out);
    double sum = 0;
    for (int r = 0; r < B; r++) sum += huber(out[(size_t)r * O + actions[r]] - targets[r], delta);
    free(out);
    return sum / B;
}

/* ---- AdamW ---- */

struct gr_adamw {
    size_t n;
    float lr, b1, b2, eps, wd;
    int amsgrad;
    uint64_t t;
    float *m, *v, *vmax;
};

gr_adamw *gr_adamw_new(size_t n, float lr, float beta1, float beta2, float eps, float wd,
                       int amsgrad)
{
    gr_adamw *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    *o = (gr_adamw){
        .n = n, .lr = lr, .b1 = beta1, .b2 = beta2, .eps = eps, .wd = wd, .amsgrad = amsgrad};
    o->m = calloc(n ? n : 1, sizeof *o->m);
    o->v = calloc(n ? n : 1, sizeof *o->v);
    o->vmax = amsgrad ? calloc(n ? n : 1, sizeof *o->vmax) : NULL;
    if (!o->m || !o->v || (amsgrad && !o->vmax)) goto oom;
    return o;
oom:
    gr_adamw_destroy(&o);
    gr_seterr(GR_ENOMEM, "adamw: out of memory");
    return NULL;
}

void gr_adamw_destroy(gr_adamw **po)
{
    if (!po || !*po) return;
    free((*po)->m);
    free((*po)->v);
    free((*po)->vmax);
    free(*po);
    *po = NULL;
}

void gr_adamw_step(gr_adamw *o, float *p, const float *g)
{
    o->t++;
    double bc1 = 1 - pow(o->b1, (double)o->t), bc2 = 1 - pow(o->b2, (double)o->t);
    float step = (float)(o->lr / bc1), sbc2 = (float)sqrt(bc2);
    float decay = 1 - o->lr * o->wd;
    for (size_t i = 0; i < o->n; i++) {
        p[i] *= decay;
        o->m[i] = o->b1 * o->m[i] + (1 - o->b1) * g[i];
        o->v[i] = o->b2 * o->v[i] + (1 - o->b2) * g[i] * g[i];
        float v = o->v[i];
        if (o->amsgrad) {
            if (v > o->vmax[i]) o->vmax[i] = v;
            v = o->vmax[i];
        }
        p[i] -= step * o->m[i] / (sqrtf(v) / sbc2 + o->eps);
    }
}

/* ---- the agent ---- */

struct gr_dqn {
    gr_dqn_config c;
    gr_qnet *pol, *tgt;
    gr_adamw *opt;
    gr_rng_stream rng;
    uint64_t steps;
    /* replay ring: s, s2 (cap, inputs), a, r, done (cap) */
    size_t cap, len, head;
    float *rs, *rs2, *rr;
    int *ra;
    unsigned char *rdone;
    size_t *perm; /* a permutation of 0..len-1 for sampling */
    /* minibatch scratch */
    float *bs, *bs2, *br, *by, *q2;
    int *ba;
    unsigned char *bdone;
    float *qone;
};

void gr_dqn_config_default(gr_dqn_config *c)
{
    *c = (gr_dqn_config){
        .shape = {.inputs = 13, .hidden = 200, .repeat = 9, .outputs = 10},
        .lr = 1e-3f,
        .beta1 = 0.9f,
        .beta2 = 0.999f,
        .adam_eps = 1e-8f,
        .weight_decay = 0.01f,
        .amsgrad = 1,
        .grad_clip = 100,
        .huber_delta = 1,
        .gamma = 0.99f,
        .tau = 0.005f,
        .batch = 128,
        .replay = 10000,
        .eps_start = 0.9,
        .eps_end = 0.05,
        .eps_decay = 1000,
        .seed = 0,
    };
}

int gr_dqn_config_check(const gr_dqn_config *c)
{
    int rc = gr_qnet_shape_check(&c->shape);
    if (rc) return rc;
#define RANGE(field, lo, hi)                                                                       \
    if (!((double)c->field >= (lo) && (double)c->field <= (hi)))                                   \
        return gr_seterr(GR_EINVAL, "dqn: %s = %g outside [%g, %g]", #field, (double)c->field,     \
                         (double)(lo), (double)(hi));
    RANGE(lr, 1e-12, 10);
    RANGE(beta1, 0, 0.999999);
    RANGE(beta2, 0, 0.999999999);
    RANGE(adam_eps, 1e-30, 1);
    RANGE(weight_decay, 0, 10);
    RANGE(grad_clip, 0, 1e30);
    RANGE(huber_delta, 1e-6, 1e30);
    RANGE(gamma, 0, 1);
    RANGE(tau, 0, 1);
    RANGE(batch, 1, 4096);
    RANGE(replay, 1, 10000000);
    RANGE(eps_start, 0, 1);
    RANGE(eps_end, 0, 1);
    RANGE(eps_decay, 1e-9, 1e15);
#undef RANGE
    if (c->batch > c->replay)
        return gr_seterr(GR_EINVAL, "dqn: batch %d larger than the replay buffer %d", c->batch,
                         c->replay);
    return 0;
}

gr_dqn *gr_dqn_new(const gr_dqn_config *c)
{
    if (gr_dqn_config_check(c)) return NULL;
    gr_dqn *d = calloc(1, sizeof *d);
    if (!d) {
        gr_seterr(GR_ENOMEM, "dqn: out of memory");
        return NULL;
    }
    d->c = *c;
    gr_rng_stream_init(&d->rng, c->seed, "dqn.agent");
    d->pol = gr_qnet_new(&c->shape, c->seed);
    d->tgt = gr_qnet_new(&c->shape, c->seed);
    if (!d->pol || !d->tgt) goto fail;
    gr_qnet_copy(d->tgt, d->pol);
    d->opt = gr_adamw_new(d->pol->np, c->lr, c->beta1, c->beta2, c->adam_eps, c->weight_decay,
                          c->amsgrad);
    if (!d->opt) goto fail;
    size_t cap = (size_t)c->replay, NI = (size_t)c->shape.inputs, B = (size_t)c->batch;
    size_t O = (size_t)c->shape.outputs;
    d->cap = cap;
    d->rs = malloc(cap * NI * sizeof *d->rs);
    d->rs2 = malloc(cap * NI * sizeof *d->rs2);
    d->rr = malloc(cap * sizeof *d->rr);
    d->ra = malloc(cap * sizeof *d->ra);
    d->rdone = malloc(cap);
    d->perm = malloc(cap * sizeof *d->perm);
    d->bs = malloc(B * NI * sizeof *d->bs);
    d->bs2 = malloc(B * NI * sizeof *d->bs2);
    d->br = malloc(B * sizeof *d->br);
    d->by = malloc(B * sizeof *d->by);
    d->q2 = malloc(B * O * sizeof *d->q2);
    d->ba = malloc(B * sizeof *d->ba);
    d->bdone = malloc(B);
    d->qone = malloc(O * sizeof *d->qone);
    if (!d->rs || !d->rs2 || !d->rr || !d->ra || !d->rdone || !d->perm || !d->bs || !d->bs2 ||
        !d->br || !d->by || !d->q2 || !d->ba || !d->bdone || !d->qone) {
        gr_seterr(GR_ENOMEM, "dqn: out of memory for a replay buffer of %zu", cap);
        goto fail;
    }
    return d;
fail:
    gr_dqn_destroy(&d);
    return NULL;
}

void gr_dqn_destroy(gr_dqn **pd)
{
    if (!pd || !*pd) return;
    gr_dqn *d = *pd;
    gr_qnet_destroy(&d->pol);
    gr_qnet_destroy(&d->tgt);
    gr_adamw_destroy(&d->opt);
    void *bufs[] = {d->rs,  d->rs2, d->rr, d->ra, d->rdone, d->perm,  d->bs,
                    d->bs2, d->br,  d->by, d->q2, d->ba,    d->bdone, d->qone};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(d);
    *pd = NULL;
}

int gr_argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int gr_dqn_greedy(gr_dqn *d, const float *state)
{
    int rc = gr_qnet_forward(d->pol, state, 1, d->qone);
    if (rc) return rc;
    return gr_argmax(d->qone, d->c.shape.outputs);
}

double gr_dqn_epsilon(const gr_dqn *d)
{
    return d->c.eps_end + (d->c.eps_start - d->c.eps_end) * exp(-(double)d->steps / d->c.eps_decay);
}

uint64_t gr_dqn_steps(const gr_dqn *d)
{
    return d->steps;
}

/* Uniform integer in [0, n) (n >= 1; bias below 2^-32 * n, irrelevant here). */
static size_t rand_below(gr_rng_stream *rs, size_t n)
{
    return (size_t)(((uint64_t)gr_rng_next_u32(rs) * (uint64_t)n) >> 32);
}

int gr_dqn_act(gr_dqn *d, const float *state)
{
    double eps = gr_dqn_epsilon(d);
    d->steps++;
    if (gr_rng_next_double(&d->rng) > eps) return gr_dqn_greedy(d, state);
    return (int)rand_below(&d->rng, (size_t)d->c.shape.outputs);
}

int gr_dqn_remember(gr_dqn *d, const float *s, int a, float r, const float *s2, int done)
{
    if (a < 0 || a >= d->c.shape.outputs)
        return gr_seterr(GR_EINVAL, "dqn: action %d outside 0..%d", a, d->c.shape.outputs - 1);
    if (!isfinite(r)) return gr_seterr(GR_EINVAL, "dqn: reward %g is not finite", (double)r);
    size_t NI = (size_t)d->c.shape.inputs, k = d->head;
    memcpy(d->rs + k * NI, s, NI * sizeof *s);
    memcpy(d->rs2 + k * NI, s2, NI * sizeof *s2);
    d->ra[k] = a;
    d->rr[k] = r;
    d->rdone[k] = done ? 1 : 0;
    d->head = (k + 1) % d->cap;
    if (d->len < d->cap) {
        d->perm[d->len] = d->len;
        d->len++;
    }
    return 0;
}

size_t gr_dqn_memory(const gr_dqn *d)
{
    return d->len;
}

int gr_dqn_train(gr_dqn *d, double *loss)
{
    const int B = d->c.batch, O = d->c.shape.outputs;
    const size_t NI = (size_t)d->c.shape.inputs;
    if (d->len < (size_t)B) return 0;
    /* B distinct transitions: a partial Fisher-Yates shuffle of perm */
    for (int i = 0; i < B; i++) {
        size_t j = (size_t)i + rand_below(&d->rng, d->len - (size_t)i);
        size_t t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
        size_t k = d->perm[i];
        memcpy(d->bs + i * NI, d->rs + k * NI, NI * sizeof *d->bs);
        memcpy(d->bs2 + i * NI, d->rs2 + k * NI, NI * sizeof *d->bs2);
        d->ba[i] = d->ra[k];
        d->br[i] = d->rr[k];
        d->bdone[i] = d->rdone[k];
    }
    /* y = r + gamma * max_a' Q_target(s', a') for transitions that go on */
    int rc = gr_qnet_forward(d->tgt, d->bs2, B, d->q2);
    if (rc) return rc;
    for (int i = 0; i < B; i++) {
        float best = d->q2[(size_t)i * O + gr_argmax(d->q2 + (size_t)i * O, O)];
        d->by[i] = d->br[i] + (d->bdone[i] ? 0.0f : d->c.gamma * best);
    }
    gr_qnet_zero_grads(d->pol);
    if ((rc = gr_qnet_huber_step(d->pol, d->bs, B, d->ba, d->by, d->c.huber_delta, loss)))
        return rc;
    if (d->c.grad_clip > 0) {
        float c = d->c.grad_clip, *g = d->pol->g;
        for (size_t i = 0; i < d->pol->np; i++) g[i] = g[i] > c ? c : g[i] < -c ? -c : g[i];
    }
    gr_adamw_step(d->opt, d->pol->p, d->pol->g);
    gr_qnet_soft_update(d->tgt, d->pol, d->c.tau);
    return 1;
}

gr_qnet *gr_dqn_policy(gr_dqn *d)
{
    return d->pol;
}

const gr_dqn_config *gr_dqn_get_config(const gr_dqn *d)
{
    return &d->c;
}
