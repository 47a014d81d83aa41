/* Tests for bad input to the delta, merge and apply ops: different
 * architectures, missing tensors, shape mismatches (warned, or failed with
 * strict), added vocabulary rows (cropped), corrupt shards, bad densities,
 * unknown methods, cancellation. Each failure names what and where and
 * leaves nothing in the output directory. */
#include "gr_merge.h"
#include "gr_test.h"
#include <stdarg.h>
#include <unistd.h>
#include "test_surgery_util.h"

static char *tmp;
static const char *BASE;

static const tspec FAM[] = {
    {"model.embed_tokens.weight", GR_DT_F32, 2, {11, 6}},
    {"model.layers.0.self_attn.q_proj.weight", GR_DT_F32, 2, {6, 6}},
    {"model.norm.weight", GR_DT_F32, 1, {6}},
};
#define NF 3

/* Writes a variant of the family: tensor `drop` left out, `reshape` given
 * shape rs, `extra` added. Values: base + offset·N(0,1). */
static const char *variant(const char *name, double off, const char *drop, const char *reshape,
                           int64_t r0, int64_t r1, const char *extra, uint64_t shard)
{
    tspec t[NF + 1];
    float *d[NF + 1];
    size_t n = 0;
    for (size_t i = 0; i < NF; i++) {
        if (drop && !strcmp(drop, FAM[i].name)) continue;
        t[n] = FAM[i];
        if (reshape && !strcmp(reshape, FAM[i].name)) t[n].shape[0] = r0, t[n].shape[1] = r1;
        n++;
    }
    if (extra) t[n++] = (tspec){extra, GR_DT_F32, 1, {4}};
    for (size_t i = 0; i < n; i++) {
        uint64_t m = ts_nelem(&t[i]);
        d[i] = malloc(m * 4);
        ts_gauss(d[i], m, 5, t[i].name, 0, 1); /* the same base values for every variant */
        if (off) {
            float *e = malloc(m * 4);
            ts_gauss(e, m, 6, name, 0, off);
            for (uint64_t k = 0; k < m; k++) d[i][k] += e[k];
            free(e);
        }
    }
    const char *dir = strdup(ts_path(tmp, name));
    ts_write(dir, t, n, d, NULL, "{\"model_type\": \"llama\", \"num_hidden_layers\": 1}", shard);
    for (size_t i = 0; i < n; i++) free(d[i]);
    return dir;
}

static int run(const char *op, const char *out, char **met, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int run(const char *op, const char *out, char **met, const char *fmt, ...)
{
    char p[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof p, fmt, ap);
    va_end(ap);
    gr_fs_rmrf(out);
    return ts_run_op(op, p, out, 2, met);
}

#define EXPECT_FAIL(rc, out, msg)                                                                  \
    do {                                                                                           \
        CHECK_MSG((rc) != 0, "succeeded, expected: %s", msg);                                      \
        CHECK_CONTAINS(gr_errmsg(), msg);                                                          \
        CHECK_EQ_INT(ts_count_entries(out), 0);                                                    \
    } while (0)

static void test_architectures(void)
{
    char *out = strdup(ts_path(tmp, "o"));
    int rc = run("merge", out, NULL,
                 "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1}",
                 fixture("golden/llama-gqa"), fixture("golden/gpt2"));
    EXPECT_FAIL(rc, out, "of model 0");
    CHECK_CONTAINS(gr_errmsg(), "is missing in base");
    rc = run("delta", out, NULL, "{\"base\":\"%s\",\"model\":\"%s\"}", fixture("golden/llama-gqa"),
             fixture("golden/gpt2"));
    EXPECT_FAIL(rc, out, "different architectures");
    /* a tensor the base lacks */
    const char *ex = variant("extra", 0.1, NULL, NULL, 0, 0, "model.extra.bias", 0);
    rc = run("merge", out, NULL,
             "{\"method\":\"task_arithmetic\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1}",
             BASE, ex);
    EXPECT_FAIL(rc, out, "tensor 'model.extra.bias'");
    rc = run("delta", out, NULL, "{\"base\":\"%s\",\"model\":\"%s\"}", BASE, ex);
    EXPECT_FAIL(rc, out, "tensor 'model.extra.bias'");
    free((char *)ex);
    free(out);
}

static void test_missing_and_shapes(void)
{
    char *out = strdup(ts_path(tmp, "o"));
    const char *ok = variant("ok", 0.1, NULL, NULL, 0, 0, NULL, 0);
    const char *miss = variant("miss", 0.2, "model.norm.weight", NULL, 0, 0, NULL, 0);
    const char *shp =
        variant("shape", 0.3, NULL, "model.layers.0.self_attn.q_proj.weight", 6, 5, NULL, 0);
    char *met = NULL;
    int rc = run("merge", out, &met,
                 "{\"method\":\"linear\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\",\"%s\"],"
                 "\"weights\":[1,1,1],\"dtype\":\"float32\"}",
                 BASE, ok, miss, shp);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(met, "\"warning_count\":2");
    CHECK_CONTAINS(met, "tensor 'model.norm.weight' is missing in model 1");
    CHECK_CONTAINS(met, "shape [6, 5] in model 2");
    free(met);
    /* the norm is the mean of models 0 and 2 only; q_proj of models 0 and 1 */
    uint64_t n;
    float *got = ts_read(out, "model.norm.weight", &n), *a = ts_read(ok, "model.norm.weight", NULL),
          *c = ts_read(shp, "model.norm.weight", NULL);
    for (uint64_t i = 0; got && i < n; i++) CHECK_NEAR(got[i], (a[i] + c[i]) / 2, 1e-6);
    free(got), free(a), free(c);
    got = ts_read(out, "model.layers.0.self_attn.q_proj.weight", &n);
    a = ts_read(ok, "model.layers.0.self_attn.q_proj.weight", NULL);
    c = ts_read(miss, "model.layers.0.self_attn.q_proj.weight", NULL);
    for (uint64_t i = 0; got && i < n; i++) CHECK_NEAR(got[i], (a[i] + c[i]) / 2, 1e-6);
    free(got), free(a), free(c);

    rc = run("merge", out, NULL,
             "{\"method\":\"linear\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\"],\"weights\":[1,1],"
             "\"strict\":true}",
             BASE, ok, miss);
    EXPECT_FAIL(rc, out, "tensor 'model.norm.weight' is missing in model 1");
    rc = run(
        "merge", out, NULL,
        "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weights\":[1],\"strict\":true}",
        BASE, shp);
    EXPECT_FAIL(rc, out, "shape [6, 5] in model 0");
    rc = run("delta", out, NULL, "{\"base\":\"%s\",\"model\":\"%s\",\"strict\":true}", BASE, miss);
    EXPECT_FAIL(rc, out, "model.norm.weight");
    rc = run("delta", out, &met, "{\"base\":\"%s\",\"model\":\"%s\"}", BASE, shp);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(met, "left out");
    free(met);
    free((char *)ok), free((char *)miss), free((char *)shp);
    free(out);
}

static void test_vocab_crop(void)
{
    char *out = strdup(ts_path(tmp, "o"));
    const char *big = variant("bigvocab", 0.1, NULL, "model.embed_tokens.weight", 13, 6, NULL, 0);
    char *met = NULL;
    int rc =
        run("merge", out, &met,
            "{\"method\":\"task_arithmetic\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":0.5,"
            "\"dtype\":\"float32\"}",
            BASE, big);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    CHECK_CONTAINS(met, "has 13 rows");
    CHECK_CONTAINS(met, "cropped");
    free(met);
    uint64_t n;
    float *got = ts_read(out, "model.embed_tokens.weight", &n),
          *b = ts_read(BASE, "model.embed_tokens.weight", NULL),
          *m = ts_read(big, "model.embed_tokens.weight", NULL);
    CHECK_EQ_INT(n, 66);
    for (uint64_t i = 0; got && i < n; i++) CHECK_NEAR(got[i], b[i] + 0.5f * (m[i] - b[i]), 1e-6);
    free(got), free(b), free(m);
    /* the delta op crops the same way */
    rc = run("delta", out, NULL, "{\"base\":\"%s\",\"model\":\"%s\"}", BASE, big);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    got = ts_read(out, "model.embed_tokens.weight", &n);
    CHECK_EQ_INT(n, 66);
    free(got);
    free((char *)big);
    free(out);
}

static void test_corrupt_shard(void)
{
    char *out = strdup(ts_path(tmp, "o"));
    const char *sh = variant("sharded", 0.1, NULL, NULL, 0, 0, NULL, 100);
    const char *victim = ts_path(sh, "model-00002-of-00003.safetensors");
    CHECK(gr_fs_exists(victim));
    CHECK(truncate(victim, 64) == 0);
    int rc =
        run("merge", out, NULL,
            "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1}", BASE, sh);
    EXPECT_FAIL(rc, out, "model-00002-of-00003.safetensors");
    CHECK_CONTAINS(gr_errmsg(), "model 0");
    rc = run("apply", out, NULL, "{\"base\":\"%s\",\"delta\":\"%s\"}", sh, BASE);
    EXPECT_FAIL(rc, out, "model-00002-of-00003.safetensors");
    free((char *)sh);
    free(out);
}

static void test_parameters(void)
{
    char *out = strdup(ts_path(tmp, "o"));
    const char *a = variant("pa", 0.1, NULL, NULL, 0, 0, NULL, 0),
               *b = variant("pb", 0.1, NULL, NULL, 0, 0, NULL, 0);
    int rc;
#define MERGE(fmt, ...) run("merge", out, NULL, fmt, __VA_ARGS__)
    rc = MERGE(
        "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1,\"density\":0}",
        BASE, a);
    EXPECT_FAIL(rc, out, "density");
    CHECK_CONTAINS(gr_errmsg(), "model 0");
    rc = MERGE("{\"method\":\"dare_ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1,"
               "\"per_model\":[{\"density\":1.5}]}",
               BASE, a);
    EXPECT_FAIL(rc, out, "density");
    rc = MERGE("{\"method\":\"frankenmerge\",\"base\":\"%s\",\"models\":[\"%s\"]}", BASE, a);
    EXPECT_FAIL(rc, out, "frankenmerge");
    CHECK_CONTAINS(gr_errmsg(), "ties");
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"]}", BASE, a);
    EXPECT_FAIL(rc, out, "weight is required");
    rc = MERGE("{\"method\":\"slerp\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\"],\"t\":0.5}", BASE,
               a, b);
    EXPECT_FAIL(rc, out, "exactly one model");
    rc = MERGE("{\"method\":\"slerp\",\"base\":\"%s\",\"models\":[\"%s\"],\"t\":1.5}", BASE, a);
    EXPECT_FAIL(rc, out, "t = 1.5");
    rc = MERGE("{\"method\":\"model_stock\",\"base\":\"%s\",\"models\":[\"%s\"]}", BASE, a);
    EXPECT_FAIL(rc, out, "at least two");
    rc = MERGE("{\"method\":\"ties\",\"models\":[\"%s\"],\"weight\":1}", a);
    EXPECT_FAIL(rc, out, "needs parameter 'base'");
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\",\"%s\"],\"weights\":[1]}",
               BASE, a, b);
    EXPECT_FAIL(rc, out, "'weights' has 1 entries for 2 models");
    rc = MERGE(
        "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"per_model\":[{\"wieght\":1}]}",
        BASE, a);
    EXPECT_FAIL(rc, out, "unknown parameter 'wieght'");
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":\"one\"}", BASE,
               a);
    EXPECT_FAIL(rc, out, "weight");
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1,"
               "\"scope\":\"global\",\"density\":[0.1,0.9]}",
               BASE, a);
    EXPECT_FAIL(rc, out, "scope global");
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1,"
               "\"dtype\":\"int4\"}",
               BASE, a);
    EXPECT_FAIL(rc, out, "int4");
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s/nowhere\"],\"weight\":1}",
               BASE, a);
    EXPECT_FAIL(rc, out, "nowhere");
    /* a delta is not a base */
    char *d = strdup(ts_path(tmp, "pdelta"));
    CHECK(!run("delta", d, NULL, "{\"base\":\"%s\",\"model\":\"%s\"}", BASE, a));
    rc = MERGE("{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1}", d, a);
    EXPECT_FAIL(rc, out, "not a model checkpoint");
    rc = run("apply", out, NULL, "{\"base\":\"%s\",\"delta\":\"%s\"}", BASE, a);
    EXPECT_FAIL(rc, out, "is a model checkpoint, not a delta");
    const char *ex = variant("pextra", 0.1, NULL, NULL, 0, 0, "model.extra.bias", 0);
    char *dx = strdup(ts_path(tmp, "pdelta-extra"));
    const char *small = variant("psmall", 0, "model.norm.weight", NULL, 0, 0, NULL, 0);
    CHECK(!run("delta", dx, NULL, "{\"base\":\"%s\",\"model\":\"%s\"}", BASE, a));
    rc = run("apply", out, NULL, "{\"base\":\"%s\",\"delta\":\"%s\"}", small, dx);
    EXPECT_FAIL(rc, out, "tensor 'model.norm.weight' of the delta");
    free((char *)a), free((char *)b), free((char *)ex), free((char *)small), free(d), free(dx);
#undef MERGE
    free(out);
}

static void test_cancel(void)
{
    const char *out = ts_path(tmp, "cancelled"), *a = variant("ca", 0.1, NULL, NULL, 0, 0, NULL, 0);
    char p[4096];
    snprintf(p, sizeof p, "{\"method\":\"ties\",\"base\":\"%s\",\"models\":[\"%s\"],\"weight\":1}",
             BASE, a);
    gr_json *j = gr_json_parse(p, strlen(p), "p");
    ts_mkdir(out);
    volatile int stop = 1;
    gr_op_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.op = gr_op_find("merge");
    ctx.params = j;
    ctx.outdir = out;
    ctx.cancel = &stop;
    ctx.threads = 1;
    CHECK(ctx.op->run(&ctx) == GR_ECANCEL);
    CHECK_EQ_INT(ts_count_entries(out), 0);
    gr_buf_free(&ctx.metrics);
    gr_json_free(j);
    free((char *)a);
}

int main(void)
{
    tmp = ts_tmpdir("graft-test-bad-");
    BASE = variant("base", 0, NULL, NULL, 0, 0, NULL, 0);
    RUN(test_architectures);
    RUN(test_missing_and_shapes);
    RUN(test_vocab_crop);
    RUN(test_corrupt_shard);
    RUN(test_parameters);
    RUN(test_cancel);
    free((char *)BASE);
    gr_fs_rmrf(tmp);
    free(tmp);
    TEST_MAIN_END();
}
