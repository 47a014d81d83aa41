/* Tests for gr_merge: every merge method against an independent numpy
 * reference (tests/ref/merge_ref.py, written from merge-methods.md) on small
 * tensors of awkward shapes fed from f32, bf16 and f16 values; the optimised
 * kernels against the plain reference loops; bit-identical results for 1, 2
 * and 4 threads; global PCB against per-tensor PCB of the concatenation;
 * bad parameters. */
#include <stdint.h>
#include <unistd.h>

#include "gr_dtype.h"
#include "gr_err.h"
#include "gr_merge.h"
#include "gr_rng.h"
#include "gr_test.h"
#include "ref_io.h"

#define PY      "/usr/bin/python3"
#define REF     GRAFT_SOURCE_DIR "/tests/ref/merge_ref.py"
#define MAXK    4
#define MAXCASE 1024

/* ---- data ---- */

static gr_rng_stream rs;

static void normal_fill(float *x, size_t n, double mean, double sd)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(mean + sd * gr_rng_next_normal(&rs));
}


/* ---- cases ---- */

typedef struct mcase {
    char id[16];
    gr_merge_opts o;
    gr_merge_model m[MAXK];
    size_t k, n, row_len;
    int kind;
    char dtype[8];
    char name[64];
    float *out; /* C result (fast, 1 thread) */
} mcase;

static mcase cases[MAXCASE];
static int ncases;
static char dir[64];
static FILE *jl;

static const char *cons_name(gr_consensus c)
{
    return c == GR_CONSENSUS_SUM ? "sum" : c == GR_CONSENSUS_COUNT ? "count" : "none";
}

/* Runs the C kernels on one case and records it for the numpy reference. */
static void add_case(const gr_merge_opts *o, const gr_merge_model *m, size_t k, size_t n,
                     size_t row_len, int kind, const char *dt, const float *base, float *const *in)
{
    if (ncases >= MAXCASE) return;
    mcase *c = &cases[ncases];
    snprintf(c->id, sizeof c->id, "m%d", ncases);
    c->o = *o;
    memcpy(c->m, m, k * sizeof *m);
    c->k = k, c->n = n, c->row_len = row_len, c->kind = kind;
    snprintf(c->dtype, sizeof c->dtype, "%s", dt);
    snprintf(c->name, sizeof c->name, "model.layers.%d.mlp.weight", ncases);
    gr_merge_tinfo t = {c->name, n, row_len};

    /* Inputs go to files before the kernels overwrite them. */
    char fn[64];
    snprintf(fn, sizeof fn, "%s.base", c->id);
    if (base) write_raw(dir, fn, base, n, dt);
    for (size_t i = 0; i < k; i++) {
        snprintf(fn, sizeof fn, "%s.in%zu", c->id, i);
        write_raw(dir, fn, in[i], n, dt);
    }

    /* fast with 1, 2, 4 threads and the reference, each on fresh copies */
    float *outs[4];
    int rcs[4];
    const int thr[3] = {1, 2, 4};
    for (int v = 0; v < 4; v++) {
        float *cp[MAXK];
        for (size_t i = 0; i < k; i++) {
            cp[i] = malloc((n ? n : 1) * sizeof(float));
            memcpy(cp[i], in[i], n * sizeof(float));
        }
        outs[v] = calloc(n ? n : 1, sizeof(float));
        gr_merge_opts ov = *o;
        if (v < 3) {
            ov.threads = thr[v];
            rcs[v] = gr_merge_tensor(&ov, &t, base, cp, kind, m, k, outs[v]);
        } else
            rcs[v] = gr_merge_tensor_ref(&ov, &t, base, cp, kind, m, k, outs[v]);
        for (size_t i = 0; i < k; i++) free(cp[i]);
    }
    CHECK_MSG(rcs[0] == 0 && rcs[3] == 0, "%s %s n=%zu: %s", c->id, gr_merge_method_name(o->method),
              n, gr_errmsg());
    for (int v = 1; v < 3; v++)
        CHECK_MSG(!memcmp(outs[0], outs[v], n * sizeof(float)),
                  "%s %s n=%zu: %d threads differ from 1", c->id, gr_merge_method_name(o->method),
                  n, thr[v]);
    double worst = 0, mag = 1;
    for (size_t j = 0; j < n; j++) {
        double e = fabs((double)outs[0][j] - outs[3][j]);
        worst = e > worst ? e : worst;
        mag = fabs(outs[3][j]) > mag ? fabs(outs[3][j]) : mag;
    }
    CHECK_MSG(worst <= 4e-7 * mag, "%s %s n=%zu: fast vs reference loop: max err %g", c->id,
              gr_merge_method_name(o->method), n, worst);
    c->out = outs[0];
    for (int v = 1; v < 4; v++) free(outs[v]);

    fprintf(jl,
            "{\"id\":\"%s\",\"op\":\"merge\",\"method\":\"%s\",\"n\":%zu,\"row_len\":%zu,"
            "\"dtype\":\"%s\",\"kind\":\"%s\",\"name\":\"%s\",\"seed\":%llu,",
            c->id, gr_merge_method_name(o->method), n, row_len, dt,
            kind == GR_MERGE_IN_DELTAS ? "deltas" : "models", c->name, (unsigned long long)o->seed);
    fprintf(jl,
            "\"normalize\":%s,\"lambda\":%.17g,\"t\":%.17g,\"pcb_ratio\":%.17g,"
            "\"consensus\":\"%s\",\"rescale\":\"%s\",",
            o->normalize ? "true" : "false", o->lambda, isnan(o->t) ? 0.0 : o->t, o->pcb_ratio,
            cons_name(o->consensus), gr_rescale_name(o->rescale));
    fprintf(jl, "\"base\":%s%s%s,\"inputs\":[", base ? "\"" : "", base ? c->id : "null",
            base ? ".base\"" : "");
    for (size_t i = 0; i < k; i++) fprintf(jl, "%s\"%s.in%zu\"", i ? "," : "", c->id, i);
    fprintf(jl, "],\"models\":[");
    for (size_t i = 0; i < k; i++)
        fprintf(jl,
                "%s{\"weight\":%.17g,\"density\":%.17g,\"gamma\":%.17g,\"epsilon\":%.17g,"
                "\"rng_index\":%llu}",
                i ? "," : "", m[i].weight, m[i].density, m[i].gamma, m[i].epsilon,
                (unsigned long long)m[i].rng_index);
    fprintf(jl, "]}\n");
    ncases++;
}

typedef struct shape {
    size_t n, row;
} shape;

static const shape shapes[] = {{1, 1}, {7, 7}, {15, 3}, {9, 1}, {257, 257}, {33 * 65, 65}};
static const char *const dtypes[] = {"f32", "bf16", "f16"};

/* Builds inputs for one shape/dtype and adds the case. `style`: 0 small
 * deltas around the base, 1 far-apart models (slerp's spherical branch). */
static void run_variant(const gr_merge_opts *o, const gr_merge_model *m, size_t k, int kind,
                        int style)
{
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t d = 0; d < 3; d++) {
            size_t n = shapes[s].n;
            float *base = malloc(n * sizeof *base), *in[MAXK];
            normal_fill(base, n, 0.0, 1.0);
            quantize(base, n, dtypes[d]);
            for (size_t i = 0; i < k; i++) {
                in[i] = malloc(n * sizeof(float));
                if (style == 1) {
                    normal_fill(in[i], n, 0.0, 0.8);
                    for (size_t j = 0; j < n; j++) in[i][j] += 0.6f * base[j];
                } else
                    normal_fill(in[i], n, 0.0, 0.02);
                if (kind == GR_MERGE_IN_MODELS && style == 0)
                    for (size_t j = 0; j < n; j++) in[i][j] += base[j];
                quantize(in[i], n, dtypes[d]);
            }
            add_case(o, m, k, n, shapes[s].row, kind, dtypes[d], base, in);
            free(base);
            for (size_t i = 0; i < k; i++) free(in[i]);
        }
}

static void models3(gr_merge_model *m, const double *w, const double *d)
{
    for (int i = 0; i < 3; i++) {
        gr_merge_model_init(&m[i], (uint64_t)i);
        m[i].weight = w[i];
        m[i].density = d[i];
    }
}

static void build_cases(void)
{
    gr_merge_opts o;
    gr_merge_model m[MAXK];
    const double w1[3] = {1.0, 0.5, 0.7}, wneg[3] = {0.8, -0.3, 1.1}, d1[3] = {0.5, 0.3, 0.8};
    const double dfull[3] = {1, 1, 1};

    gr_merge_opts_init(&o, "linear");
    models3(m, (const double[]){0.5, 1.3, -0.2}, dfull);
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
    o.normalize = 0;
    run_variant(&o, m, 2, GR_MERGE_IN_DELTAS, 0);

    gr_merge_opts_init(&o, "task_arithmetic");
    o.lambda = 0.7;
    models3(m, wneg, dfull);
    run_variant(&o, m, 2, GR_MERGE_IN_MODELS, 0);

    gr_merge_opts_init(&o, "ties");
    models3(m, w1, d1);
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
    o.consensus = GR_CONSENSUS_COUNT, o.normalize = 0, o.lambda = 1.5;
    models3(m, wneg, d1);
    run_variant(&o, m, 3, GR_MERGE_IN_DELTAS, 0);
    gr_merge_opts_init(&o, "ties");
    o.rescale = GR_RESCALE_L1;
    run_variant(&o, m, 3, GR_MERGE_IN_DELTAS, 0);

    gr_merge_opts_init(&o, "dare_ties");
    o.seed = 7;
    models3(m, w1, (const double[]){0.6, 0.4, 0.9});
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
    gr_merge_opts_init(&o, "dare_linear");
    o.seed = 11;
    run_variant(&o, m, 3, GR_MERGE_IN_DELTAS, 0);
    o.rescale = GR_RESCALE_L1;
    run_variant(&o, m, 2, GR_MERGE_IN_DELTAS, 0);

    gr_merge_opts_init(&o, "breadcrumbs");
    models3(m, w1, (const double[]){0.5, 0.5, 0.7});
    m[0].gamma = 0.1, m[1].gamma = 0.0, m[2].gamma = 0.05; /* gamma 0: n_top = 0 */
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
    gr_merge_opts_init(&o, "breadcrumbs_ties");
    m[0].gamma = 0.6, m[1].gamma = 0.3; /* n_top reduced to hit the density */
    run_variant(&o, m, 3, GR_MERGE_IN_DELTAS, 0);

    gr_merge_opts_init(&o, "della");
    o.seed = 3;
    models3(m, w1, (const double[]){0.5, 0.4, 0.7});
    m[0].epsilon = 0.2, m[1].epsilon = 0.1, m[2].epsilon = 0.25;
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
    gr_merge_opts_init(&o, "della_linear");
    o.seed = 5, o.rescale = GR_RESCALE_NONE, o.lambda = 1.2;
    run_variant(&o, m, 2, GR_MERGE_IN_DELTAS, 0);

    gr_merge_opts_init(&o, "slerp");
    models3(m, w1, dfull);
    o.t = 0.3;
    run_variant(&o, m, 1, GR_MERGE_IN_MODELS, 1); /* spherical branch */
    run_variant(&o, m, 1, GR_MERGE_IN_MODELS, 0); /* nearly colinear: lerp */
    o.t = 0.0;
    run_variant(&o, m, 1, GR_MERGE_IN_DELTAS, 1);
    o.t = 1.0;
    run_variant(&o, m, 1, GR_MERGE_IN_MODELS, 1);

    gr_merge_opts_init(&o, "pcb");
    o.pcb_ratio = 0.1;
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
    o.pcb_ratio = 0.5, o.lambda = 0.8;
    run_variant(&o, m, 2, GR_MERGE_IN_DELTAS, 0);

    gr_merge_opts_init(&o, "model_stock");
    run_variant(&o, m, 3, GR_MERGE_IN_MODELS, 0);
}

static void test_against_numpy(void)
{
    if (!have_numpy()) {
        printf("SKIP test_against_numpy: " PY " has no numpy\n");
        return;
    }
    snprintf(dir, sizeof dir, "/tmp/graft-merge-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/cases.jsonl", dir);
    jl = fopen(path, "w");
    CHECK(jl != NULL);
    gr_rng_stream_init(&rs, 1234, "test_merge");
    build_cases();
    fclose(jl);
    char cmd[512];
    snprintf(cmd, sizeof cmd, PY " %s %s", REF, dir);
    CHECK_MSG(system(cmd) == 0, "%s failed", cmd);
    int bad = 0;
    for (int c = 0; c < ncases; c++) {
        mcase *mc = &cases[c];
        char fn[64];
        snprintf(fn, sizeof fn, "%s.out.f32", mc->id);
        float *ref = read_raw(dir, fn, mc->n);
        CHECK_MSG(ref != NULL, "%s: no reference output", mc->id);
        if (!ref) continue;
        double worst = 0, mag = 1;
        size_t at = 0;
        for (size_t j = 0; j < mc->n; j++) {
            double e = fabs((double)mc->out[j] - ref[j]);
            if (e > worst) worst = e, at = j;
            mag = fabs(ref[j]) > mag ? fabs(ref[j]) : mag;
        }
        /* fp32 rounding: a few ulps of the largest output */
        int ok = worst <= 5e-7 * mag;
        CHECK_MSG(
            ok, "%s %s (%s, %s, n=%zu, row=%zu, k=%zu): max err %g at %zu (C %.9g, numpy %.9g)",
            mc->id, gr_merge_method_name(mc->o.method), mc->dtype, mc->kind ? "deltas" : "models",
            mc->n, mc->row_len, mc->k, worst, at, mc->out[at], ref[at]);
        bad += !ok;
        free(ref);
        free(mc->out);
    }
    printf("numpy reference: %d cases, %d mismatched\n", ncases, bad);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* TIES by hand on three entries: trim, elect, disjoint mean. */
static void test_ties_hand(void)
{
    gr_merge_opts o;
    gr_merge_opts_init(&o, "ties");
    gr_merge_model m[3];
    for (int i = 0; i < 3; i++) gr_merge_model_init(&m[i], (uint64_t)i);
    float base[3] = {1, 2, 3};
    float d0[3] = {0.5f, -0.2f, 0.0f}, d1[3] = {-0.1f, -0.4f, 0.3f}, d2[3] = {-0.3f, 0.1f, 0.2f};
    float *in[3] = {d0, d1, d2}, out[3];
    gr_merge_tinfo t = {"x", 3, 3};
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_DELTAS, m, 3, out) == 0);
    /* entry 0: sum 0.1 > 0 -> keep +0.5 only; entry 1: sum -0.5 -> mean(-0.2, -0.4);
     * entry 2: keep 0.3 and 0.2 (zeros never vote) -> 0.25 */
    CHECK_NEAR(out[0], 1.5, 1e-6);
    CHECK_NEAR(out[1], 2.0 - 0.3, 1e-6);
    CHECK_NEAR(out[2], 3.25, 1e-6);
}

/* slerp of orthogonal unit vectors at t = 1/2 is their normalised mean. */
static void test_slerp_hand(void)
{
    gr_merge_opts o;
    gr_merge_opts_init(&o, "slerp");
    o.t = 0.5;
    gr_merge_model m;
    gr_merge_model_init(&m, 1);
    float v0[2] = {1, 0}, v1[2] = {0, 1}, out[2];
    float *in[1] = {v1};
    gr_merge_tinfo t = {"x", 2, 2};
    CHECK(gr_merge_tensor(&o, &t, v0, in, GR_MERGE_IN_MODELS, &m, 1, out) == 0);
    CHECK_NEAR(out[0], sqrt(0.5), 1e-7);
    CHECK_NEAR(out[1], sqrt(0.5), 1e-7);
}

/* Global PCB over two pieces equals per-tensor PCB of their concatenation. */
static void test_pcb_global(void)
{
    gr_rng_stream_init(&rs, 99, "pcb");
    const size_t n = 3000, cut = 1234, k = 3;
    float *base = malloc(n * sizeof *base), *d[3], *dc[3], *out1 = malloc(n * sizeof *out1),
          *out2 = malloc(n * sizeof *out2);
    normal_fill(base, n, 0, 1);
    for (size_t i = 0; i < k; i++) {
        d[i] = malloc(n * sizeof(float));
        dc[i] = malloc(n * sizeof(float));
        normal_fill(d[i], n, 0, 0.01);
        quantize(d[i], n, "bf16");
        memcpy(dc[i], d[i], n * sizeof(float));
    }
    gr_merge_opts o;
    gr_merge_opts_init(&o, "pcb");
    o.pcb_ratio = 0.2, o.lambda = 0.9, o.threads = 2;
    gr_merge_model m[3];
    for (size_t i = 0; i < k; i++) gr_merge_model_init(&m[i], i);
    gr_merge_tinfo t = {"all", n, n};
    CHECK(gr_merge_tensor(&o, &t, base, dc, GR_MERGE_IN_DELTAS, m, k, out1) == 0);

    gr_pcb_global *g = gr_pcb_global_new(k, 0.2, 3);
    CHECK(g != NULL);
    const float *p0[3] = {d[0], d[1], d[2]}, *p1[3] = {d[0] + cut, d[1] + cut, d[2] + cut};
    int rc, passes = 0;
    do {
        passes++;
        CHECK(gr_pcb_global_feed(g, p0, cut) == 0);
        CHECK(gr_pcb_global_feed(g, p1, n - cut) == 0);
    } while ((rc = gr_pcb_global_end_pass(g)) > 0);
    CHECK(rc == 0);
    CHECK_EQ_INT(passes, 4);
    CHECK(gr_pcb_global_apply(g, base, p0, cut, 0.9, out2) == 0);
    CHECK(gr_pcb_global_apply(g, base + cut, p1, n - cut, 0.9, out2 + cut) == 0);
    CHECK(!memcmp(out1, out2, n * sizeof(float)));
    /* a pass that feeds a different number of elements is refused */
    gr_pcb_global_destroy(&g);
    g = gr_pcb_global_new(k, 0.2, 1);
    CHECK(gr_pcb_global_feed(g, p0, cut) == 0);
    CHECK(gr_pcb_global_end_pass(g) == 1);
    CHECK(gr_pcb_global_feed(g, p0, cut - 1) == 0);
    CHECK(gr_pcb_global_end_pass(g) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "same tensors");
    gr_pcb_global_destroy(&g);
    CHECK(g == NULL);
    free(base), free(out1), free(out2);
    for (size_t i = 0; i < k; i++) free(d[i]), free(dc[i]);
}

/* out may alias base; deltas and models give the same result. */
static void test_alias_and_kinds(void)
{
    gr_rng_stream_init(&rs, 5, "alias");
    const size_t n = 1001;
    float *base = malloc(n * 4), *b2 = malloc(n * 4), *th = malloc(n * 4), *dl = malloc(n * 4),
          *out = malloc(n * 4);
    normal_fill(base, n, 0, 1);
    normal_fill(dl, n, 0, 0.1);
    quantize(dl, n, "bf16");
    for (size_t j = 0; j < n; j++) th[j] = base[j] + dl[j], dl[j] = th[j] - base[j];
    memcpy(b2, base, n * 4);
    gr_merge_opts o;
    gr_merge_opts_init(&o, "dare_ties");
    o.seed = 1;
    gr_merge_model m;
    gr_merge_model_init(&m, 0);
    m.density = 0.5;
    gr_merge_tinfo t = {"a", n, n};
    float *in1[1] = {th}, *in2[1] = {dl};
    CHECK(gr_merge_tensor(&o, &t, base, in1, GR_MERGE_IN_MODELS, &m, 1, out) == 0);
    CHECK(gr_merge_tensor(&o, &t, b2, in2, GR_MERGE_IN_DELTAS, &m, 1, b2) == 0);
    CHECK(!memcmp(out, b2, n * 4));
    free(base), free(b2), free(th), free(dl), free(out);
}

static void test_bad_params(void)
{
    gr_merge_opts o;
    CHECK(gr_merge_opts_init(&o, "tiez") == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "merge_method 'tiez' unknown");
    gr_consensus c;
    CHECK(gr_consensus_parse("majority", &c) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "consensus");

    float base[4] = {1, 2, 3, 4}, a[4] = {1, 1, 1, 1}, b[4] = {2, 2, 2, 2}, out[4];
    float *in[2] = {a, b};
    gr_merge_model m[2];
    gr_merge_model_init(&m[0], 0);
    gr_merge_model_init(&m[1], 1);
    gr_merge_tinfo t = {"model.norm.weight", 4, 4};

    gr_merge_opts_init(&o, "ties");
    m[1].density = 0.0;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "density = 0 must be in (0, 1]");
    CHECK_CONTAINS(gr_errmsg(), "model.norm.weight");
    m[1].density = 1.5;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "model 1");
    m[1].density = 1.0;

    gr_merge_opts_init(&o, "della");
    m[0].density = 0.2, m[0].epsilon = 0.2;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "density - epsilon");
    m[0].density = 0.9, m[0].epsilon = 0.1;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "density + epsilon");
    m[0].density = 1.0, m[0].epsilon = 0.15;

    gr_merge_opts_init(&o, "slerp");
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 1, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "slerp: t");
    o.t = 0.5;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "exactly two models");

    gr_merge_opts_init(&o, "model_stock");
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 1, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "at least two");

    gr_merge_opts_init(&o, "linear");
    m[0].weight = 1.0, m[1].weight = -1.0;
    CHECK(gr_merge_tensor(&o, &t, NULL, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "weights sum to 0");
    m[1].weight = NAN;
    CHECK(gr_merge_tensor(&o, &t, NULL, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "weight = nan");
    m[1].weight = 1.0;
    CHECK(gr_merge_tensor(&o, &t, NULL, in, GR_MERGE_IN_MODELS, m, 2, out) == 0);
    CHECK_NEAR(out[0], 1.5, 0);

    gr_merge_opts_init(&o, "task_arithmetic");
    CHECK(gr_merge_tensor(&o, &t, NULL, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "base model");

    gr_merge_opts_init(&o, "pcb");
    o.pcb_ratio = 0;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "pcb: ratio");

    gr_merge_opts_init(&o, "ties");
    o.rescale = GR_RESCALE_INVERSE;
    m[0].density = 0.5;
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "rescale 'inverse'");
}

/* Zero-element tensors (shape [0]) merge to nothing, for every method. */
static void test_empty(void)
{
    static const char *const methods[] = {
        "linear",      "task_arithmetic",  "ties",  "dare_ties",    "dare_linear",
        "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "slerp",
        "pcb",         "model_stock"};
    float base[1] = {7}, a[1] = {1}, b[1] = {2}, out[1] = {-1};
    float *in[2] = {a, b};
    gr_merge_model m[2];
    gr_merge_model_init(&m[0], 0);
    gr_merge_model_init(&m[1], 1);
    m[0].density = m[1].density = 0.5;
    gr_merge_tinfo t = {"empty", 0, 0};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        gr_merge_opts o;
        CHECK(gr_merge_opts_init(&o, methods[i]) == 0);
        o.t = 0.5, o.threads = 2;
        size_t k = i == 9 ? 1 : 2;
        CHECK_MSG(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_MODELS, m, k, out) == 0, "%s: %s",
                  methods[i], gr_errmsg());
        CHECK_MSG(gr_merge_tensor_ref(&o, &t, base, in, GR_MERGE_IN_MODELS, m, k, out) == 0,
                  "%s (reference): %s", methods[i], gr_errmsg());
        CHECK(out[0] == -1.0f && a[0] == 1.0f);
    }
}

/* model_stock with anti-parallel deltas cannot form t. */
static void test_stock_degenerate(void)
{
    gr_merge_opts o;
    gr_merge_opts_init(&o, "model_stock");
    gr_merge_model m[2];
    gr_merge_model_init(&m[0], 0);
    gr_merge_model_init(&m[1], 1);
    float base[2] = {0, 0}, a[2] = {1, 2}, b[2] = {-1, -2}, out[2];
    float *in[2] = {a, b};
    gr_merge_tinfo t = {"w", 2, 2};
    CHECK(gr_merge_tensor(&o, &t, base, in, GR_MERGE_IN_DELTAS, m, 2, out) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "|1 + (N-1) cos| = ");
}

/* The runs use several OpenMP threads on a few shared cores: idle threads
 * must sleep rather than spin (libgomp reads this once, at load time). */
static void passive_omp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    (void)argc;
    passive_omp(argv);
    RUN(test_ties_hand);
    RUN(test_slerp_hand);
    RUN(test_alias_and_kinds);
    RUN(test_pcb_global);
    RUN(test_bad_params);
    RUN(test_stock_degenerate);
    RUN(test_empty);
    RUN(test_against_numpy);
    TEST_MAIN_END();
}
