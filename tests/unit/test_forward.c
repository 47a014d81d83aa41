/* Tests for gr_forward: the fast forward pass and the plain reference against
 * transformers' golden outputs (llama-gqa, gpt2, lora-llama/merged), against
 * each other on long windows, and against an independent numpy reference
 * (tests/ref/forward_ref.py, itself first validated on the golden files) for
 * tied embeddings, qwen2 biases, llama3 rope scaling (both config forms),
 * sliding windows, bf16/f16 weights and sharded checkpoints. Every case
 * also runs with the weights streamed (converted a layer at a time from the
 * mapped files), which must meet the same tolerances and give bit-identical
 * log-probs and logits to the resident model. */
#include "gr_err.h"
#include "gr_forward.h"
#include "gr_json.h"
#include "gr_model.h"
#include "gr_rng.h"
#include "gr_test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define TOK_TOL  1e-4 /* per-token NLL */
#define MEAN_TOL 1e-5 /* mean NLL */

typedef struct golden {
    int S, T, V;
    int32_t *ids; /* (S, T) */
    double *nll;  /* (S, T-1) */
    double mean;
    double *logits0; /* (T, V) */
} golden;

static void golden_free(golden *g)
{
    free(g->ids);
    free(g->nll);
    free(g->logits0);
    memset(g, 0, sizeof *g);
}

/* Reads golden.json (or a forward_ref.py nll output: token_nll only, with
 * the ids of `like`). */
static int golden_load(const char *path, golden *g, const golden *like)
{
    memset(g, 0, sizeof *g);
    gr_json *j = gr_json_parse_file(path);
    if (!j) {
        fprintf(stderr, "%s\n", gr_errmsg());
        return -1;
    }
    const gr_json *ids = like ? NULL : gr_json_get(j, "input_ids");
    const gr_json *nll = gr_json_get(j, "token_nll");
    const gr_json *lg = gr_json_get(j, "logits_seq0");
    g->S = (int)nll->len;
    g->T = (int)nll->items[0]->len + 1;
    g->ids = malloc(sizeof(int32_t) * g->S * g->T);
    g->nll = malloc(sizeof(double) * g->S * (g->T - 1));
    double sum = 0;
    for (int s = 0; s < g->S; s++)
        for (int t = 0; t < g->T; t++) {
            g->ids[s * g->T + t] =
                like ? like->ids[s * g->T + t] : (int32_t)ids->items[s]->items[t]->i;
            if (t < g->T - 1) sum += g->nll[s * (g->T - 1) + t] = nll->items[s]->items[t]->num;
        }
    g->mean = like ? sum / (g->S * (g->T - 1)) : gr_json_get_num(j, "mean_nll", NAN);
    if (lg) {
        g->V = (int)lg->items[0]->len;
        g->logits0 = malloc(sizeof(double) * g->T * g->V);
        for (int t = 0; t < g->T; t++)
            for (int v = 0; v < g->V; v++) g->logits0[t * g->V + v] = lg->items[t]->items[v]->num;
    }
    gr_json_free(j);
    return 0;
}

typedef struct errs {
    double tok, mean, logit;
} errs;

/* Runs the fast path on all sequences in one batch and the reference path
 * per sequence; returns the largest errors of each against g. */
static int run_both(const gr_model *m, const golden *g, int threads, errs *fast, errs *ref)
{
    const int S = g->S, T = g->T, V = gr_model_config(m)->vocab;
    double *lp = malloc(sizeof(double) * S * (T - 1));
    float *lg = malloc(sizeof(float) * S * T * V);
    gr_fwd *f = gr_fwd_new(m, S * T, threads);
    int rc = f ? gr_fwd_run(f, g->ids, S, T, 0, lg, lp) : -1;
    if (rc) fprintf(stderr, "fast: %s\n", gr_errmsg());
    memset(fast, 0, sizeof *fast);
    memset(ref, 0, sizeof *ref);
    double sf = 0, sr = 0;
    for (int i = 0; !rc && i < S * (T - 1); i++) {
        fast->tok = fmax(fast->tok, fabs(-lp[i] - g->nll[i]));
        sf += -lp[i];
    }
    for (int i = 0; !rc && g->logits0 && i < T * V; i++)
        fast->logit = fmax(fast->logit, fabs(lg[i] - g->logits0[i]));
    for (int s = 0; !rc && s < S; s++) {
        rc = gr_fwd_ref(m, g->ids + s * T, T, lg, lp);
        if (rc) fprintf(stderr, "ref: %s\n", gr_errmsg());
        for (int t = 0; !rc && t < T - 1; t++) {
            ref->tok = fmax(ref->tok, fabs(-lp[t] - g->nll[s * (T - 1) + t]));
            sr += -lp[t];
        }
        for (int i = 0; !rc && s == 0 && g->logits0 && i < T * V; i++)
            ref->logit = fmax(ref->logit, fabs(lg[i] - g->logits0[i]));
    }
    fast->mean = fabs(sf / (S * (T - 1)) - g->mean);
    ref->mean = fabs(sr / (S * (T - 1)) - g->mean);
    gr_fwd_destroy(&f);
    free(lp);
    free(lg);
    return rc;
}

static gr_model *load_mode(const char *dir, gr_model_mode mode)
{
    const gr_model_opts o = {.mode = mode};
    gr_model *m = gr_model_load_opts(dir, &o);
    if (!m) fprintf(stderr, "%s: %s\n", dir, gr_errmsg());
    if (m && gr_model_streaming(m) != (mode == GR_MODEL_STREAM)) {
        fprintf(stderr, "%s: loaded in the wrong mode\n", dir);
        gr_model_destroy(&m);
    }
    return m;
}

/* The fast path (B sequences of T tokens, logits included) and the
 * reference (first sequence) of a resident and a streamed model: every
 * log-prob and logit must be bit-identical. */
static void check_modes(const gr_model *mr, const gr_model *ms, const int32_t *tok, int B, int T,
                        int threads, const char *name)
{
    const size_t V = (size_t)gr_model_config(mr)->vocab, nl = (size_t)B * T * V;
    const size_t np = (size_t)B * (T - 1);
    double *lp[2] = {calloc(np, sizeof(double)), calloc(np, sizeof(double))};
    float *lg[2] = {calloc(nl, sizeof(float)), calloc(nl, sizeof(float))};
    double *rp[2] = {calloc(np, sizeof(double)), calloc(np, sizeof(double))};
    float *rg[2] = {calloc((size_t)T * V, sizeof(float)), calloc((size_t)T * V, sizeof(float))};
    const gr_model *ms2[2] = {mr, ms};
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        gr_fwd *f = gr_fwd_new(ms2[k], B * T, threads);
        ok &= f && gr_fwd_run(f, tok, B, T, 0, lg[k], lp[k]) == 0;
        ok &= gr_fwd_ref(ms2[k], tok, T, rg[k], rp[k]) == 0;
        gr_fwd_destroy(&f);
    }
    CHECK_MSG(ok, "%s: %s", name, gr_errmsg());
    const int same_fast =
        !memcmp(lp[0], lp[1], np * sizeof(double)) && !memcmp(lg[0], lg[1], nl * sizeof(float));
    const int same_ref = !memcmp(rp[0], rp[1], (size_t)(T - 1) * sizeof(double)) &&
                         !memcmp(rg[0], rg[1], (size_t)T * V * sizeof(float));
    printf("%-18s threads %d: streamed == resident: fast %s, reference %s\n", name, threads,
           same_fast ? "bit-identical" : "DIFFERENT", same_ref ? "bit-identical" : "DIFFERENT");
    CHECK_MSG(ok && same_fast, "%s threads %d: streamed fast path differs from resident", name,
              threads);
    CHECK_MSG(ok && same_ref, "%s: streamed reference differs from resident", name);
    for (int k = 0; k < 2; k++) {
        free(lp[k]);
        free(lg[k]);
        free(rp[k]);
        free(rg[k]);
    }
}

static void check_golden(const char *name)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", fixture(name));
    snprintf(path, sizeof path, "%s/golden.json", dir);
    golden g;
    CHECK(golden_load(path, &g, NULL) == 0);
    gr_model *mr = load_mode(dir, GR_MODEL_RESIDENT), *ms = load_mode(dir, GR_MODEL_STREAM);
    CHECK_MSG(mr && ms, "%s: %s", name, gr_errmsg());
    if (!mr || !ms) {
        gr_model_destroy(&mr);
        gr_model_destroy(&ms);
        return golden_free(&g);
    }
    for (int threads = 1; threads <= 2; threads++) {
        for (int k = 0; k < 2; k++) {
            const gr_model *m = k ? ms : mr;
            const char *mode = k ? "streamed" : "resident";
            errs fe, re;
            CHECK(run_both(m, &g, threads, &fe, &re) == 0);
            printf("%-18s %s threads %d: fast max|dNLL| %.3g mean %.3g logit %.3g; "
                   "ref max|dNLL| %.3g mean %.3g logit %.3g\n",
                   name, mode, threads, fe.tok, fe.mean, fe.logit, re.tok, re.mean, re.logit);
            CHECK_MSG(fe.tok <= TOK_TOL, "%s %s fast token NLL error %.3g", name, mode, fe.tok);
            CHECK_MSG(fe.mean <= MEAN_TOL, "%s %s fast mean NLL error %.3g", name, mode, fe.mean);
            CHECK_MSG(fe.logit <= 1e-4, "%s %s fast logit error %.3g", name, mode, fe.logit);
            CHECK_MSG(re.tok <= TOK_TOL, "%s %s ref token NLL error %.3g", name, mode, re.tok);
            CHECK_MSG(re.mean <= MEAN_TOL, "%s %s ref mean NLL error %.3g", name, mode, re.mean);
            CHECK_MSG(re.logit <= 1e-4, "%s %s ref logit error %.3g", name, mode, re.logit);
        }
        check_modes(mr, ms, g.ids, g.S, g.T, threads, name);
    }
    gr_model_destroy(&mr);
    gr_model_destroy(&ms);
    golden_free(&g);
}

static void test_golden(void)
{
    check_golden("golden/llama-gqa");
    check_golden("golden/gpt2");
    check_golden("golden/lora-llama/merged");
}

/* Fast path (two sequences of up to max_pos tokens in one batch, several
 * attention blocks) against the reference loops on random tokens. */
static void check_long(const char *dir, const char *name)
{
    gr_model *m = load_mode(dir, GR_MODEL_RESIDENT);
    CHECK_MSG(m != NULL, "%s", gr_errmsg());
    if (!m) return;
    const gr_model_cfg *c = gr_model_config(m);
    const int T = c->max_pos < 300 ? c->max_pos : 300, B = 2;
    int32_t *tok = malloc(sizeof(int32_t) * B * T);
    uint64_t key = gr_rng_key(7, "check_long", 0);
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(gr_rng_uniform(key, i) * c->vocab);
    double *fast = malloc(sizeof(double) * B * (T - 1)), *ref = malloc(sizeof(double) * (T - 1));
    double *part = malloc(sizeof(double) * B * (T - 1));
    gr_fwd *f = gr_fwd_new(m, B * T, 2);
    CHECK(f && gr_fwd_run(f, tok, B, T, 0, NULL, fast) == 0);
    /* only positions >= first are computed; the others stay untouched */
    const int first = T / 2 + 3;
    for (int i = 0; i < B * (T - 1); i++) part[i] = -12345.0;
    CHECK(f && gr_fwd_run(f, tok, B, T, first, NULL, part) == 0);
    double err = 0, perr = 0;
    int untouched = 1;
    for (int b = 0; b < B; b++) {
        CHECK(gr_fwd_ref(m, tok + b * T, T, NULL, ref) == 0);
        for (int t = 0; t < T - 1; t++) {
            err = fmax(err, fabs(fast[b * (T - 1) + t] - ref[t]));
            if (t >= first)
                perr = fmax(perr, fabs(part[b * (T - 1) + t] - fast[b * (T - 1) + t]));
            else
                untouched &= part[b * (T - 1) + t] == -12345.0;
        }
    }
    printf("%-18s %d x %d tokens: fast vs reference max|dlogp| %.3g\n", name, B, T, err);
    CHECK_MSG(err <= 1e-4, "%s: fast vs reference %.3g", name, err);
    CHECK_MSG(perr <= 1e-5, "%s: partial run differs by %.3g", name, perr);
    CHECK(untouched);
    gr_fwd_destroy(&f);
    /* the same runs with streamed weights: bit-identical, whole and partial */
    gr_model *ms = load_mode(dir, GR_MODEL_STREAM);
    CHECK(ms != NULL);
    double *sfast = malloc(sizeof(double) * B * (T - 1)),
           *spart = malloc(sizeof(double) * B * (T - 1));
    for (int i = 0; i < B * (T - 1); i++) spart[i] = -12345.0;
    gr_fwd *fs = ms ? gr_fwd_new(ms, B * T, 2) : NULL;
    CHECK(fs && gr_fwd_run(fs, tok, B, T, 0, NULL, sfast) == 0);
    CHECK(fs && gr_fwd_run(fs, tok, B, T, first, NULL, spart) == 0);
    const int same = fs && !memcmp(sfast, fast, sizeof(double) * B * (T - 1)) &&
                     !memcmp(spart, part, sizeof(double) * B * (T - 1));
    printf("%-18s %d x %d tokens: streamed %s resident\n", name, B, T,
           same ? "bit-identical to" : "DIFFERS from");
    CHECK_MSG(same, "%s: streamed long windows differ from resident", name);
    gr_fwd_destroy(&fs);
    gr_model_destroy(&ms);
    free(sfast);
    free(spart);
    free(tok);
    free(fast);
    free(ref);
    free(part);
    gr_model_destroy(&m);
}

static void test_long_windows(void)
{
    check_long(fixture("golden/llama-gqa"), "llama-gqa");
    check_long(fixture("golden/gpt2"), "gpt2");
}

static void test_bad_input(void)
{
    for (int k = 0; k < 2; k++) {
        gr_model *m =
            load_mode(fixture("golden/llama-gqa"), k ? GR_MODEL_STREAM : GR_MODEL_RESIDENT);
        CHECK(m != NULL);
        if (!m) return;
        gr_fwd *f = gr_fwd_new(m, 512, 1);
        int32_t tok[300] = {0};
        double lp[600];
        tok[5] = 160; /* vocab is 160 */
        CHECK(gr_fwd_run(f, tok, 1, 10, 0, NULL, lp) == GR_EINVAL);
        CHECK_CONTAINS(gr_errmsg(), "token 160 at index 5");
        tok[5] = -1;
        CHECK(gr_fwd_ref(m, tok, 10, NULL, lp) == GR_EINVAL);
        tok[5] = 3;
        CHECK(gr_fwd_run(f, tok, 1, 257, 0, NULL, lp) ==
              GR_EINVAL); /* max_position_embeddings 256 */
        CHECK_CONTAINS(gr_errmsg(), "256 positions");
        CHECK(gr_fwd_ref(m, tok, 257, NULL, lp) == GR_EINVAL);
        CHECK(gr_fwd_run(f, tok, 3, 200, 0, NULL, lp) == GR_EINVAL); /* 600 rows > 512 */
        CHECK(gr_fwd_run(f, tok, 1, 1, 0, NULL, lp) == GR_EINVAL);
        CHECK(gr_fwd_run(f, tok, 1, 10, 9, NULL, lp) == GR_EINVAL);
        gr_fwd_destroy(&f);
        gr_fwd_destroy(&f); /* NULL-safe */
        gr_model_destroy(&m);
    }
}

/* ---- variants against the numpy reference ---- */

#define PY "/usr/bin/python3"

static int have_numpy(void)
{
    return system(PY " -c 'import numpy' >/dev/null 2>&1") == 0;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

static const char *ref_script(void)
{
    static char p[4096];
    snprintf(p, sizeof p, "%s/tests/ref/forward_ref.py", GRAFT_SOURCE_DIR);
    return p;
}

static void test_reference_is_valid(void)
{
    if (!have_numpy()) {
        printf("skip: /usr/bin/python3 has no numpy\n");
        return;
    }
    /* The numpy reference must itself reproduce transformers before it may
     * judge the variants (it prints its largest errors). */
    CHECK(sh(PY " %s validate %s", ref_script(), fixture("golden/llama-gqa")) == 0);
    CHECK(sh(PY " %s validate %s", ref_script(), fixture("golden/gpt2")) == 0);
}

static void test_variants(void)
{
    if (!have_numpy()) {
        printf("skip: /usr/bin/python3 has no numpy\n");
        return;
    }
    char tmp[] = "/tmp/graft-fwd-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    char gpath[4096], base[4096];
    snprintf(base, sizeof base, "%s", fixture("golden/llama-gqa"));
    snprintf(gpath, sizeof gpath, "%s/golden.json", base);
    golden g;
    CHECK(golden_load(gpath, &g, NULL) == 0);
    /* kind, whether the variant must change the model's predictions */
    static const struct {
        const char *kind;
        int changes;
    } kinds[] = {{"tied", 1},        {"qwen2", 1}, {"llama3", 1}, {"llama3-old", 1},
                 {"mistral-swa", 1}, {"bf16", 1},  {"f16", 0},    {"sharded", 0}};
    double llama3_mean[2] = {0, 0};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const char *kind = kinds[k].kind;
        char dir[4200], out[4300];
        snprintf(dir, sizeof dir, "%s/%s", tmp, kind);
        snprintf(out, sizeof out, "%s/%s.nll.json", tmp, kind);
        if (sh(PY " %s variant %s %s %s", ref_script(), base, kind, dir) ||
            sh(PY " %s nll %s %s %s", ref_script(), dir, gpath, out)) {
            CHECK_MSG(0, "variant %s: reference failed", kind);
            continue;
        }
        golden r;
        CHECK(golden_load(out, &r, &g) == 0);
        double moved = 0;
        for (int i = 0; i < r.S * (r.T - 1); i++) moved = fmax(moved, fabs(r.nll[i] - g.nll[i]));
        gr_model *m = gr_model_load(dir);
        CHECK_MSG(m != NULL, "variant %s: %s", kind, gr_errmsg());
        if (m) {
            errs fe, re;
            CHECK(run_both(m, &r, 2, &fe, &re) == 0);
            printf("variant %-11s: fast max|dNLL| %.3g mean %.3g; ref max|dNLL| %.3g mean %.3g "
                   "(differs from the base model by %.3g)\n",
                   kind, fe.tok, fe.mean, re.tok, re.mean, moved);
            CHECK_MSG(fe.tok <= TOK_TOL && fe.mean <= MEAN_TOL, "variant %s fast: %.3g %.3g", kind,
                      fe.tok, fe.mean);
            CHECK_MSG(re.tok <= TOK_TOL && re.mean <= MEAN_TOL, "variant %s ref: %.3g %.3g", kind,
                      re.tok, re.mean);
            if (kinds[k].changes)
                CHECK_MSG(moved > 1e-3, "variant %s does not change the predictions (%.3g)", kind,
                          moved);
            if (!strncmp(kind, "llama3", 6)) llama3_mean[kind[6] != 0] = r.mean;
            gr_model *ms = load_mode(dir, GR_MODEL_STREAM);
            CHECK_MSG(ms != NULL, "variant %s streamed: %s", kind, gr_errmsg());
            if (ms) check_modes(m, ms, r.ids, r.S, r.T, 2, kind);
            gr_model_destroy(&ms);
            if (!strcmp(kind, "mistral-swa") || !strcmp(kind, "qwen2")) check_long(dir, kind);
            gr_model_destroy(&m);
        }
        golden_free(&r);
    }
    /* both spellings of the llama3 settings mean the same model */
    CHECK_NEAR(llama3_mean[0], llama3_mean[1], 1e-12);
    golden_free(&g);
    sh("rm -rf '%s'", tmp);
}

int main(void)
{
    RUN(test_golden);
    RUN(test_long_windows);
    RUN(test_bad_input);
    RUN(test_reference_is_valid);
    RUN(test_variants);
    TEST_MAIN_END();
}
