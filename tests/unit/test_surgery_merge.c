/* Tests for the merge op end to end: every method on small random bf16 /
 * fp16 / fp32 checkpoints with awkward shapes, against the kernels' plain
 * references and an independent numpy reference; thread-count determinism;
 * deltas, sparse deltas and LoRA adapters as inputs; layer gradients and
 * filters; output layout (dtype, shards, config and tokenizer files). */
#include "gr_merge.h"
#include "gr_mparam.h"
#include "gr_test.h"
#include "test_surgery_util.h"

static char *tmp;
static const char *BASE, *FT[3], *DL[3];

#define NT 10
static const tspec FAM[NT] = {
    {"lm_head.weight", GR_DT_BF16, 2, {11, 6}},
    {"model.embed_tokens.weight", GR_DT_BF16, 2, {11, 6}},
    {"model.layers.0.input_layernorm.weight", GR_DT_F16, 1, {6}},
    {"model.layers.0.mlp.up_proj.weight", GR_DT_BF16, 2, {7, 6}},
    {"model.layers.0.self_attn.q_proj.weight", GR_DT_F16, 2, {6, 6}},
    {"model.layers.1.mlp.down_proj.weight", GR_DT_F32, 2, {97, 1001}},
    {"model.layers.1.mlp.up_proj.weight", GR_DT_BF16, 2, {7, 6}},
    {"model.layers.1.scale", GR_DT_F32, 0, {0}},
    {"model.layers.1.self_attn.o_proj.bias", GR_DT_F16, 1, {5}},
    {"model.norm.weight", GR_DT_BF16, 1, {6}},
};
static const char *CONFIG = "{\"model_type\": \"llama\", \"num_hidden_layers\": 2}";

/* base ~ N(0, 0.5); fine-tune i = base + shared + own_i, where the shared
 * part makes the models agree on some signs and the own parts disagree. */
static void make_family(void)
{
    float *b[NT], *m[NT];
    BASE = strdup(ts_path(tmp, "base"));
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = ts_nelem(&FAM[t]);
        b[t] = malloc(n * 4);
        ts_gauss(b[t], n, 1, FAM[t].name, 0, 0.5);
        ts_round(FAM[t].dt, b[t], n);
    }
    ts_write(BASE, FAM, NT, b, NULL, CONFIG, 0);
    gr_fs_write_atomic(ts_path(BASE, "tokenizer.json"), "{\"tok\": 1}", 10, 0644);
    for (int i = 0; i < 3; i++) {
        char tag[64];
        for (size_t t = 0; t < NT; t++) {
            uint64_t n = ts_nelem(&FAM[t]);
            float *sh = malloc(n * 4);
            m[t] = malloc(n * 4);
            ts_gauss(sh, n, 2, FAM[t].name, 0, 0.05);
            snprintf(tag, sizeof tag, "%s/%d", FAM[t].name, i);
            ts_gauss(m[t], n, 3, tag, 0, 0.05);
            for (uint64_t k = 0; k < n; k++) m[t][k] += b[t][k] + sh[k];
            ts_round(FAM[t].dt, m[t], n);
            free(sh);
        }
        snprintf(tag, sizeof tag, "ft%d", i);
        FT[i] = strdup(ts_path(tmp, tag));
        ts_write(FT[i], FAM, NT, m, NULL, CONFIG, 0);
        for (size_t t = 0; t < NT; t++) free(m[t]);
        /* the same model as a delta, through the delta op */
        snprintf(tag, sizeof tag, "delta%d", i);
        DL[i] = strdup(ts_path(tmp, tag));
        char p[4096];
        snprintf(p, sizeof p, "{\"base\":\"%s\",\"model\":\"%s\"}", BASE, FT[i]);
        int rc = ts_run_op("delta", p, DL[i], 2, NULL);
        CHECK_MSG(rc == 0, "delta %d: %s", i, gr_errmsg());
    }
    for (size_t t = 0; t < NT; t++) free(b[t]);
}

typedef struct mcase {
    const char *method;
    size_t k;
    double w[3], d[3];
    double gamma, epsilon, lambda, t, pcb_ratio;
    int normalize; /* -1: the method's default */
    const char *consensus;
    uint64_t seed;
} mcase;

/* The op's parameter JSON for a case over the given inputs. */
static void case_json(const mcase *c, const char *const *inputs, const char *extra, char *p,
                      size_t len)
{
    size_t o = (size_t)snprintf(p, len, "{\"method\":\"%s\",\"base\":\"%s\",\"models\":[",
                                c->method, BASE);
    for (size_t i = 0; i < c->k; i++)
        o += (size_t)snprintf(p + o, len - o, "%s\"%s\"", i ? "," : "", inputs[i]);
    o += (size_t)snprintf(p + o, len - o, "],\"per_model\":[");
    for (size_t i = 0; i < c->k; i++)
        o += (size_t)snprintf(p + o, len - o, "%s{\"weight\":%.17g,\"density\":%.17g}",
                              i ? "," : "", c->w[i], c->d[i]);
    o += (size_t)snprintf(p + o, len - o,
                          "],\"gamma\":%.17g,\"epsilon\":%.17g,\"lambda\":%.17g,\"seed\":%llu",
                          c->gamma, c->epsilon, c->lambda, (unsigned long long)c->seed);
    if (!strcmp(c->method, "slerp")) o += (size_t)snprintf(p + o, len - o, ",\"t\":%.17g", c->t);
    if (!strcmp(c->method, "pcb"))
        o += (size_t)snprintf(p + o, len - o, ",\"pcb_ratio\":%.17g", c->pcb_ratio);
    if (c->normalize >= 0)
        o += (size_t)snprintf(p + o, len - o, ",\"normalize\":%s", c->normalize ? "true" : "false");
    if (c->consensus) o += (size_t)snprintf(p + o, len - o, ",\"consensus\":\"%s\"", c->consensus);
    snprintf(p + o, len - o, "%s%s}", extra ? "," : "", extra ? extra : "");
}

/* Expected output of a case from the kernels' scalar reference, with
 * inputs read back from the files. */
static float *case_ref(const mcase *c, const char *name, uint64_t *n)
{
    gr_merge_opts o;
    CHECK(!gr_merge_opts_init(&o, c->method));
    o.lambda = c->lambda;
    o.t = c->t;
    o.pcb_ratio = c->pcb_ratio ? c->pcb_ratio : o.pcb_ratio;
    o.seed = c->seed;
    if (c->normalize >= 0) o.normalize = c->normalize;
    if (c->consensus) gr_consensus_parse(c->consensus, &o.consensus);
    o.threads = 1;
    float *b = ts_read(BASE, name, n), *in[3];
    int kind = (o.method == GR_MERGE_LINEAR || o.method == GR_MERGE_SLERP ||
                o.method == GR_MERGE_MODEL_STOCK)
                   ? GR_MERGE_IN_MODELS
                   : GR_MERGE_IN_DELTAS;
    gr_merge_model mm[3];
    for (size_t i = 0; i < c->k; i++) {
        in[i] = ts_read(FT[i], name, NULL);
        if (kind == GR_MERGE_IN_DELTAS)
            for (uint64_t j = 0; j < *n; j++) in[i][j] -= b[j];
        gr_merge_model_init(&mm[i], i);
        mm[i].weight = c->w[i];
        mm[i].density = c->d[i];
        mm[i].gamma = c->gamma;
        mm[i].epsilon = c->epsilon;
    }
    const tspec *ts = NULL;
    for (size_t t = 0; t < NT; t++)
        if (!strcmp(FAM[t].name, name)) ts = &FAM[t];
    gr_merge_tinfo ti = {name, (size_t)*n, ts->ndim ? (size_t)ts->shape[ts->ndim - 1] : 1};
    float *out = malloc(*n * 4);
    int rc = gr_merge_tensor_ref(&o, &ti, b, in, kind, mm, c->k, out);
    CHECK_MSG(rc == 0, "ref %s: %s", c->method, gr_errmsg());
    for (size_t i = 0; i < c->k; i++) free(in[i]);
    free(b);
    return out;
}

static const mcase CASES[] = {
    {"linear", 3, {1, 0.5, 0.75}, {1, 1, 1}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0},
    {"linear", 2, {1, 3}, {1, 1}, 0.01, 0.15, 1, 0, 0, 0, NULL, 0},
    {"task_arithmetic", 3, {1, 0.5, 0.75}, {1, 1, 1}, 0.01, 0.15, 0.8, 0, 0, -1, NULL, 0},
    {"ties", 3, {1, 0.5, 0.75}, {0.5, 0.3, 0.7}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0},
    {"ties", 3, {1, 1, 1}, {0.4, 0.4, 0.4}, 0.01, 0.15, 1.2, 0, 0, 0, "count", 0},
    {"dare_ties", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.01, 0.15, 1, 0, 0, -1, NULL, 3},
    {"dare_linear", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.01, 0.15, 1, 0, 0, -1, NULL, 4},
    {"breadcrumbs", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.1, 0.15, 1, 0, 0, -1, NULL, 0},
    {"breadcrumbs_ties", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.05, 0.15, 1, 0, 0, -1, NULL, 0},
    {"della", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.01, 0.1, 1, 0, 0, -1, NULL, 5},
    {"della_linear", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.01, 0.2, 1, 0, 0, -1, NULL, 6},
    {"slerp", 1, {1}, {1}, 0.01, 0.15, 1, 0.3, 0, -1, NULL, 0},
    {"pcb", 3, {1, 1, 1}, {1, 1, 1}, 0.01, 0.15, 1, 0, 0.3, -1, NULL, 0},
    {"model_stock", 3, {1, 1, 1}, {1, 1, 1}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

static double compare_out(const char *out, const mcase *c, double tol)
{
    double worst = 0;
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = 0, n2 = 0;
        float *got = ts_read(out, FAM[t].name, &n);
        float *want = case_ref(c, FAM[t].name, &n2);
        CHECK(got && want && n == n2);
        if (got && want) {
            double e = ts_relerr(got, want, n);
            CHECK_MSG(e <= tol, "%s: tensor %s: relative error %.3g", c->method, FAM[t].name, e);
            if (e > worst) worst = e;
        }
        free(got);
        free(want);
    }
    return worst;
}

static void test_methods_vs_ref(void)
{
    for (size_t i = 0; i < NCASES; i++) {
        char p[8192], dir[64];
        snprintf(dir, sizeof dir, "m%zu-%s", i, CASES[i].method);
        const char *out = ts_path(tmp, dir);
        case_json(&CASES[i], FT, "\"dtype\":\"float32\"", p, sizeof p);
        char *met = NULL;
        int rc = ts_run_op("merge", p, out, 3, &met);
        CHECK_MSG(rc == 0, "%s: %s", CASES[i].method, gr_errmsg());
        if (rc) continue;
        CHECK_CONTAINS(met, "\"warning_count\":0");
        free(met);
        double e = compare_out(out, &CASES[i], 2e-6);
        printf("%-18s vs kernel reference: largest relative error %.3g\n", CASES[i].method, e);
    }
}

/* The deterministic methods against numpy (tests/unit/test_surgery_ref.py). */
static void test_methods_vs_numpy(void)
{
    static const mcase NP[] = {
        {"linear", 3, {1, 0.5, 0.75}, {1, 1, 1}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0},
        {"task_arithmetic", 3, {1, 0.5, 0.75}, {1, 1, 1}, 0.01, 0.15, 0.8, 0, 0, -1, NULL, 0},
        {"ties", 3, {1, 0.5, 0.75}, {0.5, 0.3, 0.7}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0},
        {"ties", 3, {1, 1, 1}, {0.4, 0.4, 0.4}, 0.01, 0.15, 1.2, 0, 0, 0, "count", 0},
        {"breadcrumbs", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.1, 0.15, 1, 0, 0, -1, NULL, 0},
        {"breadcrumbs_ties", 3, {1, 0.5, 0.75}, {0.6, 0.5, 0.7}, 0.05, 0.15, 1, 0, 0, -1, NULL, 0},
        {"breadcrumbs_ties", 3, {1, 1, 1}, {0.5, 0.5, 0.5}, 0, 0.15, 1, 0, 0, -1, NULL, 0},
        {"slerp", 1, {1}, {1}, 0.01, 0.15, 1, 0.3, 0, -1, NULL, 0},
        {"model_stock", 3, {1, 1, 1}, {1, 1, 1}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0},
    };
    char script[4096];
    snprintf(script, sizeof script, "%s/../unit/test_surgery_ref.py", fixture(""));
    for (size_t i = 0; i < sizeof NP / sizeof NP[0]; i++) {
        const mcase *c = &NP[i];
        char p[8192], dir[64], cmd[16384], pj[1024];
        snprintf(dir, sizeof dir, "np%zu-%s", i, c->method);
        const char *out = ts_path(tmp, dir);
        case_json(c, FT, "\"dtype\":\"float32\"", p, sizeof p);
        int rc = ts_run_op("merge", p, out, 2, NULL);
        CHECK_MSG(rc == 0, "%s: %s", c->method, gr_errmsg());
        snprintf(pj, sizeof pj,
                 "{\"method\":\"%s\",\"weights\":[%g,%g,%g],\"densities\":[%g,%g,%g],"
                 "\"gamma\":%.17g,\"lambda\":%.17g,\"t\":%.17g%s%s%s%s}",
                 c->method, c->w[0], c->w[1], c->w[2], c->d[0], c->d[1], c->d[2], c->gamma,
                 c->lambda, c->t, c->normalize == 0 ? ",\"normalize\":false" : "",
                 c->consensus ? ",\"consensus\":\"" : "", c->consensus ? c->consensus : "",
                 c->consensus ? "\"" : "");
        const char *want = ts_path(tmp, "np-want.safetensors");
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s '%s' %s %s", script, pj, want, BASE);
        for (size_t k = 0; k < c->k; k++)
            snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", FT[k]);
        int st = system(cmd);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 3) {
            printf("numpy missing: %s not checked against numpy\n", c->method);
            continue;
        }
        CHECK_MSG(st == 0, "numpy reference for %s failed", c->method);
        if (st) continue;
        double worst = 0;
        for (size_t t = 0; t < NT; t++) {
            uint64_t n = 0, n2 = 0;
            float *got = ts_read(out, FAM[t].name, &n), *exp = ts_read(want, FAM[t].name, &n2);
            CHECK(got && exp && n == n2);
            if (got && exp) {
                double e = ts_relerr(got, exp, n);
                CHECK_MSG(e <= 2e-6, "%s vs numpy: tensor %s: relative error %.3g", c->method,
                          FAM[t].name, e);
                if (e > worst) worst = e;
            }
            free(got), free(exp);
        }
        printf("%-18s vs numpy: largest relative error %.3g\n", c->method, worst);
    }
}

static int same_file(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same = !gr_fs_read_file(a, 1 << 28, &x, &nx) && !gr_fs_read_file(b, 1 << 28, &y, &ny) &&
               nx == ny && !memcmp(x, y, nx);
    free(x), free(y);
    return same;
}

static void test_thread_determinism(void)
{
    static const size_t idx[] = {5, 9, 12}; /* dare_ties, della, pcb */
    for (size_t q = 0; q < 3; q++) {
        const mcase *c = &CASES[idx[q]];
        char p[8192];
        const char *o1 = ts_path(tmp, "thr1"), *o4 = ts_path(tmp, "thr4");
        gr_fs_rmrf(o1);
        gr_fs_rmrf(o4);
        case_json(c, FT, NULL, p, sizeof p);
        CHECK(!ts_run_op("merge", p, o1, 1, NULL));
        CHECK(!ts_run_op("merge", p, o4, 4, NULL));
        CHECK_MSG(same_file(ts_path(o1, "model.safetensors"), ts_path(o4, "model.safetensors")),
                  "%s: 1 and 4 threads differ", c->method);
    }
}

/* Tensors larger than one read chunk go through the multi-threaded read
 * and kernel paths: the same bytes for 1 and 4 threads, and the kernels'
 * reference result. */
static void test_big_tensor(void)
{
    static const tspec big[2] = {
        {"model.layers.0.mlp.down_proj.weight", GR_DT_BF16, 2, {520, 1001}},
        {"model.norm.weight", GR_DT_F32, 1, {6}}};
    const char *dirs[3] = {strdup(ts_path(tmp, "big-base")), strdup(ts_path(tmp, "big-ft0")),
                           strdup(ts_path(tmp, "big-ft1"))};
    float *d[2];
    for (int m = 0; m < 3; m++) {
        for (int t = 0; t < 2; t++) {
            uint64_t n = ts_nelem(&big[t]);
            d[t] = malloc(n * 4);
            ts_gauss(d[t], n, 40, big[t].name, 0, 0.5);
            if (m) {
                float *e = malloc(n * 4);
                ts_gauss(e, n, 41 + m, big[t].name, 0, 0.05);
                for (uint64_t k = 0; k < n; k++) d[t][k] += e[k];
                free(e);
            }
        }
        ts_write(dirs[m], big, 2, d, NULL, CONFIG, 0);
        free(d[0]), free(d[1]);
    }
    char p[4096];
    const char *o1 = strdup(ts_path(tmp, "big1")), *o4 = strdup(ts_path(tmp, "big4"));
    snprintf(p, sizeof p,
             "{\"method\":\"dare_ties\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\"],"
             "\"weights\":[1,0.5],\"density\":0.4,\"seed\":8,\"dtype\":\"float32\"}",
             dirs[0], dirs[1], dirs[2]);
    CHECK(!ts_run_op("merge", p, o1, 1, NULL));
    CHECK(!ts_run_op("merge", p, o4, 4, NULL));
    CHECK_MSG(same_file(ts_path(o1, "model.safetensors"), ts_path(o4, "model.safetensors")),
              "big tensor: 1 and 4 threads differ");
    uint64_t n = 0;
    float *b = ts_read(dirs[0], big[0].name, &n), *x0 = ts_read(dirs[1], big[0].name, NULL),
          *x1 = ts_read(dirs[2], big[0].name, NULL), *want = malloc(n * 4),
          *got = ts_read(o4, big[0].name, NULL);
    for (uint64_t k = 0; k < n; k++) x0[k] -= b[k], x1[k] -= b[k];
    gr_merge_opts o;
    gr_merge_opts_init(&o, "dare_ties");
    o.seed = 8;
    gr_merge_model mm[2];
    gr_merge_model_init(&mm[0], 0);
    gr_merge_model_init(&mm[1], 1);
    mm[0].density = mm[1].density = 0.4;
    mm[1].weight = 0.5;
    float *in[2] = {x0, x1};
    gr_merge_tinfo ti = {big[0].name, (size_t)n, 1001};
    CHECK(!gr_merge_tensor_ref(&o, &ti, b, in, GR_MERGE_IN_DELTAS, mm, 2, want));
    CHECK(got && ts_relerr(got, want, n) <= 2e-6);
    free(b), free(x0), free(x1), free(want), free(got);
    for (int m = 0; m < 3; m++) free((char *)dirs[m]);
    free((char *)o1), free((char *)o4);
}

/* Tensors above `chunk` elements stream in pieces for the element-wise
 * methods: the same bytes as whole-tensor merging (the m<i>-<method>
 * outputs of test_methods_vs_ref), also with pieces that cut rows. */
static void test_streamed(void)
{
    static const size_t idx[] = {0, 1, 2, 3, 4, 7, 8};
    for (size_t q = 0; q < sizeof idx / sizeof idx[0]; q++) {
        const mcase *c = &CASES[idx[q]];
        char p[8192], whole[64];
        snprintf(whole, sizeof whole, "m%zu-%s", idx[q], c->method);
        const char *out = ts_path(tmp, "streamed");
        gr_fs_rmrf(out);
        case_json(c, FT,
                  q % 2 ? "\"dtype\":\"float32\",\"chunk\":777"
                        : "\"dtype\":\"float32\",\"chunk\":1000",
                  p, sizeof p);
        int rc = ts_run_op("merge", p, out, 2, NULL);
        CHECK_MSG(rc == 0, "%s: %s", c->method, gr_errmsg());
        CHECK_MSG(same_file(ts_path(out, "model.safetensors"),
                            ts_path(ts_path(tmp, whole), "model.safetensors")),
                  "%s: streamed and whole-tensor merges differ", c->method);
    }
    /* l1 rescale: one factor per tensor, from sums over the pieces */
    mcase l1 = CASES[8];
    char p[8192];
    const char *out = ts_path(tmp, "streamed-l1");
    case_json(&l1, FT, "\"dtype\":\"float32\",\"chunk\":999,\"rescale\":\"l1\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, out, 2, NULL));
    const char *out0 = ts_path(tmp, "whole-l1");
    case_json(&l1, FT, "\"dtype\":\"float32\",\"chunk\":0,\"rescale\":\"l1\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, out0, 2, NULL));
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = 0, n2 = 0;
        float *a = ts_read(out, FAM[t].name, &n), *b = ts_read(out0, FAM[t].name, &n2);
        CHECK(a && b && n == n2 && ts_relerr(a, b, n) <= 1e-6);
        free(a), free(b);
    }
}

/* delta and apply stream tensors above 4M elements in pieces: δ is θ − θ_b
 * exactly (bf16 inputs), and base + δ gives the fine-tune back exactly. */
static void test_big_delta_apply(void)
{
    static const tspec big[2] = {{"model.embed_tokens.weight", GR_DT_BF16, 2, {2049, 2050}},
                                 {"model.norm.weight", GR_DT_BF16, 1, {2050}}};
    char *b = strdup(ts_path(tmp, "bd-base")), *f = strdup(ts_path(tmp, "bd-ft")),
         *d = strdup(ts_path(tmp, "bd-delta")), *a = strdup(ts_path(tmp, "bd-applied"));
    float *x[2], *y[2];
    for (int t = 0; t < 2; t++) {
        uint64_t n = ts_nelem(&big[t]);
        x[t] = malloc(n * 4), y[t] = malloc(n * 4);
        ts_gauss(x[t], n, 50, big[t].name, 0, 0.5);
        ts_gauss(y[t], n, 51, big[t].name, 0, 0.05);
        for (uint64_t k = 0; k < n; k++) y[t][k] += x[t][k];
    }
    ts_write(b, big, 2, x, NULL, CONFIG, 0);
    ts_write(f, big, 2, y, NULL, CONFIG, 0);
    char p[4096];
    snprintf(p, sizeof p, "{\"base\":\"%s\",\"model\":\"%s\"}", b, f);
    CHECK(!ts_run_op("delta", p, d, 2, NULL));
    snprintf(p, sizeof p, "{\"base\":\"%s\",\"delta\":\"%s\",\"dtype\":\"float32\"}", b, d);
    CHECK(!ts_run_op("apply", p, a, 2, NULL));
    for (int t = 0; t < 2; t++) {
        uint64_t n = 0;
        float *xb = ts_read(b, big[t].name, &n), *yf = ts_read(f, big[t].name, NULL),
              *dd = ts_read(d, big[t].name, NULL), *aa = ts_read(a, big[t].name, NULL);
        int ok = xb && yf && dd && aa;
        for (uint64_t k = 0; ok && k < n; k++) ok = dd[k] == yf[k] - xb[k] && aa[k] == yf[k];
        CHECK_MSG(ok, "tensor %s: delta or apply is not exact", big[t].name);
        free(xb), free(yf), free(dd), free(aa), free(x[t]), free(y[t]);
    }
    free(b), free(f), free(d), free(a);
}

static void test_dtypes(void)
{
    const mcase *c = &CASES[3]; /* ties */
    char p[8192];
    const char *f32 = ts_path(tmp, "ties-f32"), *bf = ts_path(tmp, "ties-bf16"),
               *nat = ts_path(tmp, "ties-native");
    case_json(c, FT, "\"dtype\":\"float32\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, f32, 2, NULL));
    case_json(c, FT, "\"dtype\":\"bfloat16\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, bf, 2, NULL));
    case_json(c, FT, NULL, p, sizeof p);
    CHECK(!ts_run_op("merge", p, nat, 2, NULL));
    gr_sparse *a = gr_sparse_open(f32), *b = gr_sparse_open(bf), *n = gr_sparse_open(nat);
    CHECK(a && b && n);
    if (!a || !b || !n) goto out;
    for (size_t t = 0; t < NT; t++) {
        const gr_sparse_tensor *ta = gr_sparse_find(a, FAM[t].name),
                               *tb = gr_sparse_find(b, FAM[t].name),
                               *tn = gr_sparse_find(n, FAM[t].name);
        CHECK(ta && tb && tn);
        if (!ta || !tb || !tn) continue;
        CHECK_EQ_INT(tb->dtype, GR_DT_BF16);
        CHECK_EQ_INT(tn->dtype, FAM[t].dt); /* default: the base's dtype */
        CHECK_EQ_INT(tn->ndim, FAM[t].ndim);
        /* bf16 output = the fp32 result rounded once (round to nearest even) */
        const uint16_t *bits = gr_sparse_dense(b, tb)->data;
        float *x = malloc(ta->nelem * 4);
        gr_sparse_read_f32(a, ta, 0, ta->nelem, x);
        int same = 1;
        for (uint64_t i = 0; i < ta->nelem; i++) {
            uint16_t have;
            memcpy(&have, (const char *)bits + 2 * i, 2);
            same &= have == gr_f32_to_bf16(x[i]);
        }
        CHECK_MSG(same, "tensor %s: bf16 output is not the rounded fp32 result", FAM[t].name);
        free(x);
    }
out:
    gr_sparse_close(&a);
    gr_sparse_close(&b);
    gr_sparse_close(&n);
}

/* Models, deltas, sparse deltas and a mix give the same merge. */
static void test_delta_inputs(void)
{
    const mcase *c = &CASES[8]; /* breadcrumbs_ties */
    char p[8192];
    const char *om = ts_path(tmp, "in-models"), *od = ts_path(tmp, "in-deltas"),
               *ox = ts_path(tmp, "in-mixed");
    case_json(c, FT, "\"dtype\":\"float32\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, om, 2, NULL));
    case_json(c, DL, "\"dtype\":\"float32\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, od, 2, NULL));
    const char *mix[3] = {FT[0], DL[1], FT[2]};
    case_json(c, mix, "\"dtype\":\"float32\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, ox, 2, NULL));
    CHECK_MSG(same_file(ts_path(om, "model.safetensors"), ts_path(od, "model.safetensors")),
              "models and deltas merge differently");
    CHECK(same_file(ts_path(om, "model.safetensors"), ts_path(ox, "model.safetensors")));

    /* DARE-pruned deltas, stored sparse and dense, merge identically */
    const char *sp[3], *dn[3];
    for (int i = 0; i < 3; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "dare-sparse%d", i);
        sp[i] = strdup(ts_path(tmp, tag));
        snprintf(tag, sizeof tag, "dare-dense%d", i);
        dn[i] = strdup(ts_path(tmp, tag));
        snprintf(p, sizeof p, "{\"input\":\"%s\",\"method\":\"dare\",\"density\":0.3,\"seed\":%d}",
                 DL[i], i);
        CHECK(!ts_run_op("prune", p, sp[i], 2, NULL));
        snprintf(p, sizeof p,
                 "{\"input\":\"%s\",\"method\":\"dare\",\"density\":0.3,\"seed\":%d,\"format\":"
                 "\"dense\"}",
                 DL[i], i);
        CHECK(!ts_run_op("prune", p, dn[i], 2, NULL));
    }
    gr_sparse *s = gr_sparse_open(sp[0]);
    CHECK(s && gr_sparse_has_sparse(s));
    gr_sparse_close(&s);
    const mcase ta = {"ties", 3, {1, 0.5, 0.75}, {1, 1, 1}, 0.01, 0.15, 1, 0, 0, -1, NULL, 0};
    const char *os = ts_path(tmp, "in-sparse"), *on = ts_path(tmp, "in-dense");
    case_json(&ta, sp, "\"dtype\":\"float32\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, os, 2, NULL));
    case_json(&ta, dn, "\"dtype\":\"float32\"", p, sizeof p);
    CHECK(!ts_run_op("merge", p, on, 2, NULL));
    CHECK_MSG(same_file(ts_path(os, "model.safetensors"), ts_path(on, "model.safetensors")),
              "sparse and dense deltas merge differently");
    for (int i = 0; i < 3; i++) free((char *)sp[i]), free((char *)dn[i]);
}

/* Weights as a layer gradient, densities as filters, against the
 * reference with the values worked out here from the formula. */
static void test_gradients_filters(void)
{
    char p[8192];
    const char *out = ts_path(tmp, "grad");
    snprintf(p, sizeof p,
             "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\"],"
             "\"weight\":[0.2,1.0],"
             "\"per_model\":[{\"density\":[{\"filter\":\"mlp\",\"value\":0.5},{\"value\":0.9}]},"
             "{\"density\":0.7,\"weight\":[{\"filter\":\"q_proj\",\"value\":2}]}],"
             "\"dtype\":\"float32\"}",
             BASE, FT[0], FT[1]);
    int rc = ts_run_op("merge", p, out, 2, NULL);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    if (rc) return;
    for (size_t t = 0; t < NT; t++) {
        const char *name = FAM[t].name;
        long layer = -1;
        double pos = gr_mparam_layer(name, &layer) ? (double)layer / (2 - 1) : 0;
        mcase c = {"ties",
                   2,
                   {0.2 + 0.8 * pos, strstr(name, "q_proj") ? 2 : 0.2 + 0.8 * pos},
                   {strstr(name, "mlp") ? 0.5 : 0.9, 0.7},
                   0.01,
                   0.15,
                   1,
                   0,
                   0,
                   -1,
                   NULL,
                   0};
        uint64_t n = 0, n2 = 0;
        float *got = ts_read(out, name, &n), *want = case_ref(&c, name, &n2);
        CHECK(got && want && n == n2);
        if (got && want)
            CHECK_MSG(ts_relerr(got, want, n) <= 2e-6, "gradient/filter merge: tensor %s", name);
        free(got), free(want);
    }
}

static void test_layout(void)
{
    char p[8192];
    const char *out = ts_path(tmp, "sharded"), *one = ts_path(tmp, "m3-ties");
    case_json(&CASES[3], FT, "\"dtype\":\"float32\",\"shard_size\":4000", p, sizeof p);
    CHECK(!ts_run_op("merge", p, out, 2, NULL));
    CHECK(gr_fs_exists(ts_path(out, "model.safetensors.index.json")));
    CHECK(!gr_fs_exists(ts_path(out, "model.safetensors")));
    CHECK(gr_fs_exists(ts_path(out, "config.json")));
    CHECK(gr_fs_exists(ts_path(out, "tokenizer.json")));
    gr_ckpt *c = gr_ckpt_open(out);
    CHECK_MSG(c != NULL, "%s", gr_errmsg());
    CHECK(c && gr_ckpt_nfiles(c) >= 3);
    CHECK(c && gr_ckpt_config(c) &&
          gr_json_get_int(gr_ckpt_config(c), "num_hidden_layers", 0) == 2);
    gr_ckpt_close(&c);
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = 0, n2 = 0;
        float *a = ts_read(out, FAM[t].name, &n), *b = ts_read(one, FAM[t].name, &n2);
        CHECK(a && b && n == n2 && !memcmp(a, b, n * 4));
        free(a), free(b);
    }
    /* tokenizer_source: tokenizer files from another model */
    const char *tokdir = ts_path(tmp, "tokdir"), *out2 = ts_path(tmp, "toksrc");
    ts_mkdir(tokdir);
    gr_fs_write_atomic(ts_path(tokdir, "tokenizer.json"), "{\"other\": 2}", 12, 0644);
    case_json(&CASES[0], FT, NULL, p, sizeof p);
    p[strlen(p) - 1] = 0;
    snprintf(p + strlen(p), sizeof p - strlen(p), ",\"tokenizer_source\":\"%s\"}", tokdir);
    CHECK(!ts_run_op("merge", p, out2, 2, NULL));
    char *tj = NULL;
    size_t tl;
    CHECK(!gr_fs_read_file(ts_path(out2, "tokenizer.json"), 100, &tj, &tl));
    CHECK_CONTAINS(tj, "other");
    free(tj);
}

static void test_lora_input(void)
{
    /* a LoRA adapter is a delta input: task arithmetic of one adapter with
     * weight 1 is peft's merged model */
    char p[4096];
    const char *out = ts_path(tmp, "lora-ta");
    snprintf(p, sizeof p,
             "{\"method\":\"task_arithmetic\",\"base\":\"%s\",\"models\":[\"%s\"],\"weights\":[1]}",
             fixture("golden/llama-gqa"), fixture("golden/lora-llama/adapter"));
    int rc = ts_run_op("merge", p, out, 2, NULL);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    gr_sparse *a = gr_sparse_open(out), *b = gr_sparse_open(fixture("golden/lora-llama/merged"));
    CHECK(a && b && gr_sparse_count(a) == gr_sparse_count(b));
    for (size_t i = 0; a && b && i < gr_sparse_count(b); i++) {
        const gr_sparse_tensor *tb = gr_sparse_at(b, i), *ta = gr_sparse_find(a, tb->name);
        float *x = malloc(tb->nelem * 4), *y = malloc(tb->nelem * 4);
        CHECK(ta && !gr_sparse_read_f32(a, ta, 0, tb->nelem, x));
        CHECK(!gr_sparse_read_f32(b, tb, 0, tb->nelem, y));
        CHECK_MSG(ts_relerr(x, y, tb->nelem) <= 1e-6, "%s", tb->name);
        free(x), free(y);
    }
    gr_sparse_close(&a);
    gr_sparse_close(&b);
}

int main(void)
{
    tmp = ts_tmpdir("graft-test-merge-");
    make_family();
    RUN(test_methods_vs_ref);
    RUN(test_methods_vs_numpy);
    RUN(test_thread_determinism);
    RUN(test_big_tensor);
    RUN(test_streamed);
    RUN(test_big_delta_apply);
    RUN(test_dtypes);
    RUN(test_delta_inputs);
    RUN(test_gradients_filters);
    RUN(test_layout);
    RUN(test_lora_input);
    gr_fs_rmrf(tmp);
    free(tmp);
    TEST_MAIN_END();
}
