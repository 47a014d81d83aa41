/* Tests for the prune op: DARE / DAREx / drop / DELLA checked statistically
 * (kept fraction within a binomial bound, expectation preserved), magnitude
 * and breadcrumbs exactly, scope global, include/exclude, layer gradients,
 * thread-count determinism, the sparse output's size, metrics. */
#include "gr_test.h"
#include <stdarg.h>
#include "test_surgery_util.h"

static char *tmp;
static const char *DELTA;

#define NT 5
static const tspec T[NT] = {
    {"model.layers.0.mlp.up_proj.weight", GR_DT_F32, 2, {400, 501}},
    {"model.layers.0.post_attention_layernorm.weight", GR_DT_F32, 1, {501}},
    {"model.layers.1.mlp.up_proj.weight", GR_DT_BF16, 2, {333, 77}},
    {"model.layers.1.self_attn.q_proj.bias", GR_DT_F16, 1, {77}},
    {"model.norm.weight", GR_DT_F32, 1, {3}},
};
static float *X[NT]; /* the delta's values as stored */

static void make_delta(void)
{
    DELTA = strdup(ts_path(tmp, "delta"));
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = ts_nelem(&T[t]);
        X[t] = malloc(n * 4);
        ts_gauss(X[t], n, 21, T[t].name, 0, 0.02);
        ts_round(T[t].dt, X[t], n);
    }
    ts_write(DELTA, T, NT, X, GR_SPARSE_KIND_DELTA,
             "{\"model_type\": \"llama\", \"num_hidden_layers\": 2}", 0);
}

static int prune(const char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int prune(const char *out, const char *fmt, ...)
{
    char extra[2048], p[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(extra, sizeof extra, fmt, ap);
    va_end(ap);
    snprintf(p, sizeof p, "{\"input\":\"%s\",%s}", DELTA, extra);
    gr_fs_rmrf(out);
    int rc = ts_run_op("prune", p, out, 2, NULL);
    CHECK_MSG(rc == 0, "prune %s: %s", extra, gr_errmsg());
    return rc;
}

static void test_dare_statistics(void)
{
    const char *out = ts_path(tmp, "dare");
    static const char *rescales[] = {"inverse", "l1", "none"};
    for (int r = 0; r < 3; r++) {
        double d = 0.3;
        if (prune(out, "\"method\":\"%s\",\"density\":%g,\"seed\":7%s%s%s",
                  r == 2 ? "drop" : "dare", d, r < 2 ? ",\"rescale\":\"" : "",
                  r < 2 ? rescales[r] : "", r < 2 ? "\"" : ""))
            return;
        uint64_t n = 0;
        float *y = ts_read(out, T[0].name, &n);
        const float *x = X[0];
        uint64_t kept = 0, wrong = 0;
        double sx = 0, sy = 0, var = 0, l1x = 0, l1y = 0;
        for (uint64_t i = 0; i < n; i++) {
            sx += x[i];
            sy += y[i];
            l1x += fabs(x[i]);
            l1y += fabs(y[i]);
            var += (double)x[i] * x[i] * (1 - d) / d;
            if (y[i] != 0) kept++;
        }
        double l1scale = l1x / (l1y ? l1y : 1);
        for (uint64_t i = 0; r != 1 && i < n; i++) { /* l1: checked through the norm below */
            double want = r == 0 ? x[i] / d : x[i];
            if (y[i] != 0 && fabs(y[i] - want) > 1e-6 * fabs(want)) wrong++;
        }
        double sd = sqrt(d * (1 - d) / (double)n);
        double frac = (double)kept / (double)n;
        printf("%s rescale %s: kept %.4f (binomial sd %.4f)\n", r == 2 ? "drop" : "dare",
               rescales[r], frac, sd);
        CHECK_MSG(fabs(frac - d) <= 5 * sd, "kept fraction %.5f vs density %.2f", frac, d);
        CHECK_EQ_INT(wrong, 0);
        if (r == 0) /* 1/d rescale keeps the expected value */
            CHECK_MSG(fabs(sy - sx) <= 5 * sqrt(var), "sum %.6g vs %.6g (sd %.3g)", sy, sx,
                      sqrt(var));
        if (r == 1) CHECK_NEAR(l1scale, 1.0, 1e-5); /* l1: the norm is unchanged */
        if (r == 2) CHECK_NEAR(l1y / l1x, d, 5 * sd + 0.01);
        free(y);
    }
    /* darex: kept entries divided by q */
    if (prune(out, "\"method\":\"darex\",\"density\":0.3,\"q\":0.5,\"seed\":7")) return;
    uint64_t n = 0;
    float *y = ts_read(out, T[0].name, &n);
    uint64_t wrong = 0;
    for (uint64_t i = 0; i < n; i++)
        if (y[i] != 0 && fabs(y[i] - X[0][i] / 0.5) > 1e-6 * fabs(X[0][i] / 0.5)) wrong++;
    CHECK_EQ_INT(wrong, 0);
    free(y);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_della_statistics(void)
{
    const char *out = ts_path(tmp, "della");
    double d = 0.4, eps = 0.2;
    if (prune(out, "\"method\":\"della\",\"density\":%g,\"epsilon\":%g,\"seed\":3", d, eps)) return;
    uint64_t n = 0;
    float *y = ts_read(out, T[0].name, &n);
    const float *x = X[0];
    int64_t rows = T[0].shape[0], cols = T[0].shape[1];
    uint64_t kept = 0, kept_hi = 0, kept_lo = 0;
    double sx = 0, sy = 0, var = 0;
    for (int64_t r = 0; r < rows; r++) {
        /* median |x| of the row splits "large" from "small" entries */
        float *a = malloc(cols * 4);
        for (int64_t c = 0; c < cols; c++) a[c] = fabsf(x[r * cols + c]);
        float *sorted = malloc(cols * 4);
        memcpy(sorted, a, cols * 4);
        qsort(sorted, (size_t)cols, 4, cmp_float);
        float med = sorted[cols / 2];
        free(sorted);
        for (int64_t c = 0; c < cols; c++) {
            uint64_t i = (uint64_t)(r * cols + c);
            sx += x[i];
            sy += y[i];
            var += (double)x[i] * x[i] * (1 - (d - eps)) / (d - eps);
            if (y[i] != 0) {
                kept++;
                if (a[c] > med)
                    kept_hi++;
                else
                    kept_lo++;
            }
        }
        free(a);
    }
    double frac = (double)kept / (double)n, sd = sqrt(0.25 / (double)n);
    printf("della: kept %.4f of density %.2f, large/small entries kept %llu/%llu\n", frac, d,
           (unsigned long long)kept_hi, (unsigned long long)kept_lo);
    CHECK_MSG(fabs(frac - d) <= 5 * sd, "della kept fraction %.5f", frac);
    CHECK(kept_hi > kept_lo * 1.5); /* magnitude-ranked probabilities favour large entries */
    CHECK_MSG(fabs(sy - sx) <= 5 * sqrt(var), "della sum %.6g vs %.6g", sy, sx);
    free(y);
}

/* Exact top-k: floor(d·n) kept, every kept |x| >= every dropped |x|. */
static void check_topk(const float *x, const float *y, uint64_t n, uint64_t want, const char *what)
{
    uint64_t kept = 0;
    double minkept = INFINITY, maxdrop = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (y[i] != 0) {
            kept++;
            if (fabs(x[i]) < minkept) minkept = fabs(x[i]);
            CHECK(y[i] == x[i]);
        } else if (fabs(x[i]) > maxdrop) {
            maxdrop = fabs(x[i]);
        }
    }
    CHECK_MSG(kept == want, "%s: kept %llu, want %llu", what, (unsigned long long)kept,
              (unsigned long long)want);
    CHECK_MSG(kept == 0 || minkept >= maxdrop, "%s: kept %g < dropped %g", what, minkept, maxdrop);
}

static void test_magnitude_breadcrumbs(void)
{
    const char *out = ts_path(tmp, "mag");
    if (prune(out, "\"method\":\"magnitude\",\"density\":0.35")) return;
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = 0;
        float *y = ts_read(out, T[t].name, &n);
        check_topk(X[t], y, n, (uint64_t)floor(0.35 * (double)n), T[t].name);
        free(y);
    }
    /* breadcrumbs: the top gamma dropped, the next d·n kept */
    if (prune(out, "\"method\":\"breadcrumbs\",\"density\":0.5,\"gamma\":0.1")) return;
    uint64_t n = 0;
    float *y = ts_read(out, T[0].name, &n);
    uint64_t ntop = (uint64_t)floor(0.1 * (double)n), nkeep = (uint64_t)floor(0.5 * (double)n);
    uint64_t kept = 0, above = 0;
    double minkept = INFINITY;
    for (uint64_t i = 0; i < n; i++)
        if (y[i] != 0) kept++, minkept = fmin(minkept, fabs(X[0][i]));
    for (uint64_t i = 0; i < n; i++)
        if (y[i] == 0 && fabs(X[0][i]) > minkept) above++;
    CHECK_EQ_INT(kept, nkeep);
    CHECK_EQ_INT(above, ntop); /* exactly the outliers were dropped above the kept band */
    free(y);
}

static void test_global_scope(void)
{
    const char *out = ts_path(tmp, "global");
    if (prune(out, "\"method\":\"magnitude\",\"density\":0.2,\"scope\":\"global\","
                   "\"exclude\":\"norm\""))
        return;
    uint64_t total = 0, kept = 0;
    double minkept = INFINITY, maxdrop = 0;
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = 0;
        float *y = ts_read(out, T[t].name, &n);
        int excluded = strstr(T[t].name, "norm") != NULL;
        for (uint64_t i = 0; i < n; i++) {
            if (excluded) {
                CHECK(y[i] == X[t][i]);
                continue;
            }
            if (y[i] != 0)
                kept++, minkept = fmin(minkept, fabs(X[t][i]));
            else
                maxdrop = fmax(maxdrop, fabs(X[t][i]));
        }
        if (!excluded) total += n;
        free(y);
    }
    CHECK_EQ_INT(kept, (uint64_t)floor(0.2 * (double)total));
    CHECK(minkept >= maxdrop);
    /* per tensor the fractions differ (one threshold for all) */
    gr_sparse *s = gr_sparse_open(out);
    const gr_sparse_tensor *a = s ? gr_sparse_find(s, T[0].name) : NULL;
    const gr_sparse_tensor *b = s ? gr_sparse_find(s, "model.norm.weight") : NULL;
    CHECK(a && a->is_sparse && b && !b->is_sparse);
    gr_sparse_close(&s);
}

static void test_patterns_gradients(void)
{
    const char *out = ts_path(tmp, "pat");
    /* glob include, substring exclude, density as a layer gradient */
    if (prune(out, "\"method\":\"magnitude\",\"density\":[0.2,0.8],"
                   "\"include\":[\"*.weight\"],\"exclude\":[\"layernorm\"]"))
        return;
    for (size_t t = 0; t < NT; t++) {
        uint64_t n = 0;
        float *y = ts_read(out, T[t].name, &n);
        int sel = strstr(T[t].name, ".weight") && !strstr(T[t].name, "layernorm");
        double d = strstr(T[t].name, "layers.1.") ? 0.8 : 0.2; /* norm: outside layers, t = 0 */
        if (!sel)
            CHECK_MSG(!memcmp(y, X[t], n * 4), "%s changed", T[t].name);
        else
            check_topk(X[t], y, n, (uint64_t)floor(d * (double)n), T[t].name);
        free(y);
    }
}

static void test_determinism_size_metrics(void)
{
    const char *a = ts_path(tmp, "t1"), *b = ts_path(tmp, "t4");
    char p[4096], *met = NULL;
    static const char *methods[] = {"dare", "della"};
    for (int m = 0; m < 2; m++) {
        snprintf(p, sizeof p, "{\"input\":\"%s\",\"method\":\"%s\",\"density\":0.3,\"seed\":9}",
                 DELTA, methods[m]);
        gr_fs_rmrf(a);
        gr_fs_rmrf(b);
        CHECK(!ts_run_op("prune", p, a, 1, NULL));
        CHECK(!ts_run_op("prune", p, b, 4, &met));
        char *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK(!gr_fs_read_file(ts_path(a, "model.safetensors"), 1 << 26, &x, &nx));
        CHECK(!gr_fs_read_file(ts_path(b, "model.safetensors"), 1 << 26, &y, &ny));
        CHECK_MSG(nx == ny && !memcmp(x, y, nx), "%s: 1 and 4 threads differ", methods[m]);
        /* about density × the dense size plus a 1-bit-per-element mask */
        uint64_t dense = 0, elems = 0;
        for (size_t t = 0; t < NT; t++) {
            dense += ts_nelem(&T[t]) * gr_dtype_bits(T[t].dt) / 8;
            elems += ts_nelem(&T[t]);
        }
        double bound = 0.3 * (double)dense + (double)elems / 8 + 0.02 * (double)dense + 8192;
        printf("%s: sparse delta %zu bytes, dense %llu bytes\n", methods[m], nx,
               (unsigned long long)dense);
        CHECK_MSG((double)nx < bound, "sparse file %zu bytes > %.0f", nx, bound);
        free(x), free(y);
        CHECK_CONTAINS(met, "\"kept_fraction\":");
        CHECK_CONTAINS(met, "\"l1_before\":");
        CHECK_CONTAINS(met, "\"l2_after\":");
        CHECK_CONTAINS(met, "\"per_tensor\":[{\"name\":\"model.layers.0.mlp.up_proj.weight\"");
        gr_json *j = gr_json_parse(met, strlen(met), "metrics");
        const gr_json *tot = j ? gr_json_get(j, "total") : NULL;
        double kf = gr_json_get_num(tot, "kept_fraction", -1);
        CHECK_MSG(fabs(kf - 0.3) < 0.02, "kept_fraction %g", kf);
        CHECK(gr_json_get_num(tot, "l2_before", 0) > 0);
        gr_json_free(j);
        free(met);
    }
}

static void expect_fail(const char *params, const char *msg)
{
    char p[4096];
    const char *out = ts_path(tmp, "bad");
    gr_fs_rmrf(out);
    snprintf(p, sizeof p, "{\"input\":\"%s\",%s}", DELTA, params);
    int rc = ts_run_op("prune", p, out, 1, NULL);
    CHECK_MSG(rc != 0, "%s: succeeded", params);
    CHECK_CONTAINS(gr_errmsg(), msg);
    CHECK_EQ_INT(ts_count_entries(out), 0);
}

static void test_bad(void)
{
    expect_fail("\"method\":\"dare\",\"density\":0", "density");
    expect_fail("\"method\":\"dare\",\"density\":1.5", "density");
    expect_fail("\"method\":\"magnitude\",\"density\":[{\"filter\":\"mlp\",\"value\":0}]",
                "model.layers.0.mlp.up_proj.weight");
    expect_fail("\"method\":\"sparsegpt\",\"density\":0.5", "sparsegpt");
    expect_fail("\"method\":\"della\",\"density\":0.5,\"epsilon\":0.6", "epsilon");
    expect_fail("\"method\":\"darex\",\"density\":0.5", "q");
    expect_fail("\"method\":\"magnitude\",\"density\":[0.1,0.5],\"scope\":\"global\"", "global");
    expect_fail("\"method\":\"dare\",\"density\":0.5,\"scope\":\"model\"", "scope");
    expect_fail("\"method\":\"dare\",\"density\":0.5,\"format\":\"coo\"", "format");
    expect_fail("\"method\":\"dare\"", "density");
    expect_fail("\"method\":\"dare\",\"density\":0.5,\"dtype\":\"int8\"", "int8");
    /* a model checkpoint is not a delta */
    char p[4096];
    const char *out = ts_path(tmp, "bad-model");
    snprintf(p, sizeof p, "{\"input\":\"%s\",\"method\":\"dare\",\"density\":0.5}",
             fixture("golden/llama-gqa"));
    CHECK(ts_run_op("prune", p, out, 1, NULL) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "not a delta");
    CHECK_EQ_INT(ts_count_entries(out), 0);
}

int main(void)
{
    tmp = ts_tmpdir("graft-test-prune-");
    make_delta();
    RUN(test_dare_statistics);
    RUN(test_della_statistics);
    RUN(test_magnitude_breadcrumbs);
    RUN(test_global_scope);
    RUN(test_patterns_gradients);
    RUN(test_determinism_size_metrics);
    RUN(test_bad);
    for (size_t t = 0; t < NT; t++) free(X[t]);
    gr_fs_rmrf(tmp);
    free(tmp);
    TEST_MAIN_END();
}
