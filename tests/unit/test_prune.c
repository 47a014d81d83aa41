/* Tests for gr_prune: every sparsifier against the numpy reference
 * (tests/ref/merge_ref.py, which also re-implements the Philox generator),
 * the fast kernels against the plain loops, bit-identical output for 1, 2
 * and 4 threads, DARE/DAREx/DELLA statistics (kept fraction within a
 * binomial bound, expectation preserved), global scope against per-tensor
 * selection of the concatenated model, stats, and bad parameters. */
#include <stdint.h>
#include <unistd.h>

#include "gr_dtype.h"
#include "gr_err.h"
#include "gr_prune.h"
#include "gr_rng.h"
#include "gr_test.h"
#include "ref_io.h"

#define PY      "/usr/bin/python3"
#define REF     GRAFT_SOURCE_DIR "/tests/ref/merge_ref.py"
#define MAXCASE 512
#define SEED    20240601ULL

static gr_rng_stream rs;

static void normal_fill(float *x, size_t n, double sd)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(sd * gr_rng_next_normal(&rs));
}


static double max_err(const float *a, const float *b, size_t n, double *mag)
{
    double worst = 0, m = 1;
    for (size_t j = 0; j < n; j++) {
        double e = fabs((double)a[j] - b[j]);
        worst = e > worst ? e : worst;
        m = fabs(b[j]) > m ? fabs(b[j]) : m;
    }
    if (mag) *mag = m;
    return worst;
}

/* ---- numpy cases ---- */

typedef struct pcase {
    char id[16], name[48], dtype[8];
    size_t n;
    float *out;
    const char *what;
} pcase;

static pcase cases[MAXCASE];
static int ncases;
static char dir[64];
static FILE *jl;

static void add_case(const gr_prune_params *p, const float *x, size_t n, size_t row, const char *dt,
                     uint64_t index)
{
    if (ncases >= MAXCASE) return;
    pcase *c = &cases[ncases];
    snprintf(c->id, sizeof c->id, "p%d", ncases);
    snprintf(c->name, sizeof c->name, "model.layers.%d.self_attn.q_proj.weight", ncases % 7);
    snprintf(c->dtype, sizeof c->dtype, "%s", dt);
    c->n = n;
    c->what = gr_prune_method_name(p->method);
    char fn[48];
    snprintf(fn, sizeof fn, "%s.in", c->id);
    write_raw(dir, fn, x, n, dt);

    uint64_t key = gr_rng_key(SEED, c->name, index);
    float *o[4];
    const int thr[3] = {1, 2, 4};
    int rc[4];
    gr_prune_stats st[4];
    for (int v = 0; v < 4; v++) {
        o[v] = malloc((n ? n : 1) * sizeof(float));
        memcpy(o[v], x, n * sizeof(float));
        rc[v] = v < 3 ? gr_prune_tensor(p, c->name, o[v], n, row, key, thr[v], &st[v])
                      : gr_prune_tensor_ref(p, c->name, o[v], n, row, key, &st[v]);
    }
    CHECK_MSG(rc[0] == 0 && rc[3] == 0, "%s %s: %s", c->id, c->what, gr_errmsg());
    for (int v = 1; v < 3; v++)
        CHECK_MSG(!memcmp(o[0], o[v], n * sizeof(float)), "%s %s n=%zu: %d threads differ", c->id,
                  c->what, n, thr[v]);
    double mag, e = max_err(o[0], o[3], n, &mag);
    CHECK_MSG(e <= 2.5e-7 * mag, "%s %s n=%zu: fast vs reference loop: max err %g", c->id, c->what,
              n, e);
    CHECK_EQ_INT(st[0].kept, st[3].kept);
    CHECK_EQ_INT(st[0].n, n);
    c->out = o[0];
    for (int v = 1; v < 4; v++) free(o[v]);
    fprintf(jl,
            "{\"id\":\"%s\",\"op\":\"prune\",\"method\":\"%s\",\"n\":%zu,\"row_len\":%zu,"
            "\"dtype\":\"%s\",\"inputs\":[\"%s.in\"],\"name\":\"%s\",\"seed\":%llu,"
            "\"index\":%llu,\"density\":%.17g,\"gamma\":%.17g,\"epsilon\":%.17g,\"q\":%.17g,"
            "\"rescale\":\"%s\"}\n",
            c->id, c->what, n, row, dt, c->id, c->name, (unsigned long long)SEED,
            (unsigned long long)index, p->density, p->gamma, p->epsilon, p->q,
            gr_rescale_name(p->rescale));
    ncases++;
}

typedef struct shape {
    size_t n, row;
} shape;

static const shape shapes[] = {{1, 1}, {5, 5}, {12, 4}, {7, 1}, {301, 301}, {40 * 33, 33}};
static const char *const dtypes[] = {"f32", "bf16", "f16"};

static void run_variant(const gr_prune_params *p)
{
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t d = 0; d < 3; d++) {
            size_t n = shapes[s].n;
            float *x = malloc(n * sizeof *x);
            normal_fill(x, n, 0.05);
            quantize(x, n, dtypes[d]);
            add_case(p, x, n, shapes[s].row, dtypes[d], (uint64_t)(s + d));
            free(x);
        }
}

static void build_cases(void)
{
    gr_prune_params p;
    gr_prune_params_init(&p, GR_PRUNE_DARE);
    p.density = 0.3;
    run_variant(&p);
    p.rescale = GR_RESCALE_L1;
    run_variant(&p);
    p.rescale = GR_RESCALE_NONE;
    p.density = 0.7;
    run_variant(&p);
    gr_prune_params_init(&p, GR_PRUNE_DROP);
    p.density = 0.5;
    run_variant(&p);
    gr_prune_params_init(&p, GR_PRUNE_DAREX);
    p.density = 0.2, p.q = 0.45;
    run_variant(&p);
    gr_prune_params_init(&p, GR_PRUNE_MAGNITUDE);
    p.density = 0.4;
    run_variant(&p);
    p.rescale = GR_RESCALE_L1, p.density = 0.25;
    run_variant(&p);
    gr_prune_params_init(&p, GR_PRUNE_BREADCRUMBS);
    p.density = 0.5, p.gamma = 0.1;
    run_variant(&p);
    p.gamma = 0.0; /* n_top = 0: keeps the top n_keep, unlike mergekit */
    run_variant(&p);
    p.gamma = 0.7, p.density = 0.6, p.rescale = GR_RESCALE_L1; /* n_top reduced */
    run_variant(&p);
    gr_prune_params_init(&p, GR_PRUNE_DELLA);
    p.density = 0.5, p.epsilon = 0.2;
    run_variant(&p);
    p.density = 0.3, p.epsilon = 0.1, p.rescale = GR_RESCALE_NONE;
    run_variant(&p);
    p.rescale = GR_RESCALE_L1;
    run_variant(&p);
    gr_prune_params_init(&p, GR_PRUNE_NONE);
    run_variant(&p);
}

static void test_against_numpy(void)
{
    if (!have_numpy()) {
        printf("SKIP test_against_numpy: " PY " has no numpy\n");
        return;
    }
    snprintf(dir, sizeof dir, "/tmp/graft-prune-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/cases.jsonl", dir);
    jl = fopen(path, "w");
    CHECK(jl != NULL);
    gr_rng_stream_init(&rs, 77, "test_prune");
    build_cases();
    /* the generator itself: 1003 uniforms for one key */
    fprintf(jl,
            "{\"id\":\"rng\",\"op\":\"uniform\",\"n\":1003,\"dtype\":\"f32\",\"inputs\":[],"
            "\"name\":\"lm_head.weight\",\"seed\":%llu,\"index\":3}\n",
            (unsigned long long)SEED);
    fclose(jl);
    char cmd[512];
    snprintf(cmd, sizeof cmd, PY " %s %s", REF, dir);
    CHECK_MSG(system(cmd) == 0, "%s failed", cmd);
    int bad = 0;
    for (int c = 0; c < ncases; c++) {
        char fn[48];
        snprintf(fn, sizeof fn, "%s.out.f32", cases[c].id);
        float *ref = read_raw(dir, fn, cases[c].n);
        CHECK_MSG(ref != NULL, "%s: no reference output", cases[c].id);
        if (!ref) continue;
        double mag, e = max_err(cases[c].out, ref, cases[c].n, &mag);
        int ok = e <= 2.5e-7 * mag;
        CHECK_MSG(ok, "%s %s (%s, n=%zu): max err %g vs numpy", cases[c].id, cases[c].what,
                  cases[c].dtype, cases[c].n, e);
        bad += !ok;
        free(ref);
        free(cases[c].out);
    }
    float *u = read_raw(dir, "rng.out.f32", 1003);
    CHECK(u != NULL);
    uint64_t key = gr_rng_key(SEED, "lm_head.weight", 3);
    int same = u != NULL;
    for (size_t i = 0; u && i < 1003; i++) same &= u[i] == gr_rng_uniform(key, i);
    CHECK_MSG(same, "Philox uniforms differ from the numpy implementation");
    free(u);
    printf("numpy reference: %d cases, %d mismatched\n", ncases, bad);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- statistics of the random sparsifiers ---- */

/* Kept count within 5 sigma of a binomial(n, p) and the sum of the pruned
 * values within 5 sigma of the original sum (unbiased rescale). */
static void check_random(const char *what, const float *x, const float *y, size_t n,
                         const double *p, double scale_mean)
{
    double kept = 0, ekept = 0, vkept = 0, sx = 0, sy = 0, var = 0;
    for (size_t i = 0; i < n; i++) {
        kept += y[i] != 0.0f;
        ekept += p[i];
        vkept += p[i] * (1 - p[i]);
        sx += x[i] * scale_mean;
        sy += y[i];
        /* y = x s / p with probability p: var = x^2 s^2 (1 - p) / p */
        var += (double)x[i] * x[i] * scale_mean * scale_mean * (1 - p[i]) / p[i];
    }
    CHECK_MSG(fabs(kept - ekept) <= 5 * sqrt(vkept), "%s: kept %g, expected %g +- %g", what, kept,
              ekept, sqrt(vkept));
    CHECK_MSG(fabs(sy - sx) <= 5 * sqrt(var), "%s: sum after %g, expected %g +- %g", what, sy, sx,
              sqrt(var));
}

typedef struct ritem {
    float a;
    size_t j;
} ritem;

/* |x| descending, ties by lower index */
static int cmp_ritem(const void *p, const void *q)
{
    const ritem *x = p, *y = q;
    if (x->a != y->a) return x->a > y->a ? -1 : 1;
    return x->j < y->j ? -1 : x->j > y->j;
}

static void test_statistics(void)
{
    gr_rng_stream_init(&rs, 3, "stats");
    const size_t rows = 400, cols = 500, n = rows * cols;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    double *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.01 + 0.02 * gr_rng_next_normal(&rs));
    gr_prune_params pp;
    uint64_t key = gr_rng_key(1, "stat", 0);

    gr_prune_params_init(&pp, GR_PRUNE_DARE);
    pp.density = 0.3;
    memcpy(y, x, n * sizeof *y);
    CHECK(gr_prune_tensor(&pp, "stat", y, n, cols, key, 4, NULL) == 0);
    for (size_t i = 0; i < n; i++) p[i] = 0.3;
    check_random("dare", x, y, n, p, 1.0);

    /* DAREx: E[y] = x d / q */
    gr_prune_params_init(&pp, GR_PRUNE_DAREX);
    pp.density = 0.3, pp.q = 0.6;
    memcpy(y, x, n * sizeof *y);
    CHECK(gr_prune_tensor(&pp, "stat", y, n, cols, key, 2, NULL) == 0);
    check_random("darex", x, y, n, p, 0.3 / 0.6);

    /* DELLA: keep probability from the rank within each row; with 1/p the
     * expectation is preserved; the mean keep probability is the density. */
    gr_prune_params_init(&pp, GR_PRUNE_DELLA);
    pp.density = 0.4, pp.epsilon = 0.3;
    memcpy(y, x, n * sizeof *y);
    CHECK(gr_prune_tensor(&pp, "stat", y, n, cols, key, 3, NULL) == 0);
    /* p from the rank of |x| in its row: qsort of (|x|, index) */
    ritem *v = malloc(cols * sizeof *v);
    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < cols; j++) v[j] = (ritem){fabsf(x[r * cols + j]), j};
        qsort(v, cols, sizeof *v, cmp_ritem);
        for (size_t pos = 0; pos < cols; pos++) {
            double rr = (double)(cols - 1 - pos) / (double)(cols - 1);
            p[r * cols + v[pos].j] = (0.4 - 0.3) + 2 * 0.3 * rr;
        }
    }
    free(v);
    check_random("della", x, y, n, p, 1.0);
    /* large magnitudes are kept more often than small ones */
    double kept_hi = 0, kept_lo = 0, n_hi = 0, n_lo = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] > 0.55) kept_hi += y[i] != 0, n_hi++;
        if (p[i] < 0.25) kept_lo += y[i] != 0, n_lo++;
    }
    CHECK(kept_hi / n_hi > 0.6 && kept_lo / n_lo < 0.2);
    free(x), free(y), free(p);
}

/* Random sparsifiers applied chunk by chunk (odd chunk sizes, not aligned
 * to the generator's blocks of four) give the bytes of the whole tensor. */
static void test_chunks(void)
{
    gr_rng_stream_init(&rs, 6, "chunks");
    const size_t n = 10007;
    float *x = malloc(n * 4), *whole = malloc(n * 4), *parts = malloc(n * 4);
    normal_fill(x, n, 1.0);
    const gr_prune_method ms[3] = {GR_PRUNE_DARE, GR_PRUNE_DAREX, GR_PRUNE_DROP};
    for (int v = 0; v < 3; v++) {
        gr_prune_params p;
        gr_prune_params_init(&p, ms[v]);
        p.density = 0.35, p.q = 0.5;
        uint64_t key = gr_rng_key(9, "c", (uint64_t)v);
        memcpy(whole, x, n * 4);
        memcpy(parts, x, n * 4);
        CHECK(gr_prune_tensor(&p, "c", whole, n, n, key, 2, NULL) == 0);
        for (size_t a = 0, step = 1; a < n; a += step, step = step * 3 + 1) {
            size_t len = a + step < n ? step : n - a;
            CHECK(gr_prune_chunk(&p, "c", parts + a, len, a, key, 3) == 0);
        }
        CHECK_MSG(!memcmp(whole, parts, n * 4), "%s: chunks differ from the whole",
                  gr_prune_method_name(ms[v]));
    }
    gr_prune_params p;
    gr_prune_params_init(&p, GR_PRUNE_MAGNITUDE);
    p.density = 0.5;
    CHECK(gr_prune_chunk(&p, "c", parts, 10, 0, 0, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "magnitude needs the whole tensor");
    gr_prune_params_init(&p, GR_PRUNE_DARE);
    p.density = 0.5, p.rescale = GR_RESCALE_L1;
    CHECK(gr_prune_chunk(&p, "c", parts, 10, 0, 0, 1) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "with rescale l1");
    free(x), free(whole), free(parts);
}

/* ---- deterministic properties ---- */

static void test_magnitude_exact(void)
{
    /* ties broken by lower index: |x| = 2 appears at 1, 3, 5; k = 3 keeps
     * 9 (index 4), then the 2s at indices 1 and 3 */
    float x[7] = {1, -2, 0.5f, 2, 9, -2, 0}, y[7];
    gr_prune_params p;
    gr_prune_params_init(&p, GR_PRUNE_MAGNITUDE);
    p.density = 3.0 / 7.0 + 1e-9;
    memcpy(y, x, sizeof x);
    gr_prune_stats st;
    CHECK(gr_prune_tensor(&p, "t", y, 7, 7, 0, 1, &st) == 0);
    float want[7] = {0, -2, 0, 2, 9, 0, 0};
    CHECK(!memcmp(y, want, sizeof want));
    CHECK_EQ_INT(st.kept, 3);
    CHECK_NEAR(st.l1_before, 16.5, 1e-12);
    CHECK_NEAR(st.l1_after, 13, 1e-12);
    CHECK_NEAR(st.l2_after, sqrt(89.0), 1e-12);
    /* floor(d n) = 0 keeps nothing */
    p.density = 0.1;
    memcpy(y, x, sizeof x);
    CHECK(gr_prune_tensor(&p, "t", y, 7, 7, 0, 1, &st) == 0);
    CHECK_EQ_INT(st.kept, 0);
    /* breadcrumbs with gamma 0 keeps the largest, not nothing */
    gr_prune_params_init(&p, GR_PRUNE_BREADCRUMBS);
    p.density = 2.0 / 7.0 + 1e-9, p.gamma = 0;
    memcpy(y, x, sizeof x);
    CHECK(gr_prune_tensor(&p, "t", y, 7, 7, 0, 1, &st) == 0);
    float want2[7] = {0, -2, 0, 0, 9, 0, 0};
    CHECK(!memcmp(y, want2, sizeof want2));
    /* gamma 1/7: drops the 9 and keeps the next two (ties by index) */
    p.gamma = 1.0 / 7.0 + 1e-9;
    memcpy(y, x, sizeof x);
    CHECK(gr_prune_tensor(&p, "t", y, 7, 7, 0, 1, &st) == 0);
    float want3[7] = {0, -2, 0, 2, 0, 0, 0};
    CHECK(!memcmp(y, want3, sizeof want3));
}

/* Large tensor: the two-pass 16-bit radix path, exact count, thread-stable. */
static void test_magnitude_large(void)
{
    gr_rng_stream_init(&rs, 8, "large");
    const size_t n = (1u << 21) + 17;
    float *x = malloc(n * sizeof *x), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    normal_fill(x, n, 0.01);
    quantize(x, n, "bf16"); /* many ties */
    gr_prune_params p;
    gr_prune_params_init(&p, GR_PRUNE_MAGNITUDE);
    p.density = 0.1;
    memcpy(a, x, n * 4);
    memcpy(b, x, n * 4);
    gr_prune_stats sa, sb;
    CHECK(gr_prune_tensor(&p, "big", a, n, n, 0, 1, &sa) == 0);
    CHECK(gr_prune_tensor(&p, "big", b, n, n, 0, 4, &sb) == 0);
    CHECK(!memcmp(a, b, n * 4));
    size_t k = (size_t)floor(0.1 * (double)n), kept = 0;
    float minkept = INFINITY, maxdrop = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] != 0.0f)
            kept++, minkept = fminf(minkept, fabsf(a[i]));
        else
            maxdrop = fmaxf(maxdrop, fabsf(x[i]));
    }
    CHECK_EQ_INT(kept, k); /* no zeros among the top 10% of a normal sample */
    CHECK_EQ_INT(sa.kept, k);
    CHECK(maxdrop <= minkept);
    free(x), free(a), free(b);
}

/* Global scope over three tensors = per-tensor selection of their
 * concatenation, including the tie order across tensors. */
static void test_global(void)
{
    gr_rng_stream_init(&rs, 21, "global");
    const size_t len[3] = {1000, 37, 5000}, n = 6037;
    float *all = malloc(n * 4), *cat = malloc(n * 4), *part[3];
    normal_fill(all, n, 0.02);
    quantize(all, n, "bf16");
    for (size_t i = 0; i < 40; i++) all[(i * 131) % n] = 0.0f;
    const gr_prune_method methods[3] = {GR_PRUNE_MAGNITUDE, GR_PRUNE_BREADCRUMBS,
                                        GR_PRUNE_MAGNITUDE};
    const gr_rescale resc[3] = {GR_RESCALE_NONE, GR_RESCALE_NONE, GR_RESCALE_L1};
    for (int v = 0; v < 3; v++) {
        gr_prune_params p;
        gr_prune_params_init(&p, methods[v]);
        p.density = 0.3, p.gamma = 0.05, p.rescale = resc[v];
        memcpy(cat, all, n * 4);
        CHECK(gr_prune_tensor(&p, "cat", cat, n, n, 0, 1, NULL) == 0);
        gr_prune_global *g = gr_prune_global_new(&p, 3);
        CHECK(g != NULL);
        size_t off = 0;
        for (int t = 0; t < 3; t++) part[t] = all + off, off += len[t];
        int rc, passes = 0;
        do {
            passes++;
            for (int t = 0; t < 3; t++) CHECK(gr_prune_global_feed(g, part[t], len[t]) == 0);
        } while ((rc = gr_prune_global_end_pass(g)) > 0);
        CHECK(rc == 0);
        CHECK_EQ_INT(passes, resc[v] == GR_RESCALE_L1 ? 3 : 2);
        CHECK_EQ_INT(gr_prune_global_total(g), n);
        float *out = malloc(n * 4);
        memcpy(out, all, n * 4);
        gr_prune_stats st, acc = {0};
        off = 0;
        for (int t = 0; t < 3; t++) {
            CHECK(gr_prune_global_apply(g, out + off, len[t], &st) == 0);
            gr_prune_stats_add(&acc, &st);
            off += len[t];
        }
        if (resc[v] == GR_RESCALE_L1) {
            double mag, e = max_err(out, cat, n, &mag);
            CHECK_MSG(e <= 1e-7 * mag, "global l1: max err %g", e);
            CHECK_NEAR(acc.l1_after, acc.l1_before, 1e-5 * acc.l1_before);
        } else
            CHECK_MSG(!memcmp(out, cat, n * 4), "global %s differs from the concatenation",
                      gr_prune_method_name(p.method));
        CHECK_EQ_INT(acc.n, n);
        free(out);
        gr_prune_global_destroy(&g);
        CHECK(g == NULL);
    }
    free(all), free(cat);
}

static void test_bad_params(void)
{
    gr_prune_params p;
    gr_prune_method m;
    gr_rescale r;
    CHECK(gr_prune_method_parse("dare_ties", &m) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "method 'dare_ties' unknown");
    CHECK(gr_rescale_parse("l2", &r) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "rescale 'l2' unknown");
    CHECK(gr_prune_method_parse("breadcrumbs", &m) == 0 && m == GR_PRUNE_BREADCRUMBS);

    float x[6] = {1, 2, 3, 4, 5, 6};
    gr_prune_params_init(&p, GR_PRUNE_DARE);
    p.density = 0;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "density = 0 must be in (0, 1]");
    CHECK_CONTAINS(gr_errmsg(), "prune: tensor 'w': dare:");
    p.density = 1.01;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "density = 1.01");
    p.density = NAN;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);
    p.density = 1.0; /* unchanged */
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == 0);
    CHECK(x[5] == 6);

    gr_prune_params_init(&p, GR_PRUNE_DELLA);
    p.density = 0.1, p.epsilon = 0.1;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 3, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "della: density - epsilon = 0.1 - 0.1 must be > 0");
    p.density = 0.9;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 3, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "density + epsilon = 0.9 + 0.1 must be < 1");
    p.density = 0.5;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 4, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "row length 4 does not divide 6");

    gr_prune_params_init(&p, GR_PRUNE_DAREX);
    p.density = 0.5, p.q = 0.4;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "darex: q = 0.4 must be in [density, 1)");
    p.q = 1.0;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);

    gr_prune_params_init(&p, GR_PRUNE_BREADCRUMBS);
    p.density = 0.5, p.gamma = 1.0;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "gamma = 1 must be in [0, 1)");

    gr_prune_params_init(&p, GR_PRUNE_DROP);
    p.density = 0.5, p.rescale = GR_RESCALE_INVERSE;
    CHECK(gr_prune_tensor(&p, "w", x, 6, 6, 0, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "drop never rescales");

    gr_prune_params_init(&p, GR_PRUNE_DARE);
    p.density = 0.5;
    CHECK(gr_prune_global_new(&p, 1) == NULL);
    CHECK_CONTAINS(gr_errmsg(), "scope global applies to magnitude and breadcrumbs");

    gr_prune_params_init(&p, GR_PRUNE_MAGNITUDE);
    p.density = 0.5;
    gr_prune_global *g = gr_prune_global_new(&p, 1);
    CHECK(gr_prune_global_apply(g, x, 6, NULL) == GR_ESTATE);
    gr_prune_global_destroy(&g);
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
    RUN(test_magnitude_exact);
    RUN(test_chunks);
    RUN(test_magnitude_large);
    RUN(test_global);
    RUN(test_statistics);
    RUN(test_bad_params);
    RUN(test_against_numpy);
    TEST_MAIN_END();
}
