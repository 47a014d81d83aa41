/* fuzz_mparam: hostile merge parameters and kernel inputs. Byte 0 picks:
 * 0 — the rest is JSON for gr_mparam_from_json; an accepted value must
 *     evaluate to a finite number (or "no filter matches") for any tensor;
 * 1 — the rest is a tensor name for the layer parser;
 * 2 — prune parameters and a small tensor: the fast kernel (3 threads) and
 *     the plain reference loop must agree (same error, same result);
 * 3 — the same for a merge of up to three models. */
#include "gr_err.h"
#include "gr_json.h"
#include "gr_merge.h"
#include "gr_mparam.h"
#include "gr_prune.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 512

static const char *const names[] = {"model.layers.3.self_attn.q_proj.weight",
                                    "model.embed_tokens.weight", "lm_head.weight",
                                    "transformer.h.11.mlp.c_fc.weight", ""};

static void json_param(const uint8_t *d, size_t n)
{
    gr_json *j = gr_json_parse((const char *)d, n, "fuzz");
    if (!j) return;
    gr_mparam *p = gr_mparam_from_json(j, "fuzz");
    if (!p) {
        if (!gr_errmsg()[0]) abort();
    } else {
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            for (long L = 0; L < 40; L += 13) {
                double v;
                int rc = gr_mparam_eval_tensor(p, names[i], L, &v);
                if (rc != 0 && rc != GR_ENOTFOUND) abort();
                if (rc == 0 && !isfinite(v)) abort();
            }
    }
    gr_mparam_destroy(&p);
    if (p) abort();
    gr_json_free(j);
}

static void layer_name(const uint8_t *d, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) return;
    memcpy(s, d, n);
    s[n] = 0;
    long l = -1;
    if (gr_mparam_layer(s, &l) && (l < 0 || l > 999999999)) abort();
    double t = gr_mparam_t(s, 7);
    if (!(t >= 0.0 && t <= 1.0)) abort();
    free(s);
}

/* Finite floats from pairs of bytes. */
static size_t floats(const uint8_t *d, size_t n, float *x, size_t cap)
{
    size_t m = n / 2 < cap ? n / 2 : cap;
    for (size_t i = 0; i < m; i++) x[i] = (float)(int16_t)(d[2 * i] | d[2 * i + 1] << 8) / 256.0f;
    return m;
}

/* Within a few ulps of the larger output (sums differ in order), NaN-aware. */
static int close_enough(const float *a, const float *b, size_t n, double rel)
{
    double mag = 1e-30;
    for (size_t i = 0; i < n; i++)
        if (isfinite(b[i]) && fabs(b[i]) > mag) mag = fabs(b[i]);
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return 0;
        if (!isnan(a[i]) && fabs((double)a[i] - b[i]) > rel * mag && a[i] != b[i]) return 0;
    }
    return 1;
}

static void prune(const uint8_t *d, size_t n)
{
    if (n < 8) return;
    gr_prune_params p;
    gr_prune_params_init(&p, (gr_prune_method)(d[0] % 7));
    p.density = (d[1] + 1) / 256.0;
    p.gamma = d[2] / 256.0;
    p.epsilon = d[3] / 512.0;
    p.q = p.density + (1.0 - p.density) * d[4] / 256.0;
    p.rescale = (gr_rescale)(d[5] % 4 - 1);
    size_t row = 1 + d[6] % 16;
    float x[MAXN], a[MAXN], b[MAXN];
    size_t m = floats(d + 8, n - 8, x, MAXN);
    if (m % row) row = m ? m : 1;
    memcpy(a, x, m * sizeof *x);
    memcpy(b, x, m * sizeof *x);
    gr_prune_stats sa, sb;
    int ra = gr_prune_tensor(&p, "t", a, m, row, d[7], 3, &sa);
    int rb = gr_prune_tensor_ref(&p, "t", b, m, row, d[7], &sb);
    if (ra != rb) abort();
    if (ra) return;
    if (!close_enough(a, b, m, 1e-6) || sa.kept != sb.kept || sa.kept > m) abort();
}

static void merge(const uint8_t *d, size_t n)
{
    if (n < 16) return;
    static const char *const methods[] = {
        "linear",      "task_arithmetic",  "ties",  "dare_ties",    "dare_linear",
        "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "slerp",
        "pcb",         "model_stock"};
    gr_merge_opts o;
    if (gr_merge_opts_init(&o, methods[d[0] % 12])) abort();
    o.threads = 3;
    o.seed = d[1];
    o.lambda = (d[2] + 1) / 128.0;
    o.t = d[3] / 255.0;
    o.pcb_ratio = (d[4] + 1) / 256.0;
    if (o.consensus != GR_CONSENSUS_NONE && (d[5] & 1)) o.consensus = GR_CONSENSUS_COUNT;
    o.normalize = d[5] >> 1 & 1;
    size_t k = 1 + d[6] % 3;
    gr_merge_model mm[3];
    for (size_t i = 0; i < k; i++) {
        gr_merge_model_init(&mm[i], i);
        mm[i].weight = ((int)d[7 + i] - 100) / 64.0;
        mm[i].density = (d[10 + i] + 1) / 256.0;
        mm[i].epsilon = d[13 + i] / 1024.0;
    }
    float x[MAXN];
    size_t m = floats(d + 16, n - 16, x, MAXN) / (k + 1);
    if (m == 0) return;
    float base[MAXN], in_a[3][MAXN], in_b[3][MAXN], oa[MAXN], ob[MAXN];
    memcpy(base, x, m * sizeof *x);
    for (size_t i = 0; i < k; i++) {
        memcpy(in_a[i], x + (i + 1) * m, m * sizeof *x);
        memcpy(in_b[i], x + (i + 1) * m, m * sizeof *x);
    }
    float *pa[3] = {in_a[0], in_a[1], in_a[2]}, *pb[3] = {in_b[0], in_b[1], in_b[2]};
    gr_merge_tinfo t = {"model.layers.0.mlp.weight", m, m};
    int kind = d[5] >> 2 & 1;
    int ra = gr_merge_tensor(&o, &t, base, pa, kind, mm, k, oa);
    int rb = gr_merge_tensor_ref(&o, &t, base, pb, kind, mm, k, ob);
    if (ra != rb) abort();
    if (!ra && !close_enough(oa, ob, m, 1e-5)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    switch (data[0] % 4) {
    case 0:
        json_param(data + 1, size - 1);
        break;
    case 1:
        layer_name(data + 1, size - 1);
        break;
    case 2:
        prune(data + 1, size - 1);
        break;
    default:
        merge(data + 1, size - 1);
        break;
    }
    return 0;
}
