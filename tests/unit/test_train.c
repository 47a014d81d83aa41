/* test_train: the train op and evaluate's classify task end to end —
 * checkpoints that the surgery ops accept, classify against an independent
 * numpy forward pass, fine-tuning from init, determinism, shards joined bit
 * for bit, cancellation and every refusal of bad input. */
#include "gr_test.h"

#include "evaluate/gr_evaluate.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_json.h"
#include "gr_mlp.h"
#include "gr_op.h"

#include <stdarg.h>
#include <unistd.h>

static const char *DIGITS = GRAFT_SOURCE_DIR "/examples/data/digits.csv.gz";
static const char *REF_PY = GRAFT_SOURCE_DIR "/tests/unit/test_train_ref.py";
static char tmpdir[256];

static const char *tpath(const char *rel)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, rel);
    return b;
}

/* Runs op with the JSON params (printf-formatted) into tpath(out) (fresh);
 * *metrics gets the metrics when not NULL. Returns the op's code. */
static int run(const char *opname, const char *out, gr_json **metrics, volatile int *cancel,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int run(const char *opname, const char *out, gr_json **metrics, volatile int *cancel,
               const char *fmt, ...)
{
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (metrics) *metrics = NULL;
    const gr_op *op = gr_op_find(opname);
    gr_json *p = gr_json_parse(text, strlen(text), "params");
    if (!op || !p) {
        fprintf(stderr, "bad test params: %s\n", text);
        gr_json_free(p);
        return -100;
    }
    int rc = gr_op_check_params(op, p);
    if (!rc) {
        const char *dir = tpath(out);
        gr_fs_rmrf(dir);
        gr_fs_mkdirs(dir, 0755, 0);
        gr_op_ctx ctx = {.op = op, .params = p, .outdir = dir, .threads = 1, .cancel = cancel};
        rc = op->run(&ctx);
        if (!rc && metrics) *metrics = gr_json_parse(ctx.metrics.data, ctx.metrics.len, "metrics");
        gr_buf_free(&ctx.metrics);
    }
    gr_json_free(p);
    return rc;
}

static int have_numpy(void)
{
    return system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") == 0;
}

/* The numpy reference's {acc, loss, n} for model on every row. */
static gr_json *reference(const char *model, const char *transform)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s' '%s' '%s'", REF_PY, model, DIGITS,
             transform);
    FILE *f = popen(cmd, "r");
    char out[512] = "";
    if (!f) return NULL;
    size_t n = fread(out, 1, sizeof out - 1, f);
    pclose(f);
    out[n] = 0;
    return gr_json_parse(out, n, "reference");
}

static void test_train_base(void)
{
    gr_json *m;
    int rc =
        run("train", "base", &m, NULL,
            "{\"data\":\"%s\",\"layers\":[32],\"epochs\":8,\"seed\":3,\"activation\":\"tanh\"}",
            DIGITS);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    if (rc) return;
    double test_acc = gr_json_get_num(m, "test_acc", -1),
           train_acc = gr_json_get_num(m, "train_acc", -1);
    fprintf(stderr, "  base: train acc %.4f, test acc %.4f, %lld params\n", train_acc, test_acc,
            (long long)gr_json_get_int(m, "params", 0));
    CHECK(test_acc > 0.9 && train_acc > 0.9);
    CHECK(gr_json_get_int(m, "rows", 0) == 1438);
    CHECK(gr_json_get_int(m, "params", 0) == 64 * 32 + 32 + 32 * 10 + 10);
    gr_json_free(m);
    /* the checkpoint: config, tensors, curve */
    gr_json *cfg = gr_json_parse_file(tpath("base/config.json"));
    CHECK(cfg && !strcmp(gr_json_get_str(cfg, "model_type", ""), "graft-mlp"));
    CHECK(cfg && !strcmp(gr_json_get_str(cfg, "activation", ""), "tanh"));
    CHECK(cfg && gr_json_get_num(cfg, "input_scale", 0) == 1.0 / 16);
    CHECK(cfg && gr_json_get_int(gr_json_get(cfg, "graft_train"), "epochs", 0) == 8);
    gr_json_free(cfg);
    char *curve;
    size_t len;
    CHECK(gr_fs_read_file(tpath("base/train.csv"), 1 << 20, &curve, &len) == 0);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += curve[i] == '\n';
    CHECK(lines == 9 && !strncmp(curve, "epoch,loss,accuracy\n1,", 22));
    free(curve);
    /* the same parameters give the same bytes */
    CHECK(run("train", "base2", NULL, NULL,
              "{\"data\":\"%s\",\"layers\":[32],\"epochs\":8,\"seed\":3,\"activation\":\"tanh\"}",
              DIGITS) == 0);
    char *a, *b;
    size_t la, lb;
    CHECK(gr_fs_read_file(tpath("base/model.safetensors"), 1 << 24, &a, &la) == 0);
    CHECK(gr_fs_read_file(tpath("base2/model.safetensors"), 1 << 24, &b, &lb) == 0);
    CHECK(la == lb && !memcmp(a, b, la));
    free(a);
    free(b);
}

/* classify against numpy on every row (split all), for several transforms */
static void test_classify_vs_numpy(void)
{
    if (!have_numpy()) {
        printf("skipped: /usr/bin/python3 has no numpy\n");
        return;
    }
    const char *tf[] = {"identity", "rot90", "flip", "invert"};
    for (int k = 0; k < 4; k++) {
        gr_json *m, *ref = reference(tpath("base"), tf[k]);
        CHECK_MSG(ref != NULL, "reference for %s", tf[k]);
        int rc = run("evaluate", "ev", &m, NULL,
                     "{\"task\":\"classify\",\"model\":\"%s\",\"data\":\"%s\",\"split\":\"all\","
                     "\"transform\":\"%s\"}",
                     tpath("base"), DIGITS, tf[k]);
        CHECK_MSG(rc == 0, "%s", gr_errmsg());
        if (!rc && ref) {
            double acc = gr_json_get_num(m, "acc", -1), loss = gr_json_get_num(m, "loss", -1);
            double racc = gr_json_get_num(ref, "acc", -2), rloss = gr_json_get_num(ref, "loss", -2);
            fprintf(stderr, "  %-8s acc %.6f (numpy %.6f), loss %.8f (numpy %.8f)\n", tf[k], acc,
                    racc, loss, rloss);
            CHECK(gr_json_get_int(m, "n", 0) == 1797 && gr_json_get_int(ref, "n", 0) == 1797);
            CHECK_NEAR(acc, racc, 1.5 / 1797); /* at most one near-tie may flip */
            CHECK_NEAR(loss, rloss, 1e-5 * fabs(rloss) + 1e-6);
        }
        gr_json_free(m);
        gr_json_free(ref);
    }
}

/* Shards joined by task combine equal the unsharded result exactly. */
static void test_classify_shards(void)
{
    gr_json *whole;
    CHECK(run("evaluate", "whole", &whole, NULL,
              "{\"task\":\"classify\",\"model\":\"%s\",\"data\":\"%s\",\"transform\":\"flip\"}",
              tpath("base"), DIGITS) == 0);
    char paths[3][600];
    for (int i = 0; i < 3; i++) {
        char out[16];
        snprintf(out, sizeof out, "sh%d", i);
        CHECK(run("evaluate", out, NULL, NULL,
                  "{\"task\":\"classify\",\"model\":\"%s\",\"data\":\"%s\",\"transform\":\"flip\","
                  "\"shard\":\"%d/3\"}",
                  tpath("base"), DIGITS, i) == 0);
        snprintf(paths[i], sizeof paths[i], "%s", tpath(out));
    }
    gr_json *joined;
    CHECK(run("evaluate", "joined", &joined, NULL,
              "{\"task\":\"combine\",\"inputs\":[\"%s\",\"%s\",\"%s\"]}", paths[2], paths[0],
              paths[1]) == 0);
    CHECK(whole && joined);
    if (whole && joined) {
        CHECK(gr_json_get_num(whole, "acc", -1) == gr_json_get_num(joined, "acc", -2));
        CHECK(gr_json_get_num(whole, "loss", -1) == gr_json_get_num(joined, "loss", -2));
        CHECK(gr_json_get_int(joined, "n", 0) == 359);
    }
    gr_json_free(whole);
    gr_json_free(joined);
}

/* Fine-tuning from init learns a new task; its checkpoint goes through
 * delta, apply and merge; the results classify as they should. */
static void test_finetune_and_surgery(void)
{
    gr_json *m;
    int rc = run("train", "ft", &m, NULL,
                 "{\"data\":\"%s\",\"init\":\"%s\",\"transform\":\"rot90\",\"epochs\":8,"
                 "\"optimizer\":\"sgd\",\"lr\":0.05}",
                 DIGITS, tpath("base"));
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    gr_json_free(m);
    gr_json *ev_base, *ev_ft;
    const char *evq = "{\"task\":\"classify\",\"model\":\"%s\",\"data\":\"%s\",\"transform\":"
                      "\"rot90\"}";
    CHECK(run("evaluate", "e1", &ev_base, NULL, evq, tpath("base"), DIGITS) == 0);
    CHECK(run("evaluate", "e2", &ev_ft, NULL, evq, tpath("ft"), DIGITS) == 0);
    const double ab = gr_json_get_num(ev_base, "acc", 1), af = gr_json_get_num(ev_ft, "acc", 0);
    fprintf(stderr, "  rot90 accuracy: base %.4f, fine-tuned %.4f\n", ab, af);
    CHECK(ab < 0.3 && af > 0.85);
    gr_json *cfg = gr_json_parse_file(tpath("ft/config.json"));
    CHECK(cfg && gr_json_get_bool(gr_json_get(cfg, "graft_train"), "init", 0));
    CHECK(cfg &&
          !strcmp(gr_json_get_str(gr_json_get(cfg, "graft_train"), "transform", ""), "rot90"));
    gr_json_free(cfg);

    /* delta + apply gives the fine-tune back (same predictions) */
    rc = run("delta", "d", NULL, NULL, "{\"base\":\"%s\",\"model\":\"%s\"}", tpath("base"),
             tpath("ft"));
    CHECK_MSG(rc == 0, "delta: %s", gr_errmsg());
    rc = run("apply", "ap", NULL, NULL, "{\"base\":\"%s\",\"delta\":\"%s\"}", tpath("base"),
             tpath("d"));
    CHECK_MSG(rc == 0, "apply: %s", gr_errmsg());
    gr_json *ev_ap;
    CHECK(run("evaluate", "e3", &ev_ap, NULL, evq, tpath("ap"), DIGITS) == 0);
    CHECK(ev_ap && gr_json_get_num(ev_ap, "acc", -1) == af);
    CHECK(ev_ap &&
          fabs(gr_json_get_num(ev_ap, "loss", -1) - gr_json_get_num(ev_ft, "loss", 1)) < 1e-5);
    /* a delta is not a model */
    CHECK(run("evaluate", "e4", NULL, NULL, evq, tpath("d"), DIGITS) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "not a model; apply it to its base first");
    /* a merge of one fine-tune at weight 1 is the fine-tune */
    rc = run("merge", "mg", NULL, NULL,
             "{\"method\":\"task_arithmetic\",\"base\":\"%s\",\"models\":[\"%s\"],\"weights\":[1]}",
             tpath("base"), tpath("ft"));
    CHECK_MSG(rc == 0, "merge: %s", gr_errmsg());
    gr_json *ev_mg;
    CHECK(run("evaluate", "e5", &ev_mg, NULL, evq, tpath("mg"), DIGITS) == 0);
    CHECK(ev_mg && gr_json_get_num(ev_mg, "acc", -1) == af);
    gr_json_free(ev_base);
    gr_json_free(ev_ft);
    gr_json_free(ev_ap);
    gr_json_free(ev_mg);

    /* fine-tuning may not change the architecture */
    CHECK(run("train", "bad", NULL, NULL, "{\"data\":\"%s\",\"init\":\"%s\",\"layers\":[16]}",
              DIGITS, tpath("base")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "parameter 'layers' disagrees with the hidden layers of init");
    CHECK(run("train", "bad", NULL, NULL,
              "{\"data\":\"%s\",\"init\":\"%s\",\"activation\":\"relu\"}", DIGITS,
              tpath("base")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "activation 'relu' disagrees with init");
    CHECK(run("train", "bad", NULL, NULL, "{\"data\":\"%s\",\"init\":\"%s\",\"classes\":12}",
              DIGITS, tpath("base")) == GR_EINVAL);
    CHECK_CONTAINS(gr_errmsg(), "has 10 classes; the data need 12");
}

static void write_text(const char *rel, const char *text)
{
    gr_fs_write_atomic(tpath(rel), text, strlen(text), 0644);
}

static void expect_fail(const char *opname, const char *want, const char *fmt, const char *a,
                        const char *b)
{
    char params[4096];
    snprintf(params, sizeof params, fmt, a, b);
    int rc = run(opname, "bad", NULL, NULL, "%s", params);
    CHECK_MSG(rc != 0, "accepted: %s", params);
    CHECK_CONTAINS(gr_errmsg(), want);
    /* nothing written under a final name */
    CHECK_MSG(!gr_fs_exists(tpath("bad/model.safetensors")) &&
                  !gr_fs_exists(tpath("bad/config.json")) &&
                  !gr_fs_exists(tpath("bad/result.json")),
              "%s left files", params);
}

static void test_bad_input(void)
{
    write_text("bad.csv", "1,2,0\n3,x,1\n");
    write_text("three.csv", "1,2,3,0\n4,5,6,1\n1,1,1,0\n2,2,2,1\n0,0,0,0\n");
    const char *D = DIGITS;
    expect_fail("train", "bad.csv: line 2, column 2: 'x' is not a number", "{\"data\":\"%s\"%s}",
                tpath("bad.csv"), "");
    expect_fail("train", "train: parameter 'data'", "{\"data\":\"%s\"%s}", tpath("absent.csv"), "");
    expect_fail("train", "parameter 'epochs' must be in [0", "{\"data\":\"%s\"%s}", D,
                ",\"epochs\":-1");
    expect_fail("train", "parameter 'lr' must be finite and > 0", "{\"data\":\"%s\"%s}", D,
                ",\"lr\":0");
    expect_fail("train", "optimizer 'lbfgs': want sgd or adam", "{\"data\":\"%s\"%s}", D,
                ",\"optimizer\":\"lbfgs\"");
    expect_fail("train", "activation 'swish'", "{\"data\":\"%s\"%s}", D,
                ",\"activation\":\"swish\"");
    expect_fail("train", "parameter 'dtype' is 'int8'", "{\"data\":\"%s\"%s}", D,
                ",\"dtype\":\"int8\"");
    expect_fail("train", "transform 'spin'", "{\"data\":\"%s\"%s}", D, ",\"transform\":\"spin\"");
    expect_fail("train", "split 'dev': want train, test or all", "{\"data\":\"%s\"%s}", D,
                ",\"split\":\"dev\"");
    expect_fail("train", "parameter 'fraction' must be in (0, 1)", "{\"data\":\"%s\"%s}", D,
                ",\"fraction\":1");
    expect_fail("train", "parameter 'noise' applies only to transform 'noise'",
                "{\"data\":\"%s\"%s}", D, ",\"noise\":0.1");
    expect_fail("train", "entry 1 must be an integer width", "{\"data\":\"%s\"%s}", D,
                ",\"layers\":[8,0]");
    expect_fail("train", "transform 'rot90' needs square images", "{\"data\":\"%s\"%s}",
                tpath("three.csv"), ",\"transform\":\"rot90\"");
    expect_fail("train", "classes' is 5 but the data hold labels up to 9", "{\"data\":\"%s\"%s}", D,
                ",\"classes\":5");
    expect_fail("train", "takes 64 inputs but the data have 3 features",
                "{\"data\":\"%s\",\"init\":\"%s\"}", tpath("three.csv"), tpath("base"));
    expect_fail("evaluate", "takes 64 inputs but",
                "{\"task\":\"classify\",\"data\":\"%s\","
                "\"model\":\"%s\"}",
                tpath("three.csv"), tpath("base"));
    expect_fail("evaluate", "model_type is 'llama', want 'graft-mlp'",
                "{\"task\":\"classify\",\"data\":\"%s\",\"model\":\"%s\"}", D,
                fixture("golden/llama-gqa"));
    expect_fail("evaluate", "unknown parameter 'seed'",
                "{\"task\":\"classify\",\"data\":\"%s\",\"model\":\"%s\",\"seed\":1}", D,
                tpath("base"));
    expect_fail("evaluate", "parameter 'transform' does not apply to task 'perplexity'",
                "{\"task\":\"perplexity\",\"data\":\"%s\",\"model\":\"%s\",\"transform\":\"flip\"}",
                D, tpath("base"));
    expect_fail("evaluate", "parameter 'shard' must be",
                "{\"task\":\"classify\",\"data\":\"%s\","
                "\"model\":\"%s\",\"shard\":\"3/3\"}",
                D, tpath("base"));
}

static void test_cancel_and_dtype(void)
{
    volatile int cancel = 1;
    int rc = run("train", "c", NULL, &cancel, "{\"data\":\"%s\",\"epochs\":3}", DIGITS);
    CHECK(rc == GR_ECANCEL);
    CHECK_CONTAINS(gr_errmsg(), "cancelled in epoch 1");
    CHECK(!gr_fs_exists(tpath("c/model.safetensors")));
    rc = run(
        "train", "bf", NULL, NULL,
        "{\"data\":\"%s\",\"epochs\":1,\"layers\":[8],\"dtype\":\"bfloat16\",\"split\":\"all\"}",
        DIGITS);
    CHECK_MSG(rc == 0, "%s", gr_errmsg());
    gr_mlp *m = gr_mlp_load(tpath("bf"));
    CHECK(m != NULL && gr_mlp_size(m, 1) == 8);
    gr_mlp_destroy(&m);
    gr_json *cfg = gr_json_parse_file(tpath("bf/config.json"));
    CHECK(cfg && !strcmp(gr_json_get_str(cfg, "torch_dtype", ""), "bfloat16"));
    gr_json_free(cfg);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_train.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(test_train_base);
    RUN(test_classify_vs_numpy);
    RUN(test_classify_shards);
    RUN(test_finetune_and_surgery);
    RUN(test_bad_input);
    RUN(test_cancel_and_dtype);
    gr_fs_rmrf(tmpdir);
    TEST_MAIN_END();
}
